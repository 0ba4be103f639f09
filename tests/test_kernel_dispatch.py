"""The recipes' number-format operations served by the Triton kernels (suite.numerics.dispatch).

On a CPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set by conftest where
no GPU is present): every registered implementation is held to ``suite.numerics.formats`` bit for
bit at small and ragged shapes, and a recipe trained with the kernels on and off gives identical
losses. Speed is the GPU's question (benchmarks), never asserted here.
"""

from __future__ import annotations

import json

import pytest
import torch

from suite.errors import UserError
from suite.numerics import dispatch
from suite.numerics import formats as F
from tests.conftest import write_word_corpus

pytestmark = pytest.mark.skipif(not dispatch.interpreted() and not torch.cuda.is_available(),
                                reason="needs a GPU or TRITON_INTERPRET=1")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module", autouse=True)
def kernels_registered():
    from suite.registry import KERNELS

    KERNELS.names()
    assert "triton" in dispatch.implementations("fake_quantize")


def _reference(t: torch.Tensor, fmt: str, rounding: str = "nearest") -> torch.Tensor:
    return F.fake_quantize(t, fmt, rounding=rounding)


@pytest.mark.parametrize("fmt", ["mxfp4", "mxfp8_e4m3", "nvfp4"])
@pytest.mark.parametrize("shape", [(1, 32), (37, 64), (5, 96), (130, 256)])
def test_the_kernel_equals_the_formats_module_bit_for_bit(fmt, shape):
    if fmt != "nvfp4" and shape[1] % 32:
        pytest.skip("MX blocks are 32 wide")
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=g) * torch.logspace(-3, 3, shape[1])).to(DEVICE)  # every binade
    x[0, :8] = 0.0  # an all-zero stretch (a zero block scale)
    dispatch.reset_counts()
    with dispatch.kernels("triton"):
        served = dispatch.call("fake_quantize", _reference, x, fmt)
    assert dispatch.counts() == {("fake_quantize", "triton"): 1}
    assert torch.equal(served, F.fake_quantize(x, fmt))


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp8_e5m2", "int8"])
@pytest.mark.parametrize("granularity", ["tensor", "row"])
@pytest.mark.parametrize("shape", [(1, 32), (37, 64), (5, 100), (3, 7)])
def test_the_fp8_kernel_equals_the_formats_module_bit_for_bit(fmt, granularity, shape):
    """FP8 E4M3 / E5M2 and INT8 with a tensor or row scale (fp8-train's, COAT's and HALO's
    operands), any row length, an all-zero row (scale 1), values across ten decades (subnormal
    codes) and a row with NaN and +-inf (scales from the finite values)."""
    from suite.kernel import as_bits

    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=g) * torch.logspace(-6, 4, shape[1])).to(DEVICE)
    x[-1] = 0.0
    if shape[0] > 2:
        x[1, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])  # kept / saturated alike
    dispatch.reset_counts()
    with dispatch.kernels("triton"):
        served = dispatch.call("fake_quantize", F.fake_quantize, x, fmt, granularity=granularity)
    assert dispatch.counts() == {("fake_quantize", "triton"): 1}
    reference = F.fake_quantize(x, fmt, granularity=granularity)
    nan = torch.isnan(reference)  # a NaN stays NaN (its payload bits may differ)
    assert torch.equal(torch.isnan(served), nan)
    assert torch.equal(as_bits(served)[~nan], as_bits(reference)[~nan])


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp8_e5m2"])
def test_the_fp8_kernel_rounds_every_code_and_midpoint_as_the_formats_module(fmt):
    """Rows whose amax is the element's largest value (scale 1): every positive code's value, the
    midpoints to its neighbours and one float32 step either side of each, both signs."""
    from suite.kernel import as_bits

    dtype = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}[fmt]
    values = torch.arange(0, 0x80, dtype=torch.uint8).view(dtype).float()
    values = values[torch.isfinite(values)].unique()
    mids = (values[1:] + values[:-1]) / 2
    pts = torch.cat([values, mids])
    bits = pts.view(torch.int32)
    pts = torch.cat([pts, (bits + 1).view(torch.float32), (bits - 1).clamp(min=0).view(torch.float32)])
    pts = torch.cat([pts, -pts])
    top = values.max()
    x = torch.cat([torch.full((1,), top), pts]).to(DEVICE)
    x = torch.nn.functional.pad(x, (0, (-x.numel()) % 64)).reshape(-1, 64)
    x[:, 0] = top
    with dispatch.kernels("triton"):
        served = dispatch.call("fake_quantize", F.fake_quantize, x, fmt, granularity="row")
    assert torch.equal(as_bits(served), as_bits(F.fake_quantize(x, fmt, granularity="row")))


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp8_e5m2"])
@pytest.mark.parametrize("shape", [(1, 32), (37, 64), (5, 100), (3, 7)])
@pytest.mark.parametrize("amax_of", [0.0, 0.25, 1.0, 3.0])
def test_the_given_amax_kernel_equals_delayed_scaling_bit_for_bit(fmt, shape, amax_of):
    """FP8 per tensor with a given amax (fp8-train:scaling=delayed): the quantise kernel given the
    scale amax / max, then the row dequantise kernel, against the recipe's fused reference
    (gemm.fake_quantize_given_amax) at ragged shapes, values across ten decades, an amax of 0 (scale
    1: the plain saturating cast), one below the tensor's (its largest values saturate at the
    element's largest value), its own (the formats module's tensor scaling) and one above it."""
    from suite.kernel import as_bits
    from suite.methods.train.gemm import fake_quantize_given_amax
    from suite.numerics import elements as el

    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=g) * torch.logspace(-6, 4, shape[1])).to(DEVICE)
    x[-1, : shape[1] // 2] = 0.0
    amax = x.abs().amax() * amax_of
    dispatch.reset_counts()
    with dispatch.kernels("triton"):
        served = dispatch.call("fake_quantize_given_amax", fake_quantize_given_amax, x, fmt, amax)
    assert dispatch.counts() == {("fake_quantize_given_amax", "triton"): 1}
    reference = fake_quantize_given_amax(x, fmt, amax)
    assert torch.equal(as_bits(served), as_bits(reference))
    top = el.float_element(fmt).max
    if amax_of == 0.0:  # scale 1
        assert torch.equal(as_bits(served), as_bits(F.fake_quantize(x, fmt, granularity="none")))
    elif amax_of == 1.0:
        assert torch.equal(as_bits(served), as_bits(F.fake_quantize(x, fmt, granularity="tensor")))
    elif amax_of < 1.0:
        scale = amax / top
        over = x.abs() > amax
        assert over.any() and torch.equal(served[over], torch.sign(x[over]) * top * scale)


def test_the_given_amax_kernel_refuses_what_it_cannot_take():
    """3-D inputs, INT8 and an amax of several values fall back to the reference; so does the
    auto mode on a CPU tensor."""
    from suite.methods.train.gemm import fake_quantize_given_amax

    x = torch.randn(4, 64, device=DEVICE)
    amax = x.abs().amax()
    dispatch.reset_counts()
    with dispatch.kernels("triton"):
        dispatch.call("fake_quantize_given_amax", fake_quantize_given_amax, x.reshape(2, 2, 64), "fp8_e4m3", amax)
        dispatch.call("fake_quantize_given_amax", lambda t, f, a: t, x, "int8", amax)
        dispatch.call("fake_quantize_given_amax", lambda t, f, a: t, x, "fp8_e4m3", x.abs().amax(-1))
    assert dispatch.counts() == {("fake_quantize_given_amax", "torch"): 3}


@pytest.mark.parametrize("shape", [(1, 16), (37, 70), (33, 300), (130, 256)])
def test_the_nvfp4_tile_kernel_equals_the_formats_module_tile_by_tile(shape):
    """NVFP4 in 16 x 16 tiles (the NVFP4 recipe's weights), ragged shapes zero-padded: each tile is
    the formats module's NVFP4 block of 256 values; the recipe's own function gives the same."""
    from suite.kernel import as_bits
    from suite.methods.train.gemm import nvfp4_tiles
    from suite.numerics.tiles import nvfp4_tiles as reference

    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=g) * torch.logspace(-3, 3, shape[1])).to(DEVICE)
    x[0, :8] = 0.0
    rows, cols = shape
    padded = torch.nn.functional.pad(x, (0, (-cols) % 16, 0, (-rows) % 16))
    r, c = padded.shape
    tiles = padded.reshape(r // 16, 16, c // 16, 16).permute(0, 2, 1, 3).reshape(-1, 256)
    by_formats = F.fake_quantize(tiles, "nvfp4", block_size=256)
    by_formats = by_formats.reshape(r // 16, c // 16, 16, 16).permute(0, 2, 1, 3).reshape(r, c)[:rows, :cols]
    dispatch.reset_counts()
    with dispatch.kernels("triton"):
        served = dispatch.call("fake_quantize_tiles", lambda t, fmt: reference(t), x, "nvfp4")
    assert dispatch.counts() == {("fake_quantize_tiles", "triton"): 1}
    assert torch.equal(served, by_formats)
    assert torch.equal(as_bits(served), as_bits(reference(x)))
    assert torch.equal(as_bits(served), as_bits(nvfp4_tiles(x)))


def test_the_mode_chooses_and_an_unsupported_input_falls_back_to_the_reference():
    x = torch.randn(4, 64, device=DEVICE)
    dispatch.reset_counts()
    with dispatch.kernels("torch"):
        dispatch.call("fake_quantize", _reference, x, "mxfp4")
    with dispatch.kernels("triton"):
        dispatch.call("fake_quantize", _reference, x.reshape(2, 2, 64), "mxfp4")  # the kernel takes 2-D only
        dispatch.call("fake_quantize", _reference, x, "mxfp4", rounding="stochastic")  # no kernel registered
        dispatch.call("fake_quantize", F.fake_quantize, x, "fp8_e5m2", granularity="tensor",
                      rounding="stochastic")  # FP8 kernels round to nearest only
    with dispatch.kernels("auto"):
        dispatch.call("fake_quantize", _reference, x, "mxfp4")  # a CPU tensor: auto keeps PyTorch
    expected_triton = 1 if DEVICE == "cuda" else 0
    assert dispatch.counts() == {("fake_quantize", "torch"): 5 - expected_triton,
                                 **({("fake_quantize", "triton"): 1} if expected_triton else {})}
    with pytest.raises(UserError, match="--kernels 'fast': choose one of auto, triton, torch"):
        with dispatch.kernels("fast"):
            pass


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_word_corpus(tmp_path_factory.mktemp("corpus"), n_train=40, n_valid=8)


@pytest.mark.parametrize("shape", [(1, 32), (37, 64), (5, 100), (3, 7)])
def test_the_int8_codes_kernel_equals_the_formats_module_bit_for_bit(shape):
    """HALO's real INT8 operands (``quantize_codes``): the per-tensor quantise kernel's codes and
    scale are ``formats.quantize``'s, at ragged widths, with an all-zero row and ten decades."""
    from suite.methods.train.gemm import integer_codes

    g = torch.Generator().manual_seed(sum(shape) + 1)
    x = (torch.randn(shape, generator=g) * torch.logspace(-6, 4, shape[1])).to(DEVICE)
    x[-1] = 0.0
    dispatch.reset_counts()
    with dispatch.kernels("triton"):
        codes, scale = dispatch.call("quantize_codes", integer_codes, x, "int8", granularity="tensor")
    assert dispatch.counts() == {("quantize_codes", "triton"): 1}
    q = F.quantize(x, "int8", granularity="tensor")
    assert codes.dtype == torch.int8 and torch.equal(codes, q.data)
    assert scale.shape == () and torch.equal(scale, q.scale.float().reshape(()))


def _run(store, kernels: str, method: str, corpus) -> None:
    from suite.app.cli import main

    assert main(["run", "--methods", method, "--tasks", "lm", "--data-dir", str(corpus), "--models", "tiny-llama",
                 "--max-steps", "2",
                 "--batch-size", "2", "--max-length", "32", "--eval-tokens", "128", "--eval-batch-size", "4",
                 "--seeds", "1", "--no-progress", "--kernels", kernels, "--store", str(store)]) == 0


@pytest.mark.parametrize("method", ["mxfp4-train", "mxfp8-train", "nvfp4-train", "quartet-train", "fp8-train",
                                    "fp8-train:scaling=delayed", "halo-train"])
def test_a_recipe_trains_to_identical_losses_with_the_kernels_on_and_off(tmp_path, monkeypatch, method, corpus):
    """The recipe's forward, dgrad and wgrad operands through the kernels (interpreted) and through
    PyTorch: the same losses bit for bit, and each cell says which served it. NVFP4's gradients and
    Quartet's backward round stochastically (the kernel takes the generator's uniforms); NVFP4's
    weights are quantised in 16 x 16 tiles and its weight gradient rotated with random signs in the
    same kernel pass; Quartet's forward is QuEST after a 32-point rotation, one pass too; fp8-train's
    operands are E4M3 and E5M2 per tensor (with delayed scaling: given the largest amax of earlier
    steps, through the given-amax kernel); halo-train's INT8 codes come from the per-tensor quantise
    kernel for its real integer GEMMs."""
    from suite.results.store import ResultStore

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for mode in ("torch", "triton"):
        _run(tmp_path / mode, mode, method, corpus)
    frames = {mode: ResultStore(tmp_path / mode).load() for mode in ("torch", "triton")}
    for metric in ("val_loss", "train_loss"):
        values = {mode: f.loc[f["metric"] == metric, "value"].tolist() for mode, f in frames.items()}
        assert values["torch"] == values["triton"] and len(values["torch"]) == 1
    share = {mode: f.loc[f["metric"] == "train_kernel_fraction", "value"].tolist() for mode, f in frames.items()}
    assert share["torch"] == [0.0]
    assert share["triton"] == [1.0]
    assert set(frames["triton"]["kernels"]) == {"triton"} and set(frames["torch"]["kernels"]) == {"torch"}
    recipe = json.loads(frames["triton"]["recipe"].iloc[0])
    assert "kernels" not in recipe  # an execution choice, not part of the cell's identity


def test_triton_on_a_cpu_without_the_interpreter_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from suite.app.cli import main

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    code = main(["run", "--preset", "smoke", "--device", "cpu", "--kernels", "triton", "--store", str(tmp_path / "s")])
    assert code == 2 and "set TRITON_INTERPRET=1" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_the_recipe_benchmark_measures_each_recipe_with_the_kernels_off_and_on(tmp_path, monkeypatch, capsys):
    """benchmarks/bench_train_recipes.py --kernels torch,triton: one row per recipe and mode, the
    share of format operations a kernel served (no timing is judged here)."""
    import sys

    from benchmarks import bench_train_recipes as bench

    assert bench.split_recipes("bf16-train,nvfp4-train:rht=false,tiles=false,mxfp4-train") == [
        "bf16-train", "nvfp4-train:rht=false,tiles=false", "mxfp4-train"]
    out = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", ["bench", "--size", "64,1,2,128", "--batch", "1", "--seq", "32", "--steps", "1",
                                      "--warmup", "0", "--recipes", "bf16-train,mxfp4-train",
                                      "--kernels", "torch,triton", "--json", str(out)])
    assert bench.main() == 0
    rows = {r["recipe"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {f"{r} [kernels {m}]" for r in ("bf16-train", "mxfp4-train") for m in ("torch", "triton")}
    assert rows["mxfp4-train [kernels torch]"]["kernel_fraction"] == 0.0
    assert rows["mxfp4-train [kernels triton]"]["kernel_fraction"] == 1.0


@pytest.mark.parametrize("fmt,opts", [("mxfp4", {}), ("nvfp4", {}), ("fp8_e4m3", {"granularity": "row"}),
                                      ("int4", {"group_size": 32})])
def test_qat_weights_go_through_the_kernels_where_one_serves_and_train_alike(fmt, opts):
    """QAT's fake-quantised weight (FakeQuantLinear, straight-through) with the kernels on and off: the
    same output and gradient, served by a kernel where one exists (int4 groups: none, the formats module)."""
    from suite.methods.quant.qat_layers import FakeQuantLinear
    from suite.registry import KERNELS

    KERNELS.names()
    torch.manual_seed(0)
    layer = FakeQuantLinear.from_linear(torch.nn.Linear(64, 32), fmt, opts)
    x = torch.randn(5, 64)
    results = {}
    for mode in ("torch", "triton"):
        layer.zero_grad()
        dispatch.reset_counts()
        with dispatch.kernels(mode):
            out = layer(x)
            out.square().sum().backward()
        results[mode] = (out.detach(), layer.weight.grad.clone(), dispatch.counts())
    assert torch.equal(results["torch"][0], results["triton"][0])
    assert torch.equal(results["torch"][1], results["triton"][1])
    served = results["triton"][2]
    assert served == ({} if fmt == "int4" else {("fake_quantize", "triton"): 1})


@pytest.mark.parametrize("fmt,opts", [("mxfp4", {}), ("fp8_e4m3", {"granularity": "row"}),
                                      ("fp8_e4m3", {"granularity": "tensor"}), ("int8", {"granularity": "tensor"})])
def test_fake_quantised_activations_through_the_kernels_equal_the_formats_module(fmt, opts):
    """A [batch, tokens, features] activation served as rows of its last dimension: equal to the
    formats module on the whole tensor (whose scales run along that dimension, or over all of it)."""
    from suite.methods.quant.layers import fake_quantize
    from suite.registry import KERNELS

    KERNELS.names()
    x = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(2)) * 4
    dispatch.reset_counts()
    with dispatch.kernels("triton"):
        served = fake_quantize(x, fmt, opts)
    assert dispatch.counts() == {("fake_quantize", "triton"): 1}
    assert torch.equal(served, F.fake_quantize(x, fmt, **opts))


def _rceil_edges() -> torch.Tensor:
    """Blocks whose amax / max sits at, one ulp below and one ulp above powers of two (where
    ceil(log2) turns), in the subnormal range, and zero blocks: each row one block of 32."""
    pow2 = torch.tensor([2.0 ** e for e in (-140, -130, -127, -126, -100, -20, -1, 0, 1, 20, 100, 120)])
    near = (pow2.view(torch.int32)[:, None] + torch.tensor([-1, 0, 1], dtype=torch.int32)).view(torch.float32)
    rows = []
    for emax in (448.0, 6.0):
        for amax in (near.flatten() * emax).tolist() + [0.0]:
            row = torch.linspace(-1, 1, 32) * amax
            row[7] = amax
            rows.append(row)
    return torch.stack(rows)


@pytest.mark.parametrize("fmt", ["mxfp8_e4m3", "mxfp4"])
@pytest.mark.parametrize("shape", [(1, 32), (37, 64), (130, 256), "edges"])
def test_the_mx_rceil_kernel_equals_the_recipes_scale_rounded_up(fmt, shape):
    """MX with the scale rounded up (mxfp8-train's default scale=rceil): the kernel against the
    recipe's reference (gemm.mx_rceil) and, for FP8 elements, the formats module's E4M3 codec over
    the scale 2^ceil(log2(amax / 448)) computed in float64 (an independent closed form)."""
    from suite.methods.train.gemm import mx_rceil_nearest
    from suite.numerics import elements as el
    from suite.registry import KERNELS

    KERNELS.names()
    if shape == "edges":
        x = _rceil_edges()
    else:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape))) * torch.logspace(-30, 30, shape[1])
        x[0, :32] = 0.0
    dispatch.reset_counts()
    with dispatch.kernels("triton"):
        served = dispatch.call("fake_quantize_mx_rceil", mx_rceil_nearest, x, fmt)
    assert dispatch.counts() == {("fake_quantize_mx_rceil", "triton"): 1}
    assert torch.equal(served, mx_rceil_nearest(x, fmt))
    if fmt == "mxfp8_e4m3":
        blocks = x.reshape(x.shape[0], -1, 32).double()
        amax = blocks.abs().amax(-1, keepdim=True)
        exponent = torch.ceil(torch.log2(amax / 448.0)).clamp(-127, 127)
        scale = torch.where(amax > 0, torch.exp2(exponent), torch.tensor(2.0 ** -127, dtype=torch.float64))
        codes = el.encode_float((blocks / scale).float(), el.FP8_E4M3)
        independent = (el.decode_float(codes, el.FP8_E4M3).double() * scale).float().reshape(x.shape)
        assert torch.equal(served, independent)


def _int4_group_input(shape: tuple[int, int]) -> torch.Tensor:
    """Values across ten decades, an all-zero group (scale 1), a row of ties (amax 7: scale 1, so k + 1/2
    is a tie to even) and, where there are rows enough, NaN and +-inf (scales from the finite values)."""
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g) * torch.logspace(-6, 4, shape[1])
    x[-1, :128] = 0.0
    x[0, :16] = torch.tensor([7.0, 0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, -3.5, 4.5, 5.5, 6.5, -6.5, 0.25, -0.75, 6.49])
    x[0, 16:128] = x[0, 16:128].clamp(-6.9, 6.9)
    if shape[0] > 2:
        x[1, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    return x.to(DEVICE)


@pytest.mark.parametrize("shape", [(1, 128), (3, 384), (37, 256), (130, 128)])
def test_the_int4_group_kernels_fake_quantise_as_the_formats_module_bit_for_bit(shape):
    """Symmetric INT4 in groups of 128 (rtn's and hawq's weights, qat's without torchao) through
    ``layers.fake_quantize``: the quantise and dequantise kernels against the formats module."""
    from suite.kernel import as_bits
    from suite.methods.quant.layers import fake_quantize

    opts = {"symmetric": True, "granularity": "group", "group_size": 128}
    x = _int4_group_input(shape)
    dispatch.reset_counts()
    with dispatch.kernels("triton"):
        served = fake_quantize(x, "int4", opts)
    assert dispatch.counts() == {("fake_quantize", "triton"): 1}
    assert dispatch.calls() == {("fake_quantize", "int4", "granularity=group", "group_size=128"): 1}
    reference = F.fake_quantize(x, "int4", **opts)
    nan = torch.isnan(reference)
    assert torch.equal(torch.isnan(served), nan)
    assert torch.equal(as_bits(served)[~nan], as_bits(reference)[~nan])
    # the tie row by hand: round half to even on the scale-1 grid, clamped to +-7
    expected = torch.tensor([7.0, 0.0, 2.0, 2.0, 4.0, 0.0, -2.0, -2.0, -4.0, 4.0, 6.0, 6.0, -6.0, 0.0, -1.0, 6.0])
    assert torch.equal(served[0, :16].cpu(), expected)


@pytest.mark.parametrize("fmt,opts,k", [
    ("int4", {"granularity": "group", "group_size": 64}, 128),  # groups the kernel does not hold
    ("int4", {"granularity": "channel"}, 192),  # a scale per row
    ("int8", {"granularity": "group", "group_size": 128}, 128),  # groups of another format
    ("int4", {"granularity": "group", "symmetric": False}, 128),  # asymmetric: not dispatched at all
])
def test_integer_groups_no_kernel_holds_run_the_formats_module(fmt, opts, k):
    from suite.methods.quant.layers import fake_quantize
    from suite.registry import KERNELS

    KERNELS.names()
    x = torch.randn(4, k, device=DEVICE)
    dispatch.reset_counts()
    with dispatch.kernels("triton"):
        served = fake_quantize(x, fmt, opts)
    assert dispatch.counts() == ({} if opts.get("symmetric") is False else {("fake_quantize", "torch"): 1})
    assert torch.equal(served, F.fake_quantize(x, fmt, **opts))


def _quantised_weights(spec: str, mode: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The weights ``spec`` installs on a tiny BERT (layers of 128 and 256 inputs: INT4 groups of 128
    fit), applied (QAT: applied, trained a step and converted) with the kernels in ``mode``."""
    from transformers import BertConfig, BertForSequenceClassification

    from suite.bench.methods import instantiate
    from suite.method import MethodContext
    from suite.methods.quant.layers import QuantLinear
    from suite.task import ModelBundle

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=128, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=256, max_position_embeddings=32, num_labels=2)
    model = BertForSequenceClassification(cfg).eval()
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(5, 100, (2, 12), generator=g),
             "attention_mask": torch.ones(2, 12, dtype=torch.long), "labels": torch.tensor([0, 1])}
    ctx = MethodContext(device="cpu", dtype=torch.float32, seed=0, task_kind="classification",
                        calibration_source=lambda n, bs=None: [batch] * n,
                        bundle=ModelBundle(model, new_modules=(model.classifier,)))
    (method,) = instantiate(spec)
    dispatch.reset_counts()
    with dispatch.kernels(mode):
        model = method.apply(model, ctx)
        if hasattr(method, "after_training"):
            model(**batch).loss.backward()
            with torch.no_grad():
                for p in model.parameters():
                    if p.grad is not None:
                        p -= 0.1 * p.grad
            model = method.after_training(model, ctx)
    weights = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    return weights, dispatch.counts()


@pytest.mark.parametrize("spec", ["rtn", "awq:sym=true,grid=2,calib_batches=1",
                                  "hawq:calib_batches=1,samples=1", "qat:backend=suite"])
def test_quantizers_and_qat_conversion_through_the_kernels_install_the_formats_modules_weights(spec, one_torch_thread):
    """RTN's weights, AWQ's scale search and weights, HAWQ's sensitivities and weights, and QAT's
    conversion (all symmetric INT4 in groups of 128 at these widths) with the kernels forced on (the
    interpreter on a CPU) and off: the same installed weights, bit for bit, and the kernel served."""
    from suite.registry import KERNELS

    KERNELS.names()
    by_torch, torch_counts = _quantised_weights(spec, "torch")
    by_kernels, kernel_counts = _quantised_weights(spec, "triton")
    assert by_torch and set(by_torch) == set(by_kernels)
    for name, w in by_torch.items():
        assert torch.equal(w, by_kernels[name]), name
    assert ("fake_quantize", "triton") not in torch_counts
    assert kernel_counts.get(("fake_quantize", "triton"), 0) > 0
