"""Method plugins, one folder per family; a method is one file that registers itself.

- ``baselines.py``: full fine-tuning and the linear probe, the reference points of every board.
- ``peft/``: parameter-efficient fine-tuning. peft's tuners as declared classes in
  ``lora_family``, ``weight_tuners`` and ``prompts`` (on ``tuners.PeftTuner`` over the one
  wrapper ``library``), and the methods no library has, one file each (S2FT, SSF, BitFit,
  SpIEL, LoLDU, LoRA-XS, SORSA, SVFit, LoftQ, ComPEFT).
- ``memory_efficient/``: full-parameter fine-tuning in less memory (GaLore, LISA, MeZO).
- ``vision/``: methods that only apply to a ViT (VPT, Houlsby and AdaptFormer adapters).
- ``quant/``: quantizers (post-training and QAT) and their peers (torchao, llm-compressor).
- ``sparse/``: pruning (magnitude, Wanda, SparseGPT) and its masks.
- ``train/``: low-precision training recipes (``*-train``) and torchao's as peers.
- ``common/``: what every family shares: which modules to adapt (``targets``) and the
  task's new modules, kept trainable (``new_modules``). It registers nothing.

Every module that calls ``register_method`` is discovered and imported by the registry on
first use (``suite.registry.discover_plugin_modules``); modules keep torch, transformers
and peft imports inside functions so ``suite list`` stays fast.
"""
