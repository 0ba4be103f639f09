"""Render kernels/RESULTS.md from the parquet rows of a ``suite bench kernels`` run.

    python kernels/render_results.py STORE > kernels/RESULTS.md

Uses the newest run in the store's ``kernels`` table; every number comes from the rows
(times, the roofline measured in that run, correctness), none is typed in.
"""

from __future__ import annotations

import sys

# Stated in every rendered file (and in the hand-written one until the first GPU run), so a
# reader knows what a GB/s figure divides by.
COST_MODEL_NOTE = (
    "Cost model: GB/s and roof divide each kernel's `bytes_moved` (the bytes the algorithm "
    "must move through device memory: inputs read, codes and scales written at their stored "
    "size) by the median time; quantisers whose scale spans the whole tensor (per-tensor "
    "FP8, NVFP4, Hadamard + NVFP4) count two reads of X, because the tensor's amax must be "
    "complete before the first element is quantised and X (128-512 MiB at the full shapes) "
    "does not fit in L2."
)


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
        COST_MODEL_NOTE,
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
