"""Reliability of the store and the commands around it, through the real ``suite`` command:
quarantine never overwrites a file, two sweeps started in one second keep both records,
``suite status`` survives foreign and hostile stores, a SLURM rerun does not submit a cell
whose job still runs, and Ctrl-C on a SLURM sweep ends in one message. Each fault adds to the
counts of ``tests.test_faults`` (printed at the end of the test run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import pytest

from suite.app import runner
from suite.app.cli import main
from suite.results.store import ResultStore
from tests.conftest import REPO, run_suite
from tests.test_executors import FAST as JOB_FAST
from tests.test_executors import (
    attempts,
    probe,
    workers_see_tests,  # noqa: F401 - a fixture the SLURM tests use
)
from tests.test_faults import COUNTS, FAST, tally

needs_submitit = pytest.mark.skipif(find_spec("submitit") is None,
                                    reason="submitit is not installed (pip install 'suite[slurm]')")
HOSTILE = "\x1b[2J\x1b]0;owned\x07\x07\x1b[31m"  # clear the screen, retitle the window, ring, recolour


def wait_for(condition, seconds: float, step: float = 0.3) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


# -- 1. quarantine keeps every file ------------------------------------------------------------------------
def test_quarantine_keeps_every_unreadable_file_of_one_name_from_every_folder(tmp_path, capsys):
    """A cell's predictions and curve share a name, and a name comes back after each quarantine:
    every file moved aside keeps its bytes, under its own folder, and the warning says where."""
    store = tmp_path / "store"
    assert main(["run", "--methods", "lora", *FAST, "--store", str(store)]) == 0
    (cell,) = [p.name for p in (store / "predictions").iterdir()]
    expected = {p.name.split(".")[0] for p in (store / "cells").iterdir()}
    written: list[bytes] = []
    for round_ in range(3):
        for folder in ("cells", "predictions", "curves"):
            data = f"not parquet: {folder}, round {round_}".encode()
            (store / folder / cell).write_bytes(data)
            written.append(data)
        COUNTS["faults injected"] += 3
        capsys.readouterr()
        assert main(["compare", str(store)]) == 0  # reads the cells and their predictions
        ResultStore(store).load_curves()  # curves are read by the site for loss tasks only
        err = capsys.readouterr().err
        name = cell if round_ == 0 else cell.replace(".parquet", f"~{round_ + 1}.parquet")
        for folder in ("cells", "predictions", "curves"):
            assert f"moved to {store / 'quarantine' / folder / name}" in err, err
    kept = sorted(p.read_bytes() for p in (store / "quarantine").rglob("*") if p.is_file())
    COUNTS["records lost"] += len(set(written) - set(kept))
    assert kept == sorted(written)  # every byte of every file, none overwritten
    assert {p.parent.name for p in (store / "quarantine").rglob("*.parquet")} == {"cells", "predictions", "curves"}
    tally(store, expected)  # the readable record is untouched


# -- 2. two sweeps in one second ----------------------------------------------------------------------------
def test_two_sweeps_started_in_the_same_second_keep_both_records(tmp_path, capsys, monkeypatch):
    store = tmp_path / "store"
    monkeypatch.setattr(runner, "timestamp_run_id", lambda: "20250101T120000")  # one second for both
    assert main(["run", "--methods", "lora", "--seeds", "2", *FAST, "--store", str(store)]) == 0
    assert main(["run", "--methods", "full", "--seeds", "2", *FAST, "--store", str(store)]) == 0
    COUNTS["faults injected"] += 1
    records = sorted(p.name for p in (store / "sweeps").iterdir())
    COUNTS["records lost"] += 2 - len(records)
    assert len(records) == 2 and all(r.startswith("20250101T120000-") for r in records), records
    capsys.readouterr()
    assert main(["status", str(store), "--all"]) == 0
    out = capsys.readouterr().out
    assert out.count("\nsweep 20250101T120000-") == 2 and out.count("2 cell(s): 2 ok, 0 failed, 0 outstanding") == 2
    assert main(["status", str(store), "--run", "20250101T120000"]) == 0  # the run id names both
    assert capsys.readouterr().out.count("\nsweep ") == 2
    assert main(["status", str(store), "--run", records[0].removesuffix(".json")]) == 0  # a record, one
    assert capsys.readouterr().out.count("\nsweep ") == 1


# -- 3. suite status on foreign and hostile stores --------------------------------------------------------------
def test_status_survives_foreign_sweep_files_and_shows_no_control_sequences(tmp_path):
    store = tmp_path / "store"
    sweeps = store / "sweeps"
    sweeps.mkdir(parents=True)
    (sweeps / "a-list.json").write_text("[1, 2, 3]")
    (sweeps / "cells-a-number.json").write_text(json.dumps({"cells": 5}))
    (sweeps / "cell-without-id.json").write_text(json.dumps({"run_id": "x", "cells": [{"label": "lora"}]}))
    (sweeps / f"named{HOSTILE}.json").write_text("{not json")
    (sweeps / "hostile.json").write_text(json.dumps({
        "run_id": f"run{HOSTILE}", "started_at": "2025-01-01T00:00:00Z", "executor": f"local{HOSTILE}",
        "engine": ["not", "a", "mapping"], "waits": True,
        "cells": [{"cell_id": "c1", "label": f"lora{HOSTILE}", "task": "smoke", "model": "m", "seed": 0},
                  {"cell_id": "c2", "label": "full", "task": f"smoke{HOSTILE}", "model": "m", "seed": 0}]}))
    ResultStore(store).write_cell([{"cell_id": "c1", "status": "failed", "finished_at": "2025-01-01T00:00:01Z",
                                    "error": f"boom{HOSTILE}\nsecond line", "metric": None, "value": None}])
    COUNTS["faults injected"] += 5
    shown = run_suite("status", str(store), "--all")
    assert shown.returncode == 1, shown.stderr  # the failed cell, named
    assert "Traceback" not in shown.stderr
    for stream in (shown.stdout, shown.stderr):
        assert "\x1b" not in stream and "\x07" not in stream, stream
    assert "2 cell(s): 0 ok, 1 failed, 1 outstanding" in shown.stdout
    assert "failed       lora" in shown.stdout and ": boom" in shown.stdout and "second line" not in shown.stdout
    for name in ("a-list.json", "cells-a-number.json", "cell-without-id.json", "named\\x1b[2J"):
        assert f"skipping sweep file {store / 'sweeps' / name}" in shown.stderr, name


@pytest.mark.parametrize("where", ["a file", "the root folder"])
def test_status_on_a_path_that_is_no_store_says_so(tmp_path, where):
    path = tmp_path / "results.txt" if where == "a file" else Path("/")
    if where == "a file":
        path.write_text("not a store")
    COUNTS["faults injected"] += 1
    shown = run_suite("status", str(path))
    assert shown.returncode == 2, shown.stdout
    assert shown.stderr.startswith("error: ") and shown.stderr.count("\n") == 1, shown.stderr
    assert "not a result store" in shown.stderr and "suite run --store" in shown.stderr


# -- 4. a SLURM rerun does not submit a cell whose job still runs ----------------------------------------------
def _local_jobs(store: Path) -> set[str]:
    return {str(job) for m in ResultStore(store).sweeps() for job in (m.get("engine") or {}).get("jobs", {}).values()}


def _job_processes(store: Path) -> list[int]:
    """Live processes (job controllers and the jobs they run) whose command line names the store."""
    alive = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if str(store).encode() in (proc / "cmdline").read_bytes() \
                    and (proc / "stat").read_text().rpartition(")")[2].split()[0] != "Z":
                alive.append(int(proc.name))
        except (OSError, IndexError):
            continue
    return alive


def _cancel_local_jobs(store: Path) -> None:
    from suite.app.executors.slurm import local_job_running

    for job in _local_jobs(store):
        if local_job_running(job):
            os.kill(int(job), signal.SIGINT)  # the controller stops its job (submitit's cancel)


@needs_submitit
@pytest.mark.usefixtures("workers_see_tests")
def test_a_no_wait_rerun_skips_cells_whose_job_still_runs_and_resubmits_lost_ones(tmp_path, capsys):
    from suite.app.executors.slurm import local_job_running

    log, store = tmp_path / "probe.log", tmp_path / "store"
    # seed 0 holds its job for minutes; seed 1's job is killed every time (a job that vanished)
    args = ["run", "--methods", probe(log, "kill-always", sleep=300, crash_seed=1), "--seeds", "2", *JOB_FAST,
            "--store", str(store), "--executor", "slurm", "--slurm-cluster", "local", "--slurm-time", "10",
            "--no-wait"]
    try:
        assert main(args) == 0
        assert "submitted 2 cell(s)" in capsys.readouterr().err
        (manifest,) = ResultStore(store).sweeps()
        cell = {c["seed"]: c["cell_id"] for c in manifest["cells"]}
        first = manifest["engine"]["jobs"]
        assert wait_for(lambda: 1 in attempts(log) and not local_job_running(first[cell[1]]), 240)
        assert local_job_running(first[cell[0]])
        COUNTS["faults injected"] += 1
        assert main(args) == 0
        err = capsys.readouterr().err
        assert f"1 cell(s) not submitted again: their job from an earlier run is still queued or running " \
               f"(job {first[cell[0]]})" in err, err
        assert "submitted 1 cell(s)" in err
        second = ResultStore(store).sweeps()[-1]["engine"]["jobs"]
        assert second[cell[0]] == first[cell[0]] and second[cell[1]] != first[cell[1]]
        assert wait_for(lambda: attempts(log).count(1) == 2 and not local_job_running(second[cell[1]]), 240)
        COUNTS["records duplicated"] += attempts(log).count(0) - 1
        assert attempts(log).count(0) == 1  # seed 0 was submitted once: 2 jobs for seed 1, 1 for seed 0
        assert main(["status", str(store)]) == 0
        assert f"[job {first[cell[0]]}: running]" in capsys.readouterr().out
    finally:
        _cancel_local_jobs(store)


# -- 5. Ctrl-C on a SLURM sweep ------------------------------------------------------------------------------------
@needs_submitit
@pytest.mark.parametrize("who", ["driver", "terminal"])
def test_ctrl_c_on_a_slurm_sweep_ends_in_one_message_without_a_traceback(tmp_path, who):
    """``driver``: the signal reaches the driver only, which cancels its jobs; ``terminal``: a Ctrl-C
    typed in a terminal reaches every process of the foreground group, job controllers included."""
    log, store = tmp_path / "probe.log", tmp_path / "store"
    args = ["run", "--methods", probe(log, sleep=60), "--seeds", "2", *JOB_FAST, "--store", str(store),
            "--executor", "slurm", "--slurm-cluster", "local", "--slurm-time", "10"]
    # A shell's background job starts with SIGINT ignored, and a child inherits that: restore
    # Python's own handler so the signal reaches the driver wherever pytest was started.
    code = ("import signal, sys, tests.test_executors; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"from suite.app.cli import main; sys.exit(main({args!r}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, start_new_session=True)
    try:
        assert wait_for(lambda: driver.poll() is not None or len(attempts(log)) == 2, 240)
        assert driver.poll() is None, "the driver ended before it could be interrupted: " + driver.communicate()[1]
        if who == "terminal":
            os.killpg(driver.pid, signal.SIGINT)
        else:
            driver.send_signal(signal.SIGINT)
        _, err = driver.communicate(timeout=120)  # until every process holding its stderr has ended
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    COUNTS["faults injected"] += 1
    assert driver.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "slurm: cancelled 2 outstanding job(s)" in err and "the same 'suite run' command runs the rest" in err
    assert err.strip().splitlines()[-1] == "interrupted: finished cells are saved in the store"
    if Path("/proc").is_dir():  # every job was cancelled: no process of this sweep is left
        assert wait_for(lambda: not _job_processes(store), 30), _job_processes(store)
    assert ResultStore(store).ok_cell_ids() == set() and len(attempts(log)) == 2  # nothing ran on


def test_a_job_lost_for_good_is_recorded_with_the_failure_its_log_names():
    """submitit's UncompletedJobError (laid out as submitit/core/core.py's Job.result builds it) ends with
    the job's last stderr lines, often submitit's own bookkeeping: the reason is the line naming a failure."""
    from suite.app.executors.slurm import lost_reason

    COUNTS["faults injected"] += 1
    message = "\n".join([
        "Job 4242 (task: 0) with path /jobs/4242_0_result.pkl",
        "has not produced any output (state: FINISHED)",
        "Error stream produced:", "-" * 40,
        "submitit INFO (2026-12-04 10:00:00,000) - Starting with JobEnvironment(job_id=4242)",
        "srun: error: node12: task 0: Killed",
        "submitit INFO (2026-12-04 10:00:09,000) - Job completed successfully",
    ])
    assert lost_reason(RuntimeError(message)) == "state FINISHED; srun: error: node12: task 0: Killed"
    silent = "Job 7 (task: 0) with path p\nhas not produced any output (state: UNKNOWN)\nNo output/error stream produced !"
    assert lost_reason(RuntimeError(silent)) == "state UNKNOWN; its log names no error"
