"""Parameter-efficient fine-tuning.

peft's tuners are declared classes on one base (``tuners.PeftTuner``), grouped by family in
``lora_family``, ``weight_tuners`` and ``prompts``; ``library`` is the one wrapper that turns a
method into peft calls and ``compat`` adapts the installed peft to the installed transformers.
The methods no library implements are one file each, tied to their papers by tests;
``svd_linear`` is the SVD-adapted linear layer LoRA-XS, SVFit, SORSA and LoLDU share.
"""
