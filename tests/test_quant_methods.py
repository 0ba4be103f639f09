"""Quantizer algorithms and methods: GPTQ beats RTN, scale migrations and rotations are
exact in full precision, HAWQ allocation, QLoRA composition with peft, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from suite.errors import UserError
from suite.method import MethodContext
from suite.methods.quant import algorithms as A
from suite.methods.quant.layers import QuantLinear
from suite.numerics import formats as F
from suite.numerics.hadamard import apply_block_hadamard, hadamard_matrix
from suite.registry import METHODS
from suite.task import ModelBundle


def _correlated_inputs(n: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) / k**0.5
    scales = torch.exp(torch.randn(k, generator=g))
    return (torch.randn(n, k, generator=g) @ mix) * scales + 0.3 * torch.randn(n, 1, generator=g)


def _tiny_bert(hidden: int = 64, labels: int = 2):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=labels,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg).eval()


def _batches(n: int = 2, bs: int = 4, seq: int = 12, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, 100, (bs, seq), generator=g)
        mask = torch.ones(bs, seq, dtype=torch.long)
        mask[0, -3:] = 0
        out.append({"input_ids": ids, "attention_mask": mask,
                    "labels": torch.randint(0, 2, (bs,), generator=g)})
    return out


def _ctx(batches=None, model=None) -> MethodContext:
    """The runner's context for a sequence classifier: its fresh head is the task's new module."""
    src = (lambda n, bs=None: batches[:n]) if batches is not None else None
    head = getattr(model, "classifier", None)
    bundle = ModelBundle(model, new_modules=(head,) if head is not None else ()) if model is not None else None
    return MethodContext(device="cpu", dtype=torch.float32, seed=0, task_kind="classification",
                         calibration_source=src, bundle=bundle)


def _method(spec: str):
    from suite.config import build_config, parse_kv

    name, _, args = spec.partition(":")
    cls = METHODS.get(name).target
    return cls(build_config(cls.Config, parse_kv(args, name), name))


# -- algorithms ----------------------------------------------------------------------------------
@pytest.mark.parametrize("group", [0, 32])
def test_gptq_reconstruction_error_below_rtn(group):
    k, out = 128, 48
    x = _correlated_inputs(1024, k)
    w = torch.randn(out, k, generator=torch.Generator().manual_seed(1)) * 0.1
    h = 2 * x.t() @ x / x.shape[0]
    q_gptq = A.gptq_quantize(w, h, bits=4, group_size=group)
    opts = {"granularity": "group", "group_size": group} if group else {"granularity": "channel"}
    q_rtn = F.fake_quantize(w, "int4", **opts)
    err = lambda q: ((x @ w.t() - x @ q.t()).pow(2).mean()).item()  # noqa: E731
    assert err(q_gptq) < 0.8 * err(q_rtn)
    # GPTQ's values lie on the int4 grid of their group: at most 15 distinct levels per group
    g = group or k
    for blk in q_gptq.reshape(out, -1, g).unbind(1):
        assert all(len(row.unique()) <= 15 for row in blk)


def test_forward_stages_group_layers_that_share_an_input():
    model = _tiny_bert()
    from suite.methods.quant.engine import target_linears

    stages = A.forward_stages(model, target_linears(model, keep=("classifier",)), _batches()[0])
    short = [[n.removeprefix("bert.encoder.layer.") for n in stage] for stage in stages]
    assert short[:4] == [["0.attention.self.query", "0.attention.self.key", "0.attention.self.value"],
                         ["0.attention.output.dense"], ["0.intermediate.dense"], ["0.output.dense"]]
    assert short[4][0] == "1.attention.self.query" and short[-1] == ["bert.pooler.dense"]
    assert sum(len(s) for s in stages) == 2 * 6 + 1


def test_stopping_a_pass_early_keeps_the_stage_statistics():
    model = _tiny_bert()
    from suite.methods.quant.engine import target_linears

    layers = target_linears(model, keep=("classifier",))
    first = {n: layers[n] for n in A.forward_stages(model, layers, _batches()[0])[1]}
    full = A.collect_input_stats(model, first, _batches(), hessian=True)
    early = A.collect_input_stats(model, first, _batches(), stop_when_seen=True, hessian=True)
    for name in first:
        assert torch.equal(full[name].xtx, early[name].xtx) and full[name].n == early[name].n


class _TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 8)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize("sequential", [True, False])
def test_sequential_gptq_calibrates_each_layer_on_quantized_inputs(sequential, monkeypatch):
    """The paper's procedure: fc2's Hessian comes from fc1's quantised outputs."""
    model = _TwoLayer().eval()
    x = _correlated_inputs(256, 32)
    fp_hidden = torch.relu(model.fc1(x)).detach()
    hessians = {}
    real = A.gptq_quantize

    def spy(w, h, *args, **kwargs):
        hessians[w.shape] = h.clone()
        return real(w, h, *args, **kwargs)

    monkeypatch.setattr(A, "gptq_quantize", spy)
    method = _method(f"gptq:group=16,sequential={str(sequential).lower()}")
    method.quantize(model, {"fc1": model.fc1, "fc2": model.fc2}, [{"x": x[:128]}, {"x": x[128:]}], _ctx())
    assert isinstance(model.fc1, QuantLinear) and isinstance(model.fc2, QuantLinear)
    hidden = torch.relu(model.fc1(x)).detach() if sequential else fp_hidden
    torch.testing.assert_close(hessians[model.fc2.weight.shape], 2 * hidden.T @ hidden / 256)
    differs = not torch.allclose(hessians[model.fc2.weight.shape], 2 * fp_hidden.T @ fp_hidden / 256)
    assert differs == sequential


def test_gptq_act_order_also_beats_rtn():
    x = _correlated_inputs(512, 64, seed=2)
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(3))
    h = 2 * x.t() @ x / x.shape[0]
    q = A.gptq_quantize(w, h, bits=3, act_order=True)
    rtn = F.fake_quantize(w, "int3", granularity="channel")
    assert (x @ (w - q).t()).pow(2).mean() < (x @ (w - rtn).t()).pow(2).mean()


def test_smoothquant_migration_leaves_fp_output_unchanged():
    x = _correlated_inputs(64, 32)
    x[:, 3] *= 50  # an outlier channel
    lin = nn.Linear(32, 16)
    s = A.smoothquant_scales(x.abs().amax(0), lin.weight, alpha=0.5)
    layer = QuantLinear.from_linear(lin, lin.weight * s, input_scale=s)
    torch.testing.assert_close(layer(x), lin(x), rtol=1e-5, atol=1e-5)
    # and the migration did shrink the activation outlier
    assert (x / s).abs().amax(0).max() < x.abs().amax(0).max() / 5


def test_awq_scaling_leaves_fp_output_unchanged_and_helps():
    x = _correlated_inputs(256, 64, seed=4)
    x[:, :4] *= 20
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(5)) * 0.05
    quant = lambda t: F.fake_quantize(t, "int4", granularity="group", group_size=32, symmetric=False)  # noqa: E731
    s, alpha = A.awq_search(w, x, x.abs().mean(0), quant)
    torch.testing.assert_close((x / s) @ (w * s).t(), x @ w.t(), rtol=1e-4, atol=1e-5)
    err_awq = ((x / s) @ quant(w * s).t() - x @ w.t()).pow(2).mean()
    err_rtn = (x @ quant(w).t() - x @ w.t()).pow(2).mean()
    assert alpha > 0 and err_awq < err_rtn


def test_hadamard_rotation_leaves_fp_output_unchanged():
    h = hadamard_matrix(16)
    torch.testing.assert_close(h @ h.t(), torch.eye(16))
    lin = nn.Linear(48, 8)  # 48 = 16 * 3: block-diagonal Hadamard of 16
    x = torch.randn(10, 48)
    layer = QuantLinear.from_linear(lin, apply_block_hadamard(lin.weight, 16), hadamard_block=16)
    torch.testing.assert_close(layer(x), lin(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.effective_weight(), lin.weight, rtol=1e-5, atol=1e-6)


def test_hadamard_spreads_outliers_so_int4_error_drops():
    g = torch.Generator().manual_seed(6)
    w = torch.randn(64, 128, generator=g) * 0.02
    w[:, 5] = 1.0  # an outlier input channel
    plain = F.fake_quantize(w, "int4", granularity="channel")
    rot = apply_block_hadamard(w, 128)
    back = apply_block_hadamard(F.fake_quantize(rot, "int4", granularity="channel"), 128)
    assert (back - w).norm() < (plain - w).norm()


def test_hawq_allocation_respects_budget_and_sensitivity():
    sens = {"a": {2: 10.0, 4: 1.0, 8: 0.0}, "b": {2: 0.1, 4: 0.01, 8: 0.0}}
    bits = A.allocate_bits(sens, {"a": 100, "b": 100}, budget=5.0)
    assert bits == {"a": 8, "b": 2}
    bits = A.allocate_bits(sens, {"a": 100, "b": 100}, budget=4.0)
    assert sum(bits.values()) / 2 <= 4.0 and bits["a"] >= bits["b"]
    with pytest.raises(UserError, match="below the lowest"):
        A.allocate_bits(sens, {"a": 1, "b": 1}, budget=1.0)


def test_measured_layer_sensitivity_restores_weights_and_sees_damage():
    from suite.methods.quant.engine import target_linears

    model = _tiny_bert()
    layers = target_linears(model, keep=("classifier",))
    before = {n: lin.weight.detach().clone() for n, lin in layers.items()}
    hawq = _method("hawq:choices=2;8")
    sens = A.layer_loss_sensitivity(model, layers, _batches(), hawq.quantized_weight, (2, 8))
    assert all(torch.equal(lin.weight, before[n]) for n, lin in layers.items())
    assert set(sens) == set(layers) and all(set(s) == {2, 8} for s in sens.values())
    # 2-bit weights hurt far more than 8-bit ones, summed over the layers
    assert sum(abs(s[2]) for s in sens.values()) > 10 * sum(abs(s[8]) for s in sens.values())


def test_hutchinson_trace_matches_exact_trace():
    torch.manual_seed(0)
    a = torch.randn(6, 6)
    hess = a @ a.t()  # loss = 0.5 w^T H w has Hessian H
    w = torch.randn(6, requires_grad=True)
    traces = A.hutchinson_traces(lambda: 0.5 * w @ hess @ w, {"w": w}, n_samples=400, seed=1)
    assert traces["w"] == pytest.approx(float(torch.trace(hess)), rel=0.1)


# -- methods on a tiny BERT ----------------------------------------------------------------------
ALL = ["rtn", "rtn:bits=8,group=0", "w8a8", "w8a8:format=fp8", "w8a8:format=fp8,scaling=block,block=32", "mxfp4", "mxfp6", "mxfp8",
       "nvfp4", "nf4", "gptq:group=32", "awq:group=32", "smoothquant", "quarot",
       "quarot:format=nvfp4", "hawq:budget=5,samples=2", "hawq:budget=5,sensitivity=loss"]


@pytest.mark.parametrize("spec", ALL)
def test_every_quantizer_applies_and_measures(spec):
    model = _tiny_bert()
    batches = _batches()
    ref = model(**{k: v for k, v in batches[0].items() if k != "labels"}).logits
    method = _method(spec)
    out_model = method.apply(model, _ctx(batches, model=model))
    n_q = sum(isinstance(m, QuantLinear) for m in out_model.modules())
    assert n_q == 2 * 6 + 1  # 6 linears per layer + pooler; the classifier head stays FP
    assert not isinstance(out_model.classifier, QuantLinear)
    logits = out_model(**{k: v for k, v in batches[0].items() if k != "labels"}).logits
    assert torch.isfinite(logits).all()
    assert not torch.equal(logits, ref)  # something was quantised
    m = method.measurements(out_model)
    for key in ("bits_per_weight", "model_size_bytes", "calibration_time_s",
                "quant_rel_error_mean", "quant_rel_error_max", "quant_real_matmul"):
        assert key in m
    assert 0 < m["quant_rel_error_mean"] <= m["quant_rel_error_max"] < 1
    assert m["quant_real_matmul"] == 0.0
    assert 2 < m["bits_per_weight"] < 16
    assert any(k.startswith("quant_rel_error/bert.encoder.layer.0") for k in m)


PACKED = ALL + ["gptq:group=32,act_order=true", "gptq:group=0,sym=false,act_order=true", "awq:group=32,bits=3",
                "rtn:format=fp6_e3m2,group=32", "rtn:format=mxfp5_e2m2", "rtn:bits=3,group=32,sym=false",
                "quarot:format=fp5_e2m2"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("spec", PACKED)
def test_packed_and_fake_quantised_paths_agree(spec, dtype):
    """Every quantizer keeps its weight in real low-bit storage, built apart from the
    dequantised weight it computes with; both give the same weight and the same outputs
    (GPTQ's codes and scales stored as chosen, act_order's column order kept)."""
    model = _tiny_bert().to(dtype)
    batches = _batches()
    x = {k: v for k, v in batches[0].items() if k != "labels"}
    model = _method(spec).apply(model, _ctx(batches, model=model))
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert len(layers) == 13
    for layer in layers:
        assert layer.packed is not None, spec
        deq = layer.packed.dequantize()
        assert deq.dtype == dtype and torch.equal(deq, layer.weight), spec
        assert layer.packed.nbytes < layer.weight.numel() * 4
    with torch.no_grad():
        fake = model(**x).logits
        for layer in layers:
            layer.run_packed = True
        packed = model(**x).logits
    assert torch.equal(packed, fake)


def test_gptq_packed_codes_are_integers_of_the_format():
    from suite.methods.quant import engine

    x = _correlated_inputs(512, 64, seed=8)
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(9))
    h = 2 * x.t() @ x / x.shape[0]
    q, codes = A.gptq_quantize(w, h, bits=4, group_size=16, act_order=True, return_codes=True)
    assert torch.equal(q, A.gptq_quantize(w, h, bits=4, group_size=16, act_order=True))
    assert codes.codes.abs().max() <= 7 and torch.equal(codes.codes, codes.codes.round())
    assert codes.scales.shape == (16, 4) and codes.perm is not None
    # the bug class the packed path avoids: re-quantising GPTQ's weight with the format's
    # own groups (natural column order, scales from the result) does not give it back
    assert not torch.equal(F.fake_quantize(q, "int4", granularity="group", group_size=16), q)
    packed = engine.pack_gptq(codes, 4, 16, True, torch.float32)
    assert torch.equal(packed.dequantize(), q)


def test_bits_per_weight_counts_scales():
    model = _tiny_bert()
    m = _method("rtn:bits=4,group=32")
    m.apply(model, _ctx(model=model))
    # int4 + one fp32 scale per 32 weights
    assert m.measurements(model)["bits_per_weight"] == pytest.approx(4 + 32 / 32)
    model = _tiny_bert()
    m = _method("mxfp4")
    m.apply(model, _ctx(model=model))
    assert m.measurements(model)["bits_per_weight"] == pytest.approx(4.25)


def test_quantized_model_is_smaller_and_merges_back():
    model = _tiny_bert()
    fp_bytes = sum(p.numel() * 4 for p in model.parameters())
    m = _method("nf4")
    model = m.apply(model, _ctx(model=model))
    assert m.measurements(model)["model_size_bytes"] < fp_bytes
    x = {k: v for k, v in _batches(1)[0].items() if k != "labels"}
    before = model(**x).logits
    merged = m.merge(model)
    assert not any(isinstance(mod, QuantLinear) for mod in merged.modules())
    torch.testing.assert_close(merged(**x).logits, before)


# -- composition with peft -----------------------------------------------------------------------
@pytest.mark.parametrize("quant", ["nf4", "gptq:group=32"])
def test_qlora_frozen_quantized_base_with_peft_lora(quant):
    from peft import LoraConfig, get_peft_model

    model = _tiny_bert()
    batches = _batches()
    model = _method(quant).apply(model, _ctx(batches, model=model))
    q_weights = {n: m.weight.detach().clone() for n, m in model.named_modules()
                 if isinstance(m, QuantLinear)}
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS")
    model = get_peft_model(model, cfg)
    wrapped = [m for n, m in model.named_modules() if n.endswith("query") and hasattr(m, "base_layer")]
    assert wrapped and all(isinstance(m.base_layer, QuantLinear) for m in wrapped)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # LoRA trained
    for n, mod in model.named_modules():  # the quantised base stayed frozen and unchanged
        if isinstance(mod, QuantLinear):
            key = n.replace("base_model.model.", "").replace(".base_layer", "")
            assert not mod.weight.requires_grad
            assert torch.equal(mod.weight, q_weights[key])


def test_composition_through_the_runner_spec():
    """``nf4+lora`` applies left to right: peft's LoRA wraps the NF4 layers."""
    model = _tiny_bert()
    ctx = _ctx(_batches(), model=model)
    model = _method("nf4").apply(model, ctx)
    model = _method_lora().apply(model, ctx)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)


def _method_lora():
    return _method("lora:r=4")


# -- errors --------------------------------------------------------------------------------------
def test_unsupported_requests_are_clear_errors():
    with pytest.raises(UserError, match="group size 48 does not divide the input dimension 64"):
        _method("rtn:group=48").apply(model := _tiny_bert(), _ctx(model=model))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="real=true asks for FP8 matmuls"):
            _method("w8a8:format=fp8,real=true").apply(model := _tiny_bert(), _ctx(model=model))
    with pytest.raises(UserError, match="format=fp8 only"):
        _method("w8a8:format=int8,real=true").apply(model := _tiny_bert(), _ctx(model=model))
    with pytest.raises(UserError, match="block_size=32 does not divide"):
        _method("mxfp4").apply(model := _tiny_bert(hidden=48), _ctx(model=model))
    with pytest.raises(UserError, match="element 'e9m9'"):
        _method("mxfp8:element=e9m9").apply(model := _tiny_bert(), _ctx(model=model))
    with pytest.raises(UserError, match="row scaling only"):
        _method("w8a8:format=fp8,scaling=block,real=true").apply(model := _tiny_bert(), _ctx(model=model))
    with pytest.raises(UserError, match="tile scaling needs block_size=48 to divide the 64 rows"):
        _method("w8a8:format=fp8,scaling=block,block=48").apply(model := _tiny_bert(), _ctx(model=model))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_fp8_matmul_close_to_simulated():
    from suite.methods.quant.layers import fp8_matmul_supported

    if not fp8_matmul_supported("cuda")[0]:
        pytest.skip("GPU without FP8 tensor cores")
    lin = nn.Linear(256, 128).cuda()
    x = torch.randn(64, 256, device="cuda")
    wq = F.fake_quantize(lin.weight, "fp8_e4m3", granularity="row")
    sim = QuantLinear.from_linear(lin, wq, act_fmt="fp8_e4m3", act_opts={"granularity": "row"})
    real = QuantLinear.from_linear(lin, wq, act_fmt="fp8_e4m3", act_opts={"granularity": "row"})
    real.enable_real_fp8()
    # same quantised operands; only the accumulation (and bf16 output) differs
    torch.testing.assert_close(real(x), sim(x), rtol=2e-2, atol=2e-2)


# -- the real FP8 path, exercised on the CPU where torch's CPU build has _scaled_mm -----------------
def _cpu_scaled_mm_works() -> bool:
    try:
        a = torch.ones(16, 16).to(torch.float8_e4m3fn)
        torch._scaled_mm(a, a.t(), scale_a=torch.ones(16, 1), scale_b=torch.ones(1, 16),
                         out_dtype=torch.bfloat16)
        return True
    except (RuntimeError, NotImplementedError, AttributeError):
        return False


@pytest.fixture
def fp8_on_cpu(monkeypatch):
    """Let the real FP8 path run on the CPU: the device check is the only CUDA-specific part;
    the operand layout and scale shapes go through torch._scaled_mm as on a GPU. Counts calls."""
    if not _cpu_scaled_mm_works():
        pytest.skip("this torch build has no CPU torch._scaled_mm")
    from suite.methods.quant import layers

    calls = []
    real_scaled_mm = torch._scaled_mm

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real_scaled_mm(*args, **kwargs)

    monkeypatch.setattr(layers, "fp8_matmul_supported", lambda device: (True, ""))
    monkeypatch.setattr(torch, "_scaled_mm", counting)
    return calls


def test_real_fp8_layer_runs_scaled_mm_and_matches_the_simulation(fp8_on_cpu):
    lin = nn.Linear(256, 128)
    x = torch.randn(3, 21, 256)  # a token count that is no multiple of 16
    wq = F.fake_quantize(lin.weight, "fp8_e4m3", granularity="row")
    sim = QuantLinear.from_linear(lin, wq, act_fmt="fp8_e4m3", act_opts={"granularity": "row"})
    real = QuantLinear.from_linear(lin, wq, act_fmt="fp8_e4m3", act_opts={"granularity": "row"})
    real.enable_real_fp8()
    x_real, x_sim = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, want = real(x_real), sim(x_sim)
    assert fp8_on_cpu == [(63, 256)]
    assert got.shape == want.shape and got.dtype == want.dtype
    # the same quantised operands: only the accumulation order and the bf16 output differ
    torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2 * float(want.detach().abs().max()))
    # _scaled_mm has no derivative: the layer supplies the simulated path's gradient
    upstream = torch.randn(want.shape)
    got.backward(upstream)
    want.backward(upstream)
    assert x_real.grad is not None
    torch.testing.assert_close(x_real.grad, x_sim.grad, rtol=1e-5, atol=1e-5)


def test_w8a8_fp8_real_method_matches_the_simulated_one(fp8_on_cpu):
    batch = {k: v for k, v in _batches(1)[0].items() if k != "labels"}
    outputs = {}
    for spec in ("w8a8:format=fp8", "w8a8:format=fp8,real=true"):
        method = _method(spec)
        model = _tiny_bert()
        model = method.apply(model, _ctx(model=model))
        with torch.no_grad():
            outputs[spec] = model(**batch).logits
        assert method.measurements(model)["quant_real_matmul"] == (1.0 if "real" in spec else 0.0)
    assert len(fp8_on_cpu) == 13  # every quantised linear layer: 2 blocks x 6, and the pooler
    torch.testing.assert_close(outputs["w8a8:format=fp8,real=true"], outputs["w8a8:format=fp8"],
                               rtol=2e-2, atol=2e-2)


def test_real_fp8_refuses_dimensions_cublaslt_cannot_run(fp8_on_cpu):
    lin = nn.Linear(40, 128)
    layer = QuantLinear.from_linear(lin, lin.weight.detach())
    with pytest.raises(UserError, match="divisible by 16, and a layer is 128 x 40"):
        layer.enable_real_fp8()
