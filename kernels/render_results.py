"""Render kernels/RESULTS.md from the parquet rows of a ``suite bench kernels`` run.

    python kernels/render_results.py STORE [RESULTS]    # rewrites RESULTS (default kernels/RESULTS.md)

Uses the newest run in the store's ``kernels`` table; every number comes from the rows
(times, the roofline measured in that run, correctness), none is typed in. The methods that
run each kernel, what no kernel serves and why come from the code (``suite.bench.methods``).
What people wrote by hand (how to make the run) sits between ``KEEP_BEGIN`` and ``KEEP_END``
in the file and is carried over as it is: the script reads the file before it rewrites it, so
it writes the file itself (``> RESULTS`` would empty the file before it is read).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

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


# The hand-written blocks of RESULTS.md a render keeps, between these lines.
KEEP_BEGIN = "<!-- hand-written: kernels/render_results.py keeps this block as it is -->"
KEEP_END = "<!-- end of hand-written block -->"
RESULTS = Path(__file__).with_name("RESULTS.md")


def kept_blocks(text: str) -> list[str]:
    """The hand-written blocks of a RESULTS.md, each with its marker lines; an unclosed block is an
    error rather than prose silently lost."""
    blocks = []
    rest = text
    while KEEP_BEGIN in rest:
        start = rest.index(KEEP_BEGIN)
        end = rest.find(KEEP_END, start)
        if end < 0:
            raise SystemExit(f"a hand-written block opened by '{KEEP_BEGIN}' has no '{KEEP_END}'")
        blocks.append(rest[start:end + len(KEEP_END)])
        rest = rest[end + len(KEEP_END):]
    return blocks


def render(store: str, kept: list[str] | None = None) -> str:
    """RESULTS.md from the newest run in ``store``, with the hand-written blocks ``kept`` after the
    cost model note."""
    from suite.bench.units import roof_label, sig
    from suite.results import ResultStore

    frame = ResultStore(store).load("kernels")
    if frame.empty:
        raise SystemExit(f"no kernel rows in {store}")
    run = frame.sort_values("timestamp")["run_id"].iloc[-1]
    rows = frame[frame["run_id"] == run]
    first = rows.iloc[0]
    mm_dtype = first.get("peak_tflops_dtype") if "peak_tflops_dtype" in rows else None
    status = rows["status"] if "status" in rows else None
    failed = rows[status == "failed"] if status is not None else rows.iloc[0:0]
    rows = rows[status != "failed"] if status is not None else rows
    lines = [
        "# Kernel results",
        "",
        f"Device: **{first['device']}**, run `{run}` started at {first['timestamp']}, "
        f"suite commit `{str(first['git_commit'])[:12]}`.",
        f"Roofs measured in the same run: memory {sig(first['peak_gbps'])} GB/s (device copy), "
        f"compute {sig(first['peak_tflops'])} TFLOP/s ({mm_dtype or 'bf16'} matmul). The roof "
        "column names which one each fraction is of.",
        "",
        COST_MODEL_NOTE,
        "",
        *(line for block in kept or () for line in (block, "")),
        "| kernel | impl | shape | dtype | ms (median) | p10-p90 | GB/s | TFLOP/s | of roof | correct |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in rows.sort_values(["kernel", "shape", "impl"]).iterrows():
        ok = {True: "yes", False: "**NO**"}.get(r["correct"], "-")
        lines.append(
            f"| {r['kernel']} | {r['impl']} | {r['shape']} | {r['dtype']} | {sig(r['time_ms'], 4)} | "
            f"{sig(r['time_ms_p10'])}-{sig(r['time_ms_p90'])} | {sig(r['gbps'])} | "
            f"{sig(r['tflops'])} | {r['roofline_fraction']:.1%} {roof_label(r.to_dict())} | {ok} |"
        )
    if not failed.empty:
        lines += ["", "Cases this run could not measure:", ""]
        for _, r in failed.drop_duplicates(["kernel", "shape", "dtype"]).iterrows():
            lines.append(f"- {r['kernel']} {r['shape']} {r['dtype']}: {r['error']}")
    from suite.bench.methods import markdown_methods

    return "\n".join(lines) + "\n\n" + markdown_methods(sorted(rows["kernel"].unique()))


def write(store: str, path: str | os.PathLike = RESULTS) -> None:
    """Rewrite ``path`` from ``store``, keeping its hand-written blocks; the new text replaces the old
    in one step (a failed render leaves the file as it was)."""
    path = Path(path)
    text = render(store, kept_blocks(path.read_text()) if path.exists() else [])
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else "kernels/results/store", *sys.argv[2:3])
