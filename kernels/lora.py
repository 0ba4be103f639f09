"""Fused LoRA forward: y = x W^T + s (x A^T) B^T (the hot path of every LoRA layer)."""

from __future__ import annotations

from suite.kernel import DTYPE_BYTES, Impl, Kernel, compiled, parse_dtype, randn
from suite.registry import register_kernel


def _unfused(x, w, a, b, scale):
    """Three bf16 matmuls and an add, as an unfused LoRA layer runs them."""
    return x @ w.T + ((x @ a.T) * scale) @ b.T


@register_kernel("lora_forward", kind="peft", summary="fused LoRA forward y = xW^T + s(xA^T)B^T",
                 paper="arXiv:2106.09685")
class LoraForward(Kernel):
    name = "lora_forward"
    dims = ("M", "N", "K", "R")
    dtypes = ("bfloat16", "float16")
    shapes = ((8192, 4096, 4096, 16), (8192, 4096, 4096, 64), (16384, 8192, 8192, 16))
    cpu_shapes = ((256, 256, 256, 16),)
    tolerance = 1e-2  # bf16 operands, float32 accumulation in a different order
    bound = "compute"

    def check(self, shape, dtype):
        super().check(shape, dtype)
        if shape[3] > 128:
            from suite.errors import UserError

            raise UserError(f"lora_forward supports rank R <= 128 (got R={shape[3]}); a larger "
                            "rank is no longer low-rank: use two plain GEMMs")

    def make_inputs(self, shape, dtype, device, generator):
        M, N, K, R = shape
        x = randn((M, K), dtype, device, generator)
        w = randn((N, K), dtype, device, generator, scale=K**-0.5)
        a = randn((R, K), dtype, device, generator, scale=K**-0.5)
        b = randn((N, R), dtype, device, generator, scale=R**-0.5)
        return x, w, a, b, 2.0

    def reference(self, x, w, a, b, scale):
        """float32 math, rounded once to the input dtype."""
        xf = x.float()
        y = xf @ w.float().T + scale * ((xf @ a.float().T) @ b.float().T)
        return y.to(x.dtype)

    def impls(self):
        def triton_impl(x, w, a, b, scale):
            from suite.kernels._lora_triton import lora_forward

            return lora_forward(x, w, a, b, scale)

        def triton_pair_impl(x, w, a, b, scale):
            from suite.kernels._lora_triton import lora_forward_pair

            return lora_forward_pair(x, w, a, b, scale)

        return {
            "triton": Impl("triton", triton_impl, needs="triton",
                           note="one kernel; x@A^T recomputed per N-tile (~BR/BN extra FLOPs)"),
            "triton_pair": Impl("triton_pair", triton_pair_impl, needs="triton",
                                note="two kernels: T=s*x@A^T once (fp32), then x@W^T with "
                                     "T@B^T added in the epilogue"),
            "unfused": Impl("unfused", _unfused, peer=True, note="x@W^T + (x@A^T)s@B^T"),
            "torch_compile": Impl("torch_compile", compiled(_unfused), peer=True,
                                  default_on_cpu=False),
        }

    # The cost model is the operation's minimal work, the same for every impl: each operand
    # read once and y written once; the three products' FLOPs. The one-kernel Triton impl
    # executes more FLOPs (x A^T per N-tile), the pair moves more bytes (x read again, T
    # written and read back); see suite.kernels._lora_triton for how much.
    def bytes_moved(self, shape, dtype):
        M, N, K, R = shape
        return DTYPE_BYTES[parse_dtype(dtype)] * (M * K + N * K + R * K + N * R + M * N)

    def flops(self, shape, dtype):
        M, N, K, R = shape
        return 2 * M * N * K + 2 * M * K * R + 2 * M * R * N
