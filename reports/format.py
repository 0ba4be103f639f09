"""Number formatting shared by the site and the terminal table, so both print the same digits."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable

from suite.metrics import spec_of

# Words that make a metric a fraction (in [0, 1]; correlations in [-1, 1]) that readers expect
# in points, shown x100. A metric counts when any word of its name is one of them, so the
# composites tasks define ("f1_accuracy_mean", "exact_match,strict-match") scale like their
# parts; losses, perplexities and costs have none and are shown as they are.
POINT_WORDS = frozenset({
    "accuracy", "acc", "f1", "mcc", "matthews", "pearson", "spearman", "exact", "top1", "top5",
    "precision", "recall", "auc", "auroc",
})


def display_scale(metric: str) -> float:
    """100 for fractions shown in points, else 1 (the value is shown as stored): as the metric's
    declaration says (suite.metrics), else by the words of its name (lm-eval's metrics, ...)."""
    spec = spec_of(str(metric))
    return spec.display_scale if spec is not None else _scale_from_words(str(metric))


@functools.lru_cache(maxsize=1024)
def _scale_from_words(metric: str) -> float:
    words = re.split(r"[^a-z0-9]+", metric.lower())
    return 100.0 if POINT_WORDS.intersection(words) else 1.0


def common_scale(metrics: Iterable[str]) -> float:
    """The scale of an aggregate of these metrics: theirs where they all share one (a mean
    of accuracies is in points too), else 1, since mixed units have no common scale."""
    scales = {display_scale(m) for m in metrics}
    return scales.pop() if len(scales) == 1 else 1.0


def _nan(v) -> bool:
    try:
        return v is None or math.isnan(float(v))
    except (TypeError, ValueError):
        return True


def f_score(v, metric: str = "", scale: float | None = None) -> str:
    """A score in the metric's display scale (or ``scale``, for aggregates that have no metric)."""
    if _nan(v):
        return "–"
    if scale is None:
        scale = display_scale(metric)
    if scale != 1:
        return f"{float(v) * scale:.2f}"
    # Scores shown as stored (losses, perplexities): four decimals, so a column, its intervals
    # and its gaps line up digit for digit; very large values with one.
    return f"{float(v):.4f}" if abs(float(v)) < 1000 else f"{float(v):,.1f}"


def f_signed(v, metric: str = "", scale: float | None = None) -> str:
    if _nan(v):
        return "–"
    s = f_score(abs(float(v)), metric, scale)
    return ("+" if float(v) >= 0 else "−") + s


def f_pval(v) -> str:
    if _nan(v):
        return "–"
    v = float(v)
    return "<0.0001" if v < 1e-4 else f"{v:.2g}" if v < 0.01 else f"{v:.3f}"


def f_sortkey(v) -> str:
    return "" if _nan(v) else repr(float(v))


def f_num(v, digits: int = 2) -> str:
    return "–" if _nan(v) else f"{float(v):,.{digits}f}"


def f_pct(v) -> str:
    return "–" if _nan(v) else f"{float(v) * 100:.1f}%"


def f_params(v) -> str:
    if _nan(v):
        return "–"
    v = float(v)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= size:
            return f"{v / size:.3g}{unit}"
    return f"{v:.0f}"


def f_memory(v) -> str:
    if _nan(v):
        return "–"
    v = float(v)
    return f"{v / 1024:.3g} GB" if v >= 1024 else f"{v:.3g} MB"


def f_duration(v) -> str:
    if _nan(v):
        return "–"
    v = float(v)
    if v >= 3600:
        return f"{v / 3600:.3g} h"
    if v >= 60:
        return f"{v / 60:.3g} min"
    return f"{v:.3g} s"


def f_bytes(v) -> str:
    """A size in bytes with a binary unit (model files, adapters)."""
    if _nan(v):
        return "–"
    v = float(v)
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if v >= size:
            return f"{v / size:.3g} {unit}"
    return f"{v:.0f} B"


def f_sig(v, digits: int = 3) -> str:
    """``digits`` significant digits, thousands separated, no exponent for everyday magnitudes."""
    if _nan(v):
        return "–"
    v = float(v)
    if v == 0 or 1e-3 <= abs(v) < 1e15:
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(v)))) if v else 0
        return f"{v:,.{decimals}f}"
    return f"{v:.{digits - 1}e}"


FORMATTERS = {"params": f_params, "memory_mb": f_memory, "duration_s": f_duration, "bytes": f_bytes,
              "count": lambda v: f_num(v, 0), "rate": lambda v: f_num(v, 0), "number": f_sig,
              "fraction": f_pct, "score": f_sig}


def format_value(v, metric: str) -> str:
    """A value as its metric's declaration says it prints (3 significant digits when undeclared)."""
    spec = spec_of(str(metric))
    return FORMATTERS[spec.format](v) if spec is not None else f_sig(v)


def f_raw(v) -> str:
    return "–" if _nan(v) else f"{float(v):.6g}"


# Absolute paths in error text (POSIX, with at least one folder, or Windows drive paths).
_ABS_PATH = re.compile(r"""(?<![\w.~<>-])(?:/|[A-Za-z]:\\)(?:[^\s/\\"'():,]+[/\\])+""")


@functools.lru_cache(maxsize=1)
def _path_prefixes() -> tuple[tuple[str, str], ...]:
    """Local folders to cut from published text, longest first, with what replaces them."""
    import site
    import sys
    from pathlib import Path

    roots = [(p, "") for p in {*site.getsitepackages(), site.getusersitepackages()} if p]
    roots.append((str(Path(__file__).resolve().parents[1]), ""))  # the suite's checkout
    roots += [(sys.prefix, "<python>"), (sys.base_prefix, "<python>"), (str(Path.home()), "~")]
    return tuple(sorted({(str(p).rstrip("/\\") + "/", r) for p, r in roots if p and len(str(p)) > 1},
                        key=lambda x: -len(x[0])))


def scrub_paths(text) -> str:
    """Error text safe to publish: installed packages and the checkout as relative paths, every
    other absolute folder (home, the store, temporary folders) as ``<path>/``; file names stay."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    return _scrub(str(text))


@functools.lru_cache(maxsize=65536)
def _scrub(text: str) -> str:
    """``scrub_paths`` of a string; cached: the same model, data folder and arguments repeat on every cell."""
    for prefix, repl in _path_prefixes():
        text = text.replace(prefix, f"{repl}/" if repl else "")
    text = text.replace("~/", "<path>/")  # the home folder names the user
    return _ABS_PATH.sub("<path>/", text)


def first_line(text: str, limit: int = 200) -> str:
    """The first non-empty line, cut at ``limit`` characters."""
    line = next((x.strip() for x in str(text).splitlines() if x.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"
