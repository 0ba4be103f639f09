"""Stochastic rounding through the kernels: the dispatch operation ``fake_quantize_stochastic`` takes a
key, and its reference (``suite.numerics.stochastic.fake_quantize_keyed``: the counter-based uniforms
of ``suite.numerics.counter_rng``) and its Triton kernel (which makes the same uniforms in registers)
are equal bit for bit; both are held to the formats module's stochastic rounding
(``formats.fake_quantize(..., noise=u)``, or for Quartet's 3/4 scale the element codec of
``suite.numerics.elements`` with that scale) fed those uniforms. The kernel's rounding also takes
given uniforms, which probes the edges of every rounding interval.

The kernels run in Triton's interpreter on a CPU (``TRITON_INTERPRET=1``); no timing is judged.
"""

from __future__ import annotations

import pytest
import torch

from suite.numerics import dispatch
from suite.numerics import elements as el
from suite.numerics import formats as F
from suite.numerics.counter_rng import counter_uniforms, new_key
from suite.numerics.stochastic import SHAPES, fake_quantize_keyed, fake_quantize_stochastic

pytestmark = pytest.mark.skipif(not dispatch.interpreted() and not torch.cuda.is_available(),
                                reason="needs a GPU or TRITON_INTERPRET=1")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CASES = sorted(SHAPES)


@pytest.fixture(scope="module", autouse=True)
def kernels_registered():
    from suite.registry import KERNELS

    KERNELS.names()
    assert "triton" in dispatch.implementations("fake_quantize_stochastic")


def _independent(x: torch.Tensor, fmt: str, u: torch.Tensor, scaling: str) -> torch.Tensor:
    """The formats module's stochastic rounding with these uniforms."""
    if scaling == "block":
        return F.fake_quantize(x, fmt, rounding="stochastic", noise=u)
    # sr34: the OCP E8M0 scale (2^(floor(log2 amax) - 2)) over 3/4, elements by the codec
    rows, k = x.shape
    blocks = x.reshape(rows, k // 32, 32)
    code = F.mx_scale_e8m0(blocks.abs().amax(-1, keepdim=True), el.FP4_E2M1)
    scale = torch.exp2(code.double() - 127).float() / 0.75
    codes = el.encode_float(blocks / scale, el.FP4_E2M1, "stochastic", noise=u.reshape(blocks.shape))
    return (el.decode_float(codes, el.FP4_E2M1) * scale).reshape(rows, k)


def _served(x, fmt, key, scaling):
    dispatch.reset_counts()
    with dispatch.kernels("triton"):
        out = dispatch.call("fake_quantize_stochastic", fake_quantize_keyed, x, fmt, key, scaling)
    assert dispatch.counts() == {("fake_quantize_stochastic", "triton"): 1}
    return out


@pytest.mark.parametrize("fmt,scaling", CASES)
@pytest.mark.parametrize("shape", [(1, 32), (37, 64), (5, 96), (130, 256)])
def test_the_kernel_equals_the_reference_and_the_formats_module_given_the_same_key(fmt, scaling, shape):
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=g) * torch.logspace(-3, 3, shape[1])).to(DEVICE)  # every binade
    x[0, :8] = 0.0  # an all-zero stretch
    key = new_key(g, DEVICE)
    reference = fake_quantize_keyed(x, fmt, key, scaling)
    assert torch.equal(_served(x, fmt, key, scaling), reference)
    assert torch.equal(reference, _independent(x, fmt, counter_uniforms(shape, key), scaling))


@pytest.mark.parametrize("fmt,scaling", CASES)
def test_every_float_near_the_grid_and_the_binade_edges_rounds_alike(fmt, scaling):
    """Scaled values at and within 64 float32 steps of each E2M1 value and binade edge, each with
    uniforms just below, at and above the probability of rounding up: kernel == formats module."""
    grid = torch.tensor([0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0])
    bits = grid.view(torch.int32)[:, None] + torch.arange(-64, 64, dtype=torch.int32)
    v = bits.view(torch.float32).flatten()
    v = torch.cat([v, -v])
    v = v[: v.numel() // 32 * 32]
    rows = v.reshape(-1, 32).clone()
    # a block maximum that sets the scale to 1 (MXFP4: amax in [4, 8); sr34: the scale is 4/3
    # then, NVFP4: the block scale and the tensor scale bring 6 to 6)
    rows[:, 0] = 6.0
    x = rows.repeat(3, 1).to(DEVICE)
    n = len(rows)  # the three copies: always up (u = 0), random, nearly always down (u just below 1)
    u = torch.cat([torch.zeros(n, 32), torch.rand(n, 32, generator=torch.Generator().manual_seed(1)),
                   torch.full((n, 32), 1 - 2.0 ** -24)]).to(DEVICE)
    from suite.kernels._quant_triton import fake_quantize_fp4

    served = fake_quantize_fp4(x, fmt, scaling=scaling, rounding="stochastic", u=u)[0]  # the given-uniforms path
    assert torch.equal(served, _independent(x, fmt, u, scaling))
    assert torch.equal(served, fake_quantize_stochastic(x, fmt, u, scaling))


@pytest.mark.parametrize("fmt,scaling", CASES)
def test_a_recipes_stochastic_operand_is_the_keyed_reference_with_the_key_its_seed_draws(fmt, scaling):
    """``LayerState.quantize`` of a stochastic operand draws one key from the layer's generator per call
    and quantises with its uniforms: the same values from a generator seeded alike, and a new key
    (new values) at the next call."""
    from suite.methods.train import gemm

    x = torch.randn(7, 64, generator=torch.Generator().manual_seed(3)) * 3
    op = gemm.Operand({"mxfp4": "mxfp4", "nvfp4": "nvfp4"}[fmt], scaling, "stochastic")
    state = gemm.LayerState("layer", None, seed=11)
    first, second = state.quantize(x, op).values, state.quantize(x, op).values
    g = torch.Generator().manual_seed(11)
    assert torch.equal(first, fake_quantize_keyed(x, fmt, new_key(g, "cpu"), scaling))
    assert torch.equal(second, fake_quantize_keyed(x, fmt, new_key(g, "cpu"), scaling))
    assert not torch.equal(first, second)


def test_unsupported_inputs_fall_back_and_a_wrong_format_is_refused():
    x = torch.randn(4, 48, device=DEVICE)
    key = new_key(torch.Generator().manual_seed(0), DEVICE)
    dispatch.reset_counts()
    with dispatch.kernels("triton"):
        out = dispatch.call("fake_quantize_stochastic", fake_quantize_keyed, x, "nvfp4", key, "block")
        with pytest.raises(ValueError, match="whole blocks of 32"):  # 48 is no multiple of MXFP4's 32
            dispatch.call("fake_quantize_stochastic", fake_quantize_keyed, x, "mxfp4", key, "block")
        with pytest.raises(ValueError, match="no stochastic fake quantisation for format 'mxfp8_e4m3'"):
            dispatch.call("fake_quantize_stochastic", fake_quantize_keyed, x, "mxfp8_e4m3", key, "block")
    assert torch.equal(out, fake_quantize_stochastic(x, "nvfp4", counter_uniforms((4, 48), key)))
    assert dispatch.counts() == {("fake_quantize_stochastic", "triton"): 1, ("fake_quantize_stochastic", "torch"): 2}
