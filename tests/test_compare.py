"""`suite compare` in a terminal: fits the width, aligns decimals, lists failures, and shows
store text without its escape sequences."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import subprocess
import sys
from unittest import mock

import pytest

from benchmarks import synthetic_store as synthetic
from suite.app.commands import compare
from suite.errors import UserError

GLUE8 = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")
HOSTILE = "evil\x1b[2J\x1b]0;pwned\x07\x1b[31m:r=4"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """8 GLUE tasks x 3 methods x 3 seeds; prefix failed every cell; pissa failed one seed of
    rte; a method name and an error message carry terminal escape sequences."""
    root = tmp_path_factory.mktemp("compare") / "store"
    s = synthetic.write_store(root, methods=("lora", "pissa", "full"), subtasks=GLUE8, n_examples=40)
    for sub in ("sst2", "rte"):
        for seed in range(3):
            rows, _ = synthetic.make_cell("prefix", sub, seed, failed="RuntimeError: prefix broke\n  at line 3")
            s.write_cell(rows)
    # pissa's rte seed 2 failed on a re-run: its newest record is the failure
    rows, _ = synthetic.make_cell("pissa", "rte", 2, failed="CUDA out of memory\x1b[1A\x1b[2K(hidden)")
    rows[0]["finished_at"] = "2025-01-02T00:00:00"
    s.write_cell(rows)
    for seed in range(3):
        rows, preds = synthetic.make_cell("lora", "sst2", seed, variant=HOSTILE, n_examples=40)
        s.write_cell(rows)
        s.write_predictions(rows[0]["cell_id"], preds)
    return root


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="suite")
    compare.add_parser(parser.add_subparsers())
    return parser


def _compare(store, width: int, *extra: str) -> subprocess.CompletedProcess:
    """``suite compare STORE`` in a terminal ``width`` columns wide (COLUMNS, as a shell sets it),
    in-process; a UserError is exit 2 with its message on stderr, as in the CLI."""
    out, err = io.StringIO(), io.StringIO()
    args = _parser().parse_args(["compare", str(store), *extra])
    with mock.patch.dict(os.environ, {"COLUMNS": str(width)}), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = args.handler(args)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = 2
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("width", [80, 100, 140])
def test_every_line_fits_the_terminal_width(store, width):
    out = _compare(store, width)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= width
    for sub in GLUE8:  # split into blocks, not dropped: every task is still there
        assert f"{sub} (" in out.stdout
    assert sum(line.lstrip().startswith("method") for line in lines) >= 2  # more than one block


def test_decimals_line_up(store):
    """In every task column, the decimal points of the means, and of the interval half-widths,
    each sit in one text column (numbers right-aligned part by part)."""
    lines = _compare(store, 400).stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.lstrip().startswith("method"))
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", lines[head + 1])]
    rows = []
    for line in lines[head + 2:]:
        if not line.strip():
            break
        rows.append(line)
    assert len(rows) >= 5
    checked = 0
    for (start, end), name in zip(spans, re.split(r"\s{2,}", lines[head].strip()), strict=True):
        if not name.endswith(")"):  # the task columns: "cola (mcc)", ...
            continue
        dots: dict[int, set[int]] = {0: set(), 1: set()}
        for line in rows:
            for k, m in enumerate(re.finditer(r"-?\d+\.\d+", line[start:end])):
                if k < 2:
                    dots[k].add(start + m.start() + m.group().index("."))
        assert all(len(d) <= 1 for d in dots.values()), (name, dots, rows)
        checked += bool(dots[0])
    assert checked == len(GLUE8)


def test_failures_are_listed(store):
    out = _compare(store, 120).stdout
    assert "prefix on sst2: failed 3/3: RuntimeError: prefix broke" in out
    assert "at line 3" not in out  # the first line of the error only
    assert re.search(r"^\s+prefix\s", out, re.M)  # the all-failed method keeps its row
    assert "failed 3/3" in out
    assert "2/3 ok" in out  # pissa on rte: the score is over the two seeds that finished
    assert "pissa on rte: 2/3 ok: CUDA out of memory" in out


def test_escape_sequences_from_the_store_are_stripped(store):
    out = _compare(store, 120)
    text = out.stdout + out.stderr
    assert "\x1b" not in text and "\x07" not in text
    assert "evil" in out.stdout and "pwned" not in out.stdout
    assert "(hidden)" in out.stdout  # the text after the cursor-up/erase stays visible


def test_clean_removes_controls_but_keeps_text():
    assert compare.clean("a\x1b[31mb\x1b[0m") == "ab"
    assert compare.clean("x\x1b]8;;http://e\x1b\\link\x1b]8;;\x1b\\y") == "xlinky"
    assert compare.clean("tab\tnew\nline\x9b2J") == "tab new line"
    assert compare.clean("± Δ 名前") == "± Δ 名前"
    from suite.reports.format import first_line

    assert first_line("\n\n  first\nsecond") == "first"


def test_help_prints_a_plain_percent_sign(capsys):
    with pytest.raises(SystemExit) as done:
        _parser().parse_args(["compare", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "95% " in text and "%%" not in text


def test_too_narrow_a_width_is_one_clear_message(store):
    out = _compare(store, 100, "--width", "10")
    assert out.returncode == 2 and "too narrow" in out.stderr and "Traceback" not in out.stderr
