"""The fused (torch.compile'd) emulation equals the eager one bit for bit.

``suite.numerics.compiled`` compiles the recipes' quantise-dequantise functions; the mode
(``--fast-emulation auto|on|off``) must change speed only, never a number. Every fused quantiser
is compared with its eager form on values that reach the edge cases (zero blocks, saturation,
exact ties), and a few recipes train three steps both ways to the same losses and weights.
Speed is the benchmark's question (``benchmarks/bench_train_recipes.py --fast off,on``), never
asserted here. All shapes are one tiny square, so each function compiles once per argument set.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import pytest
import torch

from suite.errors import UserError
from suite.methods.train import gemm as G
from suite.numerics import compiled

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(bool(compiled.unavailable("cpu")), reason=compiled.unavailable("cpu") or "-")]

OPERANDS = {
    "mxfp4": G.Operand("mxfp4", "block"),
    "mxfp4 rceil": G.Operand("mxfp4", "rceil"),
    "mxfp4 3/4 scale, stochastic": G.Operand("mxfp4", "sr34", "stochastic"),
    "mxfp4 QuEST": G.Operand("mxfp4", "quest", ties="down"),
    "mxfp8 rceil": G.Operand("mxfp8", "rceil"),
    "mxfp8 floor": G.Operand("mxfp8", "block"),
    "nvfp4": G.Operand("nvfp4", "block"),
    "nvfp4 stochastic": G.Operand("nvfp4", "block", "stochastic"),
    "nvfp4 tiles": G.Operand("nvfp4", "tile"),
    "e4m3 per tensor": G.Operand("e4m3", "tensor"),
    "e5m2 per row": G.Operand("e5m2", "row"),
    "int8 per tensor": G.Operand("int8", "tensor"),
}


def _edge_values(rows: int = 40, cols: int = 64) -> torch.Tensor:
    """Gaussian values with a zero block, a constant block, a huge row and exact FP4 ties."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, cols, generator=g) * 3
    x[0, :32] = 0.0
    x[1, :32] = 1.5
    x[2] *= 1e4
    x[3, :32] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0] * 4)  # E2M1 midpoints, block max 6
    # an ulp either side of powers of two: where a float32 log2 rounds onto the integer
    powers = torch.exp2(torch.arange(-8.0, 8.0))
    x[4, :16], x[4, 16:32] = powers * (1 + 2.0 ** -23), powers * (1 - 2.0 ** -24)
    x[5, :32] = torch.cat([powers, -powers]) * 448.0 * (1 + 2.0 ** -23)  # block amax / max just above 2^k
    return x


ON_CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                          reason="needs a CUDA GPU")])


@pytest.mark.parametrize("device", ["cpu", ON_CUDA])
@pytest.mark.parametrize("name", list(OPERANDS))
def test_every_fused_quantiser_equals_its_eager_form_bit_for_bit(name, device):
    """On CUDA, inductor's Triton code keeps eager's rounding only with ``compiled.EAGER_NUMERICS``."""
    op, x = OPERANDS[name], _edge_values().to(device)
    out = {}
    for mode in ("off", "on"):
        state = G.LayerState("layer", None, seed=7)  # the same generator: the same uniforms
        compiled.reset_counts()
        with compiled.emulation(mode):
            q = state.quantize(x, op)
        how = {h for (_, h) in compiled.counts()}
        assert how == {"eager" if mode == "off" else "compiled"}, (mode, compiled.counts())
        out[mode] = q
    assert torch.equal(out["off"].values, out["on"].values)
    if out["off"].mask is not None:
        assert torch.equal(out["off"].mask, out["on"].mask)


ROTATED = {
    "mxfp4 QuEST after 32 points": (G.Operand("mxfp4", "quest", ties="down"), 32, False),
    "mxfp4 3/4 scale, stochastic, after 32 signed points": (G.Operand("mxfp4", "sr34", "stochastic"), 32, True),
    "nvfp4 stochastic after 16 signed points": (G.Operand("nvfp4", "block", "stochastic"), 16, True),
    "nvfp4 after 16 signed points": (G.Operand("nvfp4", "block"), 16, True),
}


@pytest.mark.parametrize("device", ["cpu", ON_CUDA])
@pytest.mark.parametrize("name", list(ROTATED))
def test_every_fused_rotate_and_quantise_equals_its_eager_form_bit_for_bit(name, device):
    """The rotation and the quantiser compiled as one function (what the recipes' rotating operands
    run where no kernel serves) against the same eager."""
    (op, block, signed), x = ROTATED[name], _edge_values().to(device)
    signs = (torch.arange(block, device=device) % 3 == 0).float() * 2 - 1 if signed else None
    out = {}
    for mode in ("off", "on"):
        state = G.LayerState("layer", None, seed=7)
        with compiled.emulation(mode):
            out[mode] = state.quantize(x, op, hadamard=block, signs=signs)
    assert torch.equal(out["off"].values, out["on"].values)
    if out["off"].mask is not None:
        assert torch.equal(out["off"].mask, out["on"].mask)


@pytest.mark.parametrize("signs", [False, True])
def test_fused_butterflies_equal_the_eager_rotation(signs):
    """HALO's rotation of a 128-wide contraction (butterflies), with and without random signs."""
    x = _edge_values(40, 256)
    s = torch.tensor([1.0, -1.0, -1.0, 1.0] * 64) if signs else None  # over the whole last dimension
    for inverse in (False, True):
        off = G.rotate(x, 128, s, inverse)
        with compiled.emulation("on"):
            assert torch.equal(off, G.rotate(x, 128, s, inverse))


def test_delayed_fp8_is_fused_too_and_keeps_its_codes():
    x, amax = _edge_values(), torch.tensor(50.0)
    off = G.fp8_given_amax(x, G.FP8_ELEMENTS["e4m3"], amax)
    with compiled.emulation("on"):
        on = G.fp8_given_amax(x, G.FP8_ELEMENTS["e4m3"], amax)
    assert torch.equal(off.values, on.values) and torch.equal(off.scale, on.scale)
    assert torch.equal(off.codes.view(torch.uint8), on.codes.view(torch.uint8))


def _train(spec: str, mode: str, steps: int = 3) -> tuple[list[float], dict[str, torch.Tensor]]:
    from benchmarks import bench_train_recipes as bench

    template = bench.build(argparse.Namespace(size="64,1,2,64", model=""))
    entry = bench.prepare(spec, template, "cpu")
    entry.update(kernels="torch", fast=mode, served={}, fused={})
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(steps):
        with compiled.emulation(mode), entry["policy"].autocast("cpu"):
            loss = entry["model"](input_ids=ids, labels=ids).loss
            loss.backward()
        entry["optimizer"].step()
        entry["optimizer"].zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, {k: v.detach().clone() for k, v in entry["model"].state_dict().items()}


def _assert_same_training(spec: str) -> None:
    (loss_off, w_off), (loss_on, w_on) = _train(spec, "off"), _train(spec, "on")
    assert loss_off == loss_on, spec
    assert all(torch.equal(w_off[k], w_on[k]) for k in w_off), spec


@pytest.mark.parametrize("spec", ["mxfp4-train", "nvfp4-train:bf16_layers=none", "fp8-train"])
def test_recipes_train_to_identical_losses_and_weights_eager_and_compiled(spec):
    """Forward, dgrad and wgrad with every operand quantised (NVFP4: stochastic dY, tiles, random
    Hadamard), three AdamW steps: the same losses and weights bit for bit."""
    _assert_same_training(spec)


@pytest.mark.parametrize("spec", ["quartet-train", "halo-train", "coat-train"])
def test_the_rotating_recipes_and_coat_train_identically_eager_and_compiled(spec):
    """Quartet (QuEST forward, re-rotated stochastic backward), HALO (INT8, full-size rotations of the
    contraction and of the tokens in dgrad), COAT (FP8 GEMMs beside its eager FP8 states)."""
    _assert_same_training(spec)


def test_the_mode_is_checked_and_auto_leaves_small_operands_eager():
    with pytest.raises(UserError, match="--fast-emulation 'fast': choose one of auto, on, off"):
        with compiled.emulation("fast"):
            pass
    small = torch.randn(16, 64)
    compiled.reset_counts()
    with compiled.emulation("auto"):
        G.mxfp4_fast(small)  # below AUTO_MIN_NUMEL: compiling would cost more than it saves
    assert compiled.counts() == {("_mxfp4", "eager"): 1}
    assert compiled.compiled_fraction({("a", "compiled"): 3, ("b", "eager"): 1}) == 0.75


def test_auto_falls_back_to_eager_where_a_function_does_not_compile_and_on_raises():
    def breaks(t: torch.Tensor) -> torch.Tensor:
        torch._dynamo.graph_break()  # fullgraph=True refuses it
        return t + 1

    fn, x = compiled.fused(breaks), torch.zeros(compiled.AUTO_MIN_NUMEL)
    with compiled.emulation("on"), pytest.raises(Exception, match="graph_break|graph break"):
        fn(x)
    compiled.reset_counts()
    with compiled.emulation("auto"), pytest.warns(RuntimeWarning, match="could not be compiled"):
        assert torch.equal(fn(x), x + 1)
    with compiled.emulation("auto"):
        fn(x)  # no second attempt
    assert set(compiled.counts().values()) == {2} and {h for (_, h) in compiled.counts()} == {"eager"}


def test_the_recipe_benchmark_measures_each_recipe_eager_and_compiled(tmp_path, monkeypatch):
    """``--fast off,on``: one baseline row, and per recipe a row per mode with the compiled share."""
    from benchmarks import bench_train_recipes as bench

    out = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", ["bench", "--size", "64,1,2,64", "--batch", "2", "--seq", "32", "--steps", "1",
                                      "--warmup", "1", "--recipes", "bf16-train,mxfp4-train", "--kernels", "torch",
                                      "--fast", "off,on", "--json", str(out)])
    assert bench.main() == 0
    rows = {r["recipe"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"bf16-train", "mxfp4-train [fast off]", "mxfp4-train [fast on]"}
    assert rows["mxfp4-train [fast off]"]["compiled_fraction"] == 0.0
    assert rows["mxfp4-train [fast on]"]["compiled_fraction"] == 1.0


@pytest.mark.parametrize("fmt,scaling", [("mxfp4", "block"), ("mxfp4", "sr34"), ("nvfp4", "block")])
def test_the_recipes_stochastic_path_equals_the_reference_its_kernel_is_held_to(fmt, scaling):
    """gemm.fused_stochastic (what the recipes run where no kernel serves) against
    suite.numerics.stochastic.fake_quantize_keyed, the reference the Triton kernel equals, on every
    binade and on values within 64 float32 steps of each E2M1 value, with the same key, eager and
    compiled (the counter-based uniforms made inside the compiled loop)."""
    from suite.numerics.counter_rng import new_key
    from suite.numerics.stochastic import fake_quantize_keyed

    g = torch.Generator().manual_seed(5)
    x = torch.randn(37, 64, generator=g) * torch.logspace(-3, 3, 64)
    grid = torch.tensor([0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0])
    near = (grid.view(torch.int32)[:, None] + torch.arange(-64, 64, dtype=torch.int32)).view(torch.float32)
    x = torch.cat([x, near.reshape(-1, 64), -near.reshape(-1, 64)])
    key = new_key(g, "cpu")
    for mode in ("off", "on"):
        with compiled.emulation(mode):
            assert torch.equal(G.fused_stochastic(x, fmt, key, scaling), fake_quantize_keyed(x, fmt, key, scaling))


# -- COAT: its FP8 optimizer states and FP8 activations, fused --------------------------------------------
def _coat_moments() -> list[torch.Tensor]:
    """Moments of several sizes (whole groups of 128 and a padded last group) with many decades,
    zero and constant groups, a lone value, tiny negatives and negative zeros."""
    g = torch.Generator().manual_seed(3)
    wide = torch.exp(torch.randn(64, 128, generator=g) * 4) * 1e-6
    wide[0] = 0.0
    wide[1] = 0.37
    wide[2, 1:] = 0.0
    signed = torch.randn(300, generator=g)
    signed[::5] *= -1e-12
    signed[::7] = 0.0
    signed[::11] = -0.0
    return [wide, signed, torch.randn(33, 7, generator=g) ** 2 * 1e-8, torch.randn(1, generator=g)]


def _coat_reference(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """COAT's state encoding as written with ``formats.quantize`` / ``dequantize`` before it was
    fused: codes, scales, k, centre and the decoded values."""
    from suite.methods.train.coat import E4M3_RANGE, EXPAND_STEPS, GROUP
    from suite.numerics import formats as F

    flat = x.detach().float().reshape(-1)
    pad = (-flat.numel()) % GROUP
    valid = torch.ones(flat.numel() + pad, dtype=torch.bool, device=flat.device)
    if pad:
        valid[flat.numel():] = False
        flat = torch.nn.functional.pad(flat, (0, pad))
    groups, valid = flat.reshape(-1, GROUP), valid.reshape(-1, GROUP)
    mag = groups.abs()
    hi = torch.where(valid, mag, torch.zeros_like(mag)).amax(-1, keepdim=True) + 1e-20
    lo = torch.where(valid, mag, torch.full_like(mag, float("inf"))).amin(-1, keepdim=True) + 1e-20
    ratio = hi / lo
    k = torch.floor(math.log2(E4M3_RANGE) / torch.log2(ratio) * EXPAND_STEPS) / EXPAND_STEPS
    k = torch.where(ratio > 1, k, torch.ones_like(k)).clamp(min=1.0 / EXPAND_STEPS)
    centre = torch.sqrt(hi * lo)
    expanded = torch.where(valid, torch.sign(groups) * (mag / centre) ** k, torch.zeros_like(groups))
    q = F.quantize(expanded, "fp8_e4m3", granularity="row")
    y = F.dequantize(q).float()
    decoded = (torch.sign(y) * y.abs() ** (1.0 / k) * centre).reshape(-1)[:x.numel()].reshape(x.shape)
    return q.data.view(torch.uint8), q.scale.reshape(-1, 1), k, centre, decoded  # a scale per group


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t


@pytest.mark.parametrize("device", ["cpu", ON_CUDA])
def test_coats_fused_fp8_states_equal_the_formats_reference_eager_and_compiled(device):
    """``ExpandedFp8`` (fused range, expansion and cast, decode) against the same arithmetic through
    ``formats.quantize`` / ``dequantize``, bit for bit (signed zeros included) in both modes."""
    from suite.methods.train.coat import ExpandedFp8

    for x in (m.to(device) for m in _coat_moments()):
        ref = _coat_reference(x)
        for mode in ("off", "on"):
            compiled.reset_counts()
            with compiled.emulation(mode):
                state = ExpandedFp8(x)
                state.encode(x)
                got = (state.q.data.view(torch.uint8), state.q.scale, state.k, state.centre, state.decode())
            assert {h for (_, h) in compiled.counts()} == {"eager" if mode == "off" else "compiled"}
            assert state.q.data.dtype == torch.float8_e4m3fn
            assert all(torch.equal(_bits(a), _bits(b)) for a, b in zip(ref, got, strict=True)), (tuple(x.shape), mode)


@pytest.mark.parametrize("width", [64, 40])  # 40: the group of 16 does not divide it, one scale per row
def test_coats_fused_fp8_activations_equal_formats_quantize(width):
    from suite.methods.train.coat import _fp8_activation, _fp8_activation_decoded
    from suite.numerics import formats as F

    x = _edge_values(40, width).to(torch.bfloat16)
    gran = {"granularity": "block", "block_size": 16} if width % 16 == 0 else {"granularity": "row"}
    ref = F.quantize(x.float(), "fp8_e4m3", **gran)
    for mode in ("off", "on"):
        with compiled.emulation(mode):
            q = _fp8_activation(x, 16)
            values = _fp8_activation_decoded(q.data, q.scale)
        assert torch.equal(q.data.view(torch.uint8), ref.data.view(torch.uint8)) and torch.equal(q.scale, ref.scale)
        assert torch.equal(_bits(values), _bits(F.dequantize(ref))) and torch.equal(_bits(F.dequantize(q)), _bits(values))


# -- HALO's full-size rotations, fused -----------------------------------------------------------------
@pytest.mark.parametrize("transposed", [False, True])
def test_halos_large_rotations_equal_the_fast_transform_eager_and_compiled(transposed):
    """Blocks past 256 points (HALO's along the tokens: the transpose of a contiguous dY) against
    ``apply_block_hadamard(method="fast")``, and the Kronecker construction (704 = 44 x 16) with its
    fused butterflies against ``apply_hadamard``, bit for bit, with and without signs, both ways."""
    from suite.numerics.hadamard import apply_block_hadamard, apply_hadamard, random_signs

    g = torch.Generator().manual_seed(4)
    for rows, n, block in [(24, 1024, 1024), (8, 1024, 512), (24, 704, 0)]:
        x = torch.randn(rows, n, generator=g) * torch.logspace(-3, 3, n)
        if transposed:
            x = x.t().contiguous().t()
        for signs in (None, random_signs(n, g)):
            for inverse in (False, True):
                if block:
                    ref = apply_block_hadamard(x.contiguous(), block, signs=signs, inverse=inverse, method="fast")
                else:
                    ref = apply_hadamard(x.contiguous(), signs=signs, inverse=inverse)
                for mode in ("off", "on"):
                    with compiled.emulation(mode):
                        got = G.rotate(x, block, signs, inverse) if block else G.rotate_full(x, signs, inverse)
                    assert torch.equal(_bits(got), _bits(ref)) and got.is_contiguous(), (n, block, mode)
