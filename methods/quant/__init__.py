"""Quantizers: RTN, GPTQ, AWQ, SmoothQuant, HAWQ, QuaRot, W8A8 and the MX/NVFP4/NF4 weight formats.

The number formats themselves live in the core (``suite.numerics``), shared with the
kernels and the training recipes. ``methods`` (a plugin module) registers the quantizer
methods; ``engine``, ``algorithms`` and ``layers`` are its machinery. torch is imported
lazily by the plugin module so ``suite list`` stays fast.
"""
