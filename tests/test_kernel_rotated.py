"""Rotate-and-quantise and QuEST through the kernels: one Triton pass equals its reference bit for bit.

Quartet's forward (32-point Hadamard, then MXFP4 with QuEST's RMS scale and clip mask), its backward
(32-point Hadamard with fresh random signs, then MXFP4 over 3/4 with stochastic rounding by the
counter-based uniforms of a key) and the
NVFP4 recipe's weight gradient (16-point random-sign Hadamard, then NVFP4 stochastic or to nearest)
are each one dispatched call (``hadamard=<points>``). The references rotate with the butterflies of
``suite.numerics.hadamard.rotate_blocks`` and quantise with the recipes' quantisers; here they are
held to independent definitions (the dense Hadamard matrix, the formats module's quantisers, fed
the same uniforms), and the kernel to them, in Triton's interpreter on a CPU. No timing is judged.
"""

from __future__ import annotations

import pytest
import torch

from suite.methods.train import gemm as G
from suite.numerics import dispatch
from suite.numerics import formats as F
from suite.numerics.counter_rng import counter_uniforms, new_key
from suite.numerics.hadamard import hadamard_matrix, rotate_blocks
from suite.numerics.stochastic import fake_quantize_keyed, fake_quantize_stochastic

pytestmark = pytest.mark.skipif(not dispatch.interpreted() and not torch.cuda.is_available(),
                                reason="needs a GPU or TRITON_INTERPRET=1")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPES = [(1, 32), (37, 64), (5, 96), (130, 256)]


@pytest.fixture(scope="module", autouse=True)
def kernels_registered():
    from suite.registry import KERNELS

    KERNELS.names()
    assert "triton" in dispatch.implementations("fake_quantize_quest")


def _values(shape, seed: int = 0) -> torch.Tensor:
    """Every binade, a zero block, a constant block (QuEST: no spread, saturates) and exact E2M1 ties."""
    g = torch.Generator().manual_seed(seed + sum(shape))
    x = torch.randn(shape, generator=g) * torch.logspace(-3, 3, shape[1])
    x[0, :32] = 0.0
    if shape[0] > 2:
        x[1, :32] = 1.5
        x[2, :32] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0] * 4)
    return x.to(DEVICE)


def _signs(n: int, seed: int = 1) -> torch.Tensor:
    bits = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed))
    return (bits * 2 - 1).float().to(DEVICE)


def _served(op: str, reference, *args, **kwargs):
    dispatch.reset_counts()
    with dispatch.kernels("triton"):
        out = dispatch.call(op, reference, *args, **kwargs)
    assert dispatch.counts() == {(op, "triton"): 1}
    return out


def test_the_rotation_is_the_block_hadamard_matrix_after_the_signs():
    """``rotate_blocks`` (the references' rotation) against the dense normalised Sylvester matrix,
    built in float64: (x * signs) @ H per block, to float32 rounding."""
    x = _values((9, 96)).cpu().double()
    for block, signs in ((16, _signs(16).cpu()), (32, None), (32, _signs(32).cpu())):
        dense = x * (1 if signs is None else signs.double().repeat(96 // block))
        dense = (dense.reshape(9, -1, block) @ hadamard_matrix(block, dtype=torch.float64)).reshape(9, 96)
        ours = rotate_blocks(x.float(), block, signs).double()
        assert torch.allclose(ours, dense, rtol=1e-5, atol=1e-5 * dense.abs().max().item())


@pytest.mark.parametrize("hadamard", [0, 32])
@pytest.mark.parametrize("shape", SHAPES)
def test_the_quest_kernel_equals_the_reference_values_and_mask(shape, hadamard):
    x = _values(shape)
    values, mask = G.quest_reference(x, "down", hadamard)
    served = _served("fake_quantize_quest", G.quest_reference, x, "down", **({"hadamard": 32} if hadamard else {}))
    assert torch.equal(served[0], values) and torch.equal(served[1], mask)
    assert served[1].dtype == torch.float32 and set(served[1].unique().tolist()) <= {0.0, 1.0}
    if hadamard == 0 and shape[0] > 2:
        assert not mask[1, :32].any()  # a constant block saturates, its gradient masked (Quartet's kernel)


def test_quest_ties_go_toward_zero_and_nan_blocks_stay_nan():
    """Scaled values at E2M1 midpoints (a block whose QuEST scale is 1) round toward zero; a block
    with a NaN is NaN throughout, in the kernel as in the reference."""
    x = _values((4, 64))
    x[3, :32] = float("nan")
    ref_values, ref_mask = G.quest_reference(x, "down")
    values, mask = _served("fake_quantize_quest", G.quest_reference, x, "down")
    assert torch.equal(values.isnan(), ref_values.isnan()) and values[3, :32].isnan().all()
    finite = ~ref_values.isnan()
    assert torch.equal(values[finite], ref_values[finite]) and torch.equal(mask, ref_mask)
    even, _ = _served("fake_quantize_quest", G.quest_reference, x, "even")
    assert torch.equal(even[finite], G.quest_reference(x, "even")[0][finite])


@pytest.mark.parametrize("fmt,scaling,hadamard", [("mxfp4", "sr34", 32), ("mxfp4", "block", 32),
                                                  ("nvfp4", "block", 16)])
@pytest.mark.parametrize("shape", SHAPES)
def test_rotated_stochastic_rounding_equals_the_reference_and_the_formats_module(fmt, scaling, hadamard, shape):
    x, s = _values(shape), _signs(hadamard)
    key = new_key(torch.Generator().manual_seed(3), DEVICE)
    reference = fake_quantize_keyed(x, fmt, key, scaling, hadamard, s)
    served = _served("fake_quantize_stochastic", fake_quantize_keyed, x, fmt, key, scaling, hadamard=hadamard,
                     signs=s)
    assert torch.equal(served, reference)
    assert torch.equal(G.fused_stochastic(x, fmt, key, scaling, hadamard, s), reference)
    u = counter_uniforms(shape, key)
    assert torch.equal(reference, fake_quantize_stochastic(rotate_blocks(x, hadamard, s), fmt, u, scaling))
    if scaling == "block":  # independent: the formats module's stochastic rounding of the rotated values
        assert torch.equal(reference, F.fake_quantize(rotate_blocks(x, hadamard, s), fmt, rounding="stochastic",
                                                      noise=u))


@pytest.mark.parametrize("fmt,hadamard", [("nvfp4", 16), ("mxfp4", 32), ("nvfp4", 64), ("mxfp4", 128)])
@pytest.mark.parametrize("signed", [False, True])
def test_rotated_nearest_rounding_equals_the_reference_and_the_formats_module(fmt, hadamard, signed):
    x = _values((37, 256))
    s = _signs(hadamard) if signed else None
    reference = G.fake_quantize_nearest(x, "mxfp4" if fmt == "mxfp4" else "nvfp4", hadamard, s)
    kwargs = {"hadamard": hadamard, **({"signs": s} if signed else {})}
    assert torch.equal(_served("fake_quantize", G.fake_quantize_nearest, x, fmt, **kwargs), reference)
    assert torch.equal(reference, F.fake_quantize(rotate_blocks(x, hadamard, s), fmt))


def test_a_rotation_the_kernel_does_not_take_falls_back_and_a_malformed_one_is_refused():
    """8 points (not a kernel size): the reference runs, counted as such. Signs of the wrong length
    or a row that is not whole blocks of the rotation: refused with a message naming the problem,
    by the reference (the kernel does not take them)."""
    x = _values((5, 96))
    dispatch.reset_counts()
    with dispatch.kernels("triton"):
        out = dispatch.call("fake_quantize", G.fake_quantize_nearest, x, "mxfp4", hadamard=8)
    assert dispatch.counts() == {("fake_quantize", "torch"): 1}
    assert torch.equal(out, F.fake_quantize(rotate_blocks(x, 8), "mxfp4"))
    for kwargs, message in (({"hadamard": 32, "signs": _signs(16)}, "vector of 32 values"),
                            ({"hadamard": 64}, "64")):
        with dispatch.kernels("triton"), pytest.raises(Exception, match=message):
            dispatch.call("fake_quantize", G.fake_quantize_nearest, x, "mxfp4", **kwargs)


@pytest.mark.parametrize("method", ["quartet-train", "nvfp4-train"])
def test_the_recipes_rotating_operands_are_one_dispatched_call_each(method):
    """Quartet's six operands and NVFP4's weight-gradient operands: rotated and quantised in one call
    each (the declaration names the rotation), and no rotation is left to run on its own."""
    from suite.bench.methods import method_kernels

    mk = method_kernels(method)
    rotated = {key for key in mk.calls if any(str(part).startswith("hadamard=") for part in key)}
    expected = {"quartet-train": {("fake_quantize_quest", "down", "hadamard=32"),
                                  ("fake_quantize_stochastic", "mxfp4", "sr34", "hadamard=32")},
                "nvfp4-train": {("fake_quantize_stochastic", "nvfp4", "block", "hadamard=16"),
                                ("fake_quantize", "nvfp4", "hadamard=16")}}[method]
    assert rotated == expected
    assert not any("Hadamard" in gap for gap in mk.gaps), mk.gaps
    assert all(mk.kernels[key] for key in rotated)
