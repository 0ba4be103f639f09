"""One number-format operation, several implementations: the device and shape choose, a setting forces.

A recipe, a QAT layer or a quantizer calls an operation (``call("fake_quantize", reference, x,
fmt)``) with its PyTorch reference; a kernel plugin registers a faster implementation of the
same operation (``register``) with the inputs it supports. The mode decides which runs:

* ``auto`` (default): a registered implementation where it supports the input on a CUDA device,
  else the reference;
* ``triton``: a registered implementation wherever it supports the input, the CPU included
  under ``TRITON_INTERPRET=1`` (how CI proves a kernel equal to its reference inside a recipe);
* ``torch``: always the reference.

Implementations must equal the reference bit for bit (``tests/test_kernel_dispatch.py`` holds
each one to it), so the mode changes speed, never a number. ``counts`` says which ran, so a cell
records the share of its operations a kernel served; ``calls`` says which operations on which
formats ran (``key``: the operation and its non-tensor arguments), and an implementation's
``timed_by`` names the benchmark kernels (``suite bench kernels``) that time its work for such a
key, so the kernel table lists the methods that run each kernel (``suite.bench.methods``).

Core, like the rest of ``suite.numerics``: it imports no kernel; the kernels register themselves
when their plugin package loads (``suite.registry.KERNELS``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from suite.numerics.switch import ModeSwitch

MODES = ("auto", "triton", "torch")
REFERENCE = "torch"

_SWITCH = ModeSwitch("--kernels", MODES)
check_mode = _SWITCH.check
kernels = _SWITCH.using  # ``with kernels("torch"): ...`` runs the body with that mode
current_mode = _SWITCH.current


@dataclass(frozen=True)
class Implementation:
    """A registered implementation of an operation; ``supports(on_cpu_too, *args, **kw)`` says whether
    it takes these inputs (``on_cpu_too``: the mode allows a CPU tensor, under the interpreter)."""

    name: str
    run: Callable[..., Any]
    supports: Callable[..., bool]
    timed_by: Callable[..., tuple[str, ...]] | None = None  # (*key[1:]) -> benchmark kernel names


def key(op: str, *args: Any, **kwargs: Any) -> tuple:
    """What a call is, without its data: the operation and its non-tensor arguments, in order
    (keywords by name), e.g. ``("fake_quantize", "mxfp4")``."""
    def plain(v: Any) -> bool:
        return isinstance(v, (str, int, float, bool, type(None)))

    return (op, *(a for a in args if plain(a)), *(f"{k}={v}" for k, v in sorted(kwargs.items()) if plain(v)))


_REGISTRY: dict[str, list[Implementation]] = {}
_COUNTS: Counter[tuple[str, str]] = Counter()
_CALLS: Counter[tuple] = Counter()


def register(op: str, name: str, run: Callable[..., Any], supports: Callable[..., bool],
             timed_by: Callable[..., tuple[str, ...]] | None = None) -> None:
    """Register ``run`` as an implementation of ``op`` (the latest registration of a name wins);
    ``timed_by(*key[1:])`` names the benchmark kernels that time what it runs for a call ``key``."""
    impls = [i for i in _REGISTRY.get(op, []) if i.name != name]
    _REGISTRY[op] = [*impls, Implementation(name, run, supports, timed_by)]


def registered(op: str) -> list[Implementation]:
    return list(_REGISTRY.get(op, ()))


def implementations(op: str) -> list[str]:
    return [i.name for i in _REGISTRY.get(op, [])]


def interpreted() -> bool:
    """Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``): correct, not fast."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in {"1", "true", "yes", "on"}


def call(op: str, reference: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``op`` on these inputs: the first registered implementation the mode allows and that supports
    them, else ``reference``."""
    mode = current_mode()
    _CALLS[key(op, *args, **kwargs)] += 1
    if mode != "torch":
        on_cpu_too = mode == "triton" and interpreted()
        for impl in _REGISTRY.get(op, ()):
            if impl.supports(on_cpu_too, *args, **kwargs):
                _COUNTS[(op, impl.name)] += 1
                return impl.run(*args, **kwargs)
    _COUNTS[(op, REFERENCE)] += 1
    return reference(*args, **kwargs)


def unserved(op: str) -> None:
    """Count a format operation that has no dispatched form (it always runs in PyTorch), so
    ``kernel_fraction`` is the share of all of a cell's format operations, not of the dispatched ones."""
    _COUNTS[(op, REFERENCE)] += 1


def counts() -> dict[tuple[str, str], int]:
    """(operation, implementation) -> calls since the last ``reset_counts``."""
    return dict(_COUNTS)


def calls() -> dict[tuple, int]:
    """Call ``key`` -> calls since the last ``reset_counts``, whichever implementation served them."""
    return dict(_CALLS)


def reset_counts() -> None:
    _COUNTS.clear()
    _CALLS.clear()


def kernel_fraction(seen: dict[tuple[str, str], int]) -> float:
    """The share of the counted calls that a registered implementation (not the reference) served."""
    total = sum(seen.values())
    return sum(n for (_, impl), n in seen.items() if impl != REFERENCE) / total if total else 0.0
