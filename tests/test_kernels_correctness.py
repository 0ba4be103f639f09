"""Every registered kernel's Triton implementation against its reference.

On a CPU the Triton kernels run in the interpreter (``TRITON_INTERPRET=1``, set here before
any kernel module is imported) at small, deliberately ragged shapes; quantisers must match
``suite.methods.quant.formats`` bit for bit, GEMMs within bf16 rounding. Tests marked
``gpu`` repeat the check at full size on a CUDA device.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from suite.errors import UserError  # noqa: E402
from suite.kernel import compare_outputs  # noqa: E402
from suite.registry import KERNELS  # noqa: E402

pytest.importorskip("triton")

# Small shapes that exercise masking: rows not a multiple of the tile, several tiles.
SMALL = {
    ("M", "N"): [(70, 256), (32, 384)],
    ("M", "N", "K", "R"): [(70, 48, 80, 8), (33, 70, 50, 20)],
    ("M", "N", "K"): [(40, 96, 256), (64, 256, 384)],
}
DUAL_SMALL = [(64, 256), (96, 128)]


def _triton_kernels() -> list[str]:
    return [n for n in KERNELS.names() if "triton" in KERNELS.get(n).target().all_impls()]


def _shapes(kernel) -> list[tuple]:
    if getattr(kernel, "dual", False):
        return DUAL_SMALL
    return SMALL[kernel.dims]


def _poisoned(fn):
    """Run with the allocator's fresh memory filled with NaN-ish garbage first."""
    torch.empty(1 << 20).fill_(float("nan"))
    return fn()


@pytest.mark.parametrize("name", _triton_kernels())
def test_triton_matches_reference_on_cpu(name):
    kernel = KERNELS.get(name).target()
    impl = kernel.all_impls()["triton"]
    for i, shape in enumerate(_shapes(kernel)):
        dtype = kernel.dtypes[i % len(kernel.dtypes)]
        kernel.check(shape, dtype)
        gen = torch.Generator().manual_seed(100 + i)
        inputs = kernel.make_inputs(shape, dtype, "cpu", gen)
        out = _poisoned(lambda inputs=inputs: impl.fn(*inputs))
        ref = kernel.reference(*inputs)
        ok, err = kernel.matches(out, ref)
        assert ok, f"{name} {shape} {dtype}: triton != reference (error {err})"


def test_every_kernel_has_a_cost_model_and_supported_defaults():
    for name in KERNELS.names():
        kernel = KERNELS.get(name).target()
        for shape in list(kernel.shapes) + list(kernel.cpu_shapes):
            kernel.check(shape, kernel.dtypes[0])
            assert kernel.bytes_moved(shape, kernel.dtypes[0]) > 0
            if kernel.bound == "compute":
                assert kernel.flops(shape, kernel.dtypes[0]) > 0


# Quantisers whose scale depends on the whole tensor: the amax must be complete before the
# first element is quantised, so the algorithm reads X twice (amax pass, quantise pass).
TWO_PASS = {"quantize_fp8_tensor", "quantize_fp8_tensor_dual", "quantize_nvfp4",
            "quantize_nvfp4_dual", "hadamard16_nvfp4", "hadamard32_nvfp4", "hadamard128_nvfp4"}


def _quant_kernels() -> list[str]:
    return [n for n in KERNELS.names() if KERNELS.get(n).kind == "quant"]


def _stored_bytes(tensors) -> int:
    """Bytes of the storage tensors; a 0-dim per-tensor scale counts once however many
    layouts return it (the kernel writes it once)."""
    tensors = [t for t in tensors if isinstance(t, torch.Tensor)]
    full = sum(t.numel() * t.element_size() for t in tensors if t.dim() > 0)
    scalars = {t.element_size() for t in tensors if t.dim() == 0}
    return full + sum(scalars)


def test_two_pass_list_names_real_kernels():
    assert TWO_PASS <= set(_quant_kernels())


@pytest.mark.parametrize("name", _quant_kernels())
def test_quant_bytes_moved_is_what_the_storage_needs(name):
    """bytes_moved = X read (twice where the scale spans the tensor) + the codes and scales
    the reference stores, both layouts for ``*_dual``; dequantisers the reverse. Measured
    on the reference's own outputs, so a miscounted scale or layout fails here."""
    kernel = KERNELS.get(name).target()
    for shape in [*kernel.cpu_shapes, (96, 128)]:
        dtype = "bfloat16"
        kernel.check(shape, dtype)
        inputs = kernel.make_inputs(shape, dtype, "cpu", torch.Generator().manual_seed(0))
        out = kernel.reference(*inputs)
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        if name.startswith("dequantize_"):
            expected = _stored_bytes(inputs[0].tensors()) + _stored_bytes(outs)
        else:
            reads = 2 if name in TWO_PASS else 1
            expected = reads * inputs[0].numel() * inputs[0].element_size() + _stored_bytes(outs)
        assert kernel.bytes_moved(shape, dtype) == expected, (name, shape)


N8K = 8192 * 8192


@pytest.mark.parametrize("name, expected", [
    ("quantize_fp8_tensor", 2 * 2 * N8K + N8K + 4),
    ("quantize_fp8_tensor_dual", 2 * 2 * N8K + 2 * N8K + 4),
    ("quantize_nvfp4", 2 * 2 * N8K + N8K // 2 + N8K // 16 + 4),
    ("quantize_nvfp4_dual", 2 * 2 * N8K + 2 * (N8K // 2 + N8K // 16) + 4),
    ("hadamard32_nvfp4", 2 * 2 * N8K + N8K // 2 + N8K // 16 + 4),
    ("quantize_fp8_row", 2 * N8K + N8K + 4 * 8192),
    ("quantize_mxfp8_dual", 2 * N8K + 2 * (N8K + N8K // 32)),
])
def test_bytes_moved_at_full_size(name, expected):
    """The formula at 8192x8192 bf16 (128 MiB of X, larger than any L2): two reads of X for
    a tensor-wide scale, one for row and block scales."""
    assert KERNELS.get(name).target().bytes_moved((8192, 8192), "bfloat16") == expected


def test_results_file_states_the_cost_model():
    """The hand-written RESULTS.md (before a GPU run) and the rendered one say what GB/s
    divides by, in the same words."""
    from pathlib import Path

    from suite.kernels.render_results import COST_MODEL_NOTE

    text = (Path(__file__).resolve().parent.parent / "kernels" / "RESULTS.md").read_text()
    assert " ".join(COST_MODEL_NOTE.split()) in " ".join(text.split())


@pytest.mark.parametrize("name, shape, dtype, message", [
    ("quantize_mxfp4", (64, 100), "bfloat16", "multiple of 32"),
    ("quantize_nvfp4", (64, 24), "bfloat16", "multiple of 16"),
    ("quantize_mxfp4_dual", (40, 64), "bfloat16", "M=40 must be a multiple of 32"),
    ("quantize_int4_group", (8, 64), "bfloat16", "multiple of 128"),
    ("quantize_fp8_row", (4, 65536), "bfloat16", "keeps a row in registers"),
    ("quantize_mxfp4", (64, 64), "int8", "unknown dtype"),
    ("w4a16_gemm", (16, 64, 100), "bfloat16", "K=100 must be a multiple of 128"),
    ("w4a16_gemm", (16, 64, 128), "float32", "does not support dtype"),
    ("lora_forward", (64, 64, 64, 200), "bfloat16", "rank R <= 128"),
    ("fp8_gemm_rowwise", (64, 64, 40), "bfloat16", "multiple of 16"),
    ("hadamard128_mxfp4", (8, 96), "bfloat16", "multiple of 128"),
])
def test_unsupported_shapes_and_dtypes_are_user_errors(name, shape, dtype, message):
    kernel = KERNELS.get(name).target()
    with pytest.raises(UserError, match=message):
        kernel.check(shape, dtype)


def test_software_e4m3_matches_torch_cast_everywhere():
    """The integer-arithmetic E4M3 encoder (used where no hardware cast exists) vs torch,
    over every float32 exponent E4M3 reaches, ties included."""
    from suite.kernels._quant_triton import e4m3_soft_encode

    codes = torch.arange(0, 256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    finite = codes[torch.isfinite(codes)]
    mids = (finite[:-1] + finite[1:]) / 2  # exact ties between neighbours
    gen = torch.Generator().manual_seed(0)
    rand = torch.exp2(torch.rand(4000, generator=gen) * 24 - 14) * torch.sign(torch.randn(4000, generator=gen))
    x = torch.cat([finite, mids, -mids, rand, torch.tensor([500.0, -1e6, 0.0, -0.0])]).contiguous()
    y = e4m3_soft_encode(x)
    ref = x.clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.uint8)
    assert torch.equal(y, ref)


def test_fp8_stochastic_rounding_on_every_e4m3_interval():
    """The kernel's E4M3 stochastic rounding against the formats module on the whole grid:
    exact codes, midpoints, subnormals, saturation, signed zeros. One row holding 448 has
    scale exactly 1, so the values reach the rounding unchanged."""
    from suite.kernels._quant_triton import quantize
    from suite.methods.quant import formats

    grid = torch.arange(0, 127, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    mids = (grid[:-1] + grid[1:]) / 2
    gen = torch.Generator().manual_seed(5)
    rand = torch.exp2(torch.rand(1500, generator=gen) * 17 - 17) * 448
    vals = torch.cat([torch.tensor([448.0, 0.0, -0.0, 1e-9, 447.9]), grid, -grid, mids, -mids, rand, -rand])
    x = torch.nn.functional.pad(vals, (0, 4096 - vals.numel()), value=0.25).reshape(1, -1)
    noise = torch.rand(x.shape, generator=gen)
    codes, scale = quantize(x, "fp8_e4m3", rounding="stochastic", noise=noise)
    ref = formats.quantize(x, "fp8_e4m3", granularity="row", rounding="stochastic", noise=noise)
    assert scale.item() == 1.0
    assert torch.equal(codes.view(torch.uint8), ref.data.view(torch.uint8))


@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4", "fp8"])
def test_stochastic_rounding_same_uniforms_same_bits(fmt):
    from suite.kernels.hadamard import hadamard_quantize, hadamard_quantize_reference

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(64, 256, generator=gen).bfloat16()
    noise = torch.rand(64, 256, generator=gen)
    out = hadamard_quantize(x, 32, fmt, rounding="stochastic", noise=noise)
    ref = hadamard_quantize_reference(x, 32, fmt, rounding="stochastic", noise=noise)
    assert compare_outputs(out, ref, None)[0]


@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4", "fp8"])
def test_stochastic_rounding_in_kernel_rng_is_unbiased(fmt):
    """Averaged over seeds, the in-kernel stochastic rounding recovers the rotated input;
    round-to-nearest does not (its bias stays), and the draws differ between seeds."""
    from suite.kernels._quant_triton import dequantize
    from suite.kernels.hadamard import hadamard_quantize, hadamard_rotate

    gen = torch.Generator().manual_seed(4)
    x = torch.randn(32, 128, generator=gen)
    target = hadamard_rotate(x, 16)
    name = {"mxfp4": "mxfp4", "nvfp4": "nvfp4", "fp8": "fp8_e4m3"}[fmt]

    def decoded(out):
        return dequantize(out[0], out[1], name, (32, 128), torch.float32,
                          out[2] if len(out) == 3 else None)

    n = 48
    draws = [decoded(hadamard_quantize(x, 16, fmt, rounding="stochastic", seed=s)) for s in range(n)]
    mean = torch.stack(draws).mean(0)
    nearest = decoded(hadamard_quantize(x, 16, fmt))
    assert not torch.equal(draws[0], draws[1])
    err_sr = (mean - target).abs().mean().item()
    err_rn = (nearest - target).abs().mean().item()
    # Per-element SR variance is at most (step/2)^2; the mean of n draws shrinks by sqrt(n).
    assert err_sr < 0.5 * err_rn, (err_sr, err_rn)


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("name", _triton_kernels())
def test_triton_matches_reference_on_gpu_full_size(name):
    kernel = KERNELS.get(name).target()
    impl = kernel.all_impls()["triton"]
    for shape in kernel.shapes[:2]:
        for dtype in kernel.dtypes[:2]:
            inputs = kernel.make_inputs(shape, dtype, "cuda", torch.Generator("cuda").manual_seed(0))
            ok, err = kernel.matches(impl.fn(*inputs), kernel.reference(*inputs))
            assert ok, f"{name} {shape} {dtype}: error {err}"


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("name", ["fp8_gemm_tensorwise", "fp8_gemm_rowwise"])
def test_scaled_mm_matches_reference_on_gpu(name):
    kernel = KERNELS.get(name).target()
    inputs = kernel.make_inputs((4096, 4096, 4096), "bfloat16", "cuda",
                                torch.Generator("cuda").manual_seed(0))
    ref = kernel.reference(*inputs)
    for impl in ("scaled_mm", "scaled_mm_exact_acc", "torch_mm_bf16"):
        ok, err = kernel.matches(kernel.all_impls()[impl].fn(*inputs), ref)
        assert ok, f"{name}/{impl}: error {err}"
