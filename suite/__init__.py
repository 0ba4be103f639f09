"""suite: a benchmark and evaluation suite for efficient training.

PEFT variants, quantizers and low-precision training recipes (``suite.methods``) run
against task adapters (``suite.tasks``) and GPU-kernel microbenchmarks
(``suite.kernels``); results land in one parquet store (``suite.results``) and are
rendered into HTML leaderboards (``suite.reports``).

This package holds the layers the plugins build on, bottom up:

- foundation: ``errors``, ``config`` (typed options from strings and YAML), ``registry``;
- contracts: ``method``, ``task``, ``kernel``, ``recipe``, and the model catalog ``models``;
- engines the contracts plug into: the training loop ``train`` with its ``optim`` and
  ``precision`` seams and ``memory`` measurement, the number formats ``numerics``, the kernel
  timing harness ``bench``;
- ``app``: the application (CLI and commands, sweeps, runner, executors, driver), which
  nothing below it imports.

See ARCHITECTURE.md in the repository for where each kind of plugin goes.
"""

__version__ = "0.1.0"
