"""suite: a benchmark and evaluation suite for efficient training.

PEFT variants, quantizers and low-precision training recipes (``suite.methods``) run
against task adapters (``suite.tasks``) and GPU-kernel microbenchmarks
(``suite.kernels``); results land in one parquet store (``suite.results``) and are
rendered into HTML leaderboards (``suite.reports``).
"""

__version__ = "0.1.0"
