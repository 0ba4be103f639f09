"""Method plugins: PEFT variants, quantizers and number formats, low-precision training.

``PLUGIN_MODULES`` lists the modules whose import registers the built-in methods; the
registry imports them on first use. They import torch, transformers and peft lazily.
"""

PLUGIN_MODULES = [
    "suite.methods.baselines",
    "suite.methods.peft_lora",
    "suite.methods.peft_tuners",
    "suite.methods.bitfit",
    "suite.methods.ssf",
    "suite.methods.s2ft",
    "suite.methods.lora_xs",
    "suite.methods.svfit",
    "suite.methods.sorsa",
    "suite.methods.spiel",
    "suite.methods.lisa",
    "suite.methods.mezo",
    "suite.methods.quant.methods",
    "suite.methods.loftq",
]
