"""The ``suite`` command line. Subcommands live in ``suite.app.commands.<name>``.

Each command module exposes ``add_parser(subparsers)`` and ``main(args) -> int``, and
imports torch and friends only inside ``main``, so ``suite --help`` and ``suite list``
stay fast. A UserError anywhere ends in one message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from suite import __version__
from suite.errors import UserError

COMMANDS = ["run", "status", "list", "bench", "report", "compare", "export", "plan", "scaling", "store"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="suite",
        description="Benchmark and evaluate efficient-training methods (PEFT, quantizers, "
        "low-precision training) on real tasks, and microbenchmark their GPU kernels.",
    )
    parser.add_argument("--version", action="version", version=f"suite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"suite.app.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished cells are saved in the store", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (suite list | head): not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
