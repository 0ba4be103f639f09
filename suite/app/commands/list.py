"""``suite list [methods|tasks|kernels|executors]``: name, kind, source and a one-line summary."""

from __future__ import annotations

import argparse

from suite.registry import REGISTRIES, registry_for


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered methods, tasks, kernels and executors")
    p.add_argument("group", nargs="?", choices=sorted(REGISTRIES), help="only this group")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    groups = [args.group] if args.group else list(REGISTRIES)
    for i, group in enumerate(groups):
        entries = list(registry_for(group).entries())
        if i:
            print()
        print(f"{group} ({len(entries)})")
        rows = [_row(group, e) for e in entries]
        widths = [max([len(r[c]) for r in rows] + [0]) for c in range(3)]
        for r in rows:
            line = "  ".join(r[c].ljust(widths[c]) for c in range(3)) + "  " + r[3]
            print("  " + line.rstrip())
    return 0


def _row(group: str, e) -> tuple[str, str, str, str]:
    summary = e.summary
    if e.paper:
        summary += f" [{e.paper}]"
    subtasks = getattr(e.target, "subtasks", ())
    if group == "tasks" and subtasks:
        summary += f" (subtasks: {', '.join(subtasks)})"
    return e.name, e.kind, e.source, summary
