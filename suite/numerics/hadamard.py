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

Full size beyond powers of two (``apply_hadamard``)
---------------------------------------------------
HALO (IST-DASLab/HALO, ``qllmt/functional/hadamard.py``) rotates a whole dimension ``n = K 2^m``
by a Kronecker product: the ``(K, 2^m)`` view of a row gets the Sylvester transform along
``2^m`` and ``H_K`` from the left, ``K`` from a short list of Hadamard orders, so layer widths
such as 352 = 44 x 8 get one rotation instead of blocks of 32. The factors ``H_K``
here come from Paley's constructions (``paley_hadamard``), built on demand and checked
orthogonal: any Hadamard matrix of order ``K`` makes the product an orthonormal rotation with
entries ``+-1/sqrt(n)``, which is what the quantiser needs. HALO's list also has 156 and 172
(Williamson matrices, no Paley construction); those widths are refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch

from suite.errors import UserError

__all__ = [
    "is_power_of_two", "hadamard_block_size", "hadamard_matrix", "block_hadamard_matrix",
    "hadamard_scale", "random_signs", "fwht", "apply_block_hadamard",
    "KRONECKER_ORDERS", "paley_hadamard", "hadamard_factor", "next_hadamard_size",
    "full_hadamard_matrix", "apply_hadamard",
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
    kernels repeat. The stages run a few per pass (``butterfly_passes``).
    """
    shape = x.shape
    n = shape[-1]
    _check_block(n, block)
    return butterfly_passes(x.reshape(-1, n), block, along_rows=True).reshape(shape)


def butterfly_passes(u: torch.Tensor, block: int, radix: int = 8, along_rows: bool = False) -> torch.Tensor:
    """``fwht`` along the first dimension of ``u`` ``[n, cols]`` (blocks of ``block`` rows), or
    along its rows (``along_rows``: ``u`` is ``[rows, n]``): the stages of strides 1, 2, ...,
    block/2 in that order, ``radix`` (a power of two) consecutive stages per pass, each stage the
    pairs ``(a, b) -> (a + b, a - b)``. Why passes: a pass reads and writes the tensor once
    (compiled, one loop of loads, additions and stores), where a stage at a time would write an
    intermediate per stage; the additions and their order are the stages', so the result is the
    same bit for bit."""
    shape = u.shape
    n = shape[-1] if along_rows else shape[0]
    step = 1
    while step < block:
        r = min(radix, block // step)
        if along_rows:
            y = u.reshape(shape[0], n // (r * step), r, step)
            xs = [y[:, :, i] for i in range(r)]
        else:
            y = u.reshape(n // (r * step), r, step, shape[1])
            xs = [y[:, i] for i in range(r)]
        stride = 1
        while stride < r:  # stage of stride ``step * stride`` on the pass's r values
            nxt = list(xs)
            for i in range(r):
                if not i & stride:
                    nxt[i], nxt[i + stride] = xs[i] + xs[i + stride], xs[i] - xs[i + stride]
            xs = nxt
            stride *= 2
        u = torch.stack(xs, dim=2 if along_rows else 1).reshape(shape)
        step *= r
    return u


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



def rotate_blocks(x: torch.Tensor, block: int, signs: torch.Tensor | None = None) -> torch.Tensor:
    """The rotation a rotate-and-quantise kernel applies before it quantises: the butterflies of
    ``apply_block_hadamard(method="fast")`` in blocks of ``block`` along the last dim, after ``x``
    times ``signs`` (a vector of ``block`` +-1, repeated over the blocks) where given; ``block`` 0:
    ``x`` unchanged. The references of those operations rotate with it, so a kernel that repeats
    the butterflies equals them bit for bit."""
    if not block:
        return x
    if signs is not None and tuple(signs.shape) != (block,):
        raise UserError(f"the signs of a {block}-point block rotation must be a vector of {block} values (+-1), "
                        f"got shape {tuple(signs.shape)}")
    full = None if signs is None else signs.to(x.dtype).repeat(x.shape[-1] // block)
    return apply_block_hadamard(x, block, signs=full, method="fast")

# -- full size: H_K (x) H_(2^m), HALO's Kronecker construction -------------------------------------------
# HALO's non-power-of-two factors with a Paley construction: order -> (construction, q)
# (I: q + 1 for a prime q = 3 mod 4; II: 2 (q + 1) for a prime power q = 1 mod 4). Its 40 is
# 2 x 20 (covered by 20), its 156 and 172 are Williamson matrices, not built here.
_PALEY = {12: (1, 11), 20: (1, 19), 28: (2, 13), 36: (2, 17), 44: (1, 43), 52: (2, 25), 60: (1, 59),
          100: (2, 49), 108: (1, 107), 140: (1, 139)}
KRONECKER_ORDERS = tuple(sorted(_PALEY))
_PALEY_CACHE: dict[int, torch.Tensor] = {}


def _quadratic_character(q: int) -> list[list[int]]:
    """``chi(e_i - e_j)`` over the field of ``q`` elements (a prime or the square of one):
    +1 for a non-zero square, -1 for a non-square, 0 on the diagonal."""
    p = q if all(q % d for d in range(2, int(q ** 0.5) + 1)) else int(round(q ** 0.5))
    if p * p == q:  # GF(p^2) as pairs (a, b) = a + b t with t^2 = r, r a non-residue mod p
        r = next(v for v in range(2, p) if pow(v, (p - 1) // 2, p) == p - 1)
        elements = [(a, b) for b in range(p) for a in range(p)]
        squares = {((a * a + r * b * b) % p, (2 * a * b) % p) for a, b in elements if (a, b) != (0, 0)}

        def diff(x: tuple, y: tuple) -> tuple:
            return ((x[0] - y[0]) % p, (x[1] - y[1]) % p)
    else:
        elements = list(range(q))
        squares = {(a * a) % q for a in range(1, q)}

        def diff(x: int, y: int) -> int:
            return (x - y) % q
    zero = elements[0]
    return [[0 if diff(x, y) == zero else (1 if diff(x, y) in squares else -1) for y in elements]
            for x in elements]


def paley_hadamard(order: int) -> torch.Tensor:
    """A +-1 Hadamard matrix of ``order`` (one of ``KRONECKER_ORDERS``) in float64, from Paley's
    first or second construction; ``H H^T = order I`` is checked before it is returned."""
    if order in _PALEY_CACHE:
        return _PALEY_CACHE[order]
    if order not in _PALEY:
        raise UserError(f"no Hadamard matrix of order {order} is built here; orders: {KRONECKER_ORDERS}")
    kind, q = _PALEY[order]
    jac = torch.tensor(_quadratic_character(q), dtype=torch.float64)
    ones = torch.ones(q, 1, dtype=torch.float64)
    if kind == 1:  # q = 3 mod 4: I + [[0, 1^T], [-1, Q]]
        s = torch.cat([torch.cat([torch.zeros(1, 1, dtype=torch.float64), ones.t()], 1),
                       torch.cat([-ones, jac], 1)], 0)
        h = torch.eye(q + 1, dtype=torch.float64) + s
    else:  # q = 1 mod 4: [[0, 1^T], [1, Q]] (x) [[1, -1], [-1, -1]] + I (x) [[1, 1], [1, -1]]
        c = torch.cat([torch.cat([torch.zeros(1, 1, dtype=torch.float64), ones.t()], 1),
                       torch.cat([ones, jac], 1)], 0)
        a = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
        b = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
        h = torch.kron(c, a) + torch.kron(torch.eye(q + 1, dtype=torch.float64), b)
    if h.shape != (order, order) or not torch.equal(h @ h.t(), order * torch.eye(order, dtype=torch.float64)):
        raise AssertionError(f"the Paley construction of order {order} is not a Hadamard matrix")
    _PALEY_CACHE[order] = h
    return h


def hadamard_factor(n: int) -> tuple[int, int] | None:
    """``(K, 2^m)`` with ``n = K 2^m`` and a Hadamard matrix of order ``K`` here (``K = 1`` for a
    power of two), or None: the factors of the full-size transform of a dimension ``n``."""
    if n >= 1 and is_power_of_two(n):
        return 1, n
    for k in KRONECKER_ORDERS:
        if n % k == 0 and is_power_of_two(n // k):
            return k, n // k
    return None


def next_hadamard_size(n: int) -> int:
    """The smallest size ``>= n`` that ``hadamard_factor`` takes (where zero padding must go)."""
    size = max(int(n), 1)
    while hadamard_factor(size) is None:
        size += 1
    return size


def _full_factor(n: int) -> tuple[int, int]:
    factor = hadamard_factor(n)
    if factor is None:
        raise UserError(f"no full-size Hadamard transform of {n} here: it takes a power of two, or one "
                        f"times {', '.join(map(str, KRONECKER_ORDERS))} (the next size that does is "
                        f"{next_hadamard_size(n)})")
    return factor


def full_hadamard_matrix(n: int, device: Any = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The orthonormal ``n x n`` matrix of ``apply_hadamard``: ``(H_K^T (x) H_(2^m)) / sqrt(n)``
    (a row times it is HALO's ``H_K`` from the left on the ``(K, 2^m)`` view), built in float64
    (for tests and analysis: the transform never builds it)."""
    k, p = _full_factor(n)
    h = torch.kron(paley_hadamard(k).t().contiguous() if k > 1 else torch.ones(1, 1, dtype=torch.float64), _sylvester(p))
    return (h / math.sqrt(n)).to(device=device, dtype=dtype)


def apply_hadamard(x: torch.Tensor, *, signs: torch.Tensor | None = None, inverse: bool = False,
                   method: Literal["dense", "fast"] = "fast",
                   butterflies: Callable[[torch.Tensor, int], torch.Tensor] = fwht) -> torch.Tensor:
    """``x`` times the full-size orthonormal Hadamard of its last dimension ``n``:
    ``x @ full_hadamard_matrix(n)``, with random ``signs`` as in ``apply_block_hadamard``, and
    ``inverse`` its transpose (``H_K`` need not be symmetric). A power of two is
    ``apply_block_hadamard(x, n, ...)``; otherwise, as HALO's ``matmul_hadU_cuda``, the ``2^m``
    part runs as butterflies (or dense) on the ``(K, 2^m)`` view, ``H_K`` multiplies it from
    the left (``H_K^T`` to invert), then one multiplication by ``1/sqrt(n)``. ``butterflies``: what
    runs ``fwht(y, 2^m)`` there (the training recipes pass a fused form of it, equal bit for bit)."""
    n = x.shape[-1]
    k, p = _full_factor(n)
    if k == 1:
        return apply_block_hadamard(x, n, signs=signs, inverse=inverse, method=method)
    s = None if signs is None else _sign_vector(signs, n, like=x)
    if s is not None and not inverse:
        x = x * s
    shape = x.shape
    y = x.reshape(*shape[:-1], k, p)
    if p > 1:
        y = butterflies(y, p) if method == "fast" else y @ _sylvester(p).to(device=x.device, dtype=x.dtype)
    hk = paley_hadamard(k).to(device=x.device, dtype=x.dtype)
    y = torch.matmul(hk.t() if inverse else hk, y)
    y = (y * torch.tensor(n ** -0.5, dtype=x.dtype, device=x.device)).reshape(shape)
    if s is not None and inverse:
        y = y * s
    return y
