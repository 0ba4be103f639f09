"""``suite status STORE``: how far a sweep got, for sweeps that run without their driver.

A sweep submitted with ``--no-wait`` (SLURM jobs that write their own records) has no
driver to print progress; every ``suite run`` records what it set out to run in the
store's ``sweeps`` table, and this command compares that with the records there: each cell
is ok, failed (in this sweep), or outstanding, with its job's state where the cluster
can still tell. Exit codes: 0 nothing failed (done or outstanding), 1 some cell failed,
2 no such store or sweep.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Any

from suite.app.commands import DEFAULT_STORE
from suite.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="how far a sweep got: ok, failed and outstanding cells",
                       description="Compare what a sweep set out to run (recorded by suite run) with "
                                   "the records in the store; names outstanding and failed cells.",
                       epilog=f"examples:\n  suite status {DEFAULT_STORE}\n  suite status s3://bucket/results --all",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store", help="the result store (a folder or a URI such as s3://bucket/prefix)")
    p.add_argument("--run", help="the sweep to show, by run id (default: the latest)")
    p.add_argument("--all", action="store_true", help="show every sweep recorded in the store")
    p.set_defaults(handler=main)


def cell_states(manifest: dict[str, Any], latest: dict[str, tuple[str, str, str]]) -> dict[str, list[dict]]:
    """The manifest's cells by state: ok, failed (in or after this sweep) or outstanding."""
    started = str(manifest.get("started_at", ""))
    states: dict[str, list[dict]] = {"ok": [], "failed": [], "outstanding": []}
    for cell in manifest.get("cells", []):
        status, finished, error = latest.get(cell["cell_id"], ("", "", ""))
        if status == "ok":
            states["ok"].append(cell)
        elif status and finished >= started:
            states["failed"].append(cell | {"error": error})
        else:
            states["outstanding"].append(cell)
    return states


def job_state(engine: dict[str, Any], cell_id: str) -> str:
    """The state of a cell's job as the cluster tells it now, or "" when it cannot."""
    job_id = (engine.get("jobs") or {}).get(cell_id)
    if not job_id:
        return ""
    if engine.get("cluster") == "local":  # a local job is a process of this machine
        try:
            os.kill(int(job_id), 0)
            return f"job {job_id}: running"
        except (OSError, ValueError):
            return f"job {job_id}: ended"
    if shutil.which("sacct") is None:  # not on the cluster: its jobs cannot be asked about here
        return f"job {job_id}"
    try:
        import submitit

        return f"job {job_id}: {submitit.SlurmJob(folder=engine.get('folder') or '.', job_id=job_id).state}"
    except Exception:  # noqa: BLE001 - no submitit, no sacct here: the state is unknown, not an error
        return f"job {job_id}"


def main(args: argparse.Namespace) -> int:
    from suite.results.store import ResultStore

    store = ResultStore(args.store)
    if not store.exists():
        raise UserError(f"no result store at '{store.root}': run 'suite run ... --store {store.root}' first")
    frame = store.load(warn=True)
    latest: dict[str, tuple[str, str, str]] = {}
    if not frame.empty:
        firsts = frame.drop_duplicates("cell_id")
        for row in firsts[["cell_id", "status", "finished_at", "error"]].itertuples(index=False):
            error = str(row.error or "").strip().splitlines()
            latest[str(row.cell_id)] = (str(row.status), str(row.finished_at or ""), error[0] if error else "")
    ok_total = sum(1 for status, _, _ in latest.values() if status == "ok")
    print(f"store {store.root}: {len(latest)} cell(s) with records, {ok_total} ok, "
          f"{len(latest) - ok_total} failed")
    manifests = store.sweeps()
    if args.run:
        manifests = [m for m in manifests if m.get("run_id") == args.run]
        if not manifests:
            known = ", ".join(str(m.get("run_id")) for m in store.sweeps()) or "none"
            raise UserError(f"no sweep '{args.run}' in {store.root} (recorded sweeps: {known})")
    elif not args.all:
        manifests = manifests[-1:]
    if not manifests:
        print("no sweep recorded in this store (suite run records each sweep it starts)")
        return 0
    any_failed = False
    for manifest in manifests:
        states = cell_states(manifest, latest)
        engine = manifest.get("engine") or {}
        where = manifest.get("executor", "?") + (f" ({engine['cluster']})" if engine.get("cluster") else "")
        counts = ", ".join(f"{len(states[k])} {k}" for k in ("ok", "failed", "outstanding"))
        print(f"\nsweep {manifest.get('run_id')} on {where}, started {manifest.get('started_at')}: "
              f"{len(manifest.get('cells', []))} cell(s): {counts}")
        for cell in states["failed"]:
            print(f"  failed       {_label(cell)}: {cell['error']}")
        for cell in states["outstanding"]:
            state = job_state(engine, cell["cell_id"])
            print(f"  outstanding  {_label(cell)}" + (f"  [{state}]" if state else ""))
        if states["outstanding"] and not manifest.get("waits", True):
            print("  (cells whose job ended without a record run again with the same 'suite run' command)")
        any_failed = any_failed or bool(states["failed"])
    sys.stdout.flush()
    return 1 if any_failed else 0


def _label(cell: dict[str, Any]) -> str:
    return f"{cell.get('label')} on {cell.get('task')} ({cell.get('model')}, seed {cell.get('seed')})"
