"""One module per ``suite`` subcommand: ``add_parser(subparsers)`` and ``main(args) -> int``."""

DEFAULT_STORE = "suite-results"  # the result store of every command when --store is not given
