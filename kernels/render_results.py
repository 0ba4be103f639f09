"""Render kernels/RESULTS.md from the parquet rows of a ``suite bench kernels`` run.

    python kernels/render_results.py STORE > kernels/RESULTS.md

Uses the newest run in the store's ``kernels`` table; every number comes from the rows
(times, the roofline measured in that run, correctness), none is typed in.
"""

from __future__ import annotations

import sys


def render(store: str) -> str:
    from suite.results import ResultStore

    frame = ResultStore(store).load("kernels")
    if frame.empty:
        raise SystemExit(f"no kernel rows in {store}")
    run = frame.sort_values("timestamp")["run_id"].iloc[-1]
    rows = frame[frame["run_id"] == run]
    first = rows.iloc[0]
    lines = [
        "# Kernel results",
        "",
        f"Device: **{first['device']}**, run `{run}` at {first['timestamp']}, "
        f"commit `{first['git_commit'][:12]}`.",
        f"Roofline measured in the same run: {first['peak_gbps']:.0f} GB/s (device copy), "
        f"{first['peak_tflops']:.0f} TFLOP/s (bf16 matmul).",
        "",
        "| kernel | impl | shape | dtype | ms (median) | p10-p90 | GB/s | TFLOP/s | roof | correct |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in rows.sort_values(["kernel", "shape", "impl"]).iterrows():
        ok = {True: "yes", False: "**NO**"}.get(r["correct"], "-")
        lines.append(
            f"| {r['kernel']} | {r['impl']} | {r['shape']} | {r['dtype']} | {r['time_ms']:.4g} | "
            f"{r['time_ms_p10']:.3g}-{r['time_ms_p90']:.3g} | {r['gbps']:.0f} | "
            f"{r['tflops']:.1f} | {r['roofline_fraction']:.0%} | {ok} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(sys.argv[1] if len(sys.argv) > 1 else "kernels/results/store"), end="")
