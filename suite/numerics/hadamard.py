"""Hadamard transforms, defined once: QuaRot's rotation (``suite.methods.quant``), the
reference of the Hadamard-quantise kernels (``suite.kernels.hadamard``) and rotated
low-precision training all call the functions here, so their rotations are one map.

Definition
----------
``H_n`` is the Sylvester Hadamard matrix of a power-of-two size ``n``: ``H_1 = [1]``,
``H_2k = [[H_k, H_k], [H_k, -H_k]]``. Normalised, ``H_n / sqrt(n)`` is symmetric and
orthonormal, hence its own inverse. The *block* transform of a last dimension ``N``
multiplies by ``diag(H_b, ..., H_b) / sqrt(b)`` (``N / b`` blocks of size ``b``): it
mixes values only within a block, as the kernels (blocks of 16/32/128 that match the
scale blocks) and QuaRot (the largest power of two dividing ``N``) need.

Optional random signs ``s`` (a +-1 vector over the last dimension, ``random_signs``) give
the randomised Hadamard transform ``x -> (x * s) @ diag(H_b, ...) / sqrt(b)``, whose
matrix is ``diag(s) @ diag(H_b, ...) / sqrt(b)``: still orthonormal, no longer symmetric,
so its inverse (``inverse=True``) is ``y -> (y @ diag(H_b, ...) / sqrt(b)) * s``.

Two forms of the same linear map (``method`` of ``apply_block_hadamard``)
--------------------------------------------------------------------------
* ``"dense"``: ``x @ H`` with the normalised matrix built exactly in float64, then cast to
  ``x``'s dtype; one batched matmul in that dtype. Use it where the rotation is part of a
  model (QuaRot's ``QuantLinear`` rotates weights once and activations in the forward
  pass, in the model's dtype, through the usual matmul kernels) and as the textbook
  oracle. ``O(N b)`` multiply-adds per row.
* ``"fast"``: the Walsh-Hadamard butterflies (``fwht``) with strides 1, 2, ..., b/2, then
  one multiplication by ``1/sqrt(b)`` rounded to ``x``'s dtype (``hadamard_scale``).
  ``O(N log b)`` additions in a fixed order, which a kernel can repeat addition for
  addition: in float32 it is the reference the Triton Hadamard-quantise kernels match
  bit for bit. Use it for large blocks, and whenever results must agree with a kernel.

The two agree up to the rounding of ``x``'s dtype (exactly where every sum is exact, e.g.
small integers through the unnormalised forms); tests/test_numerics.py checks this.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from suite.errors import UserError

__all__ = [
    "is_power_of_two", "hadamard_block_size", "hadamard_matrix", "block_hadamard_matrix",
    "hadamard_scale", "random_signs", "fwht", "apply_block_hadamard",
]


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _check_block(n: int, block: int) -> None:
    """A block size must be a power of two that divides the last dimension ``n``."""
    if not is_power_of_two(block):
        raise UserError(f"a Hadamard block size must be a power of two, got {block}")
    if n % block:
        raise UserError(
            f"a Hadamard block of {block} does not divide the last dimension {n}; choose a "
            f"power of two that divides it (the largest is {hadamard_block_size(n)})"
        )


def hadamard_block_size(n: int, max_block: int = 1 << 30) -> int:
    """The largest power of two that divides ``n``, capped at ``max_block``: the block of
    the block-diagonal Hadamard that fits a dimension ``n`` (QuaRot's choice)."""
    b = n & -n
    return min(b, max_block)


def _sylvester(n: int) -> torch.Tensor:
    """The unnormalised +-1 Sylvester matrix ``H_n`` in float64 (exact)."""
    if not is_power_of_two(n):
        raise UserError(f"a Hadamard matrix needs a power-of-two size, got {n}")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def _sign_vector(signs: torch.Tensor, n: int, like: torch.Tensor | None = None) -> torch.Tensor:
    """``signs`` checked to be a vector over a last dimension of ``n``, cast to ``like``'s
    device and dtype (to exact float64 on the CPU, for building a matrix, without ``like``)."""
    if tuple(signs.shape) != (n,):
        raise UserError(f"Hadamard signs must be a vector of {n} values (+-1) over the last "
                        f"dimension, got shape {tuple(signs.shape)}")
    if like is not None:
        return signs.to(device=like.device, dtype=like.dtype)
    return signs.detach().to(device="cpu", dtype=torch.float64)


def hadamard_matrix(n: int, device: Any = None, dtype: torch.dtype = torch.float32, *,
                    normalized: bool = True, signs: torch.Tensor | None = None) -> torch.Tensor:
    """The Sylvester Hadamard matrix of size ``n`` (a power of two), ``H_n / sqrt(n)`` when
    ``normalized`` (orthonormal and symmetric); with ``signs`` (``n`` values +-1) the
    randomised ``diag(signs) @ H``. Built in float64 and cast once, so every entry is the
    correctly rounded value in ``dtype``."""
    h = _sylvester(n)
    if normalized:
        h = h / math.sqrt(n)
    if signs is not None:
        h = _sign_vector(signs, n).reshape(n, 1) * h
    return h.to(device=device, dtype=dtype)


def block_hadamard_matrix(n: int, block: int, device: Any = None,
                          dtype: torch.dtype = torch.float32, *, normalized: bool = True,
                          signs: torch.Tensor | None = None) -> torch.Tensor:
    """The ``n x n`` matrix of the block transform: ``diag(H_b, ..., H_b)`` (normalised by
    ``1/sqrt(b)`` when ``normalized``), left-multiplied by ``diag(signs)`` when given, so
    that ``apply_block_hadamard(x, block, signs=s)`` equals ``x @`` this matrix. Meant for
    tests and analysis: the transforms never build it."""
    _check_block(n, block)
    h = _sylvester(block)
    if normalized:
        h = h / math.sqrt(block)
    full = torch.block_diag(*([h] * (n // block)))
    if signs is not None:
        full = _sign_vector(signs, n).reshape(n, 1) * full
    return full.to(device=device, dtype=dtype)


def hadamard_scale(block: int, dtype: torch.dtype = torch.float32) -> float:
    """``1/sqrt(block)`` rounded to ``dtype``: the one normalisation the fast form applies
    after its butterflies (kernels pass the float32 value to their device code)."""
    return float(torch.tensor(block ** -0.5, dtype=dtype))


def random_signs(n: int, generator: torch.Generator | None = None, device: Any = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` independent, equally likely +-1 values (drawn on the CPU, so a seeded
    ``generator`` gives the same signs on every device): the diagonal of a randomised
    Hadamard transform."""
    bits = torch.randint(0, 2, (n,), generator=generator)
    return (bits * 2 - 1).to(device=device, dtype=dtype)


def fwht(x: torch.Tensor, block: int) -> torch.Tensor:
    """Unnormalised block fast Walsh-Hadamard transform along the last dim, in ``x``'s dtype.

    Stages of stride 1, 2, ..., ``block``/2, each ``(a, b) -> (a + b, a - b)`` on pairs
    ``stride`` apart within groups of ``2 * stride``: per block this is ``x @ H_block``
    (Sylvester order), and the order of every addition is fixed, which the Triton
    kernels repeat.
    """
    shape = x.shape
    n = shape[-1]
    _check_block(n, block)
    x = x.reshape(-1, n)
    rows = x.shape[0]
    step = 1
    while step < block:
        y = x.reshape(rows, n // (2 * step), 2, step)
        a, b = y[:, :, 0], y[:, :, 1]
        x = torch.stack([a + b, a - b], dim=2).reshape(rows, n)
        step *= 2
    return x.reshape(shape)


def apply_block_hadamard(x: torch.Tensor, block: int, *, signs: torch.Tensor | None = None,
                         inverse: bool = False,
                         method: Literal["dense", "fast"] = "dense") -> torch.Tensor:
    """``x`` times the normalised block Hadamard along the last dim (blocks of ``block``),
    in ``x``'s dtype and differentiable.

    ``signs``: the randomised transform ``(x * signs) @ H`` (``signs`` over the last dim);
    ``inverse``: undo it, ``(x @ H) * signs`` (without signs the map is its own inverse).
    ``method``: ``"dense"`` (matmul with the float64-built matrix, what QuaRot's layer
    runs) or ``"fast"`` (butterflies, the kernels' reference); see the module docstring.
    """
    n = x.shape[-1]
    _check_block(n, block)
    s = None if signs is None else _sign_vector(signs, n, like=x)
    if s is not None and not inverse:
        x = x * s
    if method == "dense":
        h = hadamard_matrix(block, x.device, x.dtype)
        shape = x.shape
        y = (x.reshape(*shape[:-1], n // block, block) @ h).reshape(shape)
    elif method == "fast":
        y = fwht(x, block) * torch.tensor(block ** -0.5, dtype=x.dtype, device=x.device)
    else:
        raise ValueError(f"unknown Hadamard method {method!r}; use 'dense' or 'fast'")
    if s is not None and inverse:
        y = y * s
    return y
