"""Refresh ``constraints.txt``, the lock of tested versions that the README install uses.

Installs the newest versions that pyproject's ranges allow into a scratch virtual
environment (torch stays at the locked CPU build unless ``--torch`` says otherwise: a
range that admits a newer torch pulls several GB of CUDA packages), runs the test suite
there, and rewrites the lock only when every test passes, printing what changed.

    python .ci/refresh_lock.py                 # refresh, test, rewrite on success
    python .ci/refresh_lock.py --torch 2.14.1  # move torch too
    python .ci/refresh_lock.py --check         # only print what would change; no tests, no write

Exit codes: 0 lock written (or unchanged), 1 tests failed (lock untouched), 2 bad input.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "constraints.txt"
EXTRAS = "test"  # what the README install brings in
HEADER = """\
# The lock of tested versions: every package the README install brings in (the 'test' extra).
# Written by `python .ci/refresh_lock.py` after the whole test suite passed with exactly these
# versions; do not edit by hand. pyproject.toml keeps the compatible ranges for library users.
# torch is pinned without its local build label (+cpu), so a CUDA build of the same version
# satisfies the lock on a GPU machine.
"""
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)")


def read_pins(path: Path) -> dict[str, str]:
    """Package name (normalised) -> version from a constraints or ``pip freeze`` text."""
    pins = {}
    if not path.exists():
        return pins
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def strip_local_label(version: str) -> str:
    return version.split("+", 1)[0]


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=REPO, **kwargs)


def install_newest(venv: Path, torch: str) -> Path:
    """A fresh venv, as the README makes it, with the newest allowed versions (no lock on purpose)."""
    run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", f"torch=={torch}", "-e", f".[{EXTRAS}]"], check=True)
    return python


def frozen_pins(python: Path) -> dict[str, str]:
    # --all: setuptools is a runtime dependency of torch, so it belongs in the lock too.
    out = run([str(python), "-m", "pip", "freeze", "--all", "--exclude-editable"], check=True,
              capture_output=True, text=True).stdout
    pins = {}
    for line in out.splitlines():
        match = PIN.match(line.strip())
        if match and normalise(match.group(1)) not in {"pip", "suite"}:
            pins[normalise(match.group(1))] = strip_local_label(match.group(2))
    return pins


def describe_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    lines = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is None:
            lines.append(f"  + {name} {after}")
        elif after is None:
            lines.append(f"  - {name} {before}")
        else:
            lines.append(f"  ~ {name} {before} -> {after}")
    return lines


def write_lock(pins: dict[str, str]) -> None:
    body = "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))
    LOCK.write_text(HEADER + body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch", help="torch version to lock (default: the one locked now)")
    parser.add_argument("--check", action="store_true", help="print what would change; run no tests")
    parser.add_argument("--keep-venv", action="store_true", help="keep the scratch environment")
    parser.add_argument("--pytest-args", default="-q", help="arguments for the test run (default: -q)")
    args = parser.parse_args(argv)

    old = read_pins(LOCK)
    torch = args.torch or (strip_local_label(old["torch"]) if "torch" in old else None)
    if not torch:
        print("no torch version in constraints.txt; pass --torch VERSION", file=sys.stderr)
        return 2
    venv = Path(tempfile.mkdtemp(prefix="suite-lock-")) / "venv"
    try:
        python = install_newest(venv, torch)
        new = frozen_pins(python)
        changes = describe_changes(old, new)
        print("changes against constraints.txt:" if changes else "no version changed")
        print("\n".join(changes))
        if args.check:
            return 0
        tests = run([str(python), "-m", "pytest", *args.pytest_args.split()])
        if tests.returncode != 0:
            print(f"tests failed (exit {tests.returncode}) with the newest versions: "
                  f"constraints.txt left as it was", file=sys.stderr)
            return 1
        write_lock(new)
        print(f"wrote {LOCK.relative_to(REPO)} ({len(new)} packages, {len(changes)} changed)")
        return 0
    finally:
        if args.keep_venv:
            print(f"scratch environment kept at {venv}")
        else:
            shutil.rmtree(venv.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
