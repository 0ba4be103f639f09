"""``suite status STORE``: how far a sweep got, for sweeps that run without their driver.

A sweep submitted with ``--no-wait`` (SLURM jobs that write their own records) has no
driver to print progress; every ``suite run`` records what it set out to run in the
store's ``sweeps`` table, and this command compares that with the records there: each cell
is ok, failed (in this sweep), or outstanding, with its job's state where the cluster
can still tell. Exit codes: 0 nothing failed (done or outstanding), 1 some cell failed,
2 no such store or sweep, or a path that is no result store.

Everything shown from the store (names, errors, sweep records) goes through the terminal
cleaning ``suite compare`` uses: a shared store must not drive the reader's terminal.
"""

from __future__ import annotations

import argparse
import os
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
    p.add_argument("--run", help="the sweep to show, by run id or record name (default: the latest)")
    p.add_argument("--all", action="store_true", help="show every sweep recorded in the store")
    p.set_defaults(handler=main)


def cell_states(manifest: dict[str, Any], latest: dict[str, tuple[str, str, str]]) -> dict[str, list[dict]]:
    """The manifest's cells by state: ok, failed (in or after this sweep) or outstanding."""
    started = str(manifest.get("started_at", ""))
    states: dict[str, list[dict]] = {"ok": [], "failed": [], "outstanding": []}
    for cell in manifest.get("cells", []):
        status, finished, error = latest.get(str(cell["cell_id"]), ("", "", ""))
        if status == "ok":
            states["ok"].append(cell)
        elif status and finished >= started:
            states["failed"].append(cell | {"error": error})
        else:
            states["outstanding"].append(cell)
    return states


def job_notes(engine: dict[str, Any], cells: list[dict]) -> list[str]:
    """Each cell's job and its state as the cluster tells it now ("job 12: RUNNING"), the job id
    alone where nobody here can ask, "" for a cell without a recorded job."""
    from suite.app.executors.slurm import job_states

    jobs = engine.get("jobs") if isinstance(engine.get("jobs"), dict) else {}
    ids = [jobs.get(cell["cell_id"]) for cell in cells]
    ids = [str(job) if isinstance(job, (str, int)) and str(job) else "" for job in ids]
    asked = [n for n, job in enumerate(ids) if job]
    states = job_states([(engine, ids[n]) for n in asked])
    notes = [""] * len(cells)
    for n, state in zip(asked, states, strict=True):
        shown = state.lower() if engine.get("cluster") == "local" else state
        notes[n] = f"job {ids[n]}: {shown}" if shown else f"job {ids[n]}"
    return notes


def main(args: argparse.Namespace) -> int:
    from suite.reports.terminal import clean
    from suite.results.store import ResultStore

    store = ResultStore(args.store)
    if not store.exists():
        raise UserError(f"no result store at '{store.root}': run 'suite run ... --store {store.root}' first")
    if not store.is_store():
        what = "is a file, not a result store" if os.path.isfile(store.root) \
            else "is not a result store (it holds no cells/ or sweeps/ folder)"
        raise UserError(f"'{store.root}' {what}: give the folder 'suite run --store' wrote")
    frame = store.load(warn=True)
    latest: dict[str, tuple[str, str, str]] = {}
    if not frame.empty:
        firsts = frame.drop_duplicates("cell_id")
        for row in firsts[["cell_id", "status", "finished_at", "error"]].itertuples(index=False):
            error = str(row.error or "").strip().splitlines()
            latest[str(row.cell_id)] = (str(row.status), str(row.finished_at or ""), error[0] if error else "")
    ok_total = sum(1 for status, _, _ in latest.values() if status == "ok")
    print(clean(f"store {store.root}: {len(latest)} cell(s) with records, {ok_total} ok, "
                f"{len(latest) - ok_total} failed"))
    manifests = store.sweeps()
    if args.run:
        every = manifests
        manifests = [m for m in every if args.run in (m.get("run_id"), m.get("record"))]
        if not manifests:
            known = ", ".join(dict.fromkeys(clean(m.get("run_id")) for m in every)) or "none"
            raise UserError(f"no sweep '{clean(args.run)}' in {store.root} (recorded sweeps: {known})")
    elif not args.all:
        manifests = manifests[-1:]
    if not manifests:
        print("no sweep recorded in this store (suite run records each sweep it starts)")
        return 0
    any_failed = False
    for manifest in manifests:
        states = cell_states(manifest, latest)
        engine = manifest.get("engine") if isinstance(manifest.get("engine"), dict) else {}
        where = str(manifest.get("executor", "?")) + (f" ({engine['cluster']})" if engine.get("cluster") else "")
        counts = ", ".join(f"{len(states[k])} {k}" for k in ("ok", "failed", "outstanding"))
        name = manifest.get("record") or manifest.get("run_id")
        print()
        print(clean(f"sweep {name} on {where}, started {manifest.get('started_at')}: "
                    f"{len(manifest['cells'])} cell(s): {counts}"))
        for cell in states["failed"]:
            print(clean(f"  failed       {_label(cell)}: {cell['error']}"))
        for cell, note in zip(states["outstanding"], job_notes(engine, states["outstanding"]), strict=True):
            print(clean(f"  outstanding  {_label(cell)}" + (f"  [{note}]" if note else "")))
        if states["outstanding"] and not manifest.get("waits", True):
            print("  (cells whose job ended without a record run again with the same 'suite run' command)")
        any_failed = any_failed or bool(states["failed"])
    sys.stdout.flush()
    return 1 if any_failed else 0


def _label(cell: dict[str, Any]) -> str:
    return f"{cell.get('label')} on {cell.get('task')} ({cell.get('model')}, seed {cell.get('seed')})"
