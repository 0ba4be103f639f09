"""``suite bench kernels``: time kernels against the in-run roofline; save or compare baselines.

``--save NAME`` records the run's samples as a baseline; ``--compare NAME`` exits 1 when a
kernel got slower than the baseline beyond the threshold and the measured noise (see
``suite.bench.gate``), 0 otherwise. ``--normalized`` compares times divided by the in-run
calibration op, for baselines taken on another machine of the same kind or a noisy one.
A case found slower is re-measured ``--confirm`` times (default 2) before it counts: a
regression must be slower every time, so a burst of load elsewhere on a shared machine
during one measurement is not reported as a slower kernel. After the table, each kernel's line
names the methods that run it (the training recipes' declared operands through
``suite.numerics.dispatch``) and the methods' operations no kernel serves.

``suite bench recipes`` times a training step of each recipe with the kernels off and on
(``--modes torch,auto``; default recipes: those a kernel serves, beside bf16-train) and joins the
same gate: ``--save NAME`` / ``--compare NAME`` (baselines kept apart from the kernels'), so a
recipe whose path got slower fails on a GPU.
"""

from __future__ import annotations

import argparse
import sys

from suite.app.commands import DEFAULT_STORE


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="microbenchmark kernels against the measured roofline; speed-regression gate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", choices=["kernels", "recipes"],
                   help="what to benchmark: the kernels, or the recipes' training step with the kernels off and on")
    p.add_argument("--kernels", type=_csv, help="comma-separated kernel names (default: all)")
    p.add_argument("--recipes", type=_recipes,
                   help="recipes: comma-separated method specs, e.g. mxfp4-train,nvfp4-train:tiles=false "
                   "(default: every recipe a kernel serves, and bf16-train)")
    p.add_argument("--modes", type=_csv, default=None,
                   help="recipes: the dispatch modes to time each recipe under (default torch,auto: kernels off, on)")
    p.add_argument("--size", help="recipes: Llama hidden,layers,heads,intermediate (default 64,1,2,128 on a CPU, "
                   "4096,2,32,11008 on a GPU)")
    p.add_argument("--batch", type=int, help="recipes: sequences a step (default 1 CPU, 4 GPU)")
    p.add_argument("--seq", type=int, help="recipes: tokens a sequence (default 32 CPU, 2048 GPU)")
    p.add_argument("--shapes", type=_csv,
                   help="comma-separated shapes like 4096x4096 (default: each kernel's own; "
                   "small ones on a CPU)")
    p.add_argument("--impls", type=_csv,
                   help="comma-separated implementations, e.g. reference,triton,torchao "
                   "(default: all that run on this device)")
    p.add_argument("--dtype", help="input dtype, e.g. bf16 (default: each kernel's first)")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--rounds", type=int, help="timed samples per case (default 30 GPU, 15 CPU)")
    p.add_argument("--save", metavar="NAME", help="record this run's samples as baseline NAME")
    p.add_argument("--compare", metavar="NAME",
                   help="compare with baseline NAME; exit 1 when a kernel got slower")
    p.add_argument("--threshold", type=float, default=0.10,
                   help="relative slowdown that counts as a regression, beyond the noise "
                   "(default 0.10)")
    p.add_argument("--alpha", type=float, default=0.01,
                   help="significance level of the rank test a slowdown must pass (default 0.01)")
    p.add_argument("--confirm", type=int, default=2,
                   help="re-measure each case found slower this many times; it is a regression "
                   "only if slower every time (default 2; 0 trusts the first measurement)")
    p.add_argument("--normalized", action="store_true",
                   help="compare times relative to the in-run calibration op")
    p.add_argument("--store", default=DEFAULT_STORE,
                   help=f"result store root (default: {DEFAULT_STORE})")
    p.add_argument("--no-store", action="store_true", help="do not write rows to the store")
    p.set_defaults(handler=main)


def _recipes(text: str) -> list[str]:
    """Comma-separated method specs; a recipe's own ``key=value,key=value`` stay with it."""
    out: list[str] = []
    for piece in (t.strip() for t in text.split(",")):
        if not piece:
            continue
        if "=" in piece and ":" not in piece and out:
            out[-1] += "," + piece
        else:
            out.append(piece)
    return out


KERNEL_ONLY = ("kernels", "shapes", "impls", "dtype")
RECIPE_ONLY = ("recipes", "modes", "size", "batch", "seq")


def main(args: argparse.Namespace) -> int:
    from suite.errors import UserError

    own, other = (KERNEL_ONLY, RECIPE_ONLY) if args.target == "kernels" else (RECIPE_ONLY, KERNEL_ONLY)
    wrong = [f"--{name}" for name in other if getattr(args, name, None) is not None]
    if wrong:
        raise UserError(f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} for 'suite bench "
                        f"{'recipes' if args.target == 'kernels' else 'kernels'}', not '{args.target}'")
    if args.target == "recipes":
        return main_recipes(args)
    return main_kernels(args)


def main_kernels(args: argparse.Namespace) -> int:
    import pandas as pd

    from suite.bench.gate import load_baseline, save_baseline
    from suite.bench.harness import BenchOptions, print_rows, run_bench, sig
    from suite.errors import UserError
    from suite.kernel import parse_shape
    from suite.results import ResultStore
    from suite.results.schema import KERNEL_COLUMNS

    _check_gate_options(args)
    if args.confirm < 0:
        raise UserError(f"--confirm {args.confirm} is negative; give the number of re-measurements, e.g. 2")
    baseline = load_baseline(args.store, args.compare) if args.compare else None
    opts = BenchOptions(
        kernels=args.kernels,
        shapes=[parse_shape(s) for s in args.shapes] if args.shapes else None,
        impls=args.impls,
        dtype=args.dtype,
        device=args.device,
        rounds=args.rounds,
    )
    result = run_bench(opts, progress=lambda m: print(f"bench: {m}", file=sys.stderr))
    print(f"device: {result.device}   run {result.run_id}   roofline measured in this run: "
          f"{sig(result.roofline.peak_gbps)} GB/s copy (memory roof), {sig(result.roofline.peak_tflops)} "
          f"TFLOP/s {result.roofline.matmul_dtype} matmul (compute roof)")
    print_rows(result.rows)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    _print_methods(sorted({r["kernel"] for r in result.rows}))

    if not args.no_store:
        frame = pd.DataFrame(result.rows, columns=KERNEL_COLUMNS)
        path = ResultStore(args.store).write_table("kernels", frame, name=result.run_id)
        print(f"rows written to {path}")

    status = 0
    if baseline is not None:
        comparisons, base_rows = _compare(baseline, result.device, result.samples, args, "baseline")
        slower = [c for c in comparisons if c.verdict == "slower"]
        if slower and args.confirm:
            slower = _confirm(slower, base_rows, opts, args)
        drift = [c for c in comparisons if c.verdict == "drift"]
        if drift:
            print(f"note: {len(drift)} case(s) slower in time but not relative to the in-run "
                  "calibration op (the machine was slower, not the kernel): not a regression")
        if slower:
            print(f"REGRESSION: {len(slower)} case(s) slower than baseline '{args.compare}': "
                  + ", ".join(f"{c.kernel}/{c.impl}/{c.shape} x{c.ratio:.2f}" for c in slower))
            status = 1
        else:
            print(f"no regression against baseline '{args.compare}'")
    if args.save:
        meta = {"device": result.device, "run_id": result.run_id,
                "roofline": vars(result.roofline),
                "git_commit": result.rows[0]["git_commit"] if result.rows else ""}
        path = save_baseline(args.store, args.save, result.samples, meta)
        print(f"baseline '{args.save}' saved to {path}")
    if result.failed:  # after the other cases' rows are written: a bad shape costs only its own
        print(f"error: {len(result.failed)} case(s) could not be measured (recorded as failed"
              f"{'' if args.no_store else ' in the store'}):", file=sys.stderr)
        for line in result.failed:
            print(f"  {line}", file=sys.stderr)
        return 2
    return status


def _check_gate_options(args: argparse.Namespace) -> int:
    """--threshold, --alpha and --rounds checked before anything is measured; returns the rounds a run
    needs (more where a baseline is saved or compared: the test needs that many samples)."""
    from suite.bench.gate import check_alpha, check_threshold, min_rounds
    from suite.errors import UserError

    check_threshold(args.threshold)
    check_alpha(args.alpha)
    needed = max(3, min_rounds(args.alpha)) if (args.compare or args.save) else 3
    if args.rounds is not None and args.rounds < needed:
        raise UserError(f"--rounds {args.rounds} is too few: a median and a spread need 3, and a slowdown can "
                        f"reach alpha={args.alpha} only with {min_rounds(args.alpha)} samples per run")
    return needed


def _compare(baseline: dict, device: str, samples: list[dict], args: argparse.Namespace,
             what: str) -> tuple[list, list[dict]]:
    """This run's samples against ``baseline``'s rows of the same kernels (or recipes), the table printed;
    a baseline from another device is warned about unless the comparison is normalised."""
    from suite.bench.gate import compare_rows, format_table

    meta_device = baseline.get("meta", {}).get("device", "")
    if not args.normalized and meta_device and meta_device != device:
        print(f"warning: baseline '{args.compare}' was taken on '{meta_device}', this run on "
              f"'{device}': absolute times are not comparable; add --normalized", file=sys.stderr)
    selected = {r["kernel"] for r in samples}
    base_rows = [r for r in baseline["rows"] if r["kernel"] in selected]
    comparisons = compare_rows(base_rows, samples, threshold=args.threshold, normalized=args.normalized,
                               alpha=args.alpha)
    print()
    print(f"compared with {what} '{args.compare}' (threshold {args.threshold:.0%} beyond noise, "
          f"alpha {args.alpha:g}{', normalised' if args.normalized else ''}):")
    print(format_table(comparisons, args.normalized))
    return comparisons, base_rows


def _confirm(slower: list, base_rows: list[dict], opts, args: argparse.Namespace) -> list:
    """The cases of ``slower`` that stay slower in each of ``args.confirm`` re-measurements
    (each a fresh run of that case alone, calibration and roofline included)."""
    from dataclasses import replace

    from suite.bench.gate import compare_rows
    from suite.bench.harness import run_bench
    from suite.kernel import parse_shape

    confirmed = []
    for case in slower:
        base = [r for r in base_rows if (r["kernel"], r["impl"], r["shape"], r["dtype"])
                == (case.kernel, case.impl, case.shape, case.dtype)]
        only = replace(opts, kernels=[case.kernel], impls=[case.impl], shapes=[parse_shape(case.shape)],
                       dtype=case.dtype)
        ratios = []
        for _ in range(args.confirm):
            again = compare_rows(base, run_bench(only).samples, threshold=args.threshold,
                                 normalized=args.normalized, alpha=args.alpha)[0]
            ratios.append(again.ratio)
            if again.verdict != "slower":
                break
        label = f"{case.kernel}/{case.impl}/{case.shape}"
        if len(ratios) == args.confirm and again.verdict == "slower":
            print(f"confirmed: {label} slower again in {args.confirm} re-measurement(s) "
                  f"(x{', x'.join(f'{r:.2f}' for r in ratios)})")
            confirmed.append(case)
        else:
            print(f"not confirmed: {label} was x{case.ratio:.2f} slower, but x{ratios[-1]:.2f} "
                  f"({again.verdict}) on re-measurement {len(ratios)}: load on the machine, "
                  "not a regression")
    return confirmed


def _print_methods(kernels: list[str]) -> None:
    """Which methods run each kernel of the table, and what no kernel serves."""
    from suite.bench.methods import format_methods, kernel_methods

    if not kernels:
        return
    by_kernel, found = kernel_methods()
    print()
    print(format_methods(kernels, by_kernel, found))


def main_recipes(args: argparse.Namespace) -> int:
    """``suite bench recipes``: step times with the kernels off and on; the same save/compare gate."""
    from suite.bench.gate import load_baseline, save_baseline
    from suite.bench.recipes import RecipeBenchOptions, format_rows, run_recipes

    needed = _check_gate_options(args)
    baseline = load_baseline(args.store, args.compare, kind="recipes") if args.compare else None
    opts = RecipeBenchOptions(recipes=args.recipes, modes=tuple(args.modes or ("torch", "auto")),
                              size=args.size, batch=args.batch, seq=args.seq, device=args.device,
                              rounds=args.rounds or max(needed, 7))
    result = run_recipes(opts, progress=lambda m: print(f"bench: {m}", file=sys.stderr))
    print(f"device: {result.device}   training step of each recipe, Llama {result.shape}, median of "
          f"{opts.rounds} interleaved rounds")
    print(format_rows(result.rows))
    status = 0
    if baseline is not None:
        comparisons, _ = _compare(baseline, result.device, result.samples, args, "recipe baseline")
        slower = [c for c in comparisons if c.verdict == "slower"]
        if slower:
            print(f"REGRESSION: {len(slower)} recipe step(s) slower than baseline '{args.compare}': "
                  + ", ".join(f"{c.kernel}/{c.impl} x{c.ratio:.2f}" for c in slower))
            status = 1
        else:
            print(f"no regression against recipe baseline '{args.compare}'")
    if args.save:
        meta = {"device": result.device, "shape": result.shape}
        path = save_baseline(args.store, args.save, result.samples, meta, kind="recipes")
        print(f"recipe baseline '{args.save}' saved to {path}")
    return status
