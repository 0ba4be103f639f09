"""The kernels page's model: latest timings with peers side by side, and history across commits.

A step in the history is a regression exactly when ``suite bench kernels --compare`` would
call it one: the site hands the two runs' timing samples to the gate's own
``suite.bench.gate.compare_rows`` with the gate's default threshold and test level, so the
page and the CI gate cannot disagree. Rows without samples (older stores) are shown but not
judged. Histories are kept per device, since times from different machines do not compare.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import pandas as pd

from suite.bench.gate import compare_rows

_GATE_DEFAULTS = inspect.signature(compare_rows).parameters
REGRESSION_THRESHOLD: float = _GATE_DEFAULTS["threshold"].default
REGRESSION_ALPHA: float = _GATE_DEFAULTS["alpha"].default


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
