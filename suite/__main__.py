"""``python -m suite``: the ``suite`` command."""

from suite.app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
