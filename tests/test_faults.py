"""Fault injection through the real ``suite`` command: kills at every step of a write, of a
compaction and of a sweep; concurrent writers; a full and a read-only filesystem; corrupt and
hostile files and inputs. Each case asserts that nothing finished is lost, nothing is counted
twice and the exit code holds. The counts (faults injected, records lost, records duplicated)
are printed at the end of the test run (see ``pytest_terminal_summary`` in conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from suite.faults import FAULT_EXIT
from suite.results.store import ResultStore
from tests.conftest import run_suite

FAST = ["--tasks", "smoke", "--max-steps", "2", "--limit", "64", "--batch-size", "16", "--no-progress"]
COUNTS = {"faults injected": 0, "records lost": 0, "records duplicated": 0}


def tally(store: Path, expected_cells: set[str]) -> None:
    """Count lost and duplicated records against the cells that must be there, once each."""
    frame = ResultStore(store).load(warn=False)
    ok = frame[frame["status"] == "ok"]
    per_cell = ok.drop_duplicates(["cell_id", "attempt_id"]).groupby("cell_id").size() if not ok.empty else {}
    lost = len(expected_cells - set(ok["cell_id"]))
    duplicated = int(sum(n - 1 for n in dict(per_cell).values()))
    COUNTS["records lost"] += lost
    COUNTS["records duplicated"] += duplicated
    assert lost == 0 and duplicated == 0, (lost, duplicated)
    rows_per_cell = ok.groupby("cell_id")["metric"].apply(lambda m: m.duplicated().sum())
    assert int(rows_per_cell.sum()) == 0  # no metric of a cell counted twice


def cell_ids(store: Path) -> set[str]:
    frame = ResultStore(store).load(warn=False)
    return set(frame.loc[frame["status"] == "ok", "cell_id"])


def no_temporaries(store: Path) -> list[str]:
    return [str(p) for p in store.rglob("*.tmp")]


# -- kills at named points ---------------------------------------------------------------------------
@pytest.mark.parametrize("point", ["store.write.tmp_written", "driver.records_written", "driver.cell_written"])
def test_a_kill_at_each_step_of_a_write_loses_nothing_on_resume(tmp_path, point):
    store = tmp_path / "store"
    args = ["run", "--methods", "lora,full", *FAST, "--store", str(store)]
    killed = run_suite(*args, env={"SUITE_FAULT": point})
    assert killed.returncode == FAULT_EXIT, killed.stderr
    COUNTS["faults injected"] += 1
    resumed = run_suite(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert no_temporaries(store) == []  # the killed writer's temporary file was cleaned up
    assert len(cell_ids(store)) == 2
    tally(store, cell_ids(store))
    if point == "driver.cell_written":
        assert "1 already done, 1 to run" in resumed.stderr  # the finished cell was not run again


def test_a_kill_inside_compaction_counts_no_cell_twice(tmp_path):
    store = tmp_path / "store"
    assert run_suite("run", "--methods", "lora,full", "--seeds", "2", *FAST, "--store", str(store),
                     env={"SUITE_FAULT": "store.compact.part_written"}).returncode == FAULT_EXIT
    COUNTS["faults injected"] += 1
    files = ResultStore(store).files()
    assert any(Path(f).name.startswith("part-") for f in files) and len(files) > 1  # a record in two files
    expected = cell_ids(store)
    assert len(expected) == 4
    tally(store, expected)  # the reader keeps each cell once
    assert ResultStore(store).compact() > 0
    tally(store, expected)


def test_two_drivers_on_one_store_lose_and_duplicate_nothing(tmp_path):
    store = tmp_path / "store"
    command = [sys.executable, "-m", "suite.app.cli", "run", "--methods", "lora,full", "--seeds", "2", *FAST,
               "--store", str(store)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    codes = [first.wait(timeout=600), second.wait(timeout=600)]
    assert codes == [0, 0], [p.stderr.read().decode()[-2000:] for p in (first, second)]
    expected = cell_ids(store)
    assert len(expected) == 4
    tally(store, expected)


# -- resource faults ------------------------------------------------------------------------------------
def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A filesystem with a few kilobytes free: room for a probe file, not for a record."""
    where = tmp_path / "small"
    if not _mount_tmpfs(where, "size=256k"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    filler = where / "filler"
    try:
        with open(filler, "wb") as fh:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
    except OSError:
        pass  # full
    os.truncate(filler, max(0, filler.stat().st_size - 8192))  # leave 8 KiB
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_disk_keeps_the_record_elsewhere_and_leaves_no_temporary_file(small_disk, tmp_path):
    store = small_disk / "store"
    unsaved = tmp_path / "unsaved"
    result = run_suite("run", "--methods", "lora", *FAST, "--store", str(store),
                       env={"SUITE_UNSAVED_DIR": str(unsaved)})
    COUNTS["faults injected"] += 1
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "cannot write to the result store" in result.stderr
    assert no_temporaries(small_disk) == []
    kept = [p for p in unsaved.rglob("*.parquet") if p.parent.name == "cells"]
    assert len(kept) == 1  # the finished cell's record was kept, and the message says where
    assert str(kept[0].parent.parent) in result.stderr
    frame = pd.read_parquet(kept[0])
    assert (frame["status"] == "ok").all() and "accuracy" in set(frame["metric"])
    if not kept:
        COUNTS["records lost"] += 1


@pytest.fixture
def read_only_disk(tmp_path):
    where = tmp_path / "ro"
    if not _mount_tmpfs(where, "ro,size=64k"):
        pytest.skip("cannot mount a read-only tmpfs here (needs root and mount rights)")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_an_unwritable_store_or_export_folder_is_refused_before_training(read_only_disk, tmp_path):
    started = time.perf_counter()
    result = run_suite("run", "--methods", "lora", *FAST, "--store", str(read_only_disk / "store"))
    assert result.returncode == 2 and "cannot write to the result store" in result.stderr
    export = run_suite("run", "--methods", "lora", *FAST, "--store", str(tmp_path / "s"),
                       "--export-dir", str(read_only_disk / "exports"))
    assert export.returncode == 2 and "--export-dir" in export.stderr and "not writable" in export.stderr
    assert not (tmp_path / "s" / "cells").exists()
    assert time.perf_counter() - started < 120  # refused, not trained


# -- corrupt and hostile files ---------------------------------------------------------------------------
def test_a_corrupt_or_foreign_file_is_quarantined_and_named_never_deleted(tmp_path):
    store = tmp_path / "store"
    assert run_suite("run", "--methods", "lora,full", *FAST, "--store", str(store)).returncode == 0
    expected = cell_ids(store)
    good = sorted((store / "cells").glob("*.parquet"))[0]
    truncated = store / "cells" / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    pd.DataFrame({"x": [1, 2]}).to_parquet(store / "cells" / "foreign.parquet")
    COUNTS["faults injected"] += 2
    shown = run_suite("compare", str(store), "--baseline", "lora")
    assert shown.returncode == 0, shown.stderr
    assert "truncated.parquet" in shown.stderr and "foreign.parquet" in shown.stderr
    quarantine = {p.relative_to(store / "quarantine").as_posix() for p in (store / "quarantine").rglob("*.parquet")}
    assert quarantine == {"cells/truncated.parquet", "cells/foreign.parquet"}  # moved aside, not deleted
    tally(store, expected)


BAD_INPUTS = {
    "non-UTF-8 YAML": (["-c", "{bad_yaml}"], "not UTF-8"),
    "YAML aliases": (["-c", "{laughs}"], "aliases"),
    "a wrongly typed YAML value": (["-c", "{typed}"], "must be"),
    "a huge rank": (["--methods", "lora:r=1e100", "--tasks", "smoke"], "out of range"),
    "an infinite learning rate": (["--methods", "lora", "--tasks", "smoke", "--lr", "inf"], "finite"),
    "a NaN method argument": (["--methods", "lora:alpha=nan", "--tasks", "smoke"], "finite"),
    "negative seeds": (["--methods", "lora", "--tasks", "smoke", "--seeds=-1,2"], "seeds must be >= 0"),
    "an unknown device": (["--methods", "lora", "--tasks", "smoke", "--device", "tpu"], "is not a device"),
    "an export folder that is a file": (["--methods", "lora", "--tasks", "smoke", "--export-dir", "{file}"],
                                        "is a file"),
    "a target typo in the second method": (["--methods", "lora,lora:target_modules=quer", "--tasks", "smoke"],
                                           "names 'quer'"),
    "an empty method list": (["--methods", ",", "--tasks", "smoke"], "no method to run"),
    "an empty composition in YAML": (["-c", "{empty}"], "empty method composition"),
    "a rank above the layers'": (["--methods", "pissa:r=1000", "--tasks", "smoke"], "exceeds the rank"),
    "an empty store path": (["--methods", "lora", "--tasks", "smoke", "--store", ""], "names no folder"),
    "a sweep of 100,000 seeds": (["--methods", "lora", "--tasks", "smoke", "--seeds", "100000"], "--yes"),
    "a GLUE label out of range": (["--methods", "lora", "--tasks", "glue:sst2", "--data-dir", "{glue}",
                                   "--models", "tiny-bert"], "is not valid"),
    "undecodable GLUE bytes": (["--methods", "lora", "--tasks", "glue:sst2", "--data-dir", "{glue_bytes}",
                                "--models", "tiny-bert"], "not UTF-8"),
}


@pytest.fixture
def hostile(tmp_path) -> dict[str, str]:
    files = {"bad_yaml": tmp_path / "latin1.yaml", "laughs": tmp_path / "laughs.yaml", "typed": tmp_path / "typed.yaml",
             "file": tmp_path / "a-file", "empty": tmp_path / "empty.yaml"}
    files["bad_yaml"].write_bytes("methods: [lora]\ntasks: [smoke]\n# caf\xe9\n".encode("latin-1"))
    files["laughs"].write_text(textwrap.dedent("""\
        a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
        b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
        c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
        methods: [lora]
        tasks: [smoke]
    """))
    files["typed"].write_text("methods: [lora]\ntasks: [smoke]\nseeds: {a: 1}\n")
    files["file"].write_text("not a folder")
    files["empty"].write_text("methods: [[]]\ntasks: [smoke]\n")
    for name, content in (("glue", "sentence\tlabel\na film\t7\n"), ("glue_bytes", None)):
        folder = tmp_path / name / "SST-2"
        folder.mkdir(parents=True)
        if content is None:
            (folder / "train.tsv").write_bytes(b"sentence\tlabel\nun caf\xe9\t1\n")
        else:
            (folder / "train.tsv").write_text(content)
        (folder / "dev.tsv").write_text("sentence\tlabel\na film\t1\n")
    return {k: str(v) for k, v in files.items()} | {"glue": str(tmp_path / "glue"),
                                                    "glue_bytes": str(tmp_path / "glue_bytes")}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_malformed_input_exits_2_with_one_message_before_training(tmp_path, hostile, case):
    argv, message = BAD_INPUTS[case]
    argv = [a.format(**hostile) for a in argv]
    store = tmp_path / "store"
    if "--store" not in argv:
        argv += ["--store", str(store)]
    started = time.perf_counter()
    result = run_suite("run", *argv, "--max-steps", "2", "--no-progress", timeout=120)
    COUNTS["faults injected"] += 1
    assert result.returncode == 2, (case, result.stdout[-500:], result.stderr[-1500:])
    assert message in result.stderr, (case, result.stderr[-1500:])
    assert "Traceback" not in result.stderr
    assert not (store / "cells").exists() or not any((store / "cells").iterdir())
    assert time.perf_counter() - started < 90


def test_duplicate_names_run_each_cell_once(tmp_path):
    store = tmp_path / "store"
    result = run_suite("run", "--methods", "lora,lora", "--seeds", "0,0", "--tasks", "smoke,smoke", *FAST[2:],
                       "--store", str(store))
    assert result.returncode == 0, result.stderr
    assert "1 cells, 0 already done, 1 to run" in result.stderr
    tally(store, cell_ids(store))


def test_a_malformed_kernel_baseline_is_one_message(tmp_path):
    folder = tmp_path / "kernel-baselines"
    folder.mkdir()
    (folder / "main.json").write_text("{not json")
    result = run_suite("bench", "kernels", "--kernels", "quantize_int8_row", "--impls", "reference", "--compare",
                       "main", "--store", str(tmp_path), "--device", "cpu")
    COUNTS["faults injected"] += 1
    assert result.returncode == 2 and "unreadable" in result.stderr and "Traceback" not in result.stderr


def test_the_smoke_run_leaves_no_temporary_folder(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = run_suite("run", "--methods", "lora", *FAST, "--store", str(tmp_path / "s"),
                       env={"TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stderr
    assert [p.name for p in scratch.iterdir() if p.name.startswith("suite")] == []  # torch's own caches may stay

