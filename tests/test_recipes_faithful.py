"""The training recipes held to their papers' released code, and checks that would catch a broken one.

Each recipe against its reference (facts read from the repositories, no code copied):

=============  ==========================================================  =================================================
recipe         reference (repository, file)                                what is compared here
=============  ==========================================================  =================================================
bf16-train     PyTorch autocast (``F.linear`` under BF16 autocast)         forward equal; test_train_recipes: a cell equals
                                                                           ``full --precision bf16`` metric for metric
fp8-train      pytorch/ao, ``torchao/float8`` (tensorwise, emulate=True)   test_train_recipes: Y, dX, dW within a code step
mxfp8-train    pytorch/ao, ``torchao/prototype/mx_formats`` (RCEIL)        test_train_recipes: Y, dX, dW bit for bit
mxfp4-train    OCP MX spec v1.0 through ``suite.numerics``                 test_train_recipes: Y, dX, dW bit for bit
nvfp4-train    NVIDIA arXiv:2509.25149 (recipe: RHT 16, 16x16 weight       test_train_recipes: forward exact, backward
               tiles, SR on gradients, selective BF16 blocks)              unbiased; here: BF16 blocks by position, stored
quartet-train  IST-DASLab/Quartet,                                         QuEST values and clip mask bit for bit against a
               ``src/models/quantization/quantizers/mxfp4_triton.py``      float32 port of ``mxfp4_forward_kernel`` (quest)
                                                                           on random, outlier-heavy and constant blocks;
                                                                           its tie rule on exact ties
halo-train     IST-DASLab/HALO, ``qllmt/functional/hadamard.py``           the full-size rotation against a port of
               (``get_hadK``, ``matmul_hadU_cuda``), ``qllmt/nn/           ``right_had`` (H_K from the left on the (K, 2^m)
               halo2_fns.py`` (level 2)                                    view); forward and dX of a 352-wide layer
coat-train     NVlabs/COAT, ``coat/utils/_fp8_quantization_config.py``,    E4M3 forward operands, E5M2 ``bobit`` for dY in
               ``examples/OLMo/configs/coat/OLMo-1B-COAT-Both.yaml``,      dgrad and wgrad: dX = mm(fq(dY, e5m2),
               ``coat/activation/real_quantization/fp8linear.py``          fq(W, e4m3)); zeros flushed E4M3 vs E5M2
=============  ==========================================================  =================================================

For every recipe, on one linear layer and a short training run of llama-tiny: the forward
output differs from BF16's by what the format implies (above a quarter of the element's unit
roundoff u, which BF16's own rounding stays under, and below sqrt(2) u: two operands, each
within u), the forward's quantised operands lie on the format's grid
(every scale block is grid values times one scale; distinct values per block counted), and
the loss after a few steps differs from ``bf16-train``'s (which repeats exactly). The README's
operand table is the one ``recipes.operand_table`` builds from the declarations.
"""

from __future__ import annotations

import math
import re
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from suite.app.sweep import parse_method_spec, resolve_method_spec
from suite.errors import UserError
from suite.method import MethodContext
from suite.numerics import elements as el
from suite.numerics import formats as F
from suite.numerics.hadamard import apply_hadamard, paley_hadamard
from suite.task import ModelBundle

README = Path(__file__).resolve().parent.parent / "README.md"
RECIPES = ("bf16-train", "fp8-train", "mxfp8-train", "mxfp4-train", "nvfp4-train", "quartet-train",
           "halo-train", "coat-train")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def method(spec: str):
    return resolve_method_spec(parse_method_spec(spec))[0].instantiate()


def one_layer(spec: str, k: int = 128, n: int = 96, seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False))
    m = method(spec)
    m.apply(model, MethodContext(bundle=ModelBundle(model, new_modules=(model,)), seed=seed))
    return model[0], m


def fq(t: torch.Tensor, fmt: str, **opts) -> torch.Tensor:
    return F.fake_quantize(t.contiguous(), fmt, **opts)


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a.contiguous() @ b.contiguous().t()


def grads(layer, x: torch.Tensor, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    layer.weight.grad = None
    x = x.clone().requires_grad_(True)
    y = layer(x)
    y.backward(dy)
    return y.detach(), x.grad.detach(), layer.weight.grad.detach()


def recorded(layer) -> list:
    """Every operand the layer quantises, in call order, as (Operand, float32 values)."""
    state, calls = layer.state, []
    original = state.quantize

    def quantize(t, op, *args, **kwargs):
        q = original(t, op, *args, **kwargs)
        # a real integer GEMM's operand is its codes and scale: the values they stand for
        values = q.values if q.values is not None else q.codes.float() * q.scale
        calls.append((op, values.detach().clone()))
        return q

    state.quantize = quantize
    return calls


# -- COAT: E5M2 gradients, as its configs ship -----------------------------------------------------------
def test_coat_gradients_are_e5m2_as_coats_shipped_configs():
    """NVlabs/COAT, examples/OLMo/configs/coat/OLMo-1B-COAT-Both.yaml (and the defaults of
    coat/utils/_fp8_quantization_config.py): fabit/fwbit E4M3, bobit E5M2, and
    coat/activation/real_quantization/fp8linear.py quantises grad_output per tensor with bobit
    for both backward GEMMs."""
    layer, _ = one_layer("coat-train:real=false")
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(64, 128, generator=g), layer.weight.detach()
    # a gradient spanning six decades: magnitudes log-uniform in [1e-6, 1], random signs
    dy = torch.exp(torch.empty(64, 96).uniform_(math.log(1e-6), 0.0, generator=g))
    dy = dy * torch.where(torch.rand(64, 96, generator=g) < 0.5, -1.0, 1.0)
    calls = recorded(layer)
    _, dx, dw = grads(layer, x, dy)
    assert torch.equal(dx, mm(fq(dy, "fp8_e5m2"), fq(w.t(), "fp8_e4m3")))
    x_kept = F.dequantize(F.quantize(x, "fp8_e4m3", granularity="tensor"))
    assert torch.equal(dw, mm(fq(dy.t(), "fp8_e5m2"), fq(x_kept.t(), "fp8_e4m3")))
    dgrad_dy = calls[2][1]  # forward X, W; then dgrad's dY
    assert calls[2][0].fmt == "e5m2" and torch.equal(dgrad_dy, fq(dy, "fp8_e5m2"))
    # per tensor, E4M3's smallest value is 2^-9 / 448 ~ 4e-6 of the amax (below half of it: zero),
    # the lowest of these six decades; E5M2's is 2^-16 / 57344 ~ 3e-10 and keeps them all
    flushed = {f: int(((fq(dy, f) == 0) & (dy != 0)).sum()) for f in ("fp8_e4m3", "fp8_e5m2")}
    assert flushed["fp8_e5m2"] == 0 and flushed["fp8_e4m3"] > 0.03 * dy.numel(), flushed
    ablation, _ = one_layer("coat-train:real=false,grad_format=e4m3")
    assert int((recorded_dy(ablation, x, dy) == 0).sum()) == flushed["fp8_e4m3"]


def recorded_dy(layer, x: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    calls = recorded(layer)
    grads(layer, x, dy)
    return calls[2][1]


# -- Quartet: the QuEST forward against a float32 port of the released kernel -----------------------------
QUEST_C = np.float32(2.92247856 / 6.0)  # the gaussian_scale QuestMXFP4QuantizerFn passes (mxfp4.py)


def _lane0_sum(v: np.ndarray) -> np.ndarray:
    """A 32-lane xor-shuffle (butterfly) reduction as lane 0 sees it."""
    lanes = np.arange(32)
    for offset in (16, 8, 4, 2, 1):
        v = v + v[:, lanes ^ offset]
    return v[:, :1]


def _kernel_round(a: np.ndarray) -> np.ndarray:
    """The kernel's round-to-nearest of |x| onto E2M1: a chain of strict thresholds."""
    levels = ((5.0, 6.0), (3.5, 4.0), (2.5, 3.0), (1.75, 2.0), (1.25, 1.5), (0.75, 1.0), (0.25, 0.5))
    out = np.zeros_like(a)
    for threshold, value in reversed(levels):
        out = np.where(a > np.float32(threshold), np.float32(value), out)
    return out.astype(np.float32)


def quest_kernel_port(x: np.ndarray, clamp: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``mxfp4_forward_kernel`` with ``quest=True`` (IST-DASLab/Quartet,
    src/models/quantization/quantizers/mxfp4_triton.py) in float32 numpy, after its Hadamard:
    per group of 32, ``std = sqrt(E[x^2] - E[x]^2)``, ``scale = 2^floor(log2(c std + 1e-8))``,
    elements by the threshold chain, sign ``+1 if x > 0 else -1``, mask ``|x / scale| < 6``.
    ``clamp``: the variance clamped at 0 (the kernel takes the square root as it is)."""
    g = x.reshape(-1, 32).astype(np.float32)
    mean_squared = _lane0_sum(g * g) / np.float32(32)
    mean = _lane0_sum(g) / np.float32(32)
    var = mean_squared - mean * mean
    with np.errstate(invalid="ignore"):
        std = np.sqrt(np.maximum(var, np.float32(0)) if clamp else var)
        shared = np.exp2(np.floor(np.log2(QUEST_C * std + np.float32(1e-8)))).astype(np.float32)
        scaled = g / shared
        mag = np.abs(scaled)
        sign = np.where(scaled > 0, np.float32(1), np.float32(-1))
        values = (_kernel_round(mag) * sign) * shared
        mask = mag < np.float32(6)
    return values.reshape(x.shape).astype(np.float32), mask.reshape(x.shape)


def _quest_blocks() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    random = torch.randn(128, 256, generator=g)
    outliers = torch.randn(128, 256, generator=g) * torch.where(torch.rand(128, 256, generator=g) < 0.02, 50.0, 1.0)
    outliers[:, 7] *= 300  # a whole outlier channel
    constants = torch.tensor([0.1, 1.7, -3.3, 1e4, 1e-9, 0.0, 2.0 ** -20, 7.0])
    constant = constants.repeat_interleave(32).reshape(1, -1).repeat(4, 1)
    # nearly constant: E[x^2] - E[x]^2 rounds below zero in some of these blocks
    near = (1.7 + 1e-7 * torch.randn(64, 256, generator=g)).float()
    return {"random": random, "outliers": outliers, "constant": constant, "near-constant": near}


@pytest.mark.parametrize("kind", ["random", "outliers", "constant", "near-constant"])
def test_quest_forward_equals_a_port_of_quartets_kernel(kind):
    from suite.methods.train.gemm import quest_mxfp4

    x = _quest_blocks()[kind]
    ours = quest_mxfp4(x)
    values, mask = quest_kernel_port(x.numpy())
    assert torch.equal(ours.values, torch.from_numpy(values))
    assert torch.equal(ours.mask, torch.from_numpy(mask).float())
    if kind == "constant":  # no spread: the scale bottoms out at 2^-27 and the block saturates, masked
        nonzero = x.abs() > 6 * 2.0 ** -27
        assert torch.equal(ours.values[nonzero].abs(), torch.full_like(ours.values[nonzero], 6 * 2.0 ** -27))
        assert not ours.mask[nonzero].any() and not ours.values[x == 0].any()
    if kind == "near-constant":  # the clamp matters here: without it the kernel's sqrt gives NaN
        raw, _ = quest_kernel_port(x.numpy(), clamp=False)
        assert np.isnan(raw).any() and not torch.isnan(ours.values).any()


def test_quest_rounds_exact_ties_toward_zero_like_the_kernel():
    """A block whose scale is 1 (std about 3.9) holding the E2M1 ties 0.75, 1.75, 3.5: the
    kernel's strict thresholds send them down (0.5, 1.5, 3), where ties-to-even would give 1, 2, 4."""
    from suite.methods.train.gemm import quest_mxfp4

    block = torch.tensor([4.0, -4.0] * 14 + [0.75, 1.75, 3.5, -3.5]).reshape(1, 32)
    ours = quest_mxfp4(block)
    values, _ = quest_kernel_port(block.numpy())
    assert torch.equal(ours.values, torch.from_numpy(values))
    assert ours.values[0, 28:].tolist() == [0.5, 1.5, 3.0, -3.0]
    even = el.decode_float(el.encode_float(block[0, 28:], el.FP4_E2M1), el.FP4_E2M1)
    assert even.tolist() == [1.0, 2.0, 4.0, -4.0]  # what the old tie rule gave


# -- HALO: full-size rotations through HALO's Kronecker construction ---------------------------------------
def _sylvester(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def halo_right_had(x: torch.Tensor, k: int, transpose: bool = False) -> torch.Tensor:
    """HALO's ``matmul_hadU_cuda`` (qllmt/functional/hadamard.py) in float64: the (K, n / K) view
    of each row gets the power-of-two Hadamard scaled by 1 / sqrt(n), then H_K from the left
    (its transpose for ``transpose``); H_K here is the suite's Paley matrix of that order."""
    n = x.shape[-1]
    h_k = paley_hadamard(k)
    view = x.double().reshape(-1, k, n // k) @ (_sylvester(n // k) / math.sqrt(n))
    return ((h_k.t() if transpose else h_k) @ view).reshape(x.shape)


def test_full_size_hadamard_matches_halos_construction():
    for k in (12, 20, 28, 36, 44, 52, 60, 100, 108, 140):
        h = paley_hadamard(k)
        assert torch.equal(h @ h.t(), k * torch.eye(k, dtype=torch.float64)) and set(h.unique().tolist()) == {-1.0, 1.0}
    x = torch.randn(6, 352, generator=torch.Generator().manual_seed(0))
    ours = apply_hadamard(x)
    assert torch.allclose(ours.double(), halo_right_had(x, 44), rtol=0, atol=1e-5)
    assert torch.allclose(apply_hadamard(ours, inverse=True), x, atol=1e-5)
    assert torch.allclose(apply_hadamard(x, inverse=True).double(), halo_right_had(x, 44, transpose=True), atol=1e-5)


def test_halo_rotates_a_352_wide_layer_at_full_size_and_the_tokens_too():
    """HALO level 2 (qllmt/nn/halo2_fns.py): X H and W H on the whole 352 = 44 x 8 input; dY^T
    rotated along its 40 = 20 x 2 tokens, W plain, the product rotated back."""
    layer, _ = one_layer("halo-train", k=352)
    g = torch.Generator().manual_seed(1)
    x, dy = torch.randn(40, 352, generator=g), torch.randn(40, 96, generator=g) * 1e-3
    w = layer.weight.detach()
    y, dx, _ = grads(layer, x, dy)
    q = {"granularity": "tensor"}
    want_y = mm(fq(halo_right_had(x, 44).float(), "int8", **q), fq(halo_right_had(w, 44).float(), "int8", **q))
    assert float((y - want_y).norm() / want_y.norm()) < 2e-3  # a few INT8 codes may flip on float noise
    hey = halo_right_had(dy.t(), 20).float()  # [N, tokens] rotated along the tokens
    hex_t = mm(fq(w.t(), "int8", **q), fq(hey.t(), "int8", **q))  # [K, tokens], contracting N
    want_dx = halo_right_had(hex_t, 20, transpose=True).float().t()
    assert float((dx - want_dx).norm() / want_dx.norm()) < 2e-3
    blocked, _ = one_layer("halo-train:block=32,real=false", k=352)  # the FP32 product: bit for bit
    from suite.numerics.hadamard import apply_block_hadamard

    y32, _, _ = grads(blocked, x, dy)
    assert torch.equal(y32, mm(fq(apply_block_hadamard(x, 32), "int8", **q), fq(apply_block_hadamard(w, 32), "int8", **q)))


def test_halo_refuses_a_width_without_a_full_size_hadamard_before_any_cell_runs():
    model = torch.nn.Sequential(torch.nn.Linear(66, 64), torch.nn.Linear(64, 64))  # 66 = 2 x 33
    target = types.SimpleNamespace(skeleton=lambda: model)
    reason = method("halo-train").unsupported(target)
    assert reason and "0 (in_features 66)" in reason and "block=" in reason
    assert method("halo-train:block=32").unsupported(target) is None
    assert method("halo-train:skip=0").unsupported(target) is None
    with pytest.raises(UserError, match="in_features 66"):
        method("halo-train").apply(model, MethodContext(bundle=ModelBundle(model, new_modules=(model,))))


# -- NVFP4: NVIDIA's BF16 blocks by position, stored ---------------------------------------------------
def _llama_tiny():
    from transformers import AutoModelForCausalLM

    from suite.models.catalog import CATALOG

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(CATALOG["llama-tiny"].make_config())


@pytest.mark.parametrize("spec,blocks", [("nvfp4-train", {4}), ("nvfp4-train:bf16_layers=none", set()),
                                         ("nvfp4-train:bf16_layers=last:2|first:1", {0, 3, 4})])
def test_nvfp4_keeps_the_recipes_blocks_in_bf16_and_says_which(spec, blocks):
    from suite.methods.train.gemm import LowPrecisionLinear
    from suite.metrics import spec_of

    model = _llama_tiny()
    m = method(spec)
    m.apply(model, MethodContext(bundle=ModelBundle(model, new_modules=(model,))))
    block_of = {n: int(n.split(".")[2]) for n, _ in model.named_modules() if n.startswith("model.layers.") and
                n.count(".") == 4}
    lowp = {n for n, mod in model.named_modules() if isinstance(mod, LowPrecisionLinear)}
    kept = {n for n, b in block_of.items() if b in blocks and isinstance(model.get_submodule(n), torch.nn.Linear)}
    assert len(kept) == 7 * len(blocks) and not (kept & lowp) and len(lowp) == 35 - len(kept)
    out = m.measurements(model)
    assert out["train_bf16_layers"] == len(kept)
    assert {k.split("/", 1)[1] for k in out if k.startswith("train_bf16_layers/")} == kept
    assert spec_of("train_bf16_layers").label and spec_of(f"train_bf16_layers/{next(iter(kept), 'x')}") is not None


def test_nvfp4_cell_stores_the_layers_it_ran_in_bf16(tmp_path):
    from suite.app.cli import main
    from suite.results.store import ResultStore

    folder = tmp_path / "data"
    folder.mkdir()
    text = "the cat sees the ball. a dog likes a book. " * 40
    (folder / "train.jsonl").write_text("\n".join(f'{{"text": "{text}"}}' for _ in range(20)) + "\n", encoding="utf-8")
    (folder / "valid.jsonl").write_text(f'{{"text": "{text}"}}\n', encoding="utf-8")
    code = main(["run", "--methods", "nvfp4-train", "--tasks", "lm", "--models", "llama-tiny", "--data-dir",
                 str(folder), "--max-steps", "1", "--batch-size", "2", "--max-length", "32", "--eval-tokens", "64",
                 "--no-progress", "--store", str(tmp_path / "s")])
    assert code == 0
    frame = ResultStore(tmp_path / "s").load()
    rows = frame[frame["metric"].str.startswith("train_bf16_layers")].set_index("metric")["value"]
    assert rows["train_bf16_layers"] == 7.0
    assert sorted(k for k in rows.index if "/" in k) == sorted(
        f"train_bf16_layers/model.layers.4.{p}" for p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                         "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                                         "mlp.down_proj"))


# -- every recipe: forward error, grid, training ----------------------------------------------------------
ELEMENT = {"e4m3": el.FP8_E4M3, "e5m2": el.FP8_E5M2, "mxfp8": el.FP8_E4M3, "mxfp8_e5m2": el.FP8_E5M2,
           "mxfp4": el.FP4_E2M1, "nvfp4": el.FP4_E2M1}


def _grid(fmt: str) -> torch.Tensor:
    """The positive values of an operand's element (INT8: 1..127), float64."""
    if fmt == "int8":
        return torch.arange(1, 128, dtype=torch.float64)
    values = torch.tensor(el.enumerate_values(ELEMENT[fmt]), dtype=torch.float64)
    return values[values > 0].unique()


def _blocks(t: torch.Tensor, op) -> torch.Tensor:
    """``t`` [rows, K] cut into the operand's scale blocks, one block a row of the result."""
    from suite.methods.train.gemm import BLOCK_OF

    if op.scaling in ("tensor", "delayed"):
        return t.reshape(1, -1)
    if op.scaling == "row":
        return t
    if op.scaling == "tile":
        r, c = t.shape
        return t.reshape(r // 16, 16, c // 16, 16).permute(0, 2, 1, 3).reshape(-1, 256)
    return t.reshape(-1, BLOCK_OF.get(op.fmt, 32))


def on_grid(blocks: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Per block: whether every value is a grid value times one common scale (scale free: each
    candidate maps the block's largest magnitude to a grid value)."""
    mag = blocks.double().abs()
    top = mag.amax(-1, keepdim=True)
    ok = torch.zeros(blocks.shape[0], dtype=torch.bool)
    for g in grid:
        r = mag * g / torch.where(top > 0, top, torch.ones_like(top))
        idx = torch.searchsorted(grid, r).clamp(max=len(grid) - 1)
        near = torch.minimum((r - grid[idx]).abs(), (r - grid[(idx - 1).clamp(min=0)]).abs())
        ok |= ((near <= 1e-6 * r) | (r == 0)).all(-1)
    return ok | (top[:, 0] == 0)


def _bf16_reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return torch.nn.functional.linear(x, w).float()


def _unit_roundoff(spec: str, operands: list) -> float:
    """What the forward operands' format implies per value: 2^-(m+1) for an element with m
    mantissa bits; INT8 per tensor: half a step over the operand's RMS (the rotation sets it)."""
    op, values = operands[0]
    if op.fmt == "int8":
        return float(max(v.abs().max() / 127 / 2 / v.pow(2).mean().sqrt() for _, v in operands))
    return 2.0 ** -(ELEMENT[op.fmt].mbits + 1)


def _data(seed: int = 2, m: int = 64, k: int = 128):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, k, generator=g), torch.randn(m, 96, generator=g) * 1e-3


@pytest.mark.parametrize("spec", RECIPES)
def test_forward_differs_from_bf16_by_what_the_format_implies(spec):
    layer, _ = one_layer(spec)
    x, _ = _data()
    w = layer.weight.detach()
    reference = _bf16_reference(x, w)
    if spec == "bf16-train":  # the baseline is BF16 itself
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(layer(x).float(), reference)
        return
    calls = recorded(layer)
    with torch.no_grad():
        y = layer(x)
    u = _unit_roundoff(spec, calls[:2])
    error = float((y - reference).norm() / reference.norm())
    assert u / 4 < error < math.sqrt(2) * u, (spec, error, u)


@pytest.mark.parametrize("spec", RECIPES)
def test_forward_operands_lie_on_the_formats_grid(spec):
    layer, _ = one_layer(spec)
    x, _ = _data()
    if spec == "bf16-train":  # autocast's operands: BF16 values
        xb = x.bfloat16().float()
        assert torch.equal(xb, xb.bfloat16().float()) and not torch.equal(x, xb)
        return
    calls = recorded(layer)
    with torch.no_grad():
        layer(x)
    for op, values in calls[:2]:  # the forward's X and W as the GEMM reads them
        grid = _grid(op.fmt)
        blocks = _blocks(values, op)
        assert on_grid(blocks, grid).all(), (spec, op)
        distinct = max(len(b.unique()) for b in blocks)
        assert distinct <= 2 * len(grid) + 1, (spec, op, distinct)  # +-grid and zero
        raw = _blocks(x if values.shape[0] == x.shape[0] else layer.weight.detach(), op)
        assert not on_grid(raw, grid).all()  # the check rejects values nobody quantised
        if op.fmt in ("mxfp4", "nvfp4"):  # 4 bits: a block of 16 or 32 values has at most 15
            assert distinct <= 15


def _train(spec: str, steps: int = 3) -> float:
    model = _llama_tiny()
    m = method(spec)
    model = m.apply(model, MethodContext(bundle=ModelBundle(model, new_modules=(model,)), seed=0))
    params = [p for p in model.parameters() if p.requires_grad]
    recipe = types.SimpleNamespace(optimizer="adamw", lr=3e-3)
    opt = m.make_optimizer(model, [{"params": params}], recipe) or torch.optim.AdamW(params, lr=3e-3)
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return float(model(input_ids=ids, labels=ids).loss)


@pytest.fixture(scope="module")
def bf16_loss() -> float:
    first = _train("bf16-train")
    assert _train("bf16-train") == first  # the baseline repeats exactly, so any difference is the recipe's
    return first


@pytest.mark.parametrize("spec", [r for r in RECIPES if r != "bf16-train"])
def test_short_training_run_differs_from_bf16(spec, bf16_loss):
    loss = _train(spec)
    assert math.isfinite(loss) and loss != bf16_loss and abs(loss - bf16_loss) < 0.5, (spec, loss, bf16_loss)


# -- the README's operand table is generated ---------------------------------------------------------------
def test_readme_operand_table_is_the_generated_one():
    from suite.methods.train.recipes import operand_table

    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- operand-table:begin[^>]*-->\n(.*?)<!-- operand-table:end -->", text, re.S)
    assert found, "README's Low-precision training section lost its operand-table markers"
    assert found.group(1) == operand_table(), "regenerate it: python -c 'from suite.methods.train.recipes " \
                                              "import operand_table; print(operand_table())'"
