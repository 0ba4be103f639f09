"""The Ray executor: each cell a Ray task, on a local Ray instance or a running cluster.

``suite run ... --executor ray`` starts a Ray instance on this machine (all its CPUs and
GPUs) unless ``--address HOST:PORT`` names a running cluster (``ray start --head`` on one
node, ``ray start --address HEAD:6379`` on the others; see the README). Every cell asks
for ``--cpus-per-cell`` CPUs and ``--gpus-per-cell`` GPUs (default: 1 where the cluster
has GPUs, else none; fractions share a GPU), and Ray places it. ``--max-concurrent``
caps the cells in flight. The worker returns the cell's record to the driver, which
writes the store and prints progress and the summary exactly as for the local executor.

Faults are Ray's to detect and ours to name: a worker lost mid-cell (its process killed,
its node gone, Ray's out-of-memory killer) is retried by Ray up to ``--retries`` times
(``max_retries``), and then recorded as failed with Ray's reason. A cell that fails in
the ordinary way comes back as a ``failed`` result and is never retried
(``retry_exceptions=False``). Ctrl-C cancels the cells still queued or running.

Ray is imported only when a sweep runs: ``suite list`` and ``--help`` never load it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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

# How long the driver waits for a result before it prints where the sweep stands.
HEARTBEAT_S = 60.0
_ADDRESS = re.compile(r"^(auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d+)$")


@dataclass(frozen=True)
class RayOptions:
    address: str | None = option(None, "Ray cluster to run on, HOST:PORT of its head (or ray://HOST:PORT, "
                                       "auto); default: start a Ray instance on this machine")
    gpus_per_cell: float | None = option(None, "GPUs each cell asks for; fractions share a GPU "
                                               "(default: 1 where the cluster has GPUs, else 0)")
    cpus_per_cell: float = option(1.0, "CPUs each cell asks for")
    max_concurrent: int | None = option(None, "at most this many cells at once (default: as many as "
                                              "the resources allow)")
    retries: int = option(2, "re-run a cell whose worker was lost (process killed, node gone, "
                             "preempted) up to N times, then record it as failed")

    def __post_init__(self) -> None:
        if self.address is not None and not _ADDRESS.match(self.address):
            raise ValueError(f"--address must be HOST:PORT (or ray://HOST:PORT, or auto), got '{self.address}'")
        if self.gpus_per_cell is not None:
            if self.gpus_per_cell < 0:
                raise ValueError("--gpus-per-cell must be >= 0")
            if self.gpus_per_cell > 1 and not float(self.gpus_per_cell).is_integer():
                raise ValueError("--gpus-per-cell above 1 must be a whole number (Ray shares only single GPUs)")
        if self.cpus_per_cell <= 0:
            raise ValueError("--cpus-per-cell must be positive")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError("--max-concurrent must be at least 1")
        if self.retries < 0:
            raise ValueError("--retries must be >= 0")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("the ray executor needs Ray: pip install 'suite[ray]' (or pip install ray)") from None
    return ray


def run_payload(payload: CellPayload, settings: RunSettings) -> CellResult:
    """The Ray task: rebuild the cell on the worker, run it, return its record (written nowhere)."""
    return run_packed(payload, settings, "a Ray worker")


@register_executor("ray", kind="executor", summary="cells as Ray tasks on a local Ray instance or a cluster "
                   "(--address); records return to the driver")
class RayExecutor(Executor):
    Options = RayOptions

    def check(self) -> None:
        _import_ray()

    def describe(self) -> dict[str, Any]:
        return {"address": self.options.address or "local"}

    def _connect(self, ray: Any) -> bool:
        """Join the cluster (or start a local instance); True when this call started Ray."""
        if ray.is_initialized():
            return False
        address = self.options.address
        try:
            if address:
                ray.init(address=address, logging_level=logging.WARNING)
            else:
                ray.init(include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise UserError(f"cannot start or reach {where}: {exc}") from None
        return True

    def _resources(self, ray: Any) -> tuple[float, float]:
        """GPUs and CPUs per cell, checked against the largest node so no cell waits forever."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        most_gpus = max((r.get("GPU", 0.0) for r in nodes), default=0.0)
        most_cpus = max((r.get("CPU", 0.0) for r in nodes), default=0.0)
        gpus = self.options.gpus_per_cell
        if gpus is None:
            gpus = 1.0 if most_gpus > 0 else 0.0
        if gpus > most_gpus:
            raise UserError(f"--gpus-per-cell {gpus:g}: no node of the Ray cluster has that many GPUs "
                            f"(the most on one node: {most_gpus:g}); ask for fewer, or --gpus-per-cell 0")
        if self.options.cpus_per_cell > most_cpus:
            raise UserError(f"--cpus-per-cell {self.options.cpus_per_cell:g}: no node of the Ray cluster "
                            f"has that many CPUs (the most on one node: {most_cpus:g})")
        return gpus, self.options.cpus_per_cell

    def run(self, cells: Sequence[Cell], settings: RunSettings) -> Iterator[CellResult]:
        if not cells:  # everything was done already: no Ray instance to start
            return
        ray = _import_ray()
        started = self._connect(ray)
        in_flight: dict[Any, Cell] = {}
        try:
            gpus, cpus = self._resources(ray)
            task = ray.remote(run_payload).options(
                num_cpus=cpus, num_gpus=gpus, max_retries=self.options.retries, retry_exceptions=False)
            cell_settings = remote_settings(settings, gpus)
            waiting = list(cells)
            cap = self.options.max_concurrent or len(waiting)
            print(f"ray: {len(waiting)} cell(s), {cpus:g} CPU and {gpus:g} GPU each, at most {cap} at once, "
                  f"on {self.options.address or 'a local Ray instance'}", file=sys.stderr)
            done = 0
            while waiting or in_flight:
                while waiting and len(in_flight) < cap:
                    cell = waiting.pop(0)
                    in_flight[task.remote(pack_cell(cell), cell_settings)] = cell
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=HEARTBEAT_S)
                if not ready:
                    print(f"ray: {done} done, {len(in_flight)} running or queued on the cluster, "
                          f"{len(waiting)} not yet submitted", file=sys.stderr)
                    continue
                ref = ready[0]
                cell = in_flight.pop(ref)
                done += 1
                yield self._result(ray, ref, cell, settings)
        finally:
            for ref in in_flight:  # Ctrl-C, an error, or the driver stopped early: cancel the rest
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - a task that already ended cannot be cancelled
                    pass
            if in_flight:
                print(f"ray: cancelled {len(in_flight)} outstanding cell(s)", file=sys.stderr)
            if started:
                ray.shutdown()

    def _result(self, ray: Any, ref: Any, cell: Cell, settings: RunSettings) -> CellResult:
        """The cell's record, or its failed record when the worker was lost for good."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # raised by our code on the worker, not a lost worker
            cause = getattr(exc, "cause", None)
            if isinstance(cause, UserError):
                raise UserError(str(cause)) from None
            return lost_cell(cell, settings, f"error on the Ray worker: {cause or exc}")
        except ray.exceptions.RayError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return lost_cell(cell, settings, f"worker lost, Ray gave up after {self.options.retries + 1} "
                                             f"attempt(s): {type(exc).__name__}: {reason}")
