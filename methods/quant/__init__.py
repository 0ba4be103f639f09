"""Quantizers: RTN, GPTQ, AWQ, SmoothQuant, HAWQ, QuaRot, W8A8 and the MX/NVFP4/NF4 weight formats.

The number formats themselves live in the core (``suite.numerics``), shared with the
kernels and the training recipes. Plugin modules: ``quantizers`` (post-training
quantisation), ``qat`` (quantisation-aware training and L4Q) and ``peers`` (torchao's
``quantize_`` and llm-compressor's ``oneshot`` as methods, for side-by-side comparison);
``engine``, ``algorithms``, ``layers`` and ``qat_layers`` are their machinery. torch is
imported lazily by the plugin modules so ``suite list`` stays fast.
"""
