"""Every registered kernel's Triton implementation against its reference.

On a CPU the Triton kernels run in the interpreter (``TRITON_INTERPRET=1``, set here before
any kernel module is imported) at small, deliberately ragged shapes; quantisers must match
``suite.numerics.formats`` bit for bit, GEMMs within bf16 rounding. Tests marked
``gpu`` repeat the check at full size on a CUDA device.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

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
TWO_PASS = {"quantize_fp8_tensor", "quantize_fp8_tensor_dual", "quantize_fp8_e5m2_tensor", "quantize_int8_tensor",
            "quantize_nvfp4",
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
    ("quantize_fp8_tensor_given", 2 * N8K + N8K + 4),  # a given (delayed) scale: one read of X
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
    from suite.numerics import formats

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


# -- element offsets past 2**31 - 1 -------------------------------------------------------
# Every kernel indexes with int64 (program id cast before it is multiplied). On the CPU the
# check runs only the last program of each launch (the one with the largest offsets) on
# tensors of more than 2**31 elements that torch.empty leaves unallocated except for the
# pages that program touches: a few MB resident instead of 4 GB each.

HUGE_ROWS = 65536 + 32  # x 32768 columns: 2**31 + 2**20 elements


@contextlib.contextmanager
def _only_last_program():
    """Run just the last program of every Triton launch (interpreter only)."""
    from triton.runtime import interpreter as interp

    builder = interp.interpreter_builder
    real_executor = interp.GridExecutor
    shift = [0, 0, 0]

    class LastProgram(real_executor):
        def __init__(self, fn, arg_names, grid, *rest):
            full = tuple(grid) + (1,) * (3 - len(grid))
            super().__init__(fn, arg_names, (1, 1, 1), *rest)
            self.last = [d - 1 for d in full]

        def __call__(self, *args, **kwargs):
            shift[:] = self.last
            return super().__call__(*args, **kwargs)

    def set_grid_idx(x, y, z):
        builder.grid_idx = (x + shift[0], y + shift[1], z + shift[2])

    interp.GridExecutor = LastProgram
    builder.set_grid_idx = set_grid_idx
    try:
        yield
    finally:
        interp.GridExecutor = real_executor
        del builder.set_grid_idx


def _bits(t):
    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


def _huge_quant_dual(device: str = "cpu") -> None:
    """MXFP8 of X [2**16 + 32, 2**15] and X^T [2**15, 2**16 + 32]: the last tile of both."""
    from suite.kernels._quant_triton import quantize
    from suite.numerics import formats

    M, N = HUGE_ROWS, 32768
    x = torch.empty(M, N, dtype=torch.bfloat16, device=device)
    tile = torch.randn(32, 128, generator=torch.Generator().manual_seed(0)).bfloat16()
    x[-32:, -128:] = tile.to(device)
    q, s, qt, st = (t.cpu() for t in quantize(x, "mxfp8_e4m3", dual=True))
    ref, ref_t = formats.quantize(tile, "mxfp8_e4m3"), formats.quantize(tile.t().contiguous(), "mxfp8_e4m3")
    assert torch.equal(_bits(q[-32:, -128:]), _bits(ref.data)), "codes of X"
    assert torch.equal(s[-32:, -4:], ref.scale), "scales of X"
    assert torch.equal(_bits(qt[-128:, -32:]), _bits(ref_t.data)), "codes of X^T"
    assert torch.equal(st[-128:, -1:], ref_t.scale), "scales of X^T"


def _huge_dequant(device: str = "cpu") -> None:
    from suite.kernels._quant_triton import dequantize
    from suite.numerics import formats

    M, N = HUGE_ROWS, 32768
    tile = formats.quantize(torch.randn(32, 128, generator=torch.Generator().manual_seed(1)),
                            "mxfp8_e4m3")
    q = torch.empty(M, N, dtype=torch.uint8, device=device)
    s = torch.empty(M, N // 32, dtype=torch.uint8, device=device)
    q[-32:, -128:] = _bits(tile.data).to(device)
    s[-32:, -4:] = tile.scale.to(device)
    y = dequantize(q.view(torch.float8_e4m3fn), s, "mxfp8_e4m3", (M, N), torch.bfloat16)
    assert torch.equal(y[-32:, -128:].cpu(), formats.dequantize(tile).bfloat16()), "dequantised tile"


def _huge_amax(device: str = "cpu") -> None:
    from suite.kernels._quant_triton import _amax_kernel

    n, block = 2**31 + 4096, 1024
    x = torch.empty(n, dtype=torch.bfloat16, device=device)
    last = torch.randn(block, generator=torch.Generator().manual_seed(2)).bfloat16()
    x[-block:] = last.to(device)
    partial = torch.full((n // block,), -1.0, device=device)
    _amax_kernel[(partial.numel(),)](x, partial, n, BLOCK=block, HAD=0, had_scale=1.0, signs_ptr=x, SIGNS=False)
    assert partial[-1].item() == last.float().abs().max().item(), "amax of the last block"


def _huge_gemm(name: str, device: str = "cpu", impl: str = "triton") -> None:
    """x [2**20 + 32, 2048] and y [2**20 + 32, 2048]: 2**31 + 2**16 elements each. For the
    LoRA pair the last program of each kernel covers the same last 32 rows on the CPU (the
    interpreter's BM of kernel 1 and kernel 2 are both 32), so T holds the rows it needs."""
    kernel = KERNELS.get(name).target()
    M, N, K = 2**20 + 32, 2048, 2048
    gen = torch.Generator().manual_seed(3)
    x = torch.empty(M, K, dtype=torch.bfloat16, device=device)
    rows = torch.randn(32, K, generator=gen).bfloat16()
    x[-32:] = rows.to(device)
    if name == "lora_forward":
        fn = kernel.all_impls()[impl].fn
        w, a, b = (torch.randn(*shape, generator=gen).bfloat16() * 0.05
                   for shape in ((N, K), (16, K), (N, 16)))
        y = fn(x, w.to(device), a.to(device), b.to(device), 2.0)
        ref = kernel.reference(rows, w, a, b, 2.0)
    else:
        from suite.kernels._w4a16_triton import w4a16_matmul
        from suite.numerics import formats

        w = torch.randn(N, K, generator=gen).bfloat16() * 0.05
        q = formats.quantize(w, "int4", granularity="group", group_size=128)
        y = w4a16_matmul(x, q.data.to(device), q.scale.to(device))
        ref = kernel.reference(rows, q, None)
    ok, err = kernel.matches(y[-32:, -32:].cpu(), ref[:, -32:])
    assert ok, f"last output tile, error {err}"


HUGE_CASES = {"quantize_dual": _huge_quant_dual, "dequantize": _huge_dequant,
              "amax": _huge_amax,
              "lora_forward": lambda device="cpu": _huge_gemm("lora_forward", device),
              "lora_forward_pair": lambda device="cpu": _huge_gemm("lora_forward", device,
                                                                   "triton_pair"),
              "w4a16_gemm": lambda device="cpu": _huge_gemm("w4a16_gemm", device)}


def run_huge_offset_cases() -> None:
    """Entry point of the subprocess below: one line per case, flushed, so a case that
    crashes (an int32 offset wraps to an address outside the tensor) is named."""
    with _only_last_program():
        for case, fn in HUGE_CASES.items():
            print(f"start {case}", flush=True)
            fn()
            print(f"ok {case}", flush=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter check; GPUs run the "
                    "full-size test below")
def test_offsets_past_2_31_elements_in_the_interpreter():
    """A wrapped int32 offset points 4 GB before the tensor: a crash or garbage, hence a
    subprocess, whose output names the case."""
    root = Path(__file__).resolve().parent.parent
    code = "from tests.test_kernels_correctness import run_huge_offset_cases as r; r()"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    if "can't allocate memory" in proc.stderr:
        pytest.skip("this host refuses 4 GB of untouched virtual memory (strict overcommit)")
    done = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("ok ")]
    assert proc.returncode == 0 and done == list(HUGE_CASES), (
        f"exit {proc.returncode}; passed {done}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


# -- FP8 GEMM argument conventions on the CPU -------------------------------------------------
# The scaled_mm impls are needs="cuda" for timing, but torch's CPU build implements
# torch._scaled_mm too, so their argument conventions (b8.t() column-major, scale shapes)
# are checked here against the reference, and against cuBLASLt's layout rules by a spy
# (the CPU kernel accepts layouts cuBLASLt rejects, so the spy asserts them itself).


def _scaled_mm_cpu_problem(fast_accum: bool) -> str | None:
    """None when torch._scaled_mm runs on the CPU with tensor-wise and row-wise scales."""
    f8 = torch.float8_e4m3fn
    a, b = torch.ones(16, 32).to(f8), torch.ones(16, 32).to(f8)
    try:
        for sa, sb in ((torch.ones(()), torch.ones(())), (torch.ones(16, 1), torch.ones(1, 16))):
            torch._scaled_mm(a, b.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16,
                             use_fast_accum=fast_accum)
    except (AttributeError, NotImplementedError, RuntimeError, TypeError) as exc:
        what = "with use_fast_accum=True " if fast_accum else ""
        return f"torch._scaled_mm {what}does not run on this CPU build: {str(exc)[:120]}"
    return None


@pytest.mark.parametrize("name", ["fp8_gemm_tensorwise", "fp8_gemm_rowwise"])
@pytest.mark.parametrize("impl", ["scaled_mm", "scaled_mm_exact_acc"])
def test_scaled_mm_impls_on_cpu(name, impl, monkeypatch):
    """Both accumulation modes where the CPU build takes them (Torch 2.13's does; on the CPU
    the flag does not change the arithmetic, so this checks arguments, not precision)."""
    problem = _scaled_mm_cpu_problem(fast_accum=impl == "scaled_mm")
    if problem:
        pytest.skip(problem)
    kernel = KERNELS.get(name).target()
    real, seen = torch._scaled_mm, []

    def spy(a, b, *, scale_a, scale_b, **kwargs):
        M, N = a.shape[0], b.shape[1]
        assert a.dtype == b.dtype == torch.float8_e4m3fn
        assert a.stride(1) == 1 and b.stride(0) == 1, "cuBLASLt wants a row-major, b column-major"
        if kernel.rowwise:  # cuBLASLt: [M, 1] and [1, N]; tensor-wise: one element each
            assert (tuple(scale_a.shape), tuple(scale_b.shape)) == ((M, 1), (1, N))
        else:
            assert scale_a.numel() == scale_b.numel() == 1
        assert scale_a.dtype == scale_b.dtype == torch.float32
        assert scale_a.is_contiguous() and scale_b.is_contiguous()
        assert kwargs["out_dtype"] == torch.bfloat16
        seen.append(kwargs["use_fast_accum"])
        return real(a, b, scale_a=scale_a, scale_b=scale_b, **kwargs)

    monkeypatch.setattr(torch, "_scaled_mm", spy)
    fn = kernel.all_impls()[impl].fn
    for i, shape in enumerate([*kernel.cpu_shapes, (64, 256, 384)]):
        kernel.check(shape, "bfloat16")
        inputs = kernel.make_inputs(shape, "bfloat16", "cpu", torch.Generator().manual_seed(10 + i))
        ok, err = kernel.matches(fn(*inputs), kernel.reference(*inputs))
        assert ok, f"{name}/{impl} {shape}: error {err}"
    assert seen == [impl == "scaled_mm"] * (len(kernel.cpu_shapes) + 1)


# -- LoRA forward: both Triton variants (one kernel, the well-tiled pair) -------------------
# Each Triton impl against the reference at the kernel's cpu shapes, the ragged SMALL shapes
# the generic test uses, and r = 1 and r = 128 (the kernel's maximum) with M, N, K off every
# tile size; each shape in both dtypes. The pair's two kernels are also checked on their own.

LORA = KERNELS.get("lora_forward").target()
LORA_AWKWARD = [(45, 67, 99, 1), (37, 50, 70, 128)]
LORA_CPU_SHAPES = [*LORA.cpu_shapes, *SMALL[LORA.dims], *LORA_AWKWARD]


def _shape_id(shape: tuple) -> str:
    return "x".join(map(str, shape))


def _lora_triton_impls() -> list[str]:
    return [n for n, impl in LORA.all_impls().items() if impl.needs == "triton"]


def test_lora_registers_both_triton_variants():
    assert {"triton", "triton_pair"} <= set(_lora_triton_impls())
    assert all(LORA.all_impls()[n].note for n in ("triton", "triton_pair"))


@pytest.mark.parametrize("impl_name", _lora_triton_impls())
@pytest.mark.parametrize("shape", LORA_CPU_SHAPES, ids=_shape_id)
def test_lora_triton_impls_match_reference_on_cpu(impl_name, shape):
    fn = LORA.all_impls()[impl_name].fn
    for dtype in LORA.dtypes:
        LORA.check(shape, dtype)
        inputs = LORA.make_inputs(shape, dtype, "cpu", torch.Generator().manual_seed(shape[3]))
        out = _poisoned(lambda inputs=inputs: fn(*inputs))
        ok, err = LORA.matches(out, LORA.reference(*inputs))
        assert ok, f"{impl_name} {shape} {dtype}: != reference (error {err})"


@pytest.mark.parametrize("shape", [(45, 67, 99, 1), (70, 1, 80, 8), (37, 50, 70, 128)],
                         ids=_shape_id)
def test_lora_pair_kernel_1_is_x_a_t_in_float32(shape):
    """T = s * x A^T, [M, r] float32, checked on its own: the products of 16-bit operands
    are exact in float32, so only the summation order differs from float32 math."""
    from suite.kernels._lora_triton import lora_down

    x, _, a, _, scale = LORA.make_inputs(shape, "bfloat16", "cpu", torch.Generator().manual_seed(7))
    t = _poisoned(lambda: lora_down(x, a, scale))
    assert t.dtype == torch.float32 and t.shape == (shape[0], shape[3])
    ok, err = compare_outputs(t, scale * (x.float() @ a.float().T), 1e-5)
    assert ok, f"error {err}"


@pytest.mark.parametrize("shape", [(45, 67, 99, 1), (33, 70, 50, 20)], ids=_shape_id)
def test_lora_pair_kernel_2_adds_the_given_t_in_its_epilogue(shape):
    """Kernel 2 takes no A: y = x W^T + T B^T for an arbitrary T, T rounded to the input
    dtype once (the rounding the one-kernel impl applies to s * x A^T)."""
    from suite.kernels._lora_triton import matmul_add_lowrank

    M, N, K, R = shape
    gen = torch.Generator().manual_seed(8)
    x, w, _, b, _ = LORA.make_inputs(shape, "float16", "cpu", gen)
    t = torch.randn(M, R, generator=gen) * 3
    y = _poisoned(lambda: matmul_add_lowrank(x, w, t, b))
    ref = (x.float() @ w.float().T + t.half().float() @ b.float().T).half()
    ok, err = LORA.matches(y, ref)
    assert ok, f"error {err}"


@pytest.mark.parametrize("shape", [*LORA.cpu_shapes, *LORA_AWKWARD], ids=_shape_id)
def test_lora_cost_model_is_the_minimal_work(shape):
    """bytes_moved = every operand read once + y written once (measured on the tensors);
    flops = the three products, counted by torch's FLOP counter on the unfused layer. The
    same for every impl: the one-kernel impl's recompute and the pair's extra pass over x
    are the impls' overheads, not part of the roofline."""
    from torch.utils.flop_counter import FlopCounterMode

    from suite.kernels.lora import _unfused

    for dtype in LORA.dtypes:
        inputs = LORA.make_inputs(shape, dtype, "cpu", torch.Generator().manual_seed(0))
        out = LORA.reference(*inputs)
        tensors = [*inputs[:4], out]
        assert LORA.bytes_moved(shape, dtype) == sum(t.numel() * t.element_size() for t in tensors)
        with FlopCounterMode(display=False) as counter:
            _unfused(*inputs)
        assert LORA.flops(shape, dtype) == counter.get_total_flops()


def test_lora_pair_t_traffic_is_negligible_at_8192_cubed():
    """The figure the pair's docstring quotes: T in float32 written and read back once is
    1 MiB, 0.26% of bytes_moved at 8192x8192x8192, r = 16."""
    shape = (8192, 8192, 8192, 16)
    moved = LORA.bytes_moved(shape, "bfloat16")
    assert moved == 2 * (3 * N8K + 2 * 16 * 8192)
    assert 2 * 8192 * 16 * 4 / moved < 0.0027


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


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("case", list(HUGE_CASES))
def test_offsets_past_2_31_elements_on_gpu(case):
    """The same cases, every program launched, 4-9 GB of real tensors each."""
    HUGE_CASES[case]("cuda")
    torch.cuda.empty_cache()


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("name, shape", [
    ("quantize_mxfp8_dual", (64, 64 * 65537)),  # 64-column tiles on a GPU
    ("dequantize_mxfp8", (16, 256 * 65537)),  # 256-column tiles
])
def test_more_than_65535_column_tiles_on_gpu(name, shape):
    """The launch grid is 1-D: CUDA caps grid axes 1 and 2 at 65535 programs."""
    kernel = KERNELS.get(name).target()
    kernel.check(shape, "bfloat16")
    inputs = kernel.make_inputs(shape, "bfloat16", "cuda", torch.Generator("cuda").manual_seed(0))
    ok, err = kernel.matches(kernel.all_impls()["triton"].fn(*inputs), kernel.reference(*inputs))
    assert ok, f"{name} {shape}: error {err}"
    torch.cuda.empty_cache()


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("impl_name", _lora_triton_impls())
def test_lora_triton_impls_match_reference_on_gpu_full_size(impl_name):
    """Every full shape in both dtypes, plus ragged shapes under both tile configs (BN = 128
    below M*N = 4096^2, BN = 256 above) at r = 1 and r = 128, where the rank tile is largest
    and shared memory tightest."""
    fn = LORA.all_impls()[impl_name].fn
    ragged = [(1000, 1030, 1100, 1), (1000, 1030, 1100, 128), (8191, 4097, 4100, 128)]
    for shape in [*LORA.shapes, *ragged]:
        for dtype in LORA.dtypes:
            LORA.check(shape, dtype)
            inputs = LORA.make_inputs(shape, dtype, "cuda", torch.Generator("cuda").manual_seed(0))
            ok, err = LORA.matches(fn(*inputs), LORA.reference(*inputs))
            assert ok, f"{impl_name} {shape} {dtype}: error {err}"
    torch.cuda.empty_cache()


# -- autotuning (GPU only) -----------------------------------------------------------------
# On a GPU every Triton kernel launches through ``triton.autotune`` over a small candidate
# set (kernels/_tiling.py); elsewhere with its one fixed config. On the CPU: the candidate
# lists are inspected (no tile splits a scale or Hadamard block), and the autotuned launch
# path itself runs in the interpreter with a stand-in timer, every candidate once, the
# last one winning, so the tuner's keys, prunes and grid lambdas are exercised and the
# chosen non-default tile is checked against the reference.

SMEM_PER_BLOCK = 227 * 1024  # Hopper: 228 KB per SM, 227 KB usable by one block


def _pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def _tuners() -> dict[str, object]:
    from triton.runtime.autotuner import Autotuner

    from suite.kernels import _lora_triton, _quant_triton, _w4a16_triton

    return {f"{mod.__name__.rsplit('.', 1)[1]}.{name}": obj
            for mod in (_quant_triton, _lora_triton, _w4a16_triton)
            for name, obj in vars(mod).items() if isinstance(obj, Autotuner)}


def _tile_ok(config, block: int, had: int = 0, dual: bool = False) -> bool:
    """A [BM, BN] tile holds whole scale blocks and Hadamard blocks along N, and whole
    scale blocks along M too when X^T is quantised from the same tile."""
    bm, bn = config.kwargs["BM"], config.kwargs["BN"]
    return bn % block == 0 and (had == 0 or bn % had == 0) and (not dual or bm % block == 0)


def test_autotune_candidates_hold_whole_blocks():
    from suite.kernels import _quant_triton as qt

    blocks = (16, 32, 128)  # NVFP4, MX, INT4 groups and per-tensor FP8's storage group
    for name, tuner, dual in (("quant block", qt._QUANT_BLOCK, False),
                              ("dequant block", qt._DEQUANT_BLOCK, False),
                              ("quant dual", qt._QUANT_DUAL, True)):
        assert "G" in tuner.keys, f"{name}: the prune reads G, so the key must hold it"
        for c in tuner.configs:
            assert _pow2(c.kwargs["BM"]) and _pow2(c.kwargs["BN"]), (name, str(c))
            # Every candidate already fits the largest block it can meet, before any prune.
            assert _tile_ok(c, 64 if dual else 128, 0 if dual else 128, dual), (name, str(c))
        for block in blocks:
            for had in (0,) if dual else (0, 16, 32, 128):
                kept = tuner.early_config_prune(tuner.configs, {}, G=block, HAD=had, DUAL=dual)
                assert kept, (name, block, had)
                assert all(_tile_ok(c, block, had, dual) for c in kept), (name, block, had)
    assert {"HAD", "DUAL"} <= set(qt._QUANT_BLOCK.keys) and "HAD" in qt._QUANT_DUAL.keys
    for tuner in (qt._QUANT_ROW, qt._DEQUANT_ROW):
        assert "BN" in tuner.keys
        assert all("BN" not in c.kwargs and _pow2(c.kwargs["BM"]) for c in tuner.configs)
        for bn in (16, 256, 1024, 8192, 32768):
            kept = tuner.early_config_prune(tuner.configs, {}, BN=bn)
            assert kept and all(c.kwargs["BM"] * bn <= qt.ROW_TILE_MAX or c.kwargs["BM"] == 1
                                for c in kept), bn
    for fmt in (qt.FP8, qt.INT8):  # row scales: the caller's BN covers the whole row
        for n in (96, 1000, 4096, 32768):
            tuner, _, tile_args, _ = qt._plan(fmt, n, False, False)
            assert tuner is qt._QUANT_ROW and tile_args["BN"] >= n
    assert "HAD" in qt._AMAX.keys and qt._AMAX.reset_to_zero == ["out_ptr"]
    assert all(c.kwargs["BLOCK"] % 128 == 0 for c in qt._AMAX.configs)


def test_fixed_gpu_configs_are_among_the_candidates(monkeypatch):
    """The tuner can keep what the kernels ran before autotuning (per-tensor FP8 without
    dual excepted: its old 128x128 tile is outside the block set)."""
    from suite.kernels import _lora_triton as lt
    from suite.kernels import _quant_triton as qt
    from suite.kernels import _w4a16_triton as wt
    from suite.kernels._tiling import launch_kwargs

    def among(fixed: dict, tuner) -> bool:
        return any({k: v for k, v in launch_kwargs(c).items() if k in fixed} == fixed
                   for c in tuner.configs)

    for mod in (qt, lt, wt):
        monkeypatch.setattr(mod, "triton_interpreted", lambda: False)
    for fmt in range(6):
        for n in (256, 1024, 4096, 8192, 32768):
            for dual, per_tensor in ((False, False), (True, False), (True, True)):
                tuner, _, _, fixed = qt._plan(fmt, n, dual, per_tensor)
                assert among(fixed, tuner), (fmt, n, dual, per_tensor, fixed)
            tuner, _, _, fixed = qt._plan(fmt, n, False, False, dequant=True)
            assert among(fixed, tuner), (fmt, n, fixed)
    assert among(qt._amax_fixed(), qt._AMAX)
    for m, n in ((8192, 8192), (1024, 1024)):
        assert among(lt._config(m, n, 4096), lt._MAIN) and among(lt._down_config(m), lt._DOWN)
    for m in (16, 4096):
        assert among(wt._config(m), wt._W4A16)


def test_autotune_gemm_candidates_are_valid_tiles():
    from suite.kernels import _lora_triton as lt
    from suite.kernels import _w4a16_triton as wt

    for tuner, dims in ((lt._MAIN, ("BM", "BN", "BK")), (lt._DOWN, ("BM", "BK")),
                        (wt._W4A16, ("BM", "BN"))):
        assert 4 <= len(tuner.configs) <= 8
        for c in tuner.configs:
            assert all(_pow2(c.kwargs[d]) and c.kwargs[d] >= 16 for d in dims), str(c)  # tl.dot
            assert c.num_warps in (4, 8) and c.num_stages in (3, 4), str(c)
    assert "BK" not in {k for c in wt._W4A16.configs for k in c.kwargs}  # BK is one group

    def smem(c, br=128):  # operand tiles per pipeline stage, 2-byte elements (an estimate)
        k = c.kwargs
        return c.num_stages * 2 * k["BK"] * (k["BM"] + k.get("BN", 0) + br)

    # Some candidates may not fit at the largest rank (the tuner skips them); one must.
    assert min(smem(c) for c in lt._MAIN.configs) <= SMEM_PER_BLOCK
    assert min(smem(c) for c in lt._DOWN.configs) <= SMEM_PER_BLOCK
    assert {"R", "RECOMPUTE"} <= set(lt._MAIN.keys) and "R" in lt._DOWN.keys
    assert "M" in wt._W4A16.keys
    for m in (1, 16, 40, 64, 65, 4096):
        kept = wt._W4A16.early_config_prune(wt._W4A16.configs, {"M": m})
        assert kept and all(c.kwargs["BM"] <= max(16, 1 << (m - 1).bit_length()) for c in kept)


# (kernel, impl, shape, dtype, the autotuned kernels it launches, block along N, Hadamard)
AUTOTUNE_CASES = {
    "fp8_row": ("quantize_fp8_row", "triton", (5, 2000), "bfloat16", ["_QUANT_ROW"], 0, 0),
    "int8_row": ("quantize_int8_row", "triton", (40, 384), "float16", ["_QUANT_ROW"], 0, 0),
    "mxfp4": ("quantize_mxfp4", "triton", (70, 384), "bfloat16", ["_QUANT_BLOCK"], 32, 0),
    "nvfp4": ("quantize_nvfp4", "triton", (40, 640), "float32", ["_QUANT_BLOCK", "_AMAX"],
              16, 0),
    "int4": ("quantize_int4_group", "triton", (40, 640), "bfloat16", ["_QUANT_BLOCK"], 128, 0),
    "fp8_tensor": ("quantize_fp8_tensor", "triton", (40, 384), "bfloat16",
                   ["_QUANT_BLOCK", "_AMAX"], 128, 0),
    "hadamard128_mxfp4": ("hadamard128_mxfp4", "triton", (24, 640), "bfloat16",
                          ["_QUANT_BLOCK"], 32, 128),
    "hadamard32_fp8": ("hadamard32_fp8", "triton", (24, 640), "bfloat16", ["_QUANT_ROW"], 0, 32),
    "hadamard16_nvfp4_sr": ("hadamard16_nvfp4", "triton_sr", (24, 640), "bfloat16",
                            ["_QUANT_BLOCK", "_AMAX"], 16, 16),
    "mxfp8_dual": ("quantize_mxfp8_dual", "triton", (96, 192), "bfloat16", ["_QUANT_DUAL"],
                   32, 0),
    "nvfp4_dual": ("quantize_nvfp4_dual", "triton", (80, 144), "bfloat16",
                   ["_QUANT_DUAL", "_AMAX"], 16, 0),
    "fp8_tensor_dual": ("quantize_fp8_tensor_dual", "triton", (96, 160), "bfloat16",
                        ["_QUANT_DUAL", "_AMAX"], 128, 0),
    "dequant_fp8_row": ("dequantize_fp8_row", "triton", (40, 1000), "bfloat16",
                        ["_DEQUANT_ROW"], 0, 0),
    "dequant_mxfp4": ("dequantize_mxfp4", "triton", (70, 384), "bfloat16", ["_DEQUANT_BLOCK"],
                      32, 0),
    "dequant_int4": ("dequantize_int4_group", "triton", (40, 640), "float16",
                     ["_DEQUANT_BLOCK"], 128, 0),
    "lora": ("lora_forward", "triton", (70, 90, 80, 20), "bfloat16", ["_MAIN"], 0, 0),
    "lora_pair": ("lora_forward", "triton_pair", (70, 90, 80, 20), "float16",
                  ["_MAIN", "_DOWN"], 0, 0),
    "w4a16_decode": ("w4a16_gemm", "triton", (5, 200, 256), "bfloat16", ["_W4A16"], 0, 0),
    "w4a16": ("w4a16_gemm", "triton", (70, 200, 384), "float16", ["_W4A16"], 0, 0),
}


def _tuner(short: str):
    return next(t for name, t in _tuners().items() if name.endswith("." + short))


def test_every_autotuned_kernel_has_a_case():
    covered = {t for case in AUTOTUNE_CASES.values() for t in case[4]}
    assert {name.rsplit(".", 1)[1] for name in _tuners()} == covered


@pytest.mark.parametrize("case", list(AUTOTUNE_CASES))
def test_autotuned_launch_path_in_the_interpreter(case, monkeypatch):
    """The GPU launch path (``triton.autotune``) run in the interpreter: a stand-in timer
    makes every candidate that survives the prune run once and the last one win; the
    result, computed with that (non-default) tile, must equal the reference, bit for bit
    for the quantisers."""
    from suite.kernels import _quant_triton, _tiling

    if not _tiling.triton_interpreted():
        pytest.skip("runs the autotuner in the interpreter; GPUs run the test below")
    kernel_name, impl, shape, dtype, names, block, had = AUTOTUNE_CASES[case]
    monkeypatch.setattr(_tiling, "autotuning", lambda device: True)
    monkeypatch.setattr(_quant_triton, "autotuning", lambda device: True)
    benched: dict[str, list] = {}
    for name in names:
        tuner = _tuner(name)
        seen = benched.setdefault(name, [])

        def bench(*args, config, _real=tuner._bench, _seen=seen, **meta):
            _real(*args, config=config, **meta)
            _seen.append(config)
            return [-float(len(_seen))] * 3  # later candidates look faster: the last wins

        monkeypatch.setattr(tuner, "cache", {})
        # do_bench is a cached_property (its getter asks for a GPU driver): set the value
        # in the instance dict, which the property reads first and undo removes again.
        monkeypatch.setitem(vars(tuner), "do_bench",
                            lambda call, quantiles: (call(), [1.0] * 3)[1])
        monkeypatch.setattr(tuner, "_bench", bench)
    kernel = KERNELS.get(kernel_name).target()
    kernel.check(shape, dtype)
    inputs = kernel.make_inputs(shape, dtype, "cpu", torch.Generator().manual_seed(11))
    fn = kernel.all_impls()[impl].fn
    out = _poisoned(lambda: fn(*inputs))
    if impl == "triton_sr":  # in-kernel RNG: the draws depend on element indices only
        monkeypatch.undo()
        ok, err = compare_outputs(out, fn(*inputs), None)  # vs the fixed-config launch
    else:
        ok, err = kernel.matches(out, kernel.reference(*inputs))
    assert ok, f"{case}: the autotuned launch != reference (error {err})"
    for name in names:
        seen = benched[name]
        assert len(seen) >= 2, f"{name}: {len(seen)} candidates timed"
        assert len({str(c) for c in seen}) == len(seen)
        assert str(_tuner(name).best_config) == str(seen[-1])
        if name in ("_QUANT_BLOCK", "_QUANT_DUAL", "_DEQUANT_BLOCK"):
            assert all(_tile_ok(c, block, had, name == "_QUANT_DUAL") for c in seen)


# One full shape per autotuned kernel (LoRA at r = 128, where shared memory is tightest).
GPU_AUTOTUNE_CASES = {
    "fp8_row": ("quantize_fp8_row", "triton", (8192, 8192), "bfloat16", ["_QUANT_ROW"], 0, 0),
    "mxfp4": ("quantize_mxfp4", "triton", (8192, 8192), "bfloat16", ["_QUANT_BLOCK"], 32, 0),
    "hadamard128_nvfp4": ("hadamard128_nvfp4", "triton", (8192, 8192), "bfloat16",
                          ["_QUANT_BLOCK", "_AMAX"], 16, 128),
    "mxfp8_dual": ("quantize_mxfp8_dual", "triton", (8192, 8192), "bfloat16", ["_QUANT_DUAL"],
                   32, 0),
    "dequant_int8_row": ("dequantize_int8_row", "triton", (8192, 8192), "bfloat16",
                         ["_DEQUANT_ROW"], 0, 0),
    "dequant_nvfp4": ("dequantize_nvfp4", "triton", (8192, 8192), "bfloat16",
                      ["_DEQUANT_BLOCK"], 16, 0),
    "lora_r128": ("lora_forward", "triton", (8192, 4096, 4096, 128), "bfloat16", ["_MAIN"], 0, 0),
    "lora_pair_r128": ("lora_forward", "triton_pair", (8192, 4096, 4096, 128), "bfloat16",
                       ["_MAIN", "_DOWN"], 0, 0),
    "w4a16": ("w4a16_gemm", "triton", (4096, 8192, 8192), "bfloat16", ["_W4A16"], 0, 0),
    "w4a16_decode": ("w4a16_gemm", "triton", (16, 8192, 8192), "bfloat16", ["_W4A16"], 0, 0),
}


def test_gpu_autotune_cases_cover_every_autotuned_kernel():
    covered = {t for case in GPU_AUTOTUNE_CASES.values() for t in case[4]}
    assert {name.rsplit(".", 1)[1] for name in _tuners()} == covered


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("case", list(GPU_AUTOTUNE_CASES))
def test_autotuned_kernels_match_reference_on_gpu(case):
    """The tuner's pick at a full shape, then every candidate pinned in turn: each must
    match the reference (bit for bit for quantisers). A candidate that needs more shared
    memory than the GPU has fails to load with OutOfResources; the tuner skips those, and
    so does this test, but at least one candidate of each kernel must run."""
    from triton.runtime.errors import OutOfResources

    from suite.kernels._tiling import pinned

    kernel_name, impl, shape, dtype, names, block, had = GPU_AUTOTUNE_CASES[case]
    kernel = KERNELS.get(kernel_name).target()
    kernel.check(shape, dtype)
    inputs = kernel.make_inputs(shape, dtype, "cuda", torch.Generator("cuda").manual_seed(0))
    fn = kernel.all_impls()[impl].fn
    ref = kernel.reference(*inputs)
    ok, err = kernel.matches(fn(*inputs), ref)
    assert ok, f"{case}: the tuned launch != reference (error {err})"
    for name in names:
        tuner, ran = _tuner(name), []
        for config in tuner.configs:
            if name in ("_QUANT_BLOCK", "_QUANT_DUAL", "_DEQUANT_BLOCK") and not _tile_ok(
                    config, block, had, name == "_QUANT_DUAL"):
                continue  # the prune never offers it for this format
            try:
                with pinned(tuner, config):
                    out = fn(*inputs)
            except OutOfResources:
                continue
            ok, err = kernel.matches(out, ref)
            assert ok, f"{case}: {name} with {config} != reference (error {err})"
            ran.append(config)
        assert ran, f"{case}: no candidate of {name} fits this GPU"
    torch.cuda.empty_cache()
