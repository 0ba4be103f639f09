"""The speed-regression gate: save a baseline of timing samples, compare a new run against it.

The statistic. For each (kernel, impl, shape, dtype) both runs keep every sample. With
``r = median(new) / median(base)`` and a noise band ``b`` equal to the sum of the relative
inter-quartile half-widths of the two sample sets, a case is a *regression* when

    r > (1 + threshold) * (1 + b)     and     a one-sided Mann-Whitney test says new > base
                                            (p < alpha, default 0.01)

i.e. slower than the threshold by more than the noise each run measured of itself, and not a
lucky draw of a few samples. Medians resist the one-sided outliers a shared machine adds;
the rank test needs no assumption on the shape of the distribution. In the normalised mode
the samples are times divided by the calibration op timed in the same round, which cancels
load that slows the whole machine and lets a baseline move between machines of one kind. In the default (absolute) mode a case
must be slower in time *and* in normalised time: a slowdown the calibration op shows too
is the machine (load, clocks), reported as ``drift``, not a regression of the kernel.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from suite.bench.timing import quantile
from suite.errors import UserError

BASELINE_DIR = "kernel-baselines"
KEY = ("kernel", "impl", "shape", "dtype")


@dataclass
class Comparison:
    kernel: str
    impl: str
    shape: str
    dtype: str
    base: float
    new: float
    ratio: float
    band: float
    p_value: float
    verdict: str  # "ok" | "slower" | "faster" | "drift" | "missing" | "new"


def baseline_path(store: str | os.PathLike, name: str, kind: str = "kernels") -> Path:
    """Where baseline ``name`` of ``suite bench <kind>`` lives: kernels' at the top of the baseline
    folder, the recipes' in its ``recipes/`` subfolder (a recipe baseline never replaces a kernel one)."""
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise UserError(f"baseline name '{name}' is not a plain file name; use e.g. 'main'")
    folder = Path(store) / BASELINE_DIR
    return (folder if kind == "kernels" else folder / kind) / f"{name}.json"


def save_baseline(store: str | os.PathLike, name: str, rows: list[dict], meta: dict, kind: str = "kernels") -> Path:
    """Write the samples of a run as baseline ``name`` (atomically, replacing an older one)."""
    path = baseline_path(store, name, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "meta": meta, "rows": rows}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    return path


def load_baseline(store: str | os.PathLike, name: str, kind: str = "kernels") -> dict:
    path = baseline_path(store, name, kind)
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.is_dir() else []
        hint = f" Known baselines: {', '.join(known)}." if known else ""
        raise UserError(
            f"no {kind[:-1]} baseline '{name}' in {path.parent}: record one first with "
            f"'suite bench {kind} --save {name}'.{hint}"
        )
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"baseline file {path} is unreadable ({exc}); record it again with --save") from None


def _rel_band(samples: list[float]) -> float:
    med = quantile(samples, 0.5)
    if not samples or med <= 0:
        return 0.0
    return (quantile(samples, 0.75) - quantile(samples, 0.25)) / 2 / med


def smallest_p(n_base: int, n_new: int) -> float:
    """The smallest one-sided Mann-Whitney p-value samples of these sizes can give (every new
    sample above every baseline sample): 1 / C(n_base + n_new, n_new)."""
    return 1.0 / math.comb(n_base + n_new, n_new)


def min_rounds(alpha: float) -> int:
    """The fewest samples per run (both runs alike) with which a slowdown can reach ``alpha``."""
    n = 2
    while smallest_p(n, n) >= alpha:
        n += 1
    return n


def check_alpha(alpha: float) -> None:
    if not (math.isfinite(alpha) and 0 < alpha <= 0.5):
        raise UserError(f"--alpha {alpha} must be a probability in (0, 0.5], e.g. 0.01")


def check_threshold(threshold: float) -> None:
    if not (math.isfinite(threshold) and 0 <= threshold <= 10):
        raise UserError(f"--threshold {threshold} must be a finite relative slowdown in [0, 10], e.g. 0.1 for 10%")


def _p_slower(base: list[float], new: list[float]) -> float:
    """One-sided p-value that ``new`` tends to be larger than ``base``."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(new, base, alternative="greater").pvalue)


def _judge(bs: list[float], ns: list[float], threshold: float, alpha: float):
    bm, nm = quantile(bs, 0.5), quantile(ns, 0.5)
    ratio = nm / bm if bm > 0 else float("inf")
    band = _rel_band(bs) + _rel_band(ns)
    p = _p_slower(bs, ns)
    if ratio > (1 + threshold) * (1 + band) and p < alpha:
        verdict = "slower"
    elif ratio < 1 / ((1 + threshold) * (1 + band)):
        verdict = "faster"
    else:
        verdict = "ok"
    return bm, nm, ratio, band, p, verdict


def compare_rows(
    base_rows: list[dict],
    new_rows: list[dict],
    *,
    threshold: float = 0.10,
    normalized: bool = False,
    alpha: float = 0.01,
) -> list[Comparison]:
    """Compare each case of a new run with the baseline; see the module docstring."""
    check_threshold(threshold)
    check_alpha(alpha)
    field = "normalized_samples" if normalized else "samples_ms"
    base = {tuple(r[k] for k in KEY): r for r in base_rows}
    new = {tuple(r[k] for k in KEY): r for r in new_rows}
    out: list[Comparison] = []
    for key in sorted(set(base) | set(new)):
        b, n = base.get(key), new.get(key)
        if b is None or n is None:
            verdict = "new" if b is None else "missing"
            row = n or b
            val = quantile(row.get(field) or [], 0.5)
            out.append(Comparison(*key, base=val if b else float("nan"),
                                  new=val if n else float("nan"), ratio=float("nan"),
                                  band=float("nan"), p_value=float("nan"), verdict=verdict))
            continue
        bs, ns = b.get(field) or [], n.get(field) or []
        if not bs or not ns:
            raise UserError(
                f"{'/'.join(key)}: the {'baseline' if not bs else 'new run'} has no "
                f"{'normalised ' if normalized else ''}samples; record the baseline again "
                "with this version of the suite"
            )
        if smallest_p(len(bs), len(ns)) >= alpha:
            raise UserError(
                f"{'/'.join(key)}: {len(bs)} baseline and {len(ns)} new samples can never show a slowdown at "
                f"alpha={alpha} (the smallest possible p is {smallest_p(len(bs), len(ns)):.3g}); time at least "
                f"{min_rounds(alpha)} rounds per run (--rounds), recording the baseline again if it has fewer"
            )
        bm, nm, ratio, band, p, verdict = _judge(bs, ns, threshold, alpha)
        if verdict == "slower" and not normalized:
            bn, nn = b.get("normalized_samples") or [], n.get("normalized_samples") or []
            if bn and nn and _judge(bn, nn, threshold, alpha)[-1] != "slower":
                verdict = "drift"  # the calibration op slowed down alike: the machine
        out.append(Comparison(*key, base=bm, new=nm, ratio=ratio, band=band, p_value=p, verdict=verdict))
    return out


def format_table(rows: list[Comparison], normalized: bool) -> str:
    unit = "x calib" if normalized else "ms"
    header = ["kernel", "impl", "shape", "dtype", f"base ({unit})", f"new ({unit})", "ratio",
              "noise", "p", "verdict"]
    body = []
    for c in rows:
        scale = 1.0
        body.append([
            c.kernel, c.impl, c.shape, c.dtype,
            _fmt(c.base * scale), _fmt(c.new * scale),
            "-" if c.ratio != c.ratio else f"{c.ratio:.3f}",
            "-" if c.band != c.band else f"±{c.band:.1%}",
            "-" if c.p_value != c.p_value else f"{c.p_value:.2g}",
            c.verdict.upper() if c.verdict == "slower" else c.verdict,
        ])
    widths = [max(len(str(r[i])) for r in [header] + body) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
             for r in [header] + body]
    return "\n".join(lines)


def _fmt(v: float) -> str:
    if v != v:
        return "-"
    return f"{v:.4g}"

