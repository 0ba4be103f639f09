"""W4A16 GEMM: activations in bf16/fp16, weights in packed INT4 groups dequantised in the GEMM."""

from __future__ import annotations

from suite.kernel import DTYPE_BYTES, Impl, Kernel, compiled, parse_dtype, randn
from suite.registry import register_kernel

OPTS = {"granularity": "group", "group_size": 128}


def _dequant_mm(x, q, w16):
    """The unfused peer: dequantise the weight to a dense tensor, then a bf16 GEMM."""
    from suite.numerics import formats

    return x @ formats.dequantize(q).T


@register_kernel("w4a16_gemm", kind="gemm",
                 summary="y = x W^T with INT4 group-128 weights dequantised inside the GEMM")
class W4A16Gemm(Kernel):
    name = "w4a16_gemm"
    dims = ("M", "N", "K")
    dtypes = ("bfloat16", "float16")
    shapes = ((16, 8192, 8192), (4096, 8192, 8192), (8192, 8192, 8192))
    cpu_shapes = ((64, 256, 256),)
    divisors = {"K": 128}
    tolerance = 1e-2
    bound = "compute"

    def make_inputs(self, shape, dtype, device, generator):
        from suite.numerics import formats

        M, N, K = shape
        x = randn((M, K), dtype, device, generator)
        w = randn((N, K), dtype, device, generator, scale=K**-0.5)
        q = formats.quantize(w, "int4", **OPTS)
        return x, q, formats.dequantize(q)

    def reference(self, x, q, w16):
        from suite.numerics import formats

        return (x.float() @ formats.dequantize(q).float().T).to(x.dtype)

    def impls(self):
        def triton_impl(x, q, w16):
            from suite.kernels._w4a16_triton import w4a16_matmul

            return w4a16_matmul(x, q.data, q.scale)

        def torch_mm(x, q, w16):
            return x @ w16.T

        return {
            "triton": Impl("triton", triton_impl, needs="triton"),
            "dequant_then_mm": Impl("dequant_then_mm", _dequant_mm, peer=True),
            "torch_compile": Impl("torch_compile", compiled(_dequant_mm), peer=True,
                                  default_on_cpu=False),
            "torch_mm_bf16": Impl("torch_mm_bf16", torch_mm, peer=True,
                                  note="dense 16-bit weight: the GEMM W4A16 replaces"),
        }

    def bytes_moved(self, shape, dtype):
        M, N, K = shape
        b = DTYPE_BYTES[parse_dtype(dtype)]
        return M * K * b + N * K // 2 + N * (K // 128) * 4 + M * N * b

    def flops(self, shape, dtype):
        M, N, K = shape
        return 2 * M * N * K
