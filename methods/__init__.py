"""Method plugins: PEFT variants, quantizers and number formats, low-precision training.

``PLUGIN_MODULES`` lists the modules whose import registers the built-in methods; the
registry imports them on first use. They import torch, transformers and peft lazily.
"""

PLUGIN_MODULES = [
    "suite.methods.baselines",
    "suite.methods.peft_lora",
    "suite.methods.peft_tuners",
    "suite.methods.quant.methods",
]
