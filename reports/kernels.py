"""The kernels page's model: latest timings with peers side by side, and history across commits.

A step in the history is marked a regression when the kernel got slower than at the
previous commit by more than ``threshold`` *and* beyond the measured noise: the new
10th-percentile time is above the old 90th percentile (the sample ranges do not overlap).
Histories are kept per device, since times from different machines do not compare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

REGRESSION_THRESHOLD = 0.05


@dataclass
class KernelRow:
    shape: str
    dtype: str
    device: str
    impls: dict[str, dict]  # impl -> latest row (time_ms, gbps, tflops, roofline_fraction, correct)
    fastest: str = ""


@dataclass
class KernelGroup:
    kernel: str
    impls: list[str]
    rows: list[KernelRow]
    history: dict[str, list[tuple[str, float, bool]]] = field(default_factory=dict)
    regressions: list[dict] = field(default_factory=list)
    figure: str = ""


def is_regression(prev: dict, cur: dict, threshold: float = REGRESSION_THRESHOLD) -> bool:
    """Slower by more than ``threshold`` and outside the previous run's p10..p90 noise band."""
    t0, t1 = prev.get("time_ms"), cur.get("time_ms")
    if not _num(t0) or not _num(t1) or t0 <= 0:
        return False
    if t1 <= t0 * (1 + threshold):
        return False
    p90_prev, p10_cur = prev.get("time_ms_p90"), cur.get("time_ms_p10")
    if _num(p90_prev) and _num(p10_cur):
        return p10_cur > p90_prev
    return True


def build_kernel_groups(frame: pd.DataFrame) -> list[KernelGroup]:
    if frame is None or frame.empty or "kernel" not in frame:
        return []
    frame = frame.copy()
    for col in ("shape", "dtype", "device", "impl", "git_commit", "timestamp"):
        if col not in frame:
            frame[col] = ""
        frame[col] = frame[col].fillna("").astype(str)
    frame = frame.sort_values("timestamp", kind="stable")
    groups = []
    for kernel, kf in frame.groupby("kernel", sort=True):
        impls = sorted(kf["impl"].unique(), key=lambda i: (i != "reference", i))
        latest = kf.groupby(["shape", "dtype", "device", "impl"], sort=True).tail(1)
        rows = []
        for (shape, dtype, device), g in latest.groupby(["shape", "dtype", "device"], sort=True):
            by_impl = {r["impl"]: r for r in g.to_dict("records")}
            times = {i: r["time_ms"] for i, r in by_impl.items() if _num(r.get("time_ms"))}
            rows.append(KernelRow(shape, dtype, device, by_impl,
                                  fastest=min(times, key=times.get) if times else ""))
        group = KernelGroup(str(kernel), impls, rows)
        for (shape, dtype, device, impl), g in kf.groupby(["shape", "dtype", "device", "impl"], sort=True):
            per_commit = g.groupby("git_commit", sort=False).tail(1).to_dict("records")
            points, prev = [], None
            for r in per_commit:
                reg = prev is not None and is_regression(prev, r)
                points.append((r["git_commit"] or "?", float(r["time_ms"]), reg))
                if reg:
                    group.regressions.append({
                        "shape": shape, "dtype": dtype, "device": device, "impl": impl,
                        "from_commit": prev["git_commit"], "to_commit": r["git_commit"],
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
