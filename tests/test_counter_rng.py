"""The counter-based uniforms of stochastic rounding (``suite.numerics.counter_rng``).

Held to an independent port of ``lowbias32`` in plain Python integers (Chris Wellons,
github.com/skeeto/hash-prospector, README: ``x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15;
x *= 0x846ca68b; x ^= x >> 16`` on uint32), to the formula of the module docstring element by
element, and to what uniforms must be for stochastic rounding to stay unbiased: flat over their
range, uncorrelated between neighbours, different for different keys, fixed by the seed. The
Triton kernel's copy is held to these bits in ``tests/test_kernel_stochastic.py``.
"""

from __future__ import annotations

import torch

from suite.numerics.counter_rng import counter_uniforms, mix32, mul32, new_key


def lowbias32(x: int) -> int:
    """Wellons' lowbias32 on a Python int, wrapping to 32 bits after each product."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_the_hash_is_lowbias32_on_every_kind_of_word():
    g = torch.Generator().manual_seed(0)
    words = [0, 1, 2, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF,
             *torch.randint(0, 2 ** 32, (500,), generator=g, dtype=torch.int64).tolist()]
    ours = mix32(torch.tensor(words, dtype=torch.int64)).tolist()
    assert ours == [lowbias32(w) for w in words]
    assert mul32(torch.tensor([0xFFFFFFFF]), 0xFFFFFFFF).item() == (0xFFFFFFFF * 0xFFFFFFFF) & 0xFFFFFFFF
    assert lowbias32(1) != 1 and len({lowbias32(w) for w in range(4096)}) == 4096  # a bijection


def test_each_uniform_is_the_documented_function_of_its_index_and_key():
    key = torch.tensor([0xFFFFFFF0, 0x12345678])  # i + k0 wraps past 2^32 for i >= 16
    u = counter_uniforms((3, 40), key).flatten().tolist()
    for i in (0, 1, 15, 16, 17, 119):
        h = lowbias32(lowbias32((i + 0xFFFFFFF0) & 0xFFFFFFFF) ^ 0x12345678 ^ (i >> 32))
        assert u[i] == (h >> 8) / 2 ** 24
    assert all(0.0 <= v < 1.0 for v in u)


def test_the_uniforms_are_flat_uncorrelated_and_differ_between_keys():
    """2^20 draws: a chi-square over 64 equal bins, the mean, the lag-1 correlation, and two keys'
    streams. Fixed keys, so the check is deterministic; the bounds are far (> 5 sigma) outside
    what a uniform source shows."""
    n, bins = 1 << 20, 64
    u = counter_uniforms((n,), torch.tensor([7, 11])).double()
    counts = torch.bincount((u * bins).long(), minlength=bins).double()
    chi2 = float(((counts - n / bins) ** 2 / (n / bins)).sum())
    assert chi2 < 63 + 5 * (2 * 63) ** 0.5  # mean 63, sd sqrt(126)
    assert abs(float(u.mean()) - 0.5) < 5 * (1 / 12 / n) ** 0.5
    lag = float(torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1])
    assert abs(lag) < 5 / n ** 0.5
    other = counter_uniforms((n,), torch.tensor([8, 11])).double()
    assert abs(float(torch.corrcoef(torch.stack([u, other]))[0, 1])) < 5 / n ** 0.5
    assert float((u == other).double().mean()) < 1e-3


def test_a_seed_fixes_the_keys_and_successive_calls_get_new_ones():
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    keys_a = [new_key(a, "cpu") for _ in range(3)]
    keys_b = [new_key(b, "cpu") for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(keys_a, keys_b, strict=True))
    assert len({tuple(k.tolist()) for k in keys_a}) == 3
    assert all(k.dtype == torch.int64 and 0 <= k.min() and k.max() < 2 ** 32 for k in keys_a)


def test_the_int32_words_equal_the_int64_ones_at_every_key():
    """The fast int32 form (wrapping products) against the int64 one (exact 16-bit halves), with keys
    that wrap the counter and keys above 2^31 (negative as int32)."""
    from suite.numerics.counter_rng import counter_uniforms_int64

    for key in ([0, 0], [0xFFFFFFFF, 0xFFFFFFFF], [0x80000000, 0x7FFFFFFF], [0xFFFFFF00, 12345]):
        k = torch.tensor(key)
        assert torch.equal(counter_uniforms((33, 97), k), counter_uniforms_int64((33, 97), k)), key
