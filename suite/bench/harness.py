"""Run kernels x shapes x impls: fresh inputs, a correctness check, interleaved timing, rows.

One run measures its own roofline first, then for each kernel and shape draws several input
sets (enough that together they overflow the last-level cache, so rotation defeats it),
checks every implementation against the reference on those inputs, and times all the
implementations of that case round-robin with the calibration op (``suite.bench.timing``).
Rows follow ``suite.results.schema.KERNEL_COLUMNS``; per-sample times travel separately for
the regression gate. A case that cannot run (a shape or dtype the kernel refuses, an
implementation that raises) becomes rows with ``status`` "failed" and the reason, and the
other cases still run: one bad ``--shapes`` entry must not cost the whole run's numbers.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from suite import __version__
from suite.bench.roofline import Roofline, calibration_op, measure_roofline
from suite.bench.timing import Timer, quantile, run_interleaved
from suite.bench.units import sig
from suite.errors import UserError
from suite.kernel import Impl, Kernel, Shape, format_shape, parse_dtype
from suite.registry import KERNELS


@dataclass
class BenchOptions:
    kernels: list[str] | None = None
    shapes: list[Shape] | None = None
    impls: list[str] | None = None
    dtype: str | None = None
    device: str | None = None
    rounds: int | None = None
    warmup: int = 3
    target_sample_s: float | None = None
    calibration: bool = True
    quick_roofline: bool | None = None
    seed: int = 0
    max_input_sets: int = 8
    cpu_threads: int = 1  # one thread: a shared CPU makes multi-threaded ops wait on each other


@dataclass
class BenchResult:
    rows: list[dict] = field(default_factory=list)  # KERNEL_COLUMNS rows for the store
    samples: list[dict] = field(default_factory=list)  # per-case samples for the gate
    notes: list[str] = field(default_factory=list)  # what was skipped and why
    roofline: Roofline | None = None
    device: str = ""
    run_id: str = ""
    failed: list[str] = field(default_factory=list)  # "kernel shape dtype: reason", one per failed case


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def git_commit() -> str:
    """The commit of the suite's own source checkout ('+dirty' with local changes), else its version.

    Asked of the folder the suite's code lives in, never the current directory: a bench run
    from anywhere must still say which suite measured it. An installed (non-checkout) suite
    whose site-packages happens to sit inside some other repository must not take that
    repository's commit, so the checkout's top level has to be the suite's own source root.
    """
    root = Path(__file__).resolve().parent.parent.parent  # <root>/suite/bench/harness.py
    try:
        top = _git(root, "rev-parse", "--show-toplevel")
        if top and Path(top).resolve() == root:
            commit = _git(root, "rev-parse", "HEAD")
            if commit:
                dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
                return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return f"v{__version__}"


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    return out.stdout.strip() if out.returncode == 0 else ""


def _now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def select_kernels(names: list[str] | None) -> list[tuple[str, Kernel]]:
    names = names or KERNELS.names()
    if not names:
        raise UserError("no kernels are registered; is the suite installed with its kernels/ folder?")
    return [(n, KERNELS.get(n).target()) for n in names]


def _tensor_bytes(obj) -> int:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(_tensor_bytes(o) for o in obj)
    return int(getattr(obj, "nbytes", 0) or 0)  # e.g. a formats.QTensor


def _cache_bytes(device: str) -> int:
    import torch

    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        return int(getattr(props, "L2_cache_size", 50 << 20))
    return 64 << 20  # a generous guess for a server CPU's last-level cache


def choose_impls(kernel: Kernel, wanted: list[str] | None, device_type: str,
                 notes: list[str]) -> dict[str, Impl]:
    available = kernel.all_impls()
    chosen = {}
    for name, impl in available.items():
        if wanted is not None and name not in wanted:
            continue
        reason = impl.unavailable_reason(device_type)
        if reason is None and wanted is None and device_type != "cuda" and not impl.default_on_cpu:
            reason = "skipped on a CPU by default (name it in --impls to run it)"
        if reason:
            if wanted is not None:
                raise UserError(f"kernel '{kernel.name}': impl '{name}' {reason}")
            notes.append(f"{kernel.name}/{name}: {reason}")
            continue
        chosen[name] = impl
    return chosen


def run_bench(opts: BenchOptions, progress=None) -> BenchResult:
    """Benchmark the selected kernels; raises UserError for unsupported selections up front."""
    import torch

    threads = torch.get_num_threads()
    if not (opts.device or default_device()).startswith("cuda"):
        torch.set_num_threads(max(1, opts.cpu_threads))
    try:
        return _run_bench(opts, progress)
    finally:
        torch.set_num_threads(threads)


def _run_bench(opts: BenchOptions, progress=None) -> BenchResult:
    import torch

    device = opts.device or default_device()
    device_type = torch.device(device).type
    if device_type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA GPU is visible to torch")
    kernels = select_kernels(opts.kernels)
    dtype = parse_dtype(opts.dtype) if opts.dtype else None

    # Validate the whole selection before spending time on the roofline. A shape or dtype one
    # kernel refuses fails that kernel's cases (rows with the reason); the rest still run.
    plan = []
    stamp = _now_utc()  # the run's start: every row of the run carries it, with the run id
    res = BenchResult(device=device_name(device), run_id=f"{stamp[:10]}-{uuid.uuid4().hex[:8]}")
    refused: list[tuple[str, Shape, str, dict[str, Impl], str]] = []
    if opts.impls is not None:
        known = set().union(*(k.all_impls() for _, k in kernels))
        unknown = [i for i in opts.impls if i not in known]
        if unknown:
            from suite.errors import UnknownNameError

            raise UnknownNameError("impl", unknown[0], known)
    for name, kernel in kernels:
        wanted = None
        if opts.impls is not None:
            wanted = [i for i in opts.impls if i in kernel.all_impls()]
            if not wanted:
                res.notes.append(f"{name}: none of the requested impls exist for this kernel")
                continue
        impls = choose_impls(kernel, wanted, device_type, res.notes)
        shapes = opts.shapes or kernel.default_shapes(device_type)
        dt = dtype or kernel.dtypes[0]
        for shape in shapes:
            try:
                kernel.check(shape, dt)
            except UserError as exc:
                refused.append((name, shape, dt, impls, str(exc)))
                continue
            plan.append((name, kernel, shape, dt, impls))
    if not plan:
        reasons = [r for *_, r in refused] + res.notes
        raise UserError("nothing to benchmark: " + ("; ".join(dict.fromkeys(reasons))
                                                     or "the selection of kernels and impls is empty"))

    quick = opts.quick_roofline if opts.quick_roofline is not None else device_type != "cuda"
    res.roofline = roof = measure_roofline(device, quick=quick)
    rounds = opts.rounds or (30 if device_type == "cuda" else 15)
    target = opts.target_sample_s or (0.002 if device_type == "cuda" else 0.004)
    calib = calibration_op(device) if opts.calibration else None
    timer = Timer(device_type)
    common = {"schema_version": 1, "run_id": res.run_id, "timestamp": stamp, "device": res.device,
              "git_commit": git_commit(), "suite_version": __version__,
              "peak_gbps": roof.peak_gbps, "peak_tflops": roof.peak_tflops,
              "peak_tflops_dtype": roof.matmul_dtype}
    for name, shape, dt, impls, reason in refused:
        _fail(res, common, name, shape, dt, impls, reason)

    for name, kernel, shape, dt, impls in plan:
        if progress:
            progress(f"{name} {format_shape(shape)} {dt}: {', '.join(impls)}")
        try:
            _measure_case(res, common, opts, device, rounds, target, calib, timer, name, kernel, shape,
                          dt, impls)
        except UserError as exc:  # the kernel refused these inputs: this case fails, the rest run
            _fail(res, common, name, shape, dt, impls, str(exc))
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory at a huge shape: same
            _fail(res, common, name, shape, dt, impls, f"{type(exc).__name__}: {str(exc)[:200]}")
    return res


def _fail(res: BenchResult, common: dict, name: str, shape: Shape, dt: str, impls: dict[str, Impl],
          reason: str) -> None:
    """Rows for a case that could not be measured: status "failed", the reason, no timings."""
    res.failed.append(f"{name} {format_shape(shape)} {dt}: {reason}")
    for iname in impls or {"-": None}:
        res.rows.append({**common, "kernel": name, "impl": iname, "shape": format_shape(shape), "dtype": dt,
                         "status": "failed", "error": reason, "time_ms": float("nan"),
                         "time_ms_p10": float("nan"), "time_ms_p90": float("nan"), "n_samples": 0,
                         "gbps": float("nan"), "tflops": float("nan"), "roofline_fraction": float("nan"),
                         "normalized_time": float("nan"), "samples_ms": [], "normalized_samples": [],
                         "correct": None})


def _measure_case(res: BenchResult, common: dict, opts: BenchOptions, device: str, rounds: int,
                  target: float, calib, timer: Timer, name: str, kernel: Kernel, shape: Shape, dt: str,
                  impls: dict[str, Impl]) -> None:
    """Time every implementation of one kernel x shape x dtype; append its rows and samples."""
    import torch

    roof = res.roofline
    gen = torch.Generator(device=device).manual_seed(opts.seed)
    first = kernel.make_inputs(shape, dt, device, gen)
    n_sets = max(2, math.ceil(2 * _cache_bytes(device) / max(1, _tensor_bytes(first))))
    n_sets = min(opts.max_input_sets, n_sets)
    sets = [first] + [kernel.make_inputs(shape, dt, device, gen) for _ in range(n_sets - 1)]
    ref = kernel.reference(*first)
    correct: dict[str, bool | None] = {}
    runnable: dict[str, Impl] = {}
    for iname, impl in impls.items():
        try:
            out = impl.fn(*first)
        except UserError as exc:
            res.notes.append(f"{name}/{iname} {format_shape(shape)}: {exc}")
            continue
        except Exception as exc:  # a peer library's failure must not stop the run
            if not impl.peer:  # the suite's own impl: this case fails with the reason, the rest run
                raise UserError(f"impl '{iname}' raised {type(exc).__name__}: {str(exc)[:200]}") from exc
            res.notes.append(f"{name}/{iname} {format_shape(shape)}: peer failed: "
                             f"{type(exc).__name__}: {str(exc)[:200]}")
            continue
        runnable[iname] = impl
        if iname == "reference":
            correct[iname] = True
        elif not impl.checked:
            correct[iname] = None
        else:
            correct[iname], _ = kernel.matches(out, ref, impl.exact)
            if not correct[iname]:
                res.notes.append(f"{name}/{iname} {format_shape(shape)}: output does NOT "
                                 "match the reference")
        del out
    cases = {iname: _rotating(impl, sets) for iname, impl in runnable.items()}
    samples, _ = run_interleaved(cases, calib, timer, rounds=rounds, warmup=opts.warmup,
                                 target_sample_s=target)
    nbytes, nflops = kernel.bytes_moved(shape, dt), kernel.flops(shape, dt)
    for iname, s in samples.items():
        t = s.median
        gbps = nbytes / t / 1e9 if t > 0 else float("nan")
        tflops = nflops / t / 1e12 if t > 0 else float("nan")
        frac = gbps / roof.peak_gbps if kernel.bound == "memory" else tflops / roof.peak_tflops
        res.rows.append({
            **common,
            "kernel": name,
            "impl": iname,
            "shape": format_shape(shape),
            "dtype": dt,
            "status": "ok",
            "error": "",
            "time_ms": t * 1e3,
            "time_ms_p10": quantile(s.times, 0.1) * 1e3,
            "time_ms_p90": quantile(s.times, 0.9) * 1e3,
            "n_samples": len(s.times),
            "bytes_moved": int(nbytes),
            "flops": int(nflops),
            "gbps": gbps,
            "tflops": tflops,
            "roofline_fraction": frac,
            "roof": kernel.bound,  # which roof the fraction is of: "memory" (copy) or "compute" (matmul)
            "normalized_time": s.normalized_median if s.normalized else float("nan"),
            "samples_ms": [x * 1e3 for x in s.times],
            "normalized_samples": list(s.normalized),
            "correct": correct.get(iname),
        })
        res.samples.append({
            "kernel": name, "impl": iname, "shape": format_shape(shape), "dtype": dt,
            "samples_ms": [x * 1e3 for x in s.times],
            "normalized_samples": list(s.normalized),
        })
    del sets, first, ref


def _rotating(impl: Impl, sets: list[tuple]):
    fn, n = impl.fn, len(sets)
    return lambda i: fn(*sets[i % n])


def print_rows(rows: list[dict], file=None) -> None:
    file = file or sys.stdout  # looked up per call: sys.stdout may have been replaced since import
    header = ["kernel", "impl", "shape", "dtype", "ms", "p10-p90", "GB/s", "TFLOP/s", "of roof", "ok"]
    body = []
    for r in rows:
        if r.get("status") == "failed":
            body.append([r["kernel"], r["impl"], r["shape"], r["dtype"], "FAILED", "", "", "", "", ""])
            continue
        frac = r["roofline_fraction"]
        roof = {"memory": "mem", "compute": str(r.get("peak_tflops_dtype") or "mm")}.get(r.get("roof"), "")
        body.append([
            r["kernel"], r["impl"], r["shape"], r["dtype"], sig(r["time_ms"], 4),
            f"{sig(r['time_ms_p10'])}-{sig(r['time_ms_p90'])}", sig(r["gbps"]),
            sig(r["tflops"]), f"{frac:.0%} {roof}" if frac == frac and frac >= 0.01
            else f"{frac:.1%} {roof}",
            {True: "yes", False: "NO", None: "-"}[r["correct"]],
        ])
    widths = [max(len(str(x[i])) for x in [header] + body) for i in range(len(header))]
    for line in [header] + body:
        print("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip(), file=file)
