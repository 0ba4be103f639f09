"""Rounding, defined once: round-to-nearest-even and stochastic rounding onto a grid of
values or onto the integers, for every element codec (``elements``), integer format
(``formats``) and, later, the low-precision training recipes.

Modes (``rounding``)
--------------------
* ``"nearest"``: round half to even (IEEE), as hardware casts and ``torch.round`` do. NF4
  uses ties-to-the-lower-code instead (``tie="low"``), the comparison torchao's reference
  makes, so that its tensors serve as oracle.
* ``"stochastic"``: round up with probability equal to the distance from the lower
  neighbour (in units of the gap), so the expectation equals the input. The uniforms come
  from ``generator`` (a ``torch.Generator``) or are given as ``noise`` (a tensor of
  uniforms in [0, 1) shaped like the input), which lets a kernel be fed the very same
  random numbers and be compared bit for bit.
"""

from __future__ import annotations

import torch

__all__ = ["ROUNDING_MODES", "uniform_like", "round_on_grid", "round_int"]

ROUNDING_MODES = ("nearest", "stochastic")


def uniform_like(x: torch.Tensor, generator: torch.Generator | None = None,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
    """float32 uniforms in [0, 1) shaped like ``x``: ``noise`` when given (checked), else drawn."""
    if noise is not None:
        if noise.shape != x.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(x.shape)}")
        return noise.to(device=x.device, dtype=torch.float32)
    return torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)


def round_on_grid(a: torch.Tensor, grid: torch.Tensor, rounding: str, *,
                  tie: str, generator: torch.Generator | None = None,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
    """Index into the ascending ``grid`` of the rounded value of ``a`` (``a`` within range).

    ``tie``: ``"even"`` (ties to the even index, IEEE) or ``"low"`` (ties to the lower one).
    """
    idx = torch.searchsorted(grid, a.contiguous()).clamp_(max=grid.numel() - 1)
    lower = (idx - 1).clamp(min=0)
    hi, lo = grid[idx], grid[lower]
    exact = a == hi
    if rounding == "nearest":
        if tie == "even":
            mid = (lo + hi) * 0.5  # exact for the formats here (few mantissa bits)
            take_lo = (a < mid) | ((a == mid) & (lower % 2 == 0))
        else:  # the comparison torchao's NF4 reference makes: |a - lo| <= |hi - a|
            take_lo = (a - lo) <= (hi - a)
    elif rounding == "stochastic":
        p_up = (a - lo) / (hi - lo)
        take_lo = uniform_like(a, generator, noise) >= p_up
    else:
        raise ValueError(f"unknown rounding '{rounding}'")
    return torch.where(exact, idx, torch.where(take_lo, lower, idx))


def round_int(v: torch.Tensor, rounding: str = "nearest", *,
              generator: torch.Generator | None = None,
              noise: torch.Tensor | None = None) -> torch.Tensor:
    """Round to integers: half-to-even (``torch.round``) or stochastic ``floor(v + u)``."""
    if rounding == "nearest":
        return torch.round(v)
    if rounding == "stochastic":
        return torch.floor(v + uniform_like(v, generator, noise))
    raise ValueError(f"unknown rounding '{rounding}'")
