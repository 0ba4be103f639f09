"""Pruning (kind ``prune``): magnitude, Wanda and SparseGPT, unstructured or N:M (``prune``),
on the masks, masked linear layer and sparse storage of ``masks``."""
