"""``suite list [methods|tasks|kernels|executors]``: name, kind, source and a one-line summary;
``suite list peft-experiments``: the experiments peft publishes that run here, with what peft measured."""

from __future__ import annotations

import argparse

from suite.registry import REGISTRIES, registry_for


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered methods, tasks, kernels and executors")
    p.add_argument("group", nargs="?", choices=[*sorted(REGISTRIES), PEFT_EXPERIMENTS],
                   help=f"only this group ({PEFT_EXPERIMENTS}: peft's published experiments, --methods peft:<name>)")
    p.set_defaults(handler=main)


PEFT_EXPERIMENTS = "peft-experiments"


def main(args: argparse.Namespace) -> int:
    if args.group == PEFT_EXPERIMENTS:
        return list_peft_experiments()
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


def list_peft_experiments() -> int:
    """Each published experiment as the suite runs it, beside the GSM8K accuracy and trainable parameters
    peft's result file recorded for it (Llama-3.2-3B, 5,000 steps): the numbers a run here is compared with."""
    from suite.methods.peft.experiments import PEFT_SOURCE, published
    from suite.methods.peft.peft_published import PUBLISHED

    print(f"peft experiments ({len(PUBLISHED)}), from {PEFT_SOURCE}; run with --methods peft:<name>")
    rows = [("name", "method", "lr", "peft's GSM8K", "peft's params")]
    for name, entry in PUBLISHED.items():
        experiment = published(name)
        accuracy = "-" if entry.test_accuracy is None else f"{100 * entry.test_accuracy:.2f}%"
        params = "-" if entry.trainable_params is None else f"{entry.trainable_params:,}"
        rows.append((name, experiment.method, f"{experiment.recipe['lr']:g}", accuracy, params))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    for r in rows:
        print("  " + "  ".join(r[c].ljust(widths[c]) if c < 3 else r[c].rjust(widths[c]) for c in range(5)))
    return 0
