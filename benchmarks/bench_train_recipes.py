"""Training step time of every low-precision recipe as a ratio to BF16, side by side in one run.

Each recipe (and peer) gets its own copy of the same Llama (same initial weights), applied
through the registry exactly as a cell applies it, trained under the recipe's precision
policy with AdamW. The steps are interleaved round by round (one step of each model in
turn), so a change in machine load moves every recipe alike; the median over the timed
rounds is reported with its ratio to ``bf16-train``, tokens per second, and whether the
recipe's GEMMs ran emulated. Off an FP8 GPU every recipe but ``bf16-train`` is emulated:
the ratio is the cost of the emulation on this machine, not a speed-up.

    python benchmarks/bench_train_recipes.py                      # CPU: llama-tiny, every recipe
    python benchmarks/bench_train_recipes.py --device cuda --size 4096,2,32,11008 --batch 4 --seq 2048 \\
        --recipes bf16-train,fp8-train,fp8-train:scaling=row,torchao-float8 --json out.json

``--size hidden,layers,heads,intermediate`` builds a Llama of that shape instead of a named
size (GEMMs dominate a step at widths of a few thousand). ``--kernels torch,auto`` measures
each recipe once per mode of ``suite.numerics.dispatch`` in the same interleaved rounds (the
recipe's number-format operations in PyTorch, then through the Triton kernels where they take
the shape), with the share of operations a kernel served. ``--fast off,on`` does the same for
``suite.numerics.compiled`` (the recipes' quantisers eager, then fused by ``torch.compile``), with
the share of quantiser calls that ran compiled; compilation happens in the warm-up rounds (each
shape compiles at its first call), never in a timed one.

    python benchmarks/bench_train_recipes.py --model llama-10m --kernels torch --fast off,on
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

DEFAULT_RECIPES = ("bf16-train,fp8-train,fp8-train:scaling=row,fp8-train:scaling=delayed,mxfp8-train,mxfp4-train,"
                   "nvfp4-train,quartet-train,halo-train,coat-train,torchao-float8,torchao-mxfp8")


def build(args: argparse.Namespace) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    from suite.models.catalog import CATALOG, LLAMA_SIZES, LlamaSize, NamedModel

    if args.size:
        hidden, layers, heads, inter = (int(v) for v in args.size.split(","))
        entry = NamedModel(args.size, "llama", "", "bytes", "LlamaConfig", LlamaSize(hidden, layers, heads, inter).settings())
    elif args.model in LLAMA_SIZES:
        entry = CATALOG[args.model]
    else:
        raise SystemExit(f"--model: choose one of {', '.join(LLAMA_SIZES)}")
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(entry.make_config())


def prepare(spec: str, template: torch.nn.Module, device: str) -> dict:
    """The model under one recipe, its optimizer and precision policy, as a cell would set them
    (``suite.bench.recipes.prepare``, which the recipe gate uses too), with a list for its times."""
    from suite.bench import recipes

    return {**recipes.prepare(spec, template, device), "times": []}


def step(entry: dict, ids: torch.Tensor, device: str) -> float:
    from suite.numerics import compiled, dispatch

    model, optimizer = entry["model"], entry["optimizer"]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dispatch.reset_counts()
    compiled.reset_counts()
    start = time.perf_counter()
    with dispatch.kernels(entry["kernels"]), compiled.emulation(entry["fast"]):
        with entry["policy"].autocast(device):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
        optimizer.step()  # in the mode too: COAT's optimizer quantises its states (as a cell runs it)
    optimizer.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    for key, n in dispatch.counts().items():
        entry["served"][key] = entry["served"].get(key, 0) + n
    for key, n in compiled.counts().items():
        entry["fused"][key] = entry["fused"].get(key, 0) + n
    return seconds


def split_recipes(text: str) -> list[str]:
    """The comma-separated recipe list, keeping a recipe's own ``key=value,key=value`` arguments
    with it (``nvfp4-train:rht=false,tiles=false,mxfp4-train``)."""
    out: list[str] = []
    for part in text.split(","):
        if out and "=" in part and ":" not in part and ":" in out[-1]:
            out[-1] += "," + part
        else:
            out.append(part)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="llama-tiny", help="a named size of the lm task")
    p.add_argument("--size", default="", help="hidden,layers,heads,intermediate instead of --model")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="timed rounds")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--recipes", default=DEFAULT_RECIPES)
    p.add_argument("--json", default="", help="also write the rows here")
    p.add_argument("--kernels", default="auto", help="comma-separated dispatch modes to measure each recipe "
                   "under (auto, triton, torch); e.g. torch,auto for the kernels off and on")
    p.add_argument("--fast", default="auto", help="comma-separated suite.numerics.compiled modes (auto, on, off) "
                   "to measure each recipe under; e.g. off,on for the quantisers eager and compiled")
    args = p.parse_args()
    from suite.numerics import compiled, dispatch
    from suite.registry import KERNELS

    modes = [dispatch.check_mode(m.strip()) for m in args.kernels.split(",") if m.strip()]
    fasts = [compiled.check_mode(m.strip()) for m in args.fast.split(",") if m.strip()]
    KERNELS.names()  # the kernels register their implementations

    from suite.app.library_noise import quiet_library_noise

    quiet_library_noise(args.device)
    template = build(args)
    ids = torch.randint(0, 256, (args.batch, args.seq), generator=torch.Generator().manual_seed(0)).to(args.device)
    entries = []
    for spec in [s for s in split_recipes(args.recipes) if s]:
        axes = [(mode, fast) for mode in modes for fast in fasts]
        for mode, fast in axes:
            if spec == "bf16-train" and fast != fasts[0]:
                continue  # no quantisers: one baseline per kernels mode
            try:
                entry = prepare(spec, template, args.device)
            except Exception as exc:  # noqa: BLE001 - a recipe that cannot run here is reported, the rest run
                print(f"{spec}: not measured ({type(exc).__name__}: {exc})", file=sys.stderr)
                break
            tags = ([f"kernels {mode}"] if len(modes) > 1 else []) + ([f"fast {fast}"] if len(fasts) > 1 else [])
            if spec == "bf16-train":
                tags = tags[:1] if len(modes) > 1 else []
            label = f"{spec} [{', '.join(tags)}]" if tags else spec
            entry.update(kernels=mode, fast=fast, served={}, fused={}, label=label)
            entries.append(entry)
    for round_ in range(args.warmup + args.steps):
        for entry in list(entries):
            try:
                seconds = step(entry, ids, args.device)
            except Exception as exc:  # noqa: BLE001 - e.g. a GEMM this GPU lacks: report it, time the rest
                print(f"{entry['spec']}: failed at round {round_} ({type(exc).__name__}: {exc})", file=sys.stderr)
                entries.remove(entry)
                continue
            if round_ >= args.warmup:
                entry["times"].append(seconds)
    base = next((statistics.median(e["times"]) for e in entries if e["spec"] == "bf16-train"), float("nan"))
    tokens = args.batch * args.seq
    rows = []
    for e in entries:
        median = statistics.median(e["times"])
        measured = {}
        for m in e["methods"]:
            measured.update(m.measurements(e["model"]))
        rows.append({"recipe": e["label"], "kernels": e["kernels"], "fast": e["fast"], "step_ms": median * 1000,
                     "ratio_to_bf16": median / base, "tokens_per_s": tokens / median,
                     "emulated": measured.get("train_gemm_emulated", float("nan")),
                     "real_fraction": measured.get("train_gemm_real_fraction", float("nan")),
                     "kernel_fraction": dispatch.kernel_fraction(e["served"]) if e["served"] else float("nan"),
                     "compiled_fraction": compiled.compiled_fraction(e["fused"]) if e["fused"] else float("nan")})
    shape = args.size or args.model
    print(f"step time per recipe, {shape}, batch {args.batch} x {args.seq} tokens, {args.device}, "
          f"median of {args.steps} interleaved rounds after {args.warmup} warm-up:")
    width = max([28, *(len(r["recipe"]) for r in rows)])
    print(f"  {'recipe':{width}s} {'step ms':>9s} {'x bf16':>7s} {'tokens/s':>10s}  GEMMs      "
          f"format ops by kernel  quantisers compiled")
    for r in rows:
        how = "emulated" if r["emulated"] == 1.0 else f"real ({r['real_fraction']:.0%})"
        served = "-" if r["kernel_fraction"] != r["kernel_fraction"] else f"{r['kernel_fraction']:.0%}"
        fused = "-" if r["compiled_fraction"] != r["compiled_fraction"] else f"{r['compiled_fraction']:.0%}"
        print(f"  {r['recipe']:{width}s} {r['step_ms']:9.1f} {r['ratio_to_bf16']:7.2f} {r['tokens_per_s']:10.0f}  "
              f"{how:10s} {served:21s} {fused}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"device": args.device, "shape": shape, "batch": args.batch, "seq": args.seq,
                       "torch": torch.__version__, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
