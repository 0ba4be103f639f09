"""The kernels page's model: latest timings with peers side by side, and history across runs.

A step in the history is a regression exactly when ``suite bench kernels --compare`` would
call it one: the site hands the two runs' timing samples to the gate's own
``suite.bench.gate.compare_rows`` with the gate's default threshold and test level, so the
page and the CI gate cannot disagree. Rows without samples (older stores) are shown but not
judged. Histories are kept per device, since times from different machines do not compare.

The history's unit is a run (``suite bench`` run id, ordered by its start time), not a commit:
two runs of one commit (a re-measurement, an installed suite with no checkout) are two
points, each labelled with its start time and the suite commit it measured. Cases a run
could not measure (status "failed") are listed with the reason, never drawn as timings.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import pandas as pd

from suite.bench.gate import compare_rows
from suite.bench.units import roof_label, sig

_GATE_DEFAULTS = inspect.signature(compare_rows).parameters
REGRESSION_THRESHOLD: float = _GATE_DEFAULTS["threshold"].default
REGRESSION_ALPHA: float = _GATE_DEFAULTS["alpha"].default


@dataclass
class KernelRow:
    shape: str
    dtype: str
    device: str
    # impl -> latest row (time_ms, gbps, tflops, roofline_fraction, correct), plus its display
    # strings under "fmt" (significant digits, so a slow kernel's 0.04 GB/s is not shown as 0.0)
    impls: dict[str, dict]
    fastest: str = ""


@dataclass
class Roof:
    """The roofs one run measured on one device, which every fraction in that run divides by."""

    device: str
    run: str
    gbps: str
    tflops: str
    dtype: str


@dataclass
class KernelGroup:
    kernel: str
    impls: list[str]
    rows: list[KernelRow]
    # series label -> points (run label, median ms, regression?) in run order
    history: dict[str, list[tuple[str, float, bool]]] = field(default_factory=dict)
    regressions: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)  # latest run's failed cases, with the reason
    roofs: list[Roof] = field(default_factory=list)
    figure: str = ""


def gate_settings() -> dict[str, float]:
    return {"threshold_pct": round(REGRESSION_THRESHOLD * 100), "alpha": REGRESSION_ALPHA}


def has_samples(frame: pd.DataFrame | None) -> bool:
    return frame is not None and "samples_ms" in frame and frame["samples_ms"].map(_samples).map(bool).any()


def verdict(prev: dict, cur: dict, threshold: float = REGRESSION_THRESHOLD,
            alpha: float = REGRESSION_ALPHA) -> str | None:
    """The gate's verdict on the step prev -> cur ("ok", "slower", "faster", "drift"), or None
    when either run kept no timing samples (then nothing honest can be said)."""
    a, b = _gate_row(prev), _gate_row(cur)
    if a is None or b is None:
        return None
    return compare_rows([a], [b], threshold=threshold, alpha=alpha)[0].verdict


def is_regression(prev: dict, cur: dict, threshold: float = REGRESSION_THRESHOLD,
                  alpha: float = REGRESSION_ALPHA) -> bool:
    """What makes ``suite bench kernels --compare`` exit non-zero: the verdict "slower"."""
    return verdict(prev, cur, threshold, alpha) == "slower"


def _gate_row(row: dict) -> dict | None:
    """A store row in the shape the gate compares (same key on both sides, the samples as lists)."""
    samples = _samples(row.get("samples_ms"))
    if not samples:
        return None
    return {"kernel": "k", "impl": "i", "shape": "s", "dtype": "d", "samples_ms": samples,
            "normalized_samples": _samples(row.get("normalized_samples"))}


def _samples(v) -> list[float]:
    if v is None or isinstance(v, (str, bytes, float, int)):
        return []
    try:
        return [float(x) for x in v]
    except (TypeError, ValueError):
        return []


def run_label(row: dict, index: int | None = None) -> str:
    """A run as people tell runs apart: its date, the short suite commit and, where given, its
    index among the runs of that date and commit ("2026-12-04 a1b2c3d #2")."""
    stamp = str(row.get("timestamp") or "").replace("T", " ").rstrip("Z")[:10]
    commit = str(row.get("git_commit") or "")
    commit = commit if commit.startswith("v") else commit[:7] + ("+" if commit.endswith("+dirty") else "")
    label = " ".join(x for x in (stamp, commit) if x) or str(row.get("run_id") or "?")
    return f"{label} #{index}" if index is not None else label


def _run_labels(frame: pd.DataFrame) -> dict[str, str]:
    """run id -> its label, the runs of one date and commit numbered in start order (#1, #2, ...):
    two runs never fold into one point, and a reader tells them apart by order, not by a hash."""
    out: dict[str, str] = {}
    count: dict[str, int] = {}
    for r in frame.drop_duplicates("run_id").to_dict("records"):
        base = run_label(r)
        count[base] = count.get(base, 0) + 1
        out[r["run_id"]] = run_label(r, count[base])
    return out


def _display(row: dict) -> dict:
    """A timing row's numbers as shown: significant digits, the roof named."""
    frac = row.get("roofline_fraction")
    try:
        f = float(frac)
        pct = "-" if f != f else (f"{f:.0%}" if f >= 0.01 else f"{sig(f * 100, 2)}%")
    except (TypeError, ValueError):
        pct = "-"
    return {"time_ms": sig(row.get("time_ms"), 4), "p10": sig(row.get("time_ms_p10")),
            "p90": sig(row.get("time_ms_p90")), "gbps": sig(row.get("gbps")),
            "tflops": sig(row.get("tflops")), "roof_pct": pct, "roof": roof_label(row)}


def build_kernel_groups(frame: pd.DataFrame) -> list[KernelGroup]:
    if frame is None or frame.empty or "kernel" not in frame:
        return []
    frame = frame.reset_index(drop=True)  # a copy; rows from several files may share index labels
    for col in ("shape", "dtype", "device", "impl", "git_commit", "timestamp", "run_id", "status", "error"):
        if col not in frame:
            frame[col] = ""
        # text first, then the missing values: an all-missing column is float, and filling a float
        # column with text is deprecated in pandas
        frame[col] = frame[col].astype(object).where(frame[col].notna(), "").astype(str)
    # Rows from before runs had ids: one run per (commit, timestamp).
    no_id = frame["run_id"] == ""
    frame.loc[no_id, "run_id"] = frame.loc[no_id, "git_commit"] + "@" + frame.loc[no_id, "timestamp"]
    frame = frame.sort_values(["timestamp", "run_id"], kind="stable")
    frame["_failed"] = frame["status"] == "failed"
    labels = _run_labels(frame)
    groups = []
    for kernel, kf_all in frame.groupby("kernel", sort=True):
        kf = kf_all[~kf_all["_failed"]]
        impls = sorted(kf_all["impl"].unique(), key=lambda i: (i != "reference", i))
        latest = kf.groupby(["shape", "dtype", "device", "impl"], sort=True).tail(1)
        rows = []
        for (shape, dtype, device), g in latest.groupby(["shape", "dtype", "device"], sort=True):
            by_impl = {r["impl"]: dict(r, fmt=_display(r)) for r in g.to_dict("records")}
            times = {i: r["time_ms"] for i, r in by_impl.items() if _num(r.get("time_ms"))}
            rows.append(KernelRow(shape, dtype, device, by_impl,
                                  fastest=min(times, key=times.get) if times else ""))
        group = KernelGroup(str(kernel), impls, rows)
        last_run = kf_all.groupby("device", sort=True)["run_id"].last()
        for device, run in last_run.items():
            bad = kf_all[(kf_all["run_id"] == run) & kf_all["_failed"]]
            for r in bad.drop_duplicates(["shape", "dtype", "error"]).to_dict("records"):
                group.failures.append({"shape": r["shape"], "dtype": r["dtype"], "device": device,
                                       "run": labels[r["run_id"]], "error": r["error"]})
        for device, g in kf_all.groupby("device", sort=True):
            r = g.iloc[-1].to_dict()
            if _num(r.get("peak_gbps")):
                group.roofs.append(Roof(str(device), labels[r["run_id"]], sig(r.get("peak_gbps")),
                                        sig(r.get("peak_tflops")), str(r.get("peak_tflops_dtype") or "")))
        for (shape, dtype, device, impl), g in kf.groupby(["shape", "dtype", "device", "impl"], sort=True):
            per_run = g.groupby("run_id", sort=False).tail(1).to_dict("records")
            points, prev = [], None
            for r in per_run:
                reg = prev is not None and is_regression(prev, r)
                points.append((labels[r["run_id"]], float(r["time_ms"]), reg))
                if reg:
                    group.regressions.append({
                        "shape": shape, "dtype": dtype, "device": device, "impl": impl,
                        "from_commit": prev["git_commit"], "to_commit": r["git_commit"],
                        "from_run": labels[prev["run_id"]], "to_run": labels[r["run_id"]],
                        "before_ms": float(prev["time_ms"]), "after_ms": float(r["time_ms"]),
                        "ratio": float(r["time_ms"]) / float(prev["time_ms"]),
                    })
                prev = r
            group.history[f"{impl} {shape} {dtype} @ {device}"] = points
        groups.append(group)
    return groups


def _num(v) -> bool:
    try:
        return v is not None and not math.isnan(float(v))
    except (TypeError, ValueError):
        return False
