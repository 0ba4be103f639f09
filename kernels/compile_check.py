"""Compile every Triton kernel for a GPU on a machine without one: what the interpreter cannot check.

The CPU tests run the kernels in Triton's interpreter (``TRITON_INTERPRET=1``), which proves their
arithmetic but not that Triton's compiler takes them: the interpreter runs the kernel as Python, so
a construct the compiler refuses (a module global that is not a ``tl.constexpr``, a type the
lowering rejects, a tile too large) passes there and fails on the first GPU launch. Here each launch
goes through Triton's real NVIDIA backend for a chosen target (default ``sm_90``, Hopper: H100/H200)
down to the cubin (``ptxas``, shipped with Triton), with no device: an inactive driver stands in,
naming the target, and a launch compiles without running (its outputs stay unwritten).

Three sources of launches, so that what the recipes launch and what the tuner tries are covered too:

* every kernel of the registry (``suite.registry.KERNELS``) with a Triton implementation, once at a
  small shape (the kernels' own launch path, fixed tiles where the autotuner would choose on a GPU);
* one training step of each recipe whose format operations a kernel serves, with ``--kernels triton``
  (``suite.numerics.dispatch``), so every specialisation a recipe launches (format, rounding,
  rotation, signs, keys) compiles. Values are not checked: compile-only launches leave garbage;
* every autotune candidate the tuner keeps, at each kernel's first GPU shape: the launches take the
  autotuned path a GPU takes, with a stand-in timer that launches each candidate once
  (``--no-candidates`` skips this, the slow part: a few minutes on two cores).

Each compiled variant's PTX and metadata are read too: a value kernel (quantise, dequantise: equal
to its PyTorch reference bit for bit) fails where it holds an instruction that rounds otherwise
(``INEXACT_PTX``: a fused multiply-add, approximate division or roots, flushed subnormals), and a
kernel launched with a fixed tile fails where its shared memory exceeds the target's
(``SHARED_MEMORY``).

    python -m suite.kernels.compile_check                 # sm_90; exit 1 if any launch fails to compile
    python -m suite.kernels.compile_check --arch 100 --recipes nvfp4-train:rht=false --json out.json

Run it in a fresh process: ``TRITON_INTERPRET`` must be unset before Triton is imported (the
command refuses otherwise). ``tests/test_kernels_compile.py`` runs it in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field

# bytes of shared memory a block may use (opt-in maximum) per compute capability x 10: a kernel above
# it compiles but fails to load (OutOfResources); the autotuner skips such a candidate
SHARED_MEMORY = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 120: 101376}
# modules of value kernels, which must equal their PyTorch reference bit for bit, and the PTX that
# would round otherwise: a contracted a * b + c (one rounding where the reference rounds twice) and
# the approximate division, reciprocal, square root and exponentials (`/` on floats compiles to one),
# and any instruction that flushes subnormals
VALUE_MODULES = ("_quant_triton",)
INEXACT_PTX = ("fma.rn", "div.approx", "div.full", "rcp.approx", "sqrt.approx", "rsqrt.approx", "ex2.approx",
               "lg2.approx", ".ftz")  # .ftz: subnormals flushed to zero, which PyTorch keeps
# the recipes whose format operations the kernels serve (suite.bench.methods lists them per kernel)
RECIPES = ("fp8-train", "fp8-train:scaling=row", "fp8-train:scaling=delayed", "mxfp8-train", "mxfp8-train:scale=rceil",
           "mxfp4-train", "mxfp4-train:scale=rceil", "nvfp4-train", "quartet-train", "halo-train", "coat-train")


@dataclass
class Report:
    """What compiled: per kernel of the registry and per recipe, the kernels launched and any failure."""

    arch: int
    kernels: dict[str, list[str]] = field(default_factory=dict)  # registry name -> jitted functions compiled
    recipes: dict[str, list[str]] = field(default_factory=dict)  # recipe -> jitted functions compiled
    candidates: dict[str, int] = field(default_factory=dict)  # autotuner -> candidate tiles compiled
    oversized: dict[str, int] = field(default_factory=dict)  # autotuner -> candidates over the shared memory
    specialisations: int = 0  # distinct compiled variants (a function under one set of constexprs)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


class _TargetOnlyDriver:
    """Triton's driver interface as far as a compile-only launch reads it: the target and a device
    and stream id. Nothing runs, so nothing else is asked of it."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0


def compile_only_launches(arch: int) -> list[tuple[str, str, int, int, str]]:
    """From now on in this process, every Triton launch compiles for ``sm_<arch>`` down to the cubin
    and returns without running; returns the list each compiled launch appends (function, variant
    hash, bytes of shared memory, instructions of ``INEXACT_PTX`` in its PTX, module) to. Call it
    before any kernel launches (a fresh process, ``TRITON_INTERPRET`` unset)."""
    if os.environ.get("TRITON_INTERPRET", "0").lower() in {"1", "true", "yes", "on"}:
        raise SystemExit("compile_check: unset TRITON_INTERPRET (the interpreter never compiles)")
    from triton.runtime.driver import driver
    from triton.runtime.jit import JITFunction

    driver.set_active(_TargetOnlyDriver(arch))
    seen: list[tuple[str, str, int, int, str]] = []
    run = JITFunction.run

    def compile_only(self, *args, grid, warmup, **kwargs):
        kernel = run(self, *args, grid=grid, warmup=True, **kwargs)
        if kernel is None or "cubin" not in kernel.asm:
            raise RuntimeError(f"{self.fn.__name__}: no cubin")
        ptx = kernel.asm["ptx"]
        inexact = sum(ptx.count(op) for op in INEXACT_PTX)
        seen.append((self.fn.__name__, kernel.hash, kernel.metadata.shared, inexact, self.fn.__module__))
        return kernel

    JITFunction.run = compile_only
    return seen


def check(arch: int = 90, recipes: tuple[str, ...] = RECIPES, candidates: bool = True) -> Report:
    """Compile the registry's Triton kernels and the recipes' launches for ``sm_<arch>``, and with
    ``candidates`` every autotune candidate the tuner keeps at each kernel's first GPU shape."""
    seen = compile_only_launches(arch)
    import torch

    from suite.numerics import dispatch
    from suite.registry import KERNELS

    # CPU tensors go to the kernels as under the interpreter ("triton" mode), but compiled
    dispatch.interpreted = lambda: True  # type: ignore[assignment]
    report = Report(arch)
    for name in KERNELS.names():
        kernel = KERNELS.get(name).target()
        impl = kernel.all_impls().get("triton")
        if impl is None:
            continue
        # ragged rows, as the interpreter tests use: Triton compiles sizes not divisible by 16 apart
        shape = (64, 256) if getattr(kernel, "dual", False) else {
            ("M", "N"): (70, 256), ("M", "N", "K", "R"): (70, 48, 80, 8), ("M", "N", "K"): (40, 96, 256)}[kernel.dims]
        start = len(seen)
        try:
            impl.fn(*kernel.make_inputs(shape, kernel.dtypes[0], "cpu", torch.Generator().manual_seed(0)))
        except Exception as exc:  # noqa: BLE001 - every kernel is tried; each failure is reported
            report.failures.append(f"kernel {name}: {_first_line(exc)}")
        report.kernels[name] = sorted({fn for fn, *_ in seen[start:]})
    for spec in recipes:
        start = len(seen)
        try:
            _recipe_step(spec)
        except Exception as exc:  # noqa: BLE001
            report.failures.append(f"recipe {spec}: {_first_line(exc)}")
        report.recipes[spec] = sorted({fn for fn, *_ in seen[start:]})
    limit = SHARED_MEMORY.get(arch)
    if candidates:
        _every_candidate(report, KERNELS, seen, limit)
    tuned = _autotuned_functions()  # a GPU's tuner skips a candidate too large to load: counted apart
    for fn, variant, shared, inexact, module in set(seen):
        if limit is not None and shared > limit and fn not in tuned:
            report.failures.append(f"{fn}: {shared} bytes of shared memory, more than sm_{arch}'s {limit}")
        if inexact and module.rsplit(".", 1)[-1] in VALUE_MODULES:
            report.failures.append(f"{fn} ({variant[:8]}): {inexact} instructions that round otherwise than the "
                                   f"reference (fused multiply-adds: launch with NO_FMA; approximate division "
                                   f"or roots: use tl.math.div_rn, tl.sqrt_rn; flushed subnormals)")
    report.specialisations = len(set(seen))
    return report


def _autotuners() -> dict[str, object]:
    """The autotuned kernels of the Triton modules, by name."""
    from triton.runtime.autotuner import Autotuner

    from suite.kernels import _lora_triton, _quant_triton, _w4a16_triton

    return {name: obj for module in (_quant_triton, _lora_triton, _w4a16_triton)
            for name, obj in vars(module).items() if isinstance(obj, Autotuner)}


def _autotuned_functions() -> set[str]:
    """The jitted functions that launch through an autotuner on a GPU (their fixed tile never runs there)."""
    return {tuner.base_fn.__name__ for tuner in _autotuners().values()}


def _every_candidate(report: Report, kernels, seen: list, limit: int | None) -> None:
    """Each kernel's Triton implementations at its first GPU shape through the autotuned launch
    path a GPU takes (``_tiling.autotuning``), with a stand-in timer that launches each candidate
    once, so every candidate tile the prune keeps compiles (the interpreter tests run the same
    path at small shapes, where the prune keeps fewer)."""
    import torch

    from suite.kernels import _quant_triton, _tiling

    _tiling.autotuning = _quant_triton.autotuning = lambda device: True  # type: ignore[assignment]
    for name, tuner in _autotuners().items():
        # do_bench is a cached property whose getter asks the driver for a timer: set the value
        vars(tuner)["do_bench"] = lambda call, quantiles=None: (call(), [1.0] * 3)[1]

        def bench(*args, config, _real=tuner._bench, _name=name, **meta):
            times = _real(*args, config=config, **meta)  # a compile error comes back as inf
            if times[0] == float("inf"):
                report.failures.append(f"autotune {_name} {config}: did not compile")
            elif limit is not None and seen[-1][2] > limit:  # a GPU's tuner skips it (OutOfResources)
                report.oversized[_name] = report.oversized.get(_name, 0) + 1
            else:
                report.candidates[_name] = report.candidates.get(_name, 0) + 1
            return times

        tuner._bench = bench
    for name in kernels.names():
        kernel = kernels.get(name).target()
        shape = kernel.default_shapes("cuda")[0]
        for impl_name, impl in kernel.all_impls().items():
            if not impl_name.startswith("triton"):
                continue
            try:
                impl.fn(*kernel.make_inputs(shape, kernel.dtypes[0], "cpu", torch.Generator().manual_seed(0)))
            except Exception as exc:  # noqa: BLE001
                report.failures.append(f"autotuned {name} ({impl_name}): {_first_line(exc)}")


def _recipe_step(spec: str) -> None:
    """One training step of ``spec`` on a tiny Llama, every format operation a kernel takes sent to it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from suite.bench import recipes
    from suite.numerics import compiled, dispatch

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    entry = recipes.prepare(spec, LlamaForCausalLM(config), "cpu")
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    dispatch.reset_counts()  # this recipe's operations only
    with dispatch.kernels("triton"), compiled.emulation("off"), entry["policy"].autocast("cpu"):
        loss = entry["model"](input_ids=ids, labels=ids).loss
        loss.backward()
    with dispatch.kernels("triton"), compiled.emulation("off"):
        entry["optimizer"].step()
    if not dispatch.kernel_fraction(dispatch.counts()):
        raise RuntimeError("no format operation went to a kernel")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    # a CompilationError names the source position first and the cause last
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:400]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=int, default=90, help="CUDA compute capability x 10 (90: Hopper)")
    p.add_argument("--recipes", nargs="*", default=list(RECIPES), help="recipe specs, each one argument (none: none)")
    p.add_argument("--no-candidates", action="store_true", help="skip compiling every autotune candidate")
    p.add_argument("--json", default="", help="also write the report here")
    args = p.parse_args(argv)
    report = check(args.arch, tuple(args.recipes), candidates=not args.no_candidates)
    for name, fns in {**report.kernels, **{f"recipe {k}": v for k, v in report.recipes.items()}}.items():
        print(f"  {name:40s} {', '.join(fns) or '-'}")
    for name, n in report.candidates.items():
        over = report.oversized.get(name, 0)
        print(f"  autotune {name:31s} {n} candidates" + (f" (+{over} over the shared memory)" if over else ""))
    print(f"sm_{report.arch}: {report.specialisations} kernel variants compiled to cubin, "
          f"{len(report.failures)} failures")
    for failure in report.failures:
        print(f"FAILED {failure}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({**asdict(report), "ok": report.ok}, fh, indent=2)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
