"""How kernel timings are printed: significant digits, and which roof a fraction is of.

Shared by the terminal table of ``suite bench``, the kernels page and RESULTS.md, so the
three show one number the same way. Imports nothing heavy: the site renderer uses it.
"""

from __future__ import annotations

import math


def sig(value, digits: int = 3) -> str:
    """A rate or time with ``digits`` significant digits: 0.04 stays 0.04, 1234.5 is 1235.

    A fixed number of decimals prints a slow CPU kernel's 0.04 GB/s as 0.0 and a GPU's
    3,000 GB/s with digits nobody measured; significant digits fit both ends.
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "-"
    if not math.isfinite(v):
        return "-"
    if v == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(v))))
    return f"{v:,.{decimals}f}"


def roof_label(row: dict) -> str:
    """Which roof a row's fraction is of: the copy bandwidth, or the matmul rate in which dtype."""
    roof = str(row.get("roof") or "")
    if roof == "memory":
        return "memory (copy GB/s)"
    if roof == "compute":
        return f"compute ({row.get('peak_tflops_dtype') or 'matmul'} TFLOP/s)"
    return ""
