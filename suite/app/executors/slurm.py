"""The SLURM executor: one job array per sweep through submitit, each job one cell.

``suite run ... --executor slurm`` submits the cells still to run as one job array
(``sbatch --array=0-N%K``, K = ``--max-concurrent``) with the partition, time, GPUs, CPUs
and memory given (``--slurm-partition``, ``--slurm-time``, ``--slurm-gpus-per-node``,
``--cpus-per-cell``, ``--slurm-mem``, ...). submitit pickles each cell into
``--slurm-folder`` (a folder every node sees) and runs it with this Python on a node. A
job that SLURM preempts or times out is requeued by submitit (the cell starts again);
timeouts count against ``--retries``. A job that dies without a result (node failure,
killed) is submitted again, up to ``--retries`` times, then recorded as failed with the
reason. ``--slurm-cluster local`` runs the same jobs as processes on this machine through
submitit's local executor: the same code path, for tests and dry runs.

Who writes a SLURM cell's record, and why it is not the driver: each job writes its own
cell's records into the store (which therefore must be a path every node sees, or an
object store), the moment the cell ends. So the driver need not stay alive for days:
``--no-wait`` submits and returns, and ``suite status STORE`` looks later. This is the one
place where the rule "only the driver writes the store" bends, and it keeps what the rule
protects: every cell attempt is its own file with one writer (the job; names carry a
fresh attempt id, see ``suite.results.store``), so no two writers touch one file; and a job
hands back only a summary (status, error, primary metric, costs) with no rows, so the
driver, which writes every result that has rows, never writes that record a second time.
The driver still writes the failed record of a job lost for good, since no job can.

Running the same command again (after ``--no-wait``, or after a driver that died) submits only
the cells whose recorded job is no longer queued or running: a job still in flight writes its
cell's record itself, so submitting it again would run the cell twice.

submitit is imported only when a sweep runs, so ``suite list`` and ``--help`` never load it.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from suite.app.executor import (
    CellPayload,
    Executor,
    lost_cell,
    pack_cell,
    remote_settings,
    run_packed,
)
from suite.config import option
from suite.errors import UserError
from suite.registry import register_executor

if TYPE_CHECKING:  # pragma: no cover
    from suite.app.runner import CellResult, RunSettings
    from suite.app.sweep import Cell

# How often the driver looks at its jobs (submitit rate-limits its sacct calls itself).
POLL_S = {"slurm": 10.0, "local": 0.5}
HEARTBEAT_S = 60.0
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEM = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)B?$", re.IGNORECASE)
# SLURM job states (sacct) of a job that is queued, running or about to run again; any other
# state (COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, ...) or none at all means it is gone.
IN_FLIGHT = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
                       "COMPLETING", "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "PREEMPTED"})


def slurm_minutes(text: str) -> int:
    """SLURM's time formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in whole minutes."""
    match = _TIME.match(text.strip())
    if not match:
        raise ValueError(f"--slurm-time takes SLURM's formats (90, 4:00:00, 1-12:00:00), got '{text}'")
    days, a, b, c = match.groups()
    a, b, c = int(a), int(b) if b else None, int(c) if c else None
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = a * 3600 + b * 60 + c
    elif b is not None:  # MM:SS
        seconds = a * 60 + b
    else:  # MM
        seconds = a * 60
    if seconds <= 0:
        raise ValueError("--slurm-time must be positive")
    return math.ceil(seconds / 60)


def slurm_gigabytes(text: str) -> float:
    match = _MEM.match(text.strip())
    if not match:
        raise ValueError(f"--slurm-mem takes a size such as 32G or 64000M, got '{text}'")
    value, unit = float(match.group(1)), match.group(2).upper() or "M"  # SLURM's default unit is MB
    return value * {"K": 2**-20, "M": 2**-10, "G": 1, "T": 2**10}[unit]


@dataclass(frozen=True)
class SlurmOptions:
    slurm_partition: str | None = option(None, "SLURM partition of the jobs (default: the cluster's)")
    slurm_time: str = option("4:00:00", "time limit of each cell's job (SLURM formats: 90, 4:00:00, "
                                        "1-12:00:00); a job that reaches it is requeued")
    slurm_gpus_per_node: int = option(0, "GPUs of each cell's job (one cell per node)")
    cpus_per_cell: float = option(1.0, "CPUs each cell asks for")
    slurm_mem: str | None = option(None, "memory of each cell's job, e.g. 32G (default: the partition's)")
    slurm_account: str | None = option(None, "SLURM account to charge")
    slurm_qos: str | None = option(None, "SLURM quality of service")
    slurm_constraint: str | None = option(None, "SLURM node constraint (features), e.g. a100")
    slurm_setup: str | None = option(None, "shell commands a job runs before its cell "
                                           "(e.g. 'module load cuda/12.4')")
    slurm_folder: str | None = option(None, "folder every node sees, for job scripts, pickles and logs "
                                            "(default: slurm-logs/ in the store, or ./suite-slurm)")
    slurm_cluster: Literal["slurm", "local"] = option(
        "slurm", "slurm: submit with sbatch; local: run the jobs as processes on this machine "
                 "(submitit's local executor: tests, dry runs)")
    max_concurrent: int | None = option(None, "at most this many cells at once (default: as many as "
                                              "the resources allow)")
    retries: int = option(2, "re-run a cell whose worker was lost (process killed, node gone, "
                             "preempted) up to N times, then record it as failed")
    no_wait: bool = option(False, "submit and return; the jobs write their records, and "
                                  "'suite status STORE' shows how far they got")

    def __post_init__(self) -> None:
        slurm_minutes(self.slurm_time)
        if self.slurm_mem is not None:
            slurm_gigabytes(self.slurm_mem)
        if self.slurm_gpus_per_node < 0:
            raise ValueError("--slurm-gpus-per-node must be >= 0")
        if self.cpus_per_cell <= 0:
            raise ValueError("--cpus-per-cell must be positive")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError("--max-concurrent must be at least 1")
        if self.retries < 0:
            raise ValueError("--retries must be >= 0")

    @property
    def minutes(self) -> int:
        return slurm_minutes(self.slurm_time)


def local_job_running(job_id: str) -> bool:
    """Whether a local job (its controller's process id) still runs on this machine.

    An ended process that nobody reaped yet (a zombie) has ended, and a process id reused by
    another program is not the job: on Linux both are read from /proc.
    """
    try:
        pid = int(job_id)
    except (TypeError, ValueError):
        return False
    if pid <= 0:  # 0 and negative ids name process groups, not a job
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive, but no job of ours
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            if fh.read().rpartition(")")[2].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"submitit" in fh.read()
    except (OSError, IndexError):  # no /proc (macOS): the signal answered, so it runs
        return True


def job_states(jobs: Sequence[tuple[dict[str, Any], str]]) -> list[str]:
    """What the cluster says now of jobs a sweep record names, as (its engine, job id) pairs.

    A SLURM state (PENDING, RUNNING, FAILED, ...; UNKNOWN when the cluster no longer knows the
    job), RUNNING or ENDED for a local job, and "" where nobody here can tell: no sacct on this
    machine, a local job of another machine, no submitit.
    """
    states = [""] * len(jobs)
    asked: list[tuple[int, Any]] = []
    for n, (engine, job_id) in enumerate(jobs):
        if engine.get("cluster") == "local":
            if engine.get("host", socket.gethostname()) == socket.gethostname():
                states[n] = "RUNNING" if local_job_running(job_id) else "ENDED"
        elif engine.get("cluster") == "slurm" and shutil.which("sacct") is not None:
            try:
                import submitit

                folder = engine.get("folder") if isinstance(engine.get("folder"), str) else ""
                asked.append((n, submitit.SlurmJob(folder=folder or ".", job_id=str(job_id))))
            except Exception:  # noqa: BLE001 - no submitit, or a job id it cannot read: unknown here
                pass
    for n, handle in asked:  # every job registered first: one sacct call answers them all
        try:
            states[n] = str(handle.state).split()[0].upper()
        except Exception:  # noqa: BLE001 - sacct failed: the state is unknown, not an error
            pass
    return states


@contextlib.contextmanager
def _controller_stderr(folder: str) -> Iterator[None]:
    """submitit's local executor starts each job's controller with this process's stderr, and a
    controller prints a KeyboardInterrupt traceback there when its job is cancelled (Ctrl-C).
    While jobs are submitted, stderr is a log file in the jobs' folder, which they inherit."""
    try:
        os.makedirs(folder, exist_ok=True)
        sys.stderr.flush()
        saved = os.dup(2)
    except OSError:  # no stderr to keep clean, or no folder (the submission says why)
        yield
        return
    try:
        with open(os.path.join(folder, "controllers.log"), "ab") as log:
            os.dup2(log.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _import_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise UserError("the slurm executor needs submitit: pip install 'suite[slurm]' "
                        "(or pip install submitit)") from None
    return submitit


@dataclass(frozen=True)
class JobOutcome:
    """What a job hands back to the driver: how its cell ended, without the rows it wrote."""

    cell_id: str
    status: str
    error: str = ""
    primary: tuple[str, float] | None = None
    costs: dict[str, float] = field(default_factory=dict)
    user_error: bool = False


class CellJob:
    """A job's callable: runs one cell and writes its record into the store (see the module doc).

    submitit requeues a preempted or timed-out job whose callable has ``checkpoint``; the
    cell then starts again (a cell keeps no checkpoint), and a requeued job whose cell's
    record this sweep already wrote returns it without running the cell again.
    """

    def __init__(self, store: str, settings: RunSettings):
        self.store = store
        self.settings = settings

    def __call__(self, payload: CellPayload) -> JobOutcome:
        from suite.app.driver import store_result
        from suite.results.store import ResultStore

        store = ResultStore(self.store)
        earlier = stored_outcome(store, payload.cell_id, self.settings.run_id)
        if earlier is not None:
            return earlier
        try:
            result = run_packed(payload, self.settings, "a SLURM job")
        except UserError as exc:  # the sweep is wrong, not the cell: the driver stops with this message
            return JobOutcome(payload.cell_id, "failed", str(exc), user_error=True)
        store_result(store, result)
        return JobOutcome(result.cell_id, result.status, result.error, result.primary, dict(result.costs))

    def checkpoint(self, payload: CellPayload) -> Any:
        submitit = _import_submitit()
        return submitit.helpers.DelayedSubmission(self, payload)


def stored_outcome(store: Any, cell_id: str, run_id: str) -> JobOutcome | None:
    """The outcome of ``cell_id`` if this sweep (``run_id``) already wrote its record, else None."""
    from suite.results.schema import STATUS_OK

    frame = store.cell_records(cell_id)
    if frame.empty or "run_id" not in frame:
        return None
    mine = frame[frame["run_id"] == run_id]
    if mine.empty:
        return None
    status = str(mine["status"].iloc[0])
    primary = None
    if status == STATUS_OK and "is_primary" in mine:
        flagged = mine[mine["is_primary"].map(lambda v: v is not None and v == v and bool(v))]
        if len(flagged):
            primary = (str(flagged["metric"].iloc[0]), float(flagged["value"].iloc[0]))
    error = str(mine["error"].iloc[0] or "").splitlines()[0] if status != STATUS_OK else ""
    return JobOutcome(cell_id, status, error, primary)


def _as_result(outcome: JobOutcome) -> CellResult:
    """The driver's view of a job's outcome: no rows, since the job wrote them (see the module doc)."""
    from suite.app.runner import CellResult

    return CellResult(outcome.cell_id, outcome.status, [], error=outcome.error, primary=outcome.primary,
                      costs=dict(outcome.costs))


@register_executor("slurm", kind="executor", summary="a SLURM job array through submitit, one cell per job; "
                   "jobs write their records (--no-wait, then suite status)")
class SlurmExecutor(Executor):
    Options = SlurmOptions

    def __init__(self, options: Any = None, store: str | None = None):
        super().__init__(options, store)
        self.jobs: dict[str, str] = {}  # cell id -> job id (the latest submission)
        self.folder: str = ""

    @property
    def waits(self) -> bool:
        return not self.options.no_wait

    def check(self) -> None:
        from suite.results.store import ResultStore

        _import_submitit()
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if self.options.slurm_cluster == "slurm" and missing:
            raise UserError(f"the slurm executor found no SLURM here ({' and '.join(missing)} not on PATH): "
                            f"run on the cluster's login node, or add --slurm-cluster local to run the jobs "
                            f"as processes on this machine")
        if self.store is not None and not ResultStore(self.store).shared_with_other_processes():
            raise UserError(f"the slurm executor's jobs write the store themselves, so it must be a path "
                            f"every node sees or an object store; '{self.store}' lives in this process only")

    def describe(self) -> dict[str, Any]:
        described = {"cluster": self.options.slurm_cluster, "folder": self.folder, "jobs": dict(self.jobs)}
        if self.options.slurm_cluster == "local":  # a local job id is a process id of this machine
            described["host"] = socket.gethostname()
        return described

    def _in_flight(self, cells: Sequence[Cell]) -> dict[str, str]:
        """Cells of ``cells`` whose latest recorded job (an earlier run's, in the store's sweep
        records) is still queued or running, with that job's id: that job writes the record."""
        from suite.results.store import ResultStore

        wanted = {cell.cell_id for cell in cells}
        latest: dict[str, tuple[dict[str, Any], str]] = {}
        for manifest in ResultStore(self.store).sweeps():  # oldest first: a later submission wins
            engine = manifest.get("engine")
            if manifest.get("executor") != self.name or not isinstance(engine, dict) \
                    or not isinstance(engine.get("jobs"), dict):
                continue
            for cell_id, job_id in engine["jobs"].items():
                if cell_id in wanted and isinstance(job_id, (str, int)) and str(job_id):
                    latest[cell_id] = (engine, str(job_id))
        ids = list(latest)
        states = job_states([latest[cell_id] for cell_id in ids])
        return {cell_id: latest[cell_id][1] for cell_id, state in zip(ids, states, strict=True)
                if state in IN_FLIGHT}

    def _folder(self, run_id: str) -> str:
        base = self.options.slurm_folder
        if base is None:
            store = self.store or ""
            base = os.path.join(store, "slurm-logs") if store and "://" not in store else "suite-slurm"
        return os.path.join(os.path.abspath(base), run_id)

    def _engine(self, submitit: Any, run_id: str, count: int) -> Any:
        o = self.options
        self.folder = self._folder(run_id)
        engine = submitit.AutoExecutor(folder=self.folder, cluster=o.slurm_cluster,
                                       slurm_max_num_timeout=o.retries)
        params: dict[str, Any] = {
            "name": f"suite-{run_id}", "timeout_min": o.minutes, "gpus_per_node": o.slurm_gpus_per_node,
            "cpus_per_task": max(1, math.ceil(o.cpus_per_cell)), "tasks_per_node": 1, "nodes": 1,
        }
        if o.slurm_mem:
            params["mem_gb"] = slurm_gigabytes(o.slurm_mem)
        if o.slurm_cluster == "slurm":
            params["slurm_array_parallelism"] = o.max_concurrent or max(count, 1)
            for key in ("partition", "account", "qos", "constraint"):
                value = getattr(o, f"slurm_{key}")
                if value:
                    params[f"slurm_{key}"] = value
            if o.slurm_setup:
                params["slurm_setup"] = [o.slurm_setup]
            # SLURM may requeue a job whose node failed or that was preempted (same job id)
            params["slurm_additional_parameters"] = {"requeue": True}
        else:
            params.pop("cpus_per_task")  # the local executor takes neither
            params.pop("mem_gb", None)
            if o.slurm_setup:
                params["local_setup"] = [o.slurm_setup]
        engine.update_parameters(**params)
        return engine

    def _submit(self, engine: Any, job: CellJob, cells: list[Cell], array: bool) -> list[Any]:
        """Submit ``cells`` (as one job array when ``array``); a refusal by sbatch is the user's to fix."""
        submitit = _import_submitit()
        local = self.options.slurm_cluster == "local"
        try:
            with _controller_stderr(self.folder) if local else contextlib.nullcontext():
                if array and len(cells) > 1:
                    with engine.batch():
                        jobs = [engine.submit(job, pack_cell(cell)) for cell in cells]
                else:
                    jobs = [engine.submit(job, pack_cell(cell)) for cell in cells]
        except (submitit.core.utils.FailedSubmissionError, submitit.core.utils.FailedJobError, OSError) as exc:
            # FailedJobError here is sbatch's refusal (its stderr), not a job's failure
            raise UserError(f"SLURM refused the jobs: {str(exc).strip()}") from None
        for cell, submitted in zip(cells, jobs, strict=True):
            self.jobs[cell.cell_id] = str(submitted.job_id)
        return jobs

    def run(self, cells: Sequence[Cell], settings: RunSettings) -> Iterator[CellResult]:
        if not cells:
            return
        if self.store is None:
            raise UserError("the slurm executor needs the store's path (its jobs write their records)")
        submitit = _import_submitit()
        o = self.options
        in_flight = self._in_flight(cells)
        if in_flight:
            self.jobs.update(in_flight)  # this sweep's record names them too: status follows them
            ids = sorted(set(in_flight.values()))
            shown = ("job " if len(ids) == 1 else "jobs ") + ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
            print(f"slurm: {len(in_flight)} cell(s) not submitted again: their job from an earlier run is still "
                  f"queued or running ({shown}) and writes their record", file=sys.stderr)
            cells = [cell for cell in cells if cell.cell_id not in in_flight]
            self.submitted = len(cells)
            if not cells:
                return
        engine = self._engine(submitit, settings.run_id, len(cells))
        job = CellJob(self.store, remote_settings(settings, o.slurm_gpus_per_node))
        local = o.slurm_cluster == "local"
        # SLURM caps the array itself (%K); the local executor has no queue, so it gets K at a time.
        cap = o.max_concurrent if (local and o.max_concurrent and not o.no_wait) else len(cells)
        waiting = list(cells)
        first, waiting = waiting[:cap], waiting[cap:]
        running: dict[Any, tuple[Cell, int]] = {}
        for cell, submitted in zip(first, self._submit(engine, job, first, array=True), strict=True):
            running[submitted] = (cell, 0)
        array = next(iter(running)).job_id.split("_")[0]
        print(f"slurm: submitted {len(first)} cell(s) as job{' array' if len(first) > 1 else ''} {array} "
              f"({o.slurm_cluster}); logs in {self.folder}", file=sys.stderr)
        if o.no_wait:
            return
        done, last_news = 0, time.monotonic()
        try:
            while running or waiting:
                finished = [j for j in running if j.done()]
                for handle in finished:
                    cell, attempt = running.pop(handle)
                    result, retry = self._outcome(handle, cell, attempt, settings)
                    if retry:
                        print(f"slurm: the job of {cell.spec.label} on {cell.task_name} (seed {cell.seed}) was "
                              f"lost; submitting it again ({attempt + 1}/{o.retries})", file=sys.stderr)
                        (again,) = self._submit(engine, job, [cell], array=False)
                        running[again] = (cell, attempt + 1)
                        continue
                    done += 1
                    last_news = time.monotonic()
                    yield result
                while waiting and len(running) < cap:
                    cell = waiting.pop(0)
                    (submitted,) = self._submit(engine, job, [cell], array=False)
                    running[submitted] = (cell, 0)
                if running and not finished:
                    if time.monotonic() - last_news > HEARTBEAT_S:
                        print(f"slurm: {done} done, {len(running)} submitted and not yet finished, "
                              f"{len(waiting)} not yet submitted", file=sys.stderr)
                        last_news = time.monotonic()
                    time.sleep(POLL_S[o.slurm_cluster])
        finally:
            for handle in running:  # Ctrl-C, an error, or the driver stopped early: cancel the rest
                try:
                    handle.cancel(check=False)
                except Exception:  # noqa: BLE001 - a job that already ended cannot be cancelled
                    pass
            if running:
                print(f"slurm: cancelled {len(running)} outstanding job(s) ({done} cell(s) finished and "
                      f"stored); the same 'suite run' command runs the rest", file=sys.stderr)

    def _outcome(self, handle: Any, cell: Cell, attempt: int,
                 settings: RunSettings) -> tuple[CellResult | None, bool]:
        """(the result to yield, whether to submit the cell again) for a finished job."""
        from suite.results.store import ResultStore

        submitit = _import_submitit()
        try:
            outcome = handle.result()
        except submitit.core.utils.FailedJobError as exc:  # raised in the job: not a lost worker
            return lost_cell(cell, settings, f"SLURM job {handle.job_id} failed: {_last_line(exc)}"), False
        except submitit.core.utils.UncompletedJobError as exc:  # ended without a result: lost
            earlier = stored_outcome(ResultStore(self.store), cell.cell_id, settings.run_id)
            if earlier is not None:  # it wrote its record and was lost on the way out
                return _as_result(earlier), False
            if attempt < self.options.retries:
                return None, True
            return lost_cell(cell, settings, f"SLURM job lost {attempt + 1} time(s), retries used up "
                                             f"(job {handle.job_id}): {lost_reason(exc)}"), False
        if outcome.user_error:
            raise UserError(outcome.error)
        return _as_result(outcome), False


# What a lost job's log says when something killed it; submitit's own progress lines say nothing of that.
_KILLED = re.compile(r"error|exception|killed|signal|out of memory|oom|cancelled|timeout|time limit|preempt",
                     re.IGNORECASE)


def lost_reason(exc: BaseException) -> str:
    """Why a job ended without a result: its scheduler state, and the last line of its error stream
    that names a failure (not the last line, which is often submitit's own bookkeeping)."""
    text = str(exc)
    state = re.search(r"\(state: ([^)]+)\)", text)
    stream = text.split("-" * 40, 1)[1] if "-" * 40 in text else ""
    named = [line.strip() for line in stream.splitlines()
             if _KILLED.search(line) and not re.search(r"submitit (INFO|DEBUG|WARNING)", line)]
    reason = named[-1] if named else "its log names no error"
    return f"state {state.group(1)}; {reason}" if state else reason


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__
