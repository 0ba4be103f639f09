"""Low-precision training recipes (kind ``train``), their torchao peers and the ``lm`` task.

Each recipe's forward output and both gradients are checked against a reference written
here from ``suite.numerics`` (fake quantisation, element codecs, Hadamard): bit for bit
where rounding is deterministic, and statistically (the mean over draws against the
expectation, within a few standard errors) where it is stochastic. Small shapes, float32,
no autocast. The ``lm`` task trains ``llama-tiny`` on a generated corpus and on a slice of
the real one in ``../shared/data/lm`` (skipped when absent).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from suite.app.sweep import parse_method_spec, resolve_method_spec
from suite.errors import UserError
from suite.method import MethodContext
from suite.numerics import compiled
from suite.numerics import elements as el
from suite.numerics import formats as F
from suite.numerics.hadamard import apply_block_hadamard
from suite.registry import METHODS
from suite.task import ModelBundle

SHARED_LM = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "lm"
RECIPES = ("bf16-train", "fp8-train", "mxfp8-train", "mxfp4-train", "nvfp4-train", "quartet-train",
           "halo-train", "coat-train")
M, K, N = 64, 64, 96  # tokens, in_features, out_features: every block format fits


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def method(spec: str):
    return resolve_method_spec(parse_method_spec(spec))[0].instantiate()


def one_layer(spec: str, seed: int = 0, k: int = K, n: int = N):
    """A single linear layer under a recipe (the model is all new, like pretraining)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False))
    m = method(spec)
    m.apply(model, MethodContext(bundle=ModelBundle(model, new_modules=(model,)), seed=seed))
    return model[0], m


def run(layer, x: torch.Tensor, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward, then backward with the given output gradient: (y, dx, dw)."""
    layer.weight.grad = None
    x = x.clone().requires_grad_(True)
    y = layer(x)
    y.backward(dy)
    return y.detach(), x.grad.detach(), layer.weight.grad.detach()


def fq(t: torch.Tensor, fmt: str, **opts) -> torch.Tensor:
    """Fake-quantise along the last dim of a contiguous copy (a GEMM operand as the recipe lays it out)."""
    return F.fake_quantize(t.contiguous(), fmt, **opts)


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A @ B^T with both operands contiguous, the product the recipes form."""
    return a.contiguous() @ b.contiguous().t()


def data(seed: int = 1, m: int = M, k: int = K, n: int = N):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    x[:, 3] *= 20  # an outlier channel, as activations have
    return x, torch.randn(m, n, generator=g) * 1e-3


# -- registry ------------------------------------------------------------------------------------
def test_recipes_are_registered_as_train_with_names_apart_from_the_quantizers():
    names = set(METHODS.names())
    for name in RECIPES:
        entry = METHODS.get(name)
        assert entry.kind == "train" and name.endswith("-train")
        assert entry.summary and entry.target.__doc__
    assert {"mxfp8", "nvfp4"} <= names and METHODS.get("mxfp8").kind == "quant"
    for name in ("torchao-float8", "torchao-mxfp8"):
        assert METHODS.get(name).kind == "train" and METHODS.get(name).source == "torchao"
    # each summary names formats per GEMM operand, as the recipe's own description does
    assert "E5M2" in METHODS.get("fp8-train").summary and "dgrad" in METHODS.get("fp8-train").summary
    assert "Hadamard" in METHODS.get("quartet-train").summary
    described = method("fp8-train").linear_recipe().describe()
    assert "dgrad dX = dY W: dY E5M2 per tensor x W E4M3 per tensor" in described
    assert "stochastic rounding" in method("nvfp4-train").linear_recipe().describe()


# -- deterministic recipes: bit for bit -------------------------------------------------------------
@pytest.mark.parametrize("scaling", ["tensor", "row"])
def test_fp8_matches_numerics_bit_for_bit(scaling):
    layer, _ = one_layer(f"fp8-train:scaling={scaling},real=false")
    x, dy = data()
    w = layer.weight.detach()
    y, dx, dw = run(layer, x, dy)
    g = {"granularity": scaling}
    assert torch.equal(y, mm(fq(x, "fp8_e4m3", **g), fq(w, "fp8_e4m3", **g)))
    assert torch.equal(dx, mm(fq(dy, "fp8_e5m2", **g), fq(w.t(), "fp8_e4m3", **g)))
    assert torch.equal(dw, mm(fq(dy.t(), "fp8_e5m2", **g), fq(x.t(), "fp8_e4m3", **g)))


def test_fp8_delayed_scaling_uses_the_amax_of_earlier_steps():
    layer, _ = one_layer("fp8-train:scaling=delayed,real=false")
    x, dy = data()
    w = layer.weight.detach()
    y1, _, _ = run(layer, x, dy)  # first step: no history, the tensor's own amax
    assert torch.equal(y1, mm(fq(x, "fp8_e4m3"), fq(w, "fp8_e4m3")))
    y2, _, _ = run(layer, 4 * x, dy)  # scaled from step 1's amax: the larger values saturate
    scale = x.abs().amax() / 448.0
    x2 = (el.decode_float(el.encode_float(4 * x / scale, el.FP8_E4M3), el.FP8_E4M3) * scale)
    assert torch.equal(y2, mm(x2, fq(w, "fp8_e4m3")))
    assert float(x2.abs().max()) == pytest.approx(448.0 * float(scale), rel=1e-6)  # saturated


def _rceil(t: torch.Tensor, elem) -> torch.Tensor:
    """MX blocks of 32 with the scale rounded up, written here from the element codec."""
    b = t.contiguous().reshape(t.shape[0], -1, 32)
    scale = torch.exp2(torch.ceil(torch.log2(b.abs().amax(-1, keepdim=True) / elem.max)))
    return (el.decode_float(el.encode_float(b / scale, elem), elem) * scale).reshape(t.shape)


@pytest.mark.parametrize("spec,ref", [
    ("mxfp8-train:scale=floor", lambda t: fq(t, "mxfp8_e4m3")),
    ("mxfp8-train", lambda t: _rceil(t, el.FP8_E4M3)),
    ("mxfp4-train", lambda t: fq(t, "mxfp4")),
])
def test_mx_recipes_match_numerics_bit_for_bit(spec, ref):
    layer, _ = one_layer(spec)
    x, dy = data()
    w = layer.weight.detach()
    y, dx, dw = run(layer, x, dy)
    assert torch.equal(y, mm(ref(x), ref(w)))
    assert torch.equal(dx, mm(ref(dy), ref(w.t())))
    assert torch.equal(dw, mm(ref(dy.t()), ref(x.t())))


def test_mxfp8_e5m2_gradients_under_the_floor_scale():
    layer, _ = one_layer("mxfp8-train:scale=floor,grad_element=e5m2")
    x, dy = data()
    w = layer.weight.detach()
    y, dx, dw = run(layer, x, dy)

    def e4(t):
        return fq(t, "mxfp8_e4m3")

    def e5(t):
        return fq(t, "mxfp8_e5m2")

    assert torch.equal(y, mm(e4(x), e4(w)))
    assert torch.equal(dx, mm(e5(dy), e4(w.t())))
    assert torch.equal(dw, mm(e5(dy.t()), e4(x.t())))


def int8_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A @ B^T as an INT8 GEMM forms it: ``formats.quantize``'s codes (one scale per tensor), their
    products summed exactly in int64 here, then once times the two scales in FP32."""
    qa, qb = (F.quantize(t.contiguous(), "int8", granularity="tensor") for t in (a, b))
    return (qa.data.long() @ qb.data.long().t()).float() * (qa.scale * qb.scale)


@pytest.mark.parametrize("real", ["false", "auto"])
def test_halo_int8_level2_rotations_match_numerics(real):
    """Emulated (real=false): the FP32 product of the fake-quantised operands. Real (the default,
    on any device with torch._int_mm): the integer GEMM of their codes, scaled once."""
    layer, _ = one_layer(f"halo-train:real={real}")
    x, dy = data()
    w = layer.weight.detach()
    y, dx, dw = run(layer, x, dy)
    q = {"granularity": "tensor"}

    def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return mm(fq(a, "int8", **q), fq(b, "int8", **q)) if real == "false" else int8_product(a, b)

    xh, wh = apply_block_hadamard(x, K), apply_block_hadamard(w, K)  # largest power of two dividing K
    assert torch.equal(y, product(xh, wh))
    rot_m = lambda t: apply_block_hadamard(t.t().contiguous(), M).t()  # along the tokens # noqa: E731
    assert torch.allclose(dx, rot_m(product(rot_m(dy), w.t())), rtol=1e-5, atol=1e-9)
    assert torch.equal(dw, product(dy.t(), x.t()))
    assert layer.state.real == (real == "auto") and layer.state.real_gemms == (3 if real == "auto" else 0)


def test_the_integer_gemm_is_the_exact_sum_scaled_once():
    """``int8_mm`` against float64: the codes' products summed exactly, times both scales, is the
    exact product of the dequantised operands; ours rounds it at most twice (the scales' product,
    then the result), within 2 FP32 ulps. A contraction past INT32's range (closed form: 127^2 per
    term) is summed in int64, exactly."""
    from suite.methods.train.gemm import INT32_SAFE_TERMS, Quantized, int8_mm, integer_codes

    g = torch.Generator().manual_seed(7)
    a, b = torch.randn(33, 200, generator=g) * 3, torch.randn(17, 200, generator=g) * 1e-3
    (ca, sa), (cb, sb) = integer_codes(a), integer_codes(b)
    got = int8_mm(Quantized(None, codes=ca, scale=sa), Quantized(None, codes=cb, scale=sb))
    exact = (ca.double() @ cb.double().t()) * (sa.double() * sb.double())
    q = F.quantize(a, "int8", granularity="tensor")
    assert torch.equal(ca, q.data) and torch.equal(sa, q.scale)  # the formats module's codes and scale
    ulp = exact.abs().float() * 2.0 ** -23
    assert ((got.double() - exact).abs() <= 2 * ulp.double() + 1e-30).all()
    # the zero padding a CUDA GPU's INT8 GEMM needs changes nothing (run here on the CPU)
    assert torch.equal(int8_mm(Quantized(None, codes=ca, scale=sa), Quantized(None, codes=cb, scale=sb), pad=True), got)
    k = INT32_SAFE_TERMS + 5
    big = torch.full((2, k), 127, dtype=torch.int8)
    one = torch.tensor(1.0)
    out = int8_mm(Quantized(None, codes=big, scale=one), Quantized(None, codes=big, scale=one))
    assert torch.equal(out, torch.full((2, 2), float(127 * 127 * k)))  # 2^31 exceeded: no wrap-around


@pytest.mark.parametrize("spec,grad", [("coat-train:real=false", "fp8_e5m2"),
                                       ("coat-train:real=false,grad_format=e4m3", "fp8_e4m3")])
def test_coat_gemms_are_fp8_per_tensor_with_the_input_kept_as_fp8(spec, grad):
    """X and W in E4M3, the gradient in E5M2 (COAT's configs; E4M3 as the ablation)."""
    layer, _ = one_layer(spec)
    x, dy = data()
    w = layer.weight.detach()
    y, dx, dw = run(layer, x, dy)
    assert torch.equal(y, mm(fq(x, "fp8_e4m3"), fq(w, "fp8_e4m3")))
    assert torch.equal(dx, mm(fq(dy, grad), fq(w.t(), "fp8_e4m3")))
    x_kept = F.dequantize(F.quantize(x, "fp8_e4m3", granularity="tensor"))
    assert torch.equal(dw, mm(fq(dy.t(), grad), fq(x_kept.t(), "fp8_e4m3")))


def test_fast_fp4_paths_equal_the_numerics_module():
    """The recipes' FP4 rounding (a few elementwise ops) gives the element codec's values bit
    for bit, for nearest and (same generator, same uniforms) stochastic rounding."""
    from suite.methods.train.gemm import fp4_round, mxfp4_fast, nvfp4_fast

    g = torch.Generator().manual_seed(0)
    ties = torch.tensor([0.0, -0.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, 7.0, -5.0, 1e-30, 1e30])
    v = torch.cat([torch.randn(4000, generator=g) * 3, ties])
    for rounding in ("nearest", "stochastic"):
        ref = el.decode_float(el.encode_float(v, el.FP4_E2M1, rounding, generator=torch.Generator().manual_seed(3)),
                              el.FP4_E2M1)
        assert torch.equal(fp4_round(v, rounding, torch.Generator().manual_seed(3)), ref)
        x = torch.randn(32, 128, generator=g)
        x[:, 5] *= 100
        x[0] = 0
        opts = {"rounding": rounding, "generator": torch.Generator().manual_seed(1)}
        assert torch.equal(mxfp4_fast(x, rounding, torch.Generator().manual_seed(1)), F.fake_quantize(x, "mxfp4", **opts))
        opts["generator"] = torch.Generator().manual_seed(1)
        assert torch.equal(nvfp4_fast(x, 16, rounding, torch.Generator().manual_seed(1)),
                           F.fake_quantize(x, "nvfp4", **opts))


def _tile_ref(w: torch.Tensor) -> torch.Tensor:
    """NVFP4 16x16 tiles, from the block codec: s_b = e4m3(amax_tile / 6 / s_t), elements e2m1."""
    st = F.nvfp4_tensor_scale(w.abs().amax())
    out = torch.empty_like(w)
    for i in range(0, w.shape[0], 16):
        for j in range(0, w.shape[1], 16):
            tile = w[i:i + 16, j:j + 16]
            sb = torch.clamp(tile.abs().amax() / 6 / st, min=torch.finfo(torch.float8_e4m3fn).tiny,
                             max=448.0).to(torch.float8_e4m3fn).float()
            codes = el.encode_float(torch.clamp(tile * ((1 / st) / sb), -6, 6), el.FP4_E2M1)
            out[i:i + 16, j:j + 16] = el.decode_float(codes, el.FP4_E2M1) * (st * sb)
    return out


def test_nvfp4_forward_is_exact_and_weight_tiles_are_transpose_consistent():
    layer, _ = one_layer("nvfp4-train")
    x, dy = data()
    w = layer.weight.detach()
    y, _, _ = run(layer, x, dy)
    assert torch.equal(y, mm(fq(x, "nvfp4"), _tile_ref(w)))
    from suite.methods.train.gemm import nvfp4_tiles

    assert torch.equal(nvfp4_tiles(w.t().contiguous()), nvfp4_tiles(w).t())


# -- stochastic rounding: statistically --------------------------------------------------------------
def _mean_grads(layer, x, dy, draws: int):
    dxs, dws = [], []
    for _ in range(draws):
        _, dx, dw = run(layer, x, dy)
        dxs.append(dx)
        dws.append(dw)
    return torch.stack(dxs), torch.stack(dws)


def _assert_unbiased(samples: torch.Tensor, expected: torch.Tensor) -> None:
    """The mean over draws is within 5 standard errors of ``expected`` (per element, pooled)."""
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    z = ((mean - expected) / se.clamp(min=1e-12))[se > 0]
    assert z.abs().mean() < 1.5, float(z.abs().mean())  # |N(0,1)| has mean 0.8
    assert z.abs().max() < 6.0, float(z.abs().max())
    assert (samples[0] != samples[1]).any()  # really stochastic


def _nvfp4_expected(t: torch.Tensor) -> torch.Tensor:
    """E[stochastic NVFP4(t)]: t itself, except where the E4M3-rounded block scale pushes a block's
    maximum past 6 and the format clamps it (a bias of the format that no rounding removes)."""
    st = F.nvfp4_tensor_scale(t.abs().amax())
    b = t.contiguous().reshape(t.shape[0], -1, 16)
    sb = torch.clamp(b.abs().amax(-1, keepdim=True) / 6 / st, min=torch.finfo(torch.float8_e4m3fn).tiny,
                     max=448.0).to(torch.float8_e4m3fn).float()
    return (torch.clamp(b * ((1 / st) / sb), -6, 6) * (st * sb)).reshape(t.shape)


def test_nvfp4_backward_is_unbiased_and_uses_the_random_hadamard():
    layer, _ = one_layer("nvfp4-train")
    x, dy = data()
    w = layer.weight.detach()
    dxs, dws = _mean_grads(layer, x, dy, 96)
    _assert_unbiased(dxs, mm(_nvfp4_expected(dy), _tile_ref(w.t().contiguous())))  # W^T: the forward's tiles
    signs = layer.state.signs(16, "layer", torch.device("cpu")).repeat(M // 16)
    rht = lambda t: apply_block_hadamard(t.contiguous(), 16, signs=signs)  # noqa: E731
    _assert_unbiased(dws, mm(_nvfp4_expected(rht(dy.t())), fq(rht(x.t()), "nvfp4")))


def _quest_ref(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b = t.reshape(t.shape[0], -1, 32)
    std = (b.square().mean(-1, keepdim=True) - b.mean(-1, keepdim=True).square()).clamp(min=0).sqrt()
    scale = torch.exp2(torch.floor(torch.log2(2.92247856 / 6.0 * std + 1e-8)))
    v = b / scale
    q = el.decode_float(el.encode_float(v, el.FP4_E2M1), el.FP4_E2M1) * scale
    return q.reshape(t.shape), (v.abs() < 6).reshape(t.shape)


def test_quartet_forward_exact_backward_unbiased_and_masked():
    layer, _ = one_layer("quartet-train")
    x, dy = data()
    w = layer.weight.detach()
    h = lambda t: apply_block_hadamard(t.contiguous(), 32)  # noqa: E731
    (xq, mx), (wq, mw) = _quest_ref(h(x)), _quest_ref(h(w))
    y, dx, dw = run(layer, x, dy)
    assert torch.equal(y, mm(xq, wq))
    assert not mx.all() and not mw.all()  # QuEST clipped something (the outlier channel)
    # gradients w.r.t. the rotated operands are zero where the forward clipped
    assert (h(dx)[~mx].abs() < 1e-6 * dx.abs().max()).all()  # float32 round trip of H
    assert (h(dw)[~mw].abs() < 1e-6 * dw.abs().max()).all()
    dxs, dws = _mean_grads(layer, x, dy, 96)
    # E over stochastic rounding and random signs: the backward of the quantised forward
    _assert_unbiased(dxs, h((dy @ wq) * mx))
    _assert_unbiased(dws, h((dy.t() @ xq) * mw))


# -- the whole model --------------------------------------------------------------------------------
def _llama_tiny():
    from transformers import AutoModelForCausalLM

    from suite.models.catalog import CATALOG

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(CATALOG["llama-tiny"].make_config())


@pytest.mark.parametrize("spec", [*RECIPES, "fp8-train:scaling=row", "torchao-float8", "torchao-mxfp8"])
def test_gradients_reach_every_layer(spec):
    from suite.methods.train.gemm import LowPrecisionLinear

    model = _llama_tiny()
    m = method(spec)
    model = m.apply(model, MethodContext(bundle=ModelBundle(model, new_modules=(model,))))
    if spec.endswith("-train") and spec != "bf16-train":
        lowp = [n for n, mod in model.named_modules() if isinstance(mod, LowPrecisionLinear)]
        # NVIDIA's NVFP4 recipe keeps the last of llama-tiny's 5 blocks in BF16 (last 8/62, rounded)
        kept = 7 if spec == "nvfp4-train" else 0
        assert len(lowp) == 5 * 7 - kept and not (kept and any(".layers.4." in n for n in lowp))
    ids = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    for name, p in model.named_parameters():
        assert p.requires_grad, name  # from scratch: everything trains
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_fp8_tensorwise_matches_torchao_emulated_float8():
    import dataclasses

    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    layer, _ = one_layer("fp8-train:real=false")
    ours_w = layer.weight.detach().clone()
    peer = torch.nn.Sequential(torch.nn.Linear(K, N, bias=False))
    with torch.no_grad():
        peer[0].weight.copy_(ours_w)
    convert_to_float8_training(peer, config=dataclasses.replace(
        Float8LinearConfig.from_recipe_name("tensorwise"), emulate=True))
    x, dy = data()
    y, dx, dw = run(layer, x, dy)
    y_ao, dx_ao, dw_ao = run(peer[0], x, dy)
    for ours, theirs in ((y, y_ao), (dx, dx_ao), (dw, dw_ao)):
        # torchao multiplies by max/amax where we divide by amax/max: a code may differ by one step
        assert torch.allclose(ours, theirs, rtol=2e-2, atol=2e-2 * float(theirs.abs().max()))
        assert float((ours - theirs).norm() / theirs.norm()) < 1e-2


def test_mxfp8_matches_torchao_mxfp8_training_bit_for_bit():
    """Our MXFP8 recipe (scales rounded up) and torchao's MXFP8Linear (RCEIL, emulated): the
    forward and both gradients are the same numbers."""
    ours, _ = one_layer("mxfp8-train")
    peer, _ = one_layer("torchao-mxfp8")
    with torch.no_grad():
        peer.weight.copy_(ours.weight)
    x, dy = data()
    for a, b in zip(run(ours, x, dy), run(peer, x, dy), strict=True):
        assert torch.equal(a, b)


def test_bf16_recipe_equals_plain_bf16_training(tmp_path):
    from suite.app.cli import main
    from suite.results.store import ResultStore

    corpus = _corpus(tmp_path / "data")
    common = ["--tasks", "lm", "--models", "llama-tiny", "--data-dir", str(corpus), "--max-steps", "4",
              "--batch-size", "2", "--max-length", "32", "--eval-tokens", "512", "--no-progress"]
    assert main(["run", "--methods", "bf16-train", *common, "--store", str(tmp_path / "a")]) == 0
    assert main(["run", "--methods", "full", "--precision", "bf16", *common, "--store", str(tmp_path / "b")]) == 0
    a, b = ResultStore(tmp_path / "a").load(), ResultStore(tmp_path / "b").load()

    def metric(frame, name):
        return float(frame.loc[frame["metric"] == name, "value"].iloc[0])

    for name in ("val_loss", "train_loss", "trainable_params"):
        assert metric(a, name) == metric(b, name), name


# -- fine-tuning, errors -----------------------------------------------------------------------------
def test_recipes_compose_with_lora_and_fine_tune_the_smoke_task(tmp_path):
    from suite.app.cli import main
    from suite.results.store import ResultStore

    code = main(["run", "--methods", "fp8-train+lora,halo-train", "--tasks", "smoke", "--models", "tiny-bert",
                 "--max-steps", "3", "--limit", "32", "--batch-size", "8", "--max-length", "16",
                 "--no-progress", "--store", str(tmp_path / "s")])
    assert code == 0
    frame = ResultStore(tmp_path / "s").load()
    params = frame[frame["metric"] == "trainable_params"].set_index("method")["value"]
    assert params["fp8-train+lora"] < params["halo-train"]  # LoRA chose its parameters
    emulated = frame[frame["metric"] == "train_gemm_emulated"].set_index("method")["value"]
    # on a CPU FP8 is emulated, while HALO's INT8 codes run in a real integer GEMM (torch._int_mm)
    assert emulated["fp8-train+lora"] == 1.0 and emulated["halo-train"] == 0.0


def test_real_fp8_on_a_cpu_is_refused_and_bad_shapes_are_named(monkeypatch):
    layer_model = torch.nn.Sequential(torch.nn.Linear(64, 64))
    with pytest.raises(UserError, match="real=true asks for FP8 GEMMs"):
        method("fp8-train:real=true").apply(layer_model, MethodContext(bundle=ModelBundle(layer_model, new_modules=(layer_model,))))
    # on hardware with FP8, a layer whose shape the FP8 GEMM cannot take is refused with its name
    import suite.methods.quant.layers as qlayers

    monkeypatch.setattr(qlayers, "fp8_matmul_supported", lambda device: (True, ""))
    odd = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 40))
    with pytest.raises(UserError, match=r"1 layer\(s\) are not: 1 \(40 x 64\)"):
        method("fp8-train:real=true").apply(odd, MethodContext(bundle=ModelBundle(odd, new_modules=(odd,))))
    # operands neither FP8 (tensor or row scales) nor INT8 per tensor have no real GEMM
    from suite.methods.train.gemm import Gemm, LinearRecipe, Operand

    mixed = method("halo-train:real=true")
    rows = Gemm(Operand("int8", "row"), Operand("int8", "row"))
    monkeypatch.setattr(mixed, "linear_recipe", lambda: LinearRecipe(rows, rows, rows))
    with pytest.raises(UserError, match="real=true needs every GEMM operand in FP8 .* or in INT8 per tensor"):
        mixed.apply(odd, MethodContext(bundle=ModelBundle(odd, new_modules=(odd,))))


def test_real_int8_runs_on_a_cpu_and_is_refused_where_the_integer_gemm_does_not_run(monkeypatch):
    """HALO's INT8 GEMMs are real on a CPU (torch._int_mm), odd shapes included; a device whose
    torch._int_mm fails the probe is named under real=true and emulated under real=auto."""
    import suite.methods.quant.layers as qlayers

    assert qlayers.int8_matmul_supported("cpu") == (True, "")
    odd = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 40))
    m = method("halo-train:real=true,block=32")
    m.apply(odd, MethodContext(bundle=ModelBundle(odd, new_modules=(odd,))))
    assert all(layer.state.real for layer in odd)
    monkeypatch.setattr(qlayers, "int8_matmul_supported", lambda device: (False, "no INT8 GEMM here"))
    fresh = torch.nn.Sequential(torch.nn.Linear(64, 64))
    with pytest.raises(UserError, match=r"real=true asks for INT8 GEMMs \(torch._int_mm\), but no INT8 GEMM here"):
        method("halo-train:real=true").apply(fresh, MethodContext(bundle=ModelBundle(fresh, new_modules=(fresh,))))
    method("halo-train").apply(fresh, MethodContext(bundle=ModelBundle(fresh, new_modules=(fresh,))))
    assert not fresh[0].state.real


def test_real_fp8_path_pads_and_scales_like_the_emulation(monkeypatch):
    """The torch._scaled_mm path, with the GEMM itself emulated (no FP8 GPU here): codes, scales
    and the padding to multiples of 16 give the emulated recipe's results up to BF16 output."""
    import suite.methods.quant.layers as qlayers

    def fake_scaled_mm(a, b, scale_a, scale_b, out_dtype):
        assert a.shape[0] % 16 == 0 and a.shape[1] % 16 == 0 and b.shape[1] % 16 == 0
        return ((a.float() * scale_a) @ (b.float() * scale_b)).to(out_dtype)

    monkeypatch.setattr(qlayers, "fp8_matmul_supported", lambda device: (True, ""))
    monkeypatch.setattr(torch, "_scaled_mm", fake_scaled_mm)
    x, dy = data(m=40)  # 40 tokens: padded to 48 for the GEMMs
    for scaling in ("tensor", "row"):
        real, m = one_layer(f"fp8-train:scaling={scaling},real=true")
        emulated, _ = one_layer(f"fp8-train:scaling={scaling},real=false")
        got, want = run(real, x, dy), run(emulated, x, dy)
        for a, b in zip(got, want, strict=True):
            assert torch.allclose(a, b, rtol=1e-2, atol=1e-2 * float(b.abs().max()))
        assert m.measurements(torch.nn.Sequential(real))["train_gemm_real_fraction"] == 1.0


# -- COAT's optimizer -----------------------------------------------------------------------------------
def test_coat_dynamic_range_expansion_beats_plain_fp8_on_a_wide_group():
    from suite.methods.train.coat import ExpandedFp8

    g = torch.Generator().manual_seed(0)
    v = torch.exp(torch.randn(1024, generator=g) * 4) * 1e-6  # second moments: many decades
    plain = F.fake_quantize(v.reshape(-1, 128), "fp8_e4m3", granularity="row").reshape(-1)
    state = ExpandedFp8(v)
    state.encode(v)
    rel = lambda q: float(((q - v).abs() / v).median())  # noqa: E731
    assert rel(state.decode()) < 0.5 * rel(plain)
    assert state.q.data.dtype == torch.float8_e4m3fn and state.nbytes < v.numel() * 4 / 3


def test_coat_adamw_tracks_adamw():
    from suite.methods.train.coat import CoatAdamW

    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(64, 128))
    b = torch.nn.Parameter(a.detach().clone())
    ours, ref = CoatAdamW([a], lr=1e-2, weight_decay=0.1), torch.optim.AdamW([b], lr=1e-2, weight_decay=0.1)
    for step in range(5):
        grad = torch.randn(64, 128, generator=torch.Generator().manual_seed(step))
        a.grad, b.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
    moved = (b.detach() - torch.randn(64, 128, generator=torch.Generator().manual_seed(0))).norm()
    assert float((a - b).detach().norm()) < 0.05 * float(moved)


@pytest.mark.parametrize("mode", ["off", "on"])
def test_coat_adamw_steps_all_parameters_at_once_as_each_alone(mode):
    """CoatAdamW runs its step over all parameters' groups together (one flat layout, each
    parameter's last group padded; a batch per dtype and step count): each parameter and each of
    its FP8 moments must come out as the step of that parameter alone gives them (its own
    ``ExpandedFp8`` decoded, ``suite.optim.adamw_step``, encoded back), bit for bit."""
    from suite.methods.train.coat import CoatAdamW, ExpandedFp8
    from suite.optim import adamw_step

    shapes = [(40, 7), (128,), (3, 128), (5,), (130, 2)]
    g = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=g) for s in shapes]
    dtypes = [torch.float32, torch.float32, torch.bfloat16, torch.float32, torch.float32]
    ours = [torch.nn.Parameter(t.to(d)) for t, d in zip(init, dtypes, strict=True)]
    ref = [torch.nn.Parameter(t.to(d)) for t, d in zip(init, dtypes, strict=True)]
    hyper = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1}
    optimizer = CoatAdamW(ours, **hyper)
    moments: dict[int, list] = {}
    with compiled.emulation(mode):
        for step in range(4):
            for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
                skip = step == 1 and i == 3  # one parameter without a gradient: its step count falls behind
                grad = None if skip else (torch.randn(a.shape, generator=g) * 10.0 ** -i).to(a.dtype)
                a.grad, b.grad = grad, None if grad is None else grad.clone()
            optimizer.step()
            with torch.no_grad():
                for i, b in enumerate(ref):
                    if b.grad is None:
                        continue
                    m_state, v_state, count = moments.setdefault(i, [ExpandedFp8(b), ExpandedFp8(b), 0])
                    moments[i][2] = count = count + 1
                    m, v = m_state.decode(), v_state.decode()
                    adamw_step(b, b.grad.float(), m, v, count, lerp=False, **hyper)
                    m_state.encode(m)
                    v_state.encode(v)
            for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
                assert torch.equal(a.detach(), b.detach()), (mode, step, i)
                state = optimizer.state[a]
                for name, want in zip(("exp_avg", "exp_avg_sq"), moments[i][:2], strict=True):
                    got = state[name]
                    assert torch.equal(got.data.view(torch.uint8), want.data.view(torch.uint8)), (mode, step, i, name)
                    assert all(torch.equal(getattr(got, f), getattr(want, f)) for f in ("scale", "k", "centre"))
                    assert torch.equal(got.decode(), want.decode()) and got.nbytes == want.nbytes
    assert optimizer.state[ours[3]]["step"] == 3 and optimizer.state[ours[0]]["step"] == 4


# -- the lm task ---------------------------------------------------------------------------------------
def _corpus(folder: Path, n_train: int = 300, n_valid: int = 30) -> Path:
    """A small generated corpus in the jsonl layout: sentences of a tiny grammar."""
    import random

    rng = random.Random(0)
    subjects, verbs, objects = ("the cat", "a dog", "my friend", "the teacher"), ("sees", "likes", "finds"), \
        ("the ball", "a book", "the garden", "some bread")
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid)):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for _ in range(n):
                text = " ".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}."
                                for _ in range(rng.randint(2, 5)))
                fh.write(json.dumps({"text": text}) + "\n")
    return folder


def _cell(store: Path, method_name: str, metric: str) -> float:
    from suite.results.store import ResultStore

    frame = ResultStore(store).load()
    rows = frame[(frame["method"] == method_name) & (frame["metric"] == metric)]
    return float(rows["value"].iloc[0])


def test_lm_trains_llama_tiny_on_a_generated_corpus_with_curve_and_budget(tmp_path):
    from suite.app.cli import main
    from suite.results.store import ResultStore

    corpus = _corpus(tmp_path / "data")
    store = tmp_path / "store"
    # a token budget: 0.002 tokens per non-embedding parameter of llama-tiny -> steps of 4 x 32 tokens
    code = main(["run", "--methods", "fp8-train", "--tasks", "lm", "--models", "llama-tiny", "--data-dir",
                 str(corpus), "--tokens-per-param", "0.002", "--batch-size", "4", "--max-length", "32",
                 "--eval-tokens", "1024", "--eval-every", "4", "--lr", "3e-3", "--no-progress", "--store", str(store)])
    assert code == 0
    steps = round(0.002 * 1_004_928 / (4 * 32))
    assert _cell(store, "fp8-train", "train_steps") == steps
    assert _cell(store, "fp8-train", "val_loss") < math.log(259) - 1.0  # learnt the byte statistics
    assert _cell(store, "fp8-train", "perplexity") == pytest.approx(math.exp(_cell(store, "fp8-train", "val_loss")))
    curve = ResultStore(store).load_curves()
    evals = curve[curve["metric"] == "val_loss"]
    assert list(evals["step"]) == [s for s in range(4, steps, 4)]
    assert evals["value"].iloc[-1] < evals["value"].iloc[0]


def test_lm_reads_text_jsonl_and_parquet_and_holds_out_without_a_validation_file(tmp_path):
    import pandas as pd

    from suite.tasks.pretraining import LmTask

    docs = [f"document {i} says hello" for i in range(250)]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "train.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    (tmp_path / "b").mkdir()
    pd.DataFrame({"text": docs}).to_parquet(tmp_path / "b" / "train-00000.parquet")
    pd.DataFrame({"text": docs[:5]}).to_parquet(tmp_path / "b" / "validation-00000.parquet")
    a, b = LmTask(data_dir=str(tmp_path / "a")), LmTask(data_dir=str(tmp_path / "b"))
    a.check_data()
    held = list(a.texts("valid"))
    assert held == docs[99::100] and len(list(a.texts("train"))) == 250 - len(held)
    assert list(b.texts("train")) == docs and list(b.texts("valid")) == docs[:5]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "train.jsonl").write_text('{"txt": "no text field"}\n', encoding="utf-8")
    with pytest.raises(UserError, match="no string field 'text'"):
        list(LmTask(data_dir=str(tmp_path / "c")).texts("train"))
    with pytest.raises(UserError, match="no training file"):
        LmTask(data_dir=str(tmp_path)).check_data()


def test_lm_named_sizes_and_byte_tokenizer():
    from suite.models.catalog import LLAMA_SIZES
    from suite.models.tokenizers import byte_tokenizer
    from suite.tasks.pretraining import LmTask

    assert LLAMA_SIZES["llama-tiny"].non_embedding_params() == pytest.approx(1e6, rel=0.05)
    assert LLAMA_SIZES["llama-30m"].non_embedding_params() == pytest.approx(30e6, rel=0.06)
    tok = byte_tokenizer()
    text = "naïve café, 1+1=2"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == list(text.encode("utf-8")) and tok.decode(ids) == text and tok.eos_token_id == 256
    bundle = LmTask().build_model("llama-tiny")
    assert bundle.new_modules == (bundle.model,) and bundle.family == "llama"
    with pytest.raises(UserError):
        LmTask().build_model("tiny-bert@gpt2")


def test_divergence_is_a_failed_cell_with_its_step(tmp_path):
    from suite.app.cli import main
    from suite.results.store import ResultStore

    corpus = _corpus(tmp_path / "data")
    code = main(["run", "--methods", "mxfp4-train", "--tasks", "lm", "--models", "llama-tiny", "--data-dir",
                 str(corpus), "--max-steps", "30", "--batch-size", "2", "--max-length", "32", "--lr", "1e4",
                 "--warmup-ratio", "0", "--max-grad-norm", "0", "--no-progress", "--store", str(tmp_path / "s")])
    assert code == 1
    frame = ResultStore(tmp_path / "s").load()
    assert (frame["status"] == "failed").all()
    assert "training diverged" in frame["error"].iloc[0] and "at step" in frame["error"].iloc[0]


@pytest.mark.skipif(not (SHARED_LM / "train.jsonl").is_file(), reason="../shared/data/lm is absent")
def test_lm_on_a_slice_of_the_real_corpus(tmp_path):
    from suite.app.cli import main

    folder = tmp_path / "lm"
    folder.mkdir()
    for split, n in (("train", 400), ("valid", 40)):
        with open(SHARED_LM / f"{split}.jsonl", encoding="utf-8") as src, \
                open(folder / f"{split}.jsonl", "w", encoding="utf-8") as dst:
            for _, line in zip(range(n), src, strict=False):
                dst.write(line)
    store = tmp_path / "store"
    code = main(["run", "--methods", "bf16-train,quartet-train", "--tasks", "lm", "--models", "llama-tiny",
                 "--data-dir", str(folder), "--max-steps", "12", "--batch-size", "4", "--max-length", "64",
                 "--lr", "3e-3", "--eval-tokens", "2048", "--no-progress", "--store", str(store)])
    assert code == 0
    for name in ("bf16-train", "quartet-train"):
        assert _cell(store, name, "val_loss") < math.log(259) - 0.5
    assert _cell(store, "quartet-train", "train_gemm_emulated") == 1.0
    assert _cell(store, "bf16-train", "train_gemm_emulated") == 0.0


# -- judging: the gap to the baseline over seeds ---------------------------------------------------------
def _lm_cell(store, method_name: str, seed: int, val_loss: float, recipe: str = "r",
             extra_recipe: dict | None = None) -> None:
    from benchmarks.synthetic_store import cell_id_for

    cid = cell_id_for(method_name, seed, recipe)
    stored_recipe = json.dumps({"max_steps": 300, "tag": recipe, **(extra_recipe or {})})
    base = {"cell_id": cid, "run_id": "t", "method": method_name, "variant": method_name,
            "method_args": "[]", "method_kind": "train", "task": "lm", "subtask": "", "model": "llama-tiny",
            "seed": seed, "recipe": stored_recipe, "config": "{}",
            "data_source": "dir:/data", "synthetic_data": True, "started_at": "2025-01-01T00:00:00",
            "finished_at": "2025-01-01T00:01:00", "status": "ok", "error": ""}
    rows = [dict(base, metric="val_loss", value=val_loss, split="valid", is_primary=True, higher_is_better=False)]
    for name, value in (("train_time_s", 30.0), ("train_steps", 300.0), ("train_tokens_per_s", 10_000.0),
                        ("peak_memory_mb", 700.0), ("trainable_params", 1e6)):
        rows.append(dict(base, metric=name, value=value, split="cost", is_primary=False, higher_is_better=False))
    store.write_cell(rows)


def test_gap_to_the_baseline_is_paired_by_seed_and_judged_against_seed_noise(tmp_path, capsys):
    from suite.app.cli import main
    from suite.reports import leaderboard
    from suite.reports.site import render_site
    from suite.results.store import ResultStore

    store = ResultStore(tmp_path / "store")
    seed_luck = [0.00, 0.30, -0.20]  # large seed-to-seed spread, shared by methods of the same seed
    for seed, luck in enumerate(seed_luck):
        _lm_cell(store, "bf16-train", seed, 2.40 + luck)
        _lm_cell(store, "fp8-train", seed, 2.41 + luck + 0.001 * seed)  # a small, consistent gap
        _lm_cell(store, "mxfp4-train", seed, 2.40 + luck + (0.05, -0.04, 0.01)[seed])  # noise only
        _lm_cell(store, "fp8-train", seed, 9.0, recipe="other")  # another recipe: never paired
    (board,) = leaderboard.build_boards(store.load(), "bf16-train")
    col = board.columns[0]
    assert board.gap_columns == [col]
    rows = {r.variant: r.entries for r in board.rows}
    fp8 = rows["fp8-train"][col.key]
    assert fp8.gap.n == 3 and fp8.gap.mean == pytest.approx(0.011, abs=1e-9)
    assert fp8.gap.distinguishable  # consistent across seeds: beyond the noise, though tiny
    assert fp8.gap.noise == pytest.approx(float(torch.tensor([2.40, 2.70, 2.20]).std()), rel=1e-5)
    mx = rows["mxfp4-train"][col.key].gap
    assert mx.n == 3 and not mx.distinguishable and mx.low < 0 < mx.high
    assert rows["fp8-train"][col.key].step_time_s == pytest.approx(0.1)
    assert main(["compare", str(tmp_path / "store"), "--baseline", "bf16-train"]) == 0
    out = capsys.readouterr().out
    # the heading carries the baseline's protocol mark (untuned here), never a row's emulation mark
    heading = next(x for x in out.splitlines() if "gap to bf16-train" in x)
    assert "gap to bf16-train† over seeds" in heading and "(emul.)" not in heading
    line = next(x for x in out.splitlines() if x.strip().startswith("mxfp4-train") and "within" in x)
    assert "n=3" in line
    site = render_site(tmp_path / "store", tmp_path / "site", baseline="bf16-train", workers=1)
    page = next((tmp_path / "site").glob("task-*.html")).read_text(encoding="utf-8")
    assert "Gap vs bf16-train" in page and "beyond" in page and site.n_cells == 12


def test_cells_from_before_a_recipe_option_existed_pair_with_cells_that_store_its_default(tmp_path):
    """A baseline stored before ``group_by_length`` existed and a recipe cell stored after (with
    the option at its default) ran the same recipe: they pair; a non-default value does not."""
    from suite.reports import leaderboard
    from suite.results.store import ResultStore

    store = ResultStore(tmp_path / "store")
    for seed in range(3):
        _lm_cell(store, "bf16-train", seed, 2.40 + 0.1 * seed)
        _lm_cell(store, "fp8-train", seed, 2.41 + 0.1 * seed, extra_recipe={"group_by_length": False})
        _lm_cell(store, "mxfp4-train", seed, 2.50 + 0.1 * seed, extra_recipe={"group_by_length": True})
    (board,) = leaderboard.build_boards(store.load(), "bf16-train")
    col = board.columns[0]
    rows = {r.variant: r.entries.get(col.key) for r in board.rows}
    assert rows["fp8-train"].gap.n == 3 and rows["fp8-train"].gap.mean == pytest.approx(0.01)
    assert rows["mxfp4-train"].gap is None  # another recipe: never paired


def test_the_gap_names_the_training_budget_it_was_measured_at(tmp_path, capsys):
    """A recipe's gap to BF16 depends on the budget (tokens per parameter) as much as on the recipe:
    compare's gap heading and the site's recipe line name it; differing budgets are said."""
    from suite.app.cli import main
    from suite.reports.site import render_site
    from suite.results.store import ResultStore

    store = ResultStore(tmp_path / "store")
    for seed in range(2):
        for name, loss in (("bf16-train", 2.4), ("fp8-train", 2.5)):
            _lm_cell(store, name, seed, loss + 0.01 * seed, extra_recipe={"tokens_per_param": 0.5})
    assert main(["compare", str(tmp_path / "store"), "--baseline", "bf16-train", "--width", "200"]) == 0
    heading = next(x for x in capsys.readouterr().out.splitlines() if "gap to bf16-train" in x)
    assert "at 0.5 tokens per parameter over seeds" in heading
    render_site(tmp_path / "store", tmp_path / "site", baseline="bf16-train", workers=1)
    page = next((tmp_path / "site").glob("task-*.html")).read_text(encoding="utf-8")
    assert "tokens_per_param <code>0.5</code>" in page

    # Another budget is another experiment: its own row, named by its budget, and said in the heading.
    _lm_cell(store, "fp8-train", 2, 2.6, extra_recipe={"tokens_per_param": 2.0})
    assert main(["compare", str(tmp_path / "store"), "--baseline", "bf16-train", "--width", "200"]) == 0
    out = capsys.readouterr().out
    heading = next(x for x in out.splitlines() if "gap to bf16-train" in x)
    assert "tokens per parameter differing: 0.5 (bf16-train, fp8-train [tokens_per_param=0.5]); " \
           "2 (fp8-train [tokens_per_param=2])" in heading
    rows = [x.split()[0:2] for x in out.splitlines() if x.strip().startswith("fp8-train [")]
    assert ["fp8-train", "[tokens_per_param=2]"] in rows and ["fp8-train", "[tokens_per_param=0.5]"] in rows


def test_an_operand_whose_quantiser_cannot_round_as_declared_is_refused():
    """Delayed FP8 scaling has a round-to-nearest quantiser only, and only QuEST's rounds ties toward
    zero: other declarations are refused when the operand is built, not rounded otherwise in silence."""
    from suite.methods.train.gemm import Operand

    with pytest.raises(ValueError, match="delayed scaling rounds to nearest, not 'stochastic'"):
        Operand("e4m3", "delayed", "stochastic")
    with pytest.raises(ValueError, match="ties toward zero are QuEST's rule"):
        Operand("mxfp4", "block", ties="down")
    assert Operand("e4m3", "delayed").dispatched() == ("fake_quantize_given_amax", "fp8_e4m3")
