"""FP8 GEMM through ``torch._scaled_mm`` (cuBLASLt), per-tensor and row-wise scales.

The peer is a bf16 ``torch.mm`` of the same values (the FP8 operands dequantised), the
GEMM an FP8 recipe replaces. Inputs are FP8 E4M3 operands with float32 scales; the
reference dequantises in float32 and multiplies there. The ``scaled_mm`` impls need a CUDA
GPU for timing; torch's CPU build runs ``torch._scaled_mm`` too, so the tests check their
argument conventions (b column-major, scale shapes) on the CPU as well.
"""

from __future__ import annotations

from suite.errors import UserError
from suite.kernel import Impl, Kernel, randn
from suite.registry import register_kernel


class _Fp8Gemm(Kernel):
    dims = ("M", "N", "K")
    dtypes = ("bfloat16",)  # the output dtype
    shapes = ((8192, 8192, 8192), (4096, 4096, 4096), (16384, 8192, 2048))
    cpu_shapes = ((128, 128, 128),)
    divisors = {"K": 16, "N": 16}  # cuBLASLt FP8 needs 16-byte aligned leading dimensions
    tolerance = 1e-2  # bf16 output, float32 accumulation (fast accumulation on Hopper)
    bound = "compute"
    rowwise = False

    def make_inputs(self, shape, dtype, device, generator):
        import torch

        M, N, K = shape
        f8 = torch.float8_e4m3fn
        a8 = (randn((M, K), "float32", device, generator) * 64).clamp(-448, 448).to(f8)
        b8 = (randn((N, K), "float32", device, generator) * 64).clamp(-448, 448).to(f8)
        sa_shape, sb_shape = ((M, 1), (1, N)) if self.rowwise else ((), ())
        sa = torch.rand(sa_shape, generator=generator, device=generator.device).to(device)
        sb = torch.rand(sb_shape, generator=generator, device=generator.device).to(device)
        sa = (sa + 0.5) / 64 / K**0.25
        sb = (sb + 0.5) / 64 / K**0.25
        a16 = (a8.float() * sa).to(torch.bfloat16)
        b16 = (b8.float() * sb.reshape(-1, 1) if self.rowwise else b8.float() * sb)
        return a8, b8, sa, sb, a16, b16.to(torch.bfloat16)

    def reference(self, a8, b8, sa, sb, a16, b16):
        import torch

        a = a8.float() * sa
        b = b8.float() * (sb.reshape(-1, 1) if self.rowwise else sb)
        return (a @ b.T).to(torch.bfloat16)

    def impls(self):
        def scaled_mm(fast: bool):
            def run(a8, b8, sa, sb, a16, b16):
                import torch

                return torch._scaled_mm(a8, b8.t(), scale_a=sa, scale_b=sb,
                                        out_dtype=torch.bfloat16, use_fast_accum=fast)

            return run

        def torch_mm(a8, b8, sa, sb, a16, b16):
            import torch

            return torch.mm(a16, b16.t())

        return {
            "scaled_mm": Impl("scaled_mm", scaled_mm(True), needs="cuda",
                              note="cuBLASLt FP8, fast accumulation"),
            "scaled_mm_exact_acc": Impl("scaled_mm_exact_acc", scaled_mm(False), needs="cuda",
                                        note="cuBLASLt FP8, split accumulation"),
            "torch_mm_bf16": Impl("torch_mm_bf16", torch_mm, peer=True,
                                  note="bf16 cuBLAS GEMM of the dequantised operands"),
        }

    def check(self, shape, dtype):
        super().check(shape, dtype)
        if len(shape) == 3 and shape[0] % 16 and self.rowwise:
            raise UserError(f"{self.name}: M={shape[0]} must be a multiple of 16 for row-wise "
                            "scales in cuBLASLt")

    def bytes_moved(self, shape, dtype):
        M, N, K = shape
        scales = 4 * (M + N) if self.rowwise else 8
        return M * K + N * K + 2 * M * N + scales

    def flops(self, shape, dtype):
        M, N, K = shape
        return 2 * M * N * K


@register_kernel("fp8_gemm_tensorwise", kind="gemm",
                 summary="FP8 E4M3 GEMM, per-tensor scales (torch._scaled_mm) vs bf16 torch.mm")
class Fp8GemmTensorwise(_Fp8Gemm):
    name = "fp8_gemm_tensorwise"


@register_kernel("fp8_gemm_rowwise", kind="gemm",
                 summary="FP8 E4M3 GEMM, row-wise scales (torch._scaled_mm) vs bf16 torch.mm")
class Fp8GemmRowwise(_Fp8Gemm):
    name = "fp8_gemm_rowwise"
    rowwise = True
