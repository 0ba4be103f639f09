"""Method plugins: PEFT variants, quantizers, low-precision training recipes.

Every module here that calls ``register_method`` is discovered and imported by the registry
on first use (``suite.registry.discover_plugin_modules``); modules keep torch, transformers
and peft imports inside functions.
"""
