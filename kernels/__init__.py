"""GPU kernels (Triton) with a PyTorch reference each, a cost model, and microbenchmarks.

Every module here that calls ``register_kernel`` is discovered and imported by the registry
on first use; private ``_*`` modules (the Triton sources) are imported by those.
"""
