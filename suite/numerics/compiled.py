"""Fast emulation: the recipes' quantise-dequantise functions fused by ``torch.compile``.

An emulated low-precision GEMM spends most of its time outside the product: each operand's
fake quantisation is a dozen elementwise passes over it in eager PyTorch (block amax, scale,
divide, round, multiply back), each one reading and writing the whole tensor. Compiled, a
quantiser is one or two fused loops. ``fused(fn)`` marks such a function; the mode decides
whether it runs compiled:

* ``auto`` (default): compiled where ``torch.compile`` can build code for the tensor's device
  (a C++ compiler for the CPU, Triton for CUDA) and the operand has at least ``AUTO_MIN_NUMEL``
  elements, else eager; a function that fails to compile warns once and runs eager;
* ``on``: always compiled (an error where it cannot be);
* ``off``: always the eager function.

A fused function must be pure tensor arithmetic (no generator: a stochastic quantiser takes its
uniforms as a tensor drawn eagerly from the layer's generator, so the random stream is the same
in both modes), and its compiled form must equal the eager one bit for bit:
``tests/test_fast_emulation.py`` holds every fused quantiser and a few training steps of the
recipes to it. Inductor's C++ code for the CPU keeps IEEE semantics for these operations (no
reassociation, no FMA contraction of the elementwise code; ``round`` is half to even), which is
what makes that hold. Its Triton code for CUDA does not by default (approximate division,
contracted multiply-adds, denormals flushed, Triton's own libdevice), so on CUDA a function is
compiled with ``EAGER_NUMERICS``, inductor's settings that keep eager's rounding; no GPU has run
the equality test yet.

Shapes: each function is compiled with ``dynamic=False`` (one specialised loop nest per operand
shape, about ten per model: the fastest code), and the recompile limit is raised to
``RECOMPILE_LIMIT`` shapes per function, past which dynamo warns and runs eager. The first call
at a shape pays the compilation (seconds); benchmarks keep it in their warm-up.

Why a size floor in ``auto``: compiled, a quantiser is faster at every size measured (from
64 x 64 up), but compiling one takes about a second per shape (less from inductor's on-disk
cache). Below 2^16 elements a call saves at most a few tenths of a millisecond, so the compile
pays only after thousands of steps; the tiny models of tests and smoke runs never get there,
while every operand of a model the size of ``llama-10m`` (width 256, 1024 tokens) is above it.

``counts`` says how many calls ran compiled or eager (a cell stores the share as
``train_compiled_fraction``), like ``suite.numerics.dispatch`` does for the kernels.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections import Counter
from collections.abc import Callable
from typing import Any

from suite.numerics.switch import ModeSwitch

MODES = ("auto", "on", "off")
RECOMPILE_LIMIT = 64  # operand shapes per fused function (a model has about ten)
AUTO_MIN_NUMEL = 1 << 16  # auto: smaller operands stay eager (see the module docstring)
# inductor options for CUDA: IEEE division, no FMA contraction (emulate_precision_casts, which also
# takes PyTorch's libdevice for transcendental functions), no flush of denormals to zero
EAGER_NUMERICS = {"emulate_precision_casts": True, "eager_numerics.division_rounding": True,
                  "eager_numerics.disable_ftz": True}

_SWITCH = ModeSwitch("--fast-emulation", MODES)
check_mode = _SWITCH.check
emulation = _SWITCH.using  # ``with emulation("off"): ...`` runs the body with that mode
current_mode = _SWITCH.current
_COUNTS: Counter[tuple[str, str]] = Counter()


@functools.cache
def unavailable(device_type: str) -> str:
    """Why ``torch.compile`` cannot build code for this device type here ('' where it can)."""
    if device_type == "cpu":
        compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
        return "" if compiler else "no C++ compiler found (inductor builds CPU code with one; set CXX)"
    if device_type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed (inductor builds CUDA code with it)"
        return ""
    return f"torch.compile is not used for device type '{device_type}' here"


def active(device_type: str, mode: str | None = None) -> bool:
    """Whether fused functions run compiled for tensors on ``device_type`` under ``mode``."""
    mode = mode or current_mode()
    if mode == "off":
        return False
    why = unavailable(device_type)
    if mode == "on" and why:
        from suite.errors import UserError

        raise UserError(f"--fast-emulation on: {why}; use --fast-emulation off (or auto)")
    return not why


def fused(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (tensors in, tensors out, no generator) compiled where the mode allows, else as is.
    Compiled lazily at the first compiled call; ``.eager`` is the plain function."""
    compiled: dict[str, Callable[..., Any]] = {}  # by device type
    failed: list[str] = []  # auto: why this function could not be compiled (then it runs eager)
    name = getattr(fn, "__qualname__", repr(fn))

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        import torch

        if torch.compiler.is_compiling():  # called from another fused function: inline it
            return fn(*args, **kwargs)
        first = next((a for a in args if hasattr(a, "device")), None)
        mode = current_mode()
        small = mode == "auto" and first is not None and first.numel() < AUTO_MIN_NUMEL
        if first is None or small or (failed and mode == "auto") or not active(first.device.type, mode):
            _COUNTS[(name, "eager")] += 1
            return fn(*args, **kwargs)
        device_type = first.device.type
        if device_type not in compiled:
            import torch._dynamo

            limit = torch._dynamo.config.recompile_limit
            torch._dynamo.config.recompile_limit = max(limit, RECOMPILE_LIMIT)
            options = EAGER_NUMERICS if device_type == "cuda" else None
            compiled[device_type] = torch.compile(fn, dynamic=False, fullgraph=True, options=options)
        try:
            out = compiled[device_type](*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - auto falls back to the same function, eager
            if mode != "auto":
                raise
            import warnings

            out = fn(*args, **kwargs)  # an error of the function itself is raised here, as eager would
            failed.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
            warnings.warn(f"suite.numerics.compiled: {name} could not be compiled ({failed[0]}); it runs eager "
                          f"from now on (--fast-emulation on would raise instead)", RuntimeWarning, stacklevel=2)
            _COUNTS[(name, "eager")] += 1
            return out
        _COUNTS[(name, "compiled")] += 1
        return out

    run.eager = fn  # type: ignore[attr-defined]
    return run


def counts() -> dict[tuple[str, str], int]:
    """(function, ``compiled`` or ``eager``) -> calls since the last ``reset_counts``."""
    return dict(_COUNTS)


def reset_counts() -> None:
    _COUNTS.clear()


def compiled_fraction(seen: dict[tuple[str, str], int]) -> float:
    """The share of the counted calls that ran compiled."""
    total = sum(seen.values())
    return sum(n for (_, how), n in seen.items() if how == "compiled") / total if total else 0.0
