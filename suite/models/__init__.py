"""Model knowledge in one place: which models the suite can build by name, how any model is
loaded, and how its parameters and saved state are counted.

- ``catalog``: the named models built from a config with random weights (no download):
  ``tiny-bert``, ``tiny-llama`` and ``tiny-vit`` for tests and the smoke preset, and the
  Llama pretraining sizes ``llama-tiny``, ``llama-10m``, ``llama-30m``, ``llama-125m``.
- ``tokenizers``: the processors those models come with, built in memory.
- ``loading``: the one loading helper every task family uses (a catalog name, a local
  folder or a hub id, for a given head), and what can be known of a model without loading it.
- ``accounting``: parameter counts and the bytes a method's trained state takes.

A new model family for tests is one catalog entry; a new head for a task family is one
entry in ``loading.HEADS``.
"""
