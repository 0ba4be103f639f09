"""One module per ``suite`` subcommand: ``add_parser(subparsers)`` and ``main(args) -> int``."""
