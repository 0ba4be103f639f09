"""Low-precision training recipes (kind ``train``): FP8, MXFP8, MXFP4, NVFP4, Quartet, HALO, COAT.

``recipes`` is the plugin module (it registers the ``*-train`` methods); ``gemm`` is the
machinery every recipe shares (the quantised GEMMs of a linear layer's training step,
custom autograd on ``suite.numerics``), ``layers`` chooses and swaps the linear layers,
``coat`` holds COAT's FP8 optimizer, FP8-stored activations and FP8 copy of the linear
layers' inputs; ``torchao_peers`` registers torchao's float8 and MXFP8 training as peers of
the recipes. torch is imported lazily by the plugin module so ``suite list`` stays fast.
"""
