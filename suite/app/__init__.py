"""The application: what turns a command line into cells, runs them and writes the store.

``cli`` and ``commands/`` (one module per subcommand) parse and check input; ``sweep``
expands specs into cells with stable ids; ``tuning`` adds the hyperparameter-search cells;
``runner`` runs one cell (build, apply methods, train, evaluate) and returns its record;
``executor`` is the contract of where cells run and ``executors/`` the built-in ones (local,
Ray, SLURM); ``driver`` hands cells to an executor and alone writes the store;
``provenance`` says with what a cell ran.

It sits on the contracts (``suite.method``, ``suite.task``, ``suite.kernel``, ``suite.recipe``),
the training loop and the result store; no module below it imports it. Only the commands
import ``suite.reports``.
"""
