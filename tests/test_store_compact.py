"""`suite store compact STORE`: the per-cell files fold into one part file, the results read
back identical, and a second compaction changes nothing."""

from __future__ import annotations

import argparse

import pandas as pd
import pytest

from benchmarks import synthetic_store as synthetic
from suite.app.commands import store as store_cmd
from suite.errors import UserError
from suite.results.store import CELLS, ResultStore


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="suite")
    store_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["store", *argv])
    return args.handler(args)


def _cells(root) -> pd.DataFrame:
    frame = ResultStore(root).load()
    keys = ["cell_id", "split", "metric"]
    frame = frame.sort_values(keys, kind="stable").reset_index(drop=True).astype(object)
    return frame.where(frame.notna(), None)  # None and NaN are both "missing" to every reader


def test_compact_keeps_every_cell_and_is_idempotent(tmp_path, capsys):
    root = tmp_path / "store"
    store = synthetic.write_store(root, methods=("lora", "pissa"), subtasks=("sst2", "cola"),
                                  seeds=(0, 1, 2), n_examples=20, with_predictions=False)
    # a re-run of one cell (newer attempt) and a failed cell: the reader's choice must survive
    rows, _ = synthetic.make_cell("lora", "sst2", 0, n_examples=20, with_predictions=False, skill=0.5)
    for r in rows:
        r["finished_at"] = "2025-02-01T00:00:00"
    store.write_cell(rows)
    failed, _ = synthetic.make_cell("dora", "sst2", 0, failed="ValueError: bad rank")
    store.write_cell(failed)
    before = _cells(root)
    n_files = len(store.files(CELLS))
    assert n_files == 2 * 2 * 3 + 2

    assert _run("compact", str(root)) == 0
    assert f"{n_files} cell files folded" in capsys.readouterr().out
    assert len(store.files(CELLS)) == 1
    after = _cells(root)
    pd.testing.assert_frame_equal(before, after, check_dtype=False)
    assert after["cell_id"].nunique() == 2 * 2 * 3 + 1  # the re-run counted once
    assert (after.loc[after["variant"] == "dora", "status"] == "failed").all()

    assert _run("compact", str(root)) == 0  # again: nothing to do, nothing changes
    assert "nothing to compact" in capsys.readouterr().out
    assert len(store.files(CELLS)) == 1
    pd.testing.assert_frame_equal(before, _cells(root), check_dtype=False)


def test_compacting_a_missing_store_is_one_clear_message(tmp_path):
    with pytest.raises(UserError, match="no result store"):
        _run("compact", str(tmp_path / "nope"))


def test_the_command_is_registered_in_the_cli():
    from suite.app.cli import COMMANDS

    assert "store" in COMMANDS
