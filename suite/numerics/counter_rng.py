"""Uniforms for stochastic rounding from a counter-based hash: the same bits in PyTorch (eager and
compiled) and inside a Triton kernel.

A stochastic-rounding quantiser needs one uniform per element. Drawn from a ``torch.Generator``
(on a CPU, mt19937, one element at a time) they cost more than the quantiser itself, go to memory
and are read back, and a kernel cannot make them itself. Here the uniforms are a function of the
element's index and a per-call key instead: element ``i`` (row-major) of a call keyed ``(k0, k1)``
gets

    h = mix(mix((i + k0) mod 2^32) ^ k1 ^ (i >> 32)),    u = (h >> 8) / 2^24

where ``mix`` is ``lowbias32``, Chris Wellons' 32-bit integer hash (github.com/skeeto/hash-prospector:
a bijection of 32-bit words with a low avalanche bias). Within a call the uniforms of distinct
elements come from distinct 32-bit words, and a 24-bit uniform is what ``torch.rand`` gives a
float32 too. The key comes from the layer's generator (two 32-bit draws per call, ``new_key``), so
a seed still fixes the run.

PyTorch's unsigned 32-bit integers lack shifts and additions, so the words live in int32, whose
products wrap modulo 2^32 (two's complement: ATen's and inductor's vectorised multiplies), with the
right shifts masked to act as unsigned ones; a Triton kernel uses uint32. A tensor of 2^31 elements
or more indexes in int64 and forms each product from 16-bit halves (``mul32``, never overflowing).
All are exact integer arithmetic on the same words, so they agree bit for bit
(``tests/test_counter_rng.py``).
"""

from __future__ import annotations

import math

import torch

MASK32 = 0xFFFFFFFF
LOWBIAS32 = (0x7FEB352D, 0x846CA68B)  # lowbias32's multipliers (shifts 16, 15, 16)
INT32_INDEX_LIMIT = 1 << 31  # tensors below this many elements index in int32


def mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2^32`` for int64 ``x`` in ``[0, 2^32)`` and ``c < 2^32``: the low and high 16 bits
    of ``x`` times ``c`` stay below 2^48, so nothing overflows."""
    low = (x & 0xFFFF) * c
    high = ((x >> 16) * c) & 0xFFFF
    return (low + (high << 16)) & MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """``lowbias32`` of int64 ``x`` in ``[0, 2^32)``."""
    x = x ^ (x >> 16)
    x = mul32(x, LOWBIAS32[0])
    x = x ^ (x >> 15)
    x = mul32(x, LOWBIAS32[1])
    return x ^ (x >> 16)


def _signed(word: int) -> int:
    return word - (1 << 32) if word >= 1 << 31 else word


_LOWBIAS32_SIGNED = tuple(_signed(c) for c in LOWBIAS32)


def mix32_int32(x: torch.Tensor) -> torch.Tensor:
    """``lowbias32`` of int32 ``x`` holding the 32-bit words (wrapping products, masked shifts)."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _LOWBIAS32_SIGNED[0]
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * _LOWBIAS32_SIGNED[1]
    return x ^ ((x >> 16) & 0xFFFF)


def counter_uniforms(shape: tuple[int, ...], key: torch.Tensor) -> torch.Tensor:
    """float32 uniforms in ``[0, 1)`` (multiples of 2^-24) for a tensor of ``shape``, from ``key``
    (int64, two words in ``[0, 2^32)``), on ``key``'s device."""
    n = math.prod(shape)
    if n >= INT32_INDEX_LIMIT:
        return counter_uniforms_int64(shape, key)
    k = torch.where(key >= 1 << 31, key - (1 << 32), key).to(torch.int32)
    i = torch.arange(n, dtype=torch.int32, device=key.device).reshape(shape)
    h = mix32_int32(mix32_int32(i + k[0]) ^ k[1])
    return ((h >> 8) & 0xFFFFFF).to(torch.float32) * 2.0 ** -24


def counter_uniforms_int64(shape: tuple[int, ...], key: torch.Tensor) -> torch.Tensor:
    """``counter_uniforms`` with int64 indices (any size; slower: products from 16-bit halves)."""
    i = torch.arange(math.prod(shape), dtype=torch.int64, device=key.device).reshape(shape)
    h = mix32(((i & MASK32) + key[0]) & MASK32)
    h = mix32(h ^ key[1] ^ (i >> 32))
    return (h >> 8).to(torch.float32) * 2.0 ** -24


def new_key(generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """A call's key: two 32-bit words drawn from ``generator`` (its device), moved to ``device``."""
    gen_device = generator.device if generator is not None else "cpu"
    key = torch.randint(0, MASK32 + 1, (2,), generator=generator, dtype=torch.int64, device=gen_device)
    return key.to(device)
