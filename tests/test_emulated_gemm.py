"""The emulated product of two quantised GEMM operands (``methods.train.gemm.emulated_matmul``).

Its contract: ``a @ b^T`` accumulated in FP32 and rounded once to the dtype asked for. Where
that dtype is BF16 and both operands' values are BF16 numbers, a CPU multiplies them in a BF16
GEMM. Checked here against closed forms (a sum that BF16 accumulation would lose), against the
FP32 product rounded once, and, for ``Operand.bf16_exact``, against an enumeration: every
quantiser declared exact returns BF16 numbers, over magnitudes from 2^-100 to 2^60.
"""

from __future__ import annotations

import pytest
import torch

from suite.methods.train.gemm import (
    POWER_OF_TWO_SCALINGS,
    Gemm,
    LayerState,
    LinearRecipe,
    Operand,
    emulated_matmul,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("k", [64, 512, 1000])
def test_a_bf16_result_is_accumulated_in_fp32_before_its_one_rounding(k):
    """1 + (k-1) * 2^-9: each addend is below half a BF16 ulp of the running sum, so a sum kept
    in BF16 stays 1, while FP32 accumulation reaches 1 + (k-1)/512 (then one rounding)."""
    a = torch.ones(3, k)
    b = torch.full((5, k), 2.0 ** -9)
    b[:, 0] = 1.0
    got = emulated_matmul(a, b, torch.bfloat16, bf16_operands=True)
    want = torch.tensor(1 + (k - 1) / 512).bfloat16()
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, torch.full((3, 5), float(want), dtype=torch.bfloat16))
    assert float(want) > 1.0  # the case tells the two accumulations apart


@pytest.mark.parametrize("m,k,n", [(7, 33, 5), (64, 96, 48), (130, 257, 70)])
def test_a_bf16_result_equals_the_fp32_product_rounded_once(m, k, n):
    """Operands on MXFP4's grid (BF16 numbers): the BF16 GEMM's result is the FP32 product
    rounded to BF16, but for the order of the additions: at most one BF16 ulp apart, rarely."""
    g = torch.Generator().manual_seed(m + k + n)
    grid = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])

    def on_grid(rows: int) -> torch.Tensor:
        values = grid[torch.randint(0, 8, (rows, k), generator=g)]
        signs = torch.randint(0, 2, (rows, k), generator=g) * 2 - 1
        scales = 2.0 ** torch.randint(-6, 6, (rows, 1), generator=g)
        return values * signs * scales

    a, b = on_grid(m), on_grid(n)
    got = emulated_matmul(a, b, torch.bfloat16, bf16_operands=True)
    rounded = (a.double() @ b.double().t()).float().bfloat16()  # the exact sum, rounded once
    ulp = (rounded.float().abs() * 2.0 ** -7).clamp_min(2.0 ** -133)
    assert ((got.float() - rounded.float()).abs() <= ulp).all()
    assert (got == rounded).float().mean() >= 0.99


def test_other_results_and_operands_take_the_fp32_product():
    """An FP32 result, or an operand that is not a BF16 number, is the FP32 product (rounded)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(9, 40, generator=g), torch.randn(6, 40, generator=g)
    fp32 = a @ b.t()
    assert torch.equal(emulated_matmul(a, b, bf16_operands=True), fp32)
    assert torch.equal(emulated_matmul(a, b, torch.bfloat16), fp32.bfloat16())


SCALINGS = {"mxfp8": ("block", "rceil"), "mxfp8_e5m2": ("block", "rceil"), "mxfp4": ("block", "rceil", "quest")}


@pytest.mark.parametrize("fmt,scaling,rounding", [
    (fmt, scaling, rounding) for fmt, scalings in SCALINGS.items() for scaling in scalings
    for rounding in ("nearest", "stochastic") if not (scaling == "quest" and rounding == "stochastic")
    and not (scaling == "rceil" and rounding == "stochastic")])
def test_operands_declared_bf16_exact_quantise_to_bf16_numbers(fmt, scaling, rounding):
    op = Operand(fmt, scaling, rounding)
    assert op.bf16_exact and scaling in POWER_OF_TWO_SCALINGS
    state = LayerState("layer", LinearRecipe(Gemm(op, op), Gemm(op, op), Gemm(op, op)), seed=0)
    g = torch.Generator().manual_seed(1)
    # QuEST's block variance squares the values: 2^60 keeps it finite in FP32
    t = torch.randn(16, 128, generator=g) * 2.0 ** torch.randint(-100, 60, (16, 1), generator=g).float()
    q = state.quantize(t, op)
    assert Gemm(op, op).bf16_operands
    assert torch.equal(q.values, q.values.bfloat16().float())
    assert not torch.equal(t, t.bfloat16().float())  # the input was not: the quantiser made them so


@pytest.mark.parametrize("op", [Operand("mxfp4", "sr34", "stochastic"), Operand("nvfp4", "block"),
                                Operand("e4m3", "tensor"), Operand("int8", "row"), Operand("fp32")])
def test_operands_with_other_scales_are_not_declared_exact(op):
    """The 3/4 scale, NVFP4's FP32 tensor scale and FP8/INT8's amax scales make values BF16 cannot hold."""
    assert not op.bf16_exact
    state = LayerState("layer", LinearRecipe(Gemm(op, op), Gemm(op, op), Gemm(op, op)), seed=0)
    t = torch.randn(16, 128, generator=torch.Generator().manual_seed(2)) * 3.7
    q = state.quantize(t, op)
    assert not Gemm(op, op).bf16_operands and not torch.equal(q.values, q.values.bfloat16().float())


@pytest.mark.parametrize("spec,fmt", [("mxfp4-train", "mxfp4"), ("mxfp8-train:scale=floor", "mxfp8_e4m3")])
def test_a_layer_under_bf16_autocast_returns_the_fp32_products_rounded_once(spec, fmt):
    """Under autocast Y is BF16, and so is dX for a BF16 input: both come from the BF16 GEMM (MX
    operands are BF16 numbers) and equal the FP32 products of the fake-quantised operands
    rounded once, as ``formats.fake_quantize`` makes them; dW, kept in FP32, is the FP32 product."""
    from suite.app.sweep import parse_method_spec, resolve_method_spec
    from suite.method import MethodContext
    from suite.numerics import formats as F
    from suite.task import ModelBundle

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(96, 64, bias=False))
    method = resolve_method_spec(parse_method_spec(spec))[0].instantiate()
    method.apply(model, MethodContext(bundle=ModelBundle(model, new_modules=(model,)), seed=0))
    layer, w = model[0], model[0].weight.detach()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(128, 96, generator=g).bfloat16().requires_grad_(True)
    dy = (torch.randn(128, 64, generator=g) * 1e-2).bfloat16()
    with torch.autocast("cpu", torch.bfloat16):
        y = layer(x)
    y.backward(dy)

    def fq(t: torch.Tensor) -> torch.Tensor:
        return F.fake_quantize(t.float().contiguous(), fmt)

    def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a.double() @ b.double().t()

    for got, want in ((y, product(fq(x), fq(w))), (x.grad, product(fq(dy), fq(w.t())))):
        rounded = want.float().bfloat16()
        assert got.dtype == torch.bfloat16
        assert ((got.float() - rounded.float()).abs() <= rounded.float().abs() * 2.0 ** -7).all()
        assert (got == rounded).float().mean() >= 0.99
    assert layer.weight.grad.dtype == torch.float32
    want_dw = product(fq(dy.t()), fq(x.detach().t()))  # FP32 accumulation: its own rounding, no BF16's
    torch.testing.assert_close(layer.weight.grad.double(), want_dw, rtol=1e-5, atol=1e-6 * float(want_dw.abs().max()))
    assert not torch.equal(layer.weight.grad, layer.weight.grad.bfloat16().float())


# -- operands that do not depend on their layout -------------------------------------------------------
RECIPE_SPECS = ("fp8-train", "fp8-train:scaling=row", "fp8-train:scaling=delayed", "mxfp8-train", "mxfp4-train",
                "nvfp4-train", "quartet-train", "halo-train", "coat-train", "mxfp8-train:scale=floor,grad_element=e5m2")


def recipe_operands() -> list[Operand]:
    """Every operand the registered recipes declare, each once (an enumeration of what runs)."""
    from suite.app.sweep import parse_method_spec, resolve_method_spec

    seen: dict[Operand, None] = {}
    for spec in RECIPE_SPECS:
        recipe = resolve_method_spec(parse_method_spec(spec))[0].instantiate().linear_recipe()
        seen.update(dict.fromkeys(recipe.operands()))
    return list(seen)


def test_layout_free_operands_quantise_a_transpose_to_the_transpose():
    """Declared ``layout_free``: quantising ``t^T`` (a contiguous copy, as the quantisers lay an
    operand out) gives exactly the transpose of ``t`` quantised, so the backward may hand over
    transposed views. Every other operand the recipes use gives something else, so the declaration
    is as wide as it may be. A transposed view is quantised as it lies and comes back as a view."""
    ops = recipe_operands()
    assert {op.layout_free for op in ops} == {True, False}  # both kinds run
    t = torch.randn(64, 96, generator=torch.Generator().manual_seed(4))
    t[:, 5] *= 40  # an outlier column: row and block scales see it differently along the two dims
    amax = t.abs().amax()
    for op in ops:
        state = LayerState("layer", LinearRecipe(Gemm(op, op), Gemm(op, op), Gemm(op, op)), seed=0)
        given = amax if op.scaling == "delayed" else None
        of_copy = state.quantize(t.t().contiguous(), op, given).values
        transposed = state.quantize(t, op, given).values.t()
        assert torch.equal(of_copy, transposed) == op.layout_free, op
        if op.layout_free:
            view = state.quantize(t.t(), op, given).values
            assert torch.equal(view, of_copy) and view.stride() == (1, 96), op


def test_the_backward_quantises_a_shared_output_gradient_once():
    """fp8-train's dgrad and wgrad both take dY as E5M2 per tensor: one quantisation serves both
    (its transpose for the wgrad), and each gradient still equals the GEMM of the operands
    ``formats.fake_quantize`` makes from contiguous copies."""
    from suite.app.sweep import parse_method_spec, resolve_method_spec
    from suite.method import MethodContext
    from suite.numerics import dispatch
    from suite.numerics import formats as F
    from suite.task import ModelBundle

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(48, 80, bias=False))
    method = resolve_method_spec(parse_method_spec("fp8-train:real=false"))[0].instantiate()
    method.apply(model, MethodContext(bundle=ModelBundle(model, new_modules=(model,)), seed=0))
    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 48, generator=g).requires_grad_(True)
    dy = torch.randn(40, 80, generator=g) * 1e-3
    y = model(x)
    dispatch.reset_counts()
    y.backward(dy)
    grads = {k[1]: n for k, n in dispatch.calls().items() if k[0] == "fake_quantize"}
    assert grads == {"fp8_e5m2": 1, "fp8_e4m3": 2}, dispatch.calls()  # dY once; W and X each once

    def fq(t: torch.Tensor, fmt: str) -> torch.Tensor:
        return F.fake_quantize(t.contiguous(), fmt, granularity="tensor")

    w = model[0].weight.detach()
    assert torch.equal(x.grad, fq(dy, "fp8_e5m2") @ fq(w.t(), "fp8_e4m3").t())
    assert torch.equal(model[0].weight.grad, fq(dy.t(), "fp8_e5m2") @ fq(x.detach().t(), "fp8_e4m3").t())


def test_coats_fp8_copy_of_the_input_is_the_formats_modules_eager_and_compiled():
    """The fused FP8 copy of X (``coat.fp8_tensor_copy``) stores what ``formats.quantize`` stores, and its
    values are ``formats.dequantize``'s, run eager and compiled (values across twelve decades)."""
    from suite.methods.train.coat import fp8_tensor_copy, fp8_tensor_copy_decoded
    from suite.numerics import compiled
    from suite.numerics import formats as F

    x = torch.randn(96, 300, generator=torch.Generator().manual_seed(9)) * torch.logspace(-8, 4, 300)
    want = F.quantize(x, "fp8_e4m3", granularity="tensor")
    for mode in ("off", "on"):
        with compiled.emulation(mode):
            got = fp8_tensor_copy(x)
            values = fp8_tensor_copy_decoded(got.data, got.scale)
        assert got.data.dtype == want.data.dtype and torch.equal(got.data.view(torch.uint8), want.data.view(torch.uint8))
        assert torch.equal(got.scale, want.scale) and got.opts == want.opts and got.shape == want.shape
        assert torch.equal(values, F.dequantize(want))
