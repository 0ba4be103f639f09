"""Packaging: every package folder is listed in pyproject, and the CLI stays light to start."""

from __future__ import annotations

import subprocess
import sys
import time

import tomllib

from tests.conftest import REPO

MAPPING = {"suite": "suite", "methods": "suite.methods", "tasks": "suite.tasks",
           "kernels": "suite.kernels", "results": "suite.results", "reports": "suite.reports"}


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = set()
    for folder, package in MAPPING.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            if "__pycache__" in rel.parts:
                continue
            found.add(".".join([package, *rel.parts]) if rel.parts else package)
    assert found - listed == set(), f"add these to pyproject's packages list: {sorted(found - listed)}"


def test_help_and_list_do_not_import_torch_or_transformers():
    code = ("import sys, io, contextlib\nfrom suite.app.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['list'])\n"
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'pandas', 'triton') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"suite list imported {out.stdout.strip()}"


def test_help_and_list_answer_quickly():
    # A generous bound (a loaded 2-core CI machine): the point is that nothing heavy loads.
    for args in (["--help"], ["list"]):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "suite.app.cli", *args], capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        assert out.returncode == 0, out.stderr
        assert elapsed < 5.0, f"suite {' '.join(args)} took {elapsed:.1f}s"
