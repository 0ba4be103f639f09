"""Task adapters: GLUE, smoke (synthetic, offline), and later GSM8K, VTAB-1k, LM loss.

``PLUGIN_MODULES`` lists the modules whose import registers the built-in tasks.
"""

PLUGIN_MODULES = [
    "suite.tasks.glue",
    "suite.tasks.smoke",
]
