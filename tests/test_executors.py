"""Cluster executors keep the local executor's semantics: Ray (a local instance) and SLURM
(through submitit's local executor, the same code path as on a cluster).

Same metrics as local; a killed worker is retried; a lost one is recorded once as failed;
an ordinary failure is never retried; a half-done sweep finishes without re-running a
cell; two drivers on one store lose and duplicate nothing; --no-wait and suite status;
bad options stop before any cell; Ctrl-C cancels and leaves the store readable.

This module is also the plugin module of ``test-probe``: workers import it (through
``PYTHONPATH``) to register the method before they unpickle a cell.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Literal

import pytest

from suite.method import Method
from suite.registry import METHODS, register_method

REPO = Path(__file__).resolve().parent.parent
FAST = ["--tasks", "smoke", "--models", "tiny-bert", "--max-steps", "3", "--limit", "32", "--batch-size", "8",
        "--no-progress"]
TIMING = "time|per_s|memory"  # measurements that differ between two runs of one cell

needs_ray = pytest.mark.skipif(find_spec("ray") is None, reason="ray is not installed (pip install 'suite[ray]')")
needs_submitit = pytest.mark.skipif(find_spec("submitit") is None,
                                    reason="submitit is not installed (pip install 'suite[slurm]')")


# -- the probe: a method that logs each attempt and crashes on request -------------------------------------
@dataclass
class ProbeConfig:
    log: str = ""  # one line per attempt: "seed pid"
    crash: Literal["none", "kill-once", "kill-always", "preempt-once", "fail"] = "none"
    sleep: float = 0.0  # seconds to hold the cell (so a test can interrupt it)
    crash_seed: int = -1  # crash only in the cell of this seed (-1: every cell)


if "test-probe" not in METHODS:
    @register_method("test-probe", kind="peft", summary="head only; logs attempts, crashes on request (tests)",
                     source="tests")
    class Probe(Method):
        Config = ProbeConfig
        default_lr = 1e-2

        def apply(self, model, ctx):
            cfg = self.config
            with open(cfg.log, "a", encoding="utf-8") as fh:
                fh.write(f"{ctx.seed} {os.getpid()}\n")
            marker = Path(f"{cfg.log}.{ctx.seed}.crashed")  # the first attempt leaves it
            first = not marker.exists()
            crash = cfg.crash if cfg.crash_seed in (-1, ctx.seed) else "none"
            if crash != "none" and first:
                marker.touch()
            if crash == "kill-always" or (crash == "kill-once" and first):
                os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies mid-cell
            if crash == "preempt-once" and first:
                os.kill(os.getpid(), signal.SIGUSR2)  # SLURM's warning before preemption: submitit requeues
                time.sleep(60)
            if crash == "fail":
                raise RuntimeError("a deterministic failure")
            time.sleep(cfg.sleep)
            for p in model.parameters():
                p.requires_grad_(False)
            for p in ctx.new_parameters():
                p.requires_grad_(True)
            return model


def attempts(log: Path) -> list[int]:
    """The seeds of every attempt logged, in order."""
    return [int(line.split()[0]) for line in log.read_text().splitlines()] if log.exists() else []


def probe(log: Path, crash: str = "none", sleep: float = 0.0, crash_seed: int = -1) -> str:
    return (f"test-probe:log={log},crash={crash}" + (f",sleep={sleep}" if sleep else "")
            + (f",crash_seed={crash_seed}" if crash_seed >= 0 else ""))


def run(*args: str) -> int:
    from suite.app.cli import main

    return main(["run", *args])


def values(store: Path):
    """Stored metrics by (cell, metric), timing and memory left out."""
    import suite.results

    frame = suite.results.load(store)
    frame = frame[~frame["metric"].str.contains(TIMING, na=False)]
    return frame.set_index(["cell_id", "metric"])["value"].sort_index()


@pytest.fixture
def workers_see_tests(monkeypatch):
    """Worker processes (Ray workers, submitit jobs) import this module to register ``test-probe``."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance with two CPUs for the module; the executor joins it instead of starting one."""
    import logging

    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'suite[ray]')")
    patch = pytest.MonkeyPatch()
    patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    patch.setenv("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        patch.undo()


# -- Ray -------------------------------------------------------------------------------------------------------
@needs_ray
def test_ray_runs_two_cells_at_a_time_with_the_local_executors_metrics(ray_instance, tmp_path):
    import suite.results

    sweep = ["--methods", "lora,full", *FAST]
    assert run(*sweep, "--store", str(tmp_path / "local")) == 0
    assert run(*sweep, "--store", str(tmp_path / "ray"), "--executor", "ray", "--max-concurrent", "2",
               "--cpus-per-cell", "1") == 0
    local, remote = values(tmp_path / "local"), values(tmp_path / "ray")
    assert local.index.equals(remote.index) and (local == remote).all()  # same cells, same metrics
    frame = suite.results.load(tmp_path / "ray").drop_duplicates("cell_id")
    (a_start, a_end), (b_start, b_end) = frame[["started_at", "finished_at"]].itertuples(index=False)
    assert a_start < b_end and b_start < a_end  # the two cells ran at the same time


@needs_ray
def test_ray_retries_a_killed_worker_records_a_lost_one_once_and_never_retries_a_failure(
        ray_instance, tmp_path, capsys):
    import suite.results
    from suite.app.cli import main

    logs = {name: tmp_path / f"{name}.log" for name in ("kill-once", "kill-always", "fail")}
    methods = ",".join(probe(log, crash) for crash, log in logs.items())
    store = tmp_path / "store"
    assert run("--methods", methods, *FAST, "--store", str(store), "--executor", "ray", "--retries", "1") == 1
    assert attempts(logs["kill-once"]) == [0, 0]  # killed, retried, then ok
    assert attempts(logs["kill-always"]) == [0, 0]  # killed on every attempt: 1 + 1 retry
    assert attempts(logs["fail"]) == [0]  # an ordinary failure is a result, never retried
    frame = suite.results.load(store)
    status = frame.drop_duplicates("cell_id").set_index("method_args")["status"]
    by_crash = {crash: status[[k for k in status.index if f'"crash": "{crash}"' in k][0]] for crash in logs}
    assert by_crash == {"kill-once": "ok", "kill-always": "failed", "fail": "failed"}
    errors = frame[frame["status"] == "failed"].set_index("cell_id")["error"]
    assert errors.str.contains("worker lost").sum() == 1 and errors.str.contains("deterministic").sum() == 1
    assert frame.groupby("cell_id")["attempt_id"].nunique().eq(1).all()  # one record per cell
    capsys.readouterr()
    assert main(["status", str(store)]) == 1  # the failures, named
    out = capsys.readouterr().out
    assert "1 ok, 2 failed, 0 outstanding" in out and "worker lost" in out


@needs_ray
def test_ctrl_c_cancels_outstanding_cells_and_leaves_the_store_readable(ray_instance, tmp_path, workers_see_tests):
    """A second driver joins the running instance with --address; SIGINT stops it mid-sweep."""
    import suite.results

    address = ray_instance.get_runtime_context().gcs_address
    log, store = tmp_path / "probe.log", tmp_path / "store"
    # Each cell sleeps long enough that a loaded machine still interrupts the second one mid-run.
    args = ["run", "--methods", probe(log, sleep=6), "--seeds", "4", *FAST, "--store", str(store),
            "--executor", "ray", "--address", address, "--max-concurrent", "1"]
    # A shell's background job starts with SIGINT ignored, and a child inherits that: restore
    # Python's own handler so the signal below reaches the driver wherever pytest was started.
    code = ("import signal, sys, tests.test_executors; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"from suite.app.cli import main; sys.exit(main({args!r}))")
    driver = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and driver.poll() is None and len(attempts(log)) < 2:
        time.sleep(0.2)  # until the second cell has started
    assert driver.poll() is None, "the driver ended before it could be interrupted: " + driver.communicate()[1]
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 130, err
    assert "cancelled 1 outstanding cell" in err and "Traceback" not in err
    started = len(attempts(log))
    time.sleep(8)  # a cell that was not cancelled would log or finish meanwhile
    assert len(attempts(log)) == started == 2  # nothing was submitted after the interrupt
    frame = suite.results.load(store)  # readable, with the one cell that finished
    assert frame["cell_id"].nunique() == 1 and (frame["status"] == "ok").all()


# -- resume, whichever executor -----------------------------------------------------------------------------
@pytest.mark.parametrize("executor, crash", [
    pytest.param(["--executor", "ray"], "none", id="ray", marks=needs_ray),
    # the job of the remaining cell is killed once: the waiting driver submits it again
    pytest.param(["--executor", "slurm", "--slurm-cluster", "local", "--retries", "1"], "kill-once",
                 id="submitit-local", marks=needs_submitit),
])
def test_a_sweep_half_done_locally_finishes_elsewhere_without_rerunning(executor, crash, tmp_path,
                                                                        workers_see_tests, capsys, request):
    import suite.results

    if executor[1] == "ray":
        request.getfixturevalue("ray_instance")
    log, store = tmp_path / "probe.log", tmp_path / "store"
    method = probe(log, crash, crash_seed=1)
    assert run("--methods", method, "--seeds", "1", *FAST, "--store", str(store)) == 0  # seed 0, locally
    first = suite.results.load(store).set_index("cell_id")["finished_at"].drop_duplicates()
    capsys.readouterr()
    assert run("--methods", method, "--seeds", "2", *FAST, "--store", str(store), *executor) == 0
    assert "2 cells, 1 already done, 1 to run" in capsys.readouterr().err
    assert attempts(log) == ([0, 1] if crash == "none" else [0, 1, 1])  # seed 0 never ran again
    frame = suite.results.load(store)
    assert frame["cell_id"].nunique() == 2 and (frame["status"] == "ok").all()
    assert frame.groupby("cell_id")["attempt_id"].nunique().eq(1).all()  # written once, by one writer
    finished = frame.drop_duplicates("cell_id").set_index("cell_id")["finished_at"]
    assert finished[first.index[0]] == first.iloc[0]  # the finished cell was not re-run


# -- SLURM through submitit's local executor ----------------------------------------------------------------
@needs_submitit
def test_slurm_no_wait_then_status_and_requeue_on_preemption(tmp_path, workers_see_tests, capsys):
    """Jobs write their own records: the driver returns at once and ``suite status`` follows them;
    a preempted job is requeued by submitit, with no driver alive to do it."""
    import suite.results
    from suite.app.cli import main
    from suite.results.store import ResultStore

    plain, preempted, store = tmp_path / "plain.log", tmp_path / "preempted.log", tmp_path / "store"
    began = time.time()
    assert run("--methods", f"{probe(plain)},{probe(preempted, 'preempt-once')}", *FAST, "--store", str(store),
               "--executor", "slurm", "--slurm-cluster", "local", "--slurm-time", "10", "--no-wait") == 0
    assert time.time() - began < 30  # it returned without waiting for the cells
    assert "suite status" in capsys.readouterr().err
    assert main(["status", str(store)]) == 0
    assert "2 cell(s): 0 ok, 0 failed, 2 outstanding" in capsys.readouterr().out
    deadline = time.time() + 150
    while time.time() < deadline and len(ResultStore(store).ok_cell_ids()) < 2:
        time.sleep(0.5)
    assert main(["status", str(store)]) == 0
    assert "2 cell(s): 2 ok, 0 failed, 0 outstanding" in capsys.readouterr().out
    assert attempts(plain) == [0] and attempts(preempted) == [0, 0]  # requeued once, then ok
    frame = suite.results.load(store)
    assert frame["cell_id"].nunique() == 2 and frame.groupby("cell_id")["attempt_id"].nunique().eq(1).all()


FAKE_SBATCH = """#!/bin/sh
cp "$1" "$SBATCH_SEEN/"
echo "Submitted batch job 4242"
"""


@needs_submitit
def test_slurm_submits_one_job_array_with_the_options_given(tmp_path, monkeypatch, capsys):
    """The real SLURM path up to sbatch, with a stand-in sbatch that keeps the script it is given."""
    from suite.app.cli import main

    bin_dir, seen, store = tmp_path / "bin", tmp_path / "seen", tmp_path / "store"
    bin_dir.mkdir(), seen.mkdir()
    for tool, text in (("sbatch", FAKE_SBATCH), ("srun", "#!/bin/sh\nexit 0\n")):
        (bin_dir / tool).write_text(text)
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_SEEN", str(seen))
    assert run("--methods", "lora", "--seeds", "3", *FAST, "--store", str(store), "--executor", "slurm",
               "--no-wait", "--slurm-partition", "gpu", "--slurm-time", "1:30:00", "--slurm-gpus-per-node", "1",
               "--max-concurrent", "2", "--slurm-mem", "16G", "--slurm-setup", "module load cuda") == 0
    (script,) = [p.read_text() for p in seen.iterdir()]  # one sbatch call: one array for the sweep
    for line in ("--array=0-2%2", "--partition=gpu", "--time=90", "--gpus-per-node=1", "--mem=16GB",
                 "--signal=USR2@", "--requeue", "module load cuda"):
        assert line in script, line
    assert "job array 4242" in capsys.readouterr().err
    assert main(["status", str(store)]) == 0  # no sacct here: the job ids, without states
    out = capsys.readouterr().out
    assert "3 cell(s): 0 ok, 0 failed, 3 outstanding" in out and "[job 4242_2]" in out


# -- the store under concurrent writers -----------------------------------------------------------------------
WRITER = """
import sys
from datetime import datetime, timezone
from suite.results.store import ResultStore
now = lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
store, who = ResultStore(sys.argv[1]), sys.argv[2]
for i in range(40):
    cell = f"shared{i % 10}" if i % 2 else f"{who}{i}"
    store.write_cell([{"cell_id": cell, "status": "ok", "finished_at": now(), "metric": m, "value": float(i)}
                      for m in ("a", "b", "c")])
    if i % 7 == 0:
        store.compact()
store.compact()
"""

READER = """
import sys, time
from suite.results.store import ResultStore
store, seen = ResultStore(sys.argv[1]), set()
end = time.time() + float(sys.argv[2])
while time.time() < end:
    now_ok = store.ok_cell_ids()
    if not seen <= now_ok:
        print("lost", sorted(seen - now_ok)); sys.exit(1)
    seen = now_ok
    rows = store.load(warn=False)
    if len(rows) != 3 * rows["cell_id"].nunique():
        print("duplicated"); sys.exit(1)
print(len(seen))
"""


def test_two_writers_compacting_one_store_never_lose_or_duplicate_a_cell(tmp_path):
    store = tmp_path / "store"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(store), who], env=env) for who in "AB"]
    reader = subprocess.run([sys.executable, "-c", READER, str(store), "5"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    assert reader.returncode == 0, reader.stdout + reader.stderr  # never saw a cell vanish or doubled
    from suite.results.store import ResultStore

    frame = ResultStore(store).load()
    expected = {f"shared{i % 10}" for i in range(1, 40, 2)} | {f"{w}{i}" for w in "AB" for i in range(0, 40, 2)}
    assert set(frame["cell_id"]) == expected
    assert len(frame) == 3 * len(expected)  # one record per cell, none doubled
    assert frame.groupby("cell_id")["attempt_id"].nunique().eq(1).all()


def test_two_drivers_running_one_sweep_on_one_store(tmp_path):
    store = tmp_path / "store"
    args = [sys.executable, "-m", "suite.app.cli", "run", "--methods", "lora", "--seeds", "2", *FAST,
            "--store", str(store)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    drivers = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for _ in range(2)]
    for driver in drivers:
        _, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err
    import suite.results

    frame = suite.results.load(store)
    assert frame["cell_id"].nunique() == 2 and (frame["status"] == "ok").all()
    assert frame.groupby("cell_id")["attempt_id"].nunique().eq(1).all()
    assert not frame.duplicated(["cell_id", "metric"]).any()


def test_a_store_on_another_filesystem(tmp_path):
    """Through pyarrow's filesystems: file:// URIs, and fsspec's memory:// (one process) for tests."""
    from suite.results.store import ResultStore

    assert run("--methods", "lora", *FAST, "--store", f"file://{tmp_path / 'store'}") == 0
    local = values(tmp_path / "store")
    assert run("--methods", "lora", *FAST, "--store", "memory://suite-tests/store") == 0
    memory = ResultStore("memory://suite-tests/store")
    frame = memory.load()
    assert frame["status"].eq("ok").all() and frame["cell_id"].nunique() == 1
    assert len(memory.load_predictions()) > 0 and len(memory.sweeps()) == 1
    assert run("--methods", "lora", *FAST, "--store", "memory://suite-tests/store") == 0  # resumed: nothing to do
    remote = frame[~frame["metric"].str.contains(TIMING, na=False)].set_index(["cell_id", "metric"])["value"]
    assert remote.sort_index().equals(local)


# -- options ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, needles", [
    (["--retries", "1"], ["--retries is an option of the ray, slurm executors, not of 'local'"]),
    (["--executor", "ray", "--no-wait"], ["--no-wait is an option of the slurm executor", "--executor slurm"]),
    (["--executor", "ray", "--gpus-per-cell", "-1"], ["--gpus-per-cell must be >= 0"]),
    (["--executor", "ray", "--gpus-per-cell", "1.5"], ["whole number"]),
    (["--executor", "ray", "--gpus-per-cell", "lots"], ["--gpus-per-cell", "expected a number"]),
    (["--executor", "ray", "--address", "headnode"], ["--address must be HOST:PORT"]),
    (["--executor", "ray", "--max-concurrent", "0"], ["--max-concurrent must be at least 1"]),
    (["--executor", "slurm", "--slurm-cluster", "local", "--slurm-time", "soon"], ["--slurm-time", "SLURM's formats"]),
    (["--executor", "slurm", "--slurm-cluster", "moon"], ["'moon' is not one of the valid choices"]),
    (["--executor", "slurm", "--slurm-cluster", "local", "--slurm-mem", "lots"], ["--slurm-mem"]),
    (["--executor", "slurm", "--slurm-cluster", "local", "--store", "memory://x/y"],
     ["lives in this process only"]),
])
def test_bad_executor_options_stop_before_any_cell_with_one_message(flags, needles, tmp_path, capsys):
    engine = {"ray": "ray", "slurm": "submitit"}.get(flags[1] if flags[0] == "--executor" else "", None)
    if engine and find_spec(engine) is None:
        pytest.skip(f"{engine} is not installed")
    store = tmp_path / "store"
    args = ["--methods", "lora", *FAST] + (["--store", str(store)] if "--store" not in flags else [])
    assert run(*args, *flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one message
    for needle in needles:
        assert needle in err
    assert not store.exists()  # nothing ran, nothing was written


@needs_submitit
@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="this machine has SLURM")
def test_slurm_without_slurm_says_what_to_do(tmp_path, capsys):
    assert run("--methods", "lora", *FAST, "--store", str(tmp_path / "s"), "--executor", "slurm") == 2
    assert "sbatch and srun not on PATH" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_executor_flags_are_generated_from_the_options_and_listing_stays_light():
    from suite.app.executor import executor_flags

    flags = {flag.flag: flag.owners for flag in executor_flags()}
    assert flags["--retries"] == ("ray", "slurm") and flags["--address"] == ("ray",)
    assert flags["--no-wait"] == ("slurm",) and "--slurm-partition" in flags
    code = ("import sys; from suite.app.cli import main; main(['list', 'executors'])\n"
            "try:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('ray', 'submitit', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "ray" in out.stdout and "slurm" in out.stdout
