"""Numerics shared by quantizers, low-precision training recipes and GPU kernels.

Core, not a plugin: it depends on nothing in ``suite.methods`` or ``suite.kernels``, and
those import it, so a quantizer, a training recipe and a kernel's reference use one
definition of each number format, rounding rule and rotation.

* ``formats``: every number format (INT, FP8, any minifloat ``fp<b>_e<E>m<M>``, OCP MX of
  any element, NVFP4, NF4): fake quantisation, packed storage, effective bits;
* ``elements``: the scalar element codecs and bit packing those formats are built from;
* ``rounding``: round-to-nearest-even and stochastic rounding (same uniforms, same bits);
* ``hadamard``: the Sylvester Hadamard matrix and the fast Walsh-Hadamard transform
  (QuaRot's rotation and the Hadamard-quantise kernels' reference).

This package imports none of them, so ``import suite.numerics`` stays free of torch;
import the submodule you need (``from suite.numerics import formats``).
"""
