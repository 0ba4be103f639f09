"""Quantizers and number formats.

``formats`` is the single definition of every number format (INT, FP8, MX, NVFP4, NF4);
``elements`` holds the scalar codecs it is built from. ``methods`` (a plugin module)
registers the quantizer methods; it imports torch lazily so ``suite list`` stays fast.
"""
