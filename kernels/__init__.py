"""GPU kernels (Triton) with a PyTorch reference each, a cost model, and microbenchmarks.

``PLUGIN_MODULES`` lists the modules whose import registers the built-in kernels.
"""

PLUGIN_MODULES: list[str] = [
    "suite.kernels.lora",
    "suite.kernels.fp8_gemm",
    "suite.kernels.quant",
    "suite.kernels.w4a16",
    "suite.kernels.hadamard",
]
