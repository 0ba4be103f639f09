"""The kernels page: history by run (not commit), failures with their reason, the roofs
measured, numbers with significant digits, and a history figure whose legend is not cut."""

from __future__ import annotations

import pandas as pd

from benchmarks import synthetic_store as synthetic
from suite.bench.units import roof_label, sig
from suite.reports import kernel_figures, kernels
from suite.results.store import ResultStore


def _two_runs_one_commit() -> pd.DataFrame:
    frame = synthetic.kernel_rows(commits=("same", "same"), slow_at=None)
    frame["roof"] = "memory"
    frame["peak_tflops_dtype"] = "bfloat16"
    frame["status"] = "ok"
    frame["error"] = ""
    return frame


def test_history_has_one_point_per_run_even_on_one_commit():
    frame = _two_runs_one_commit()
    assert frame["run_id"].nunique() == 2 and frame["git_commit"].nunique() == 1
    (group,) = [g for g in kernels.build_kernel_groups(frame) if g.kernel == "quantize_mxfp4"]
    for points in group.history.values():
        assert len(points) == 2  # two runs, two points, though the commit is the same
        labels = [p[0] for p in points]
        assert labels[0] != labels[1] and all("same" in x for x in labels)


def test_runs_without_a_commit_stay_apart():
    frame = _two_runs_one_commit()
    frame["git_commit"] = ""
    frame["timestamp"] = "2025-01-01T00:00:00"  # same minute too: still two runs
    (group,) = [g for g in kernels.build_kernel_groups(frame) if g.kernel == "quantize_mxfp4"]
    assert all(len({p[0] for p in pts}) == 2 for pts in group.history.values())


def test_failed_cases_are_listed_with_the_reason_not_timed():
    frame = _two_runs_one_commit()
    last = frame["run_id"].max()
    bad = frame[(frame["run_id"] == last) & (frame["kernel"] == "matmul_fp8")].head(1).copy()
    bad["shape"], bad["status"] = "64x64", "failed"
    bad["error"] = "kernel 'matmul_fp8' takes shapes of 3 sizes (MxNxK), got '64x64'"
    bad["time_ms"] = float("nan")
    groups = {g.kernel: g for g in kernels.build_kernel_groups(pd.concat([frame, bad]))}
    g = groups["matmul_fp8"]
    assert [f["error"] for f in g.failures] == [bad["error"].iloc[0]]
    assert all(r.shape != "64x64" for r in g.rows)
    assert not groups["quantize_mxfp4"].failures


def test_numbers_keep_their_significant_digits():
    assert sig(0.04) == "0.0400" and sig(0.0412) == "0.0412"
    assert sig(3012.4) == "3,012" and sig(1.5) == "1.50" and sig(float("nan")) == "-"
    assert roof_label({"roof": "compute", "peak_tflops_dtype": "bfloat16"}) == "compute (bfloat16 TFLOP/s)"
    assert roof_label({"roof": "memory"}) == "memory (copy GB/s)"


def test_page_names_the_roofs_the_failures_and_small_rates(tmp_path):
    from suite.reports.site import render_site

    frame = _two_runs_one_commit()
    frame["gbps"] = 0.04  # a slow CPU kernel
    frame.loc[frame["kernel"] == "matmul_fp8", "roof"] = "compute"
    bad = frame.head(1).copy()
    bad["shape"], bad["status"], bad["error"] = "7x7", "failed", "shape 7x7 <refused & named>"
    bad["run_id"] = frame["run_id"].max()
    ResultStore(tmp_path / "store").write_table("kernels", pd.concat([frame, bad]))
    render_site(tmp_path / "store", tmp_path / "site", workers=1)
    page = (tmp_path / "site" / "kernels.html").read_text()
    assert "Roofs measured on" in page and "3,000 GB/s" in page and "900 TFLOP/s (bfloat16 matmul)" in page
    assert "0.0400" in page and ">0.0<" not in page
    assert "of memory (copy GB/s)" in page and "of compute (bfloat16 TFLOP/s)" in page
    assert "shape 7x7 &lt;refused &amp; named&gt;" in page  # the reason, escaped


def test_history_figure_keeps_long_legends_and_labels_its_axes(tmp_path):
    label = "triton 4096x4096x4096 bfloat16 @ NVIDIA H100 80GB HBM3 (a long device name)"
    series = {label: [("2025-01-01 00:00 abc1234", 1.0, False), ("2025-01-02 00:00 abc1234", 1.3, True)]}
    path = tmp_path / "h.svg"
    assert kernel_figures.history_svg(series, "matmul_fp8", path)
    svg = path.read_text()
    assert label in svg and kernel_figures.RUN_AXIS in svg and "median time (ms)" in svg
    assert "2025-01-02 00:00 abc1234" in svg
    assert not kernel_figures.history_svg({}, "x", tmp_path / "empty.svg")


def test_runs_of_one_day_and_commit_are_numbered_not_hashed():
    """Two runs in the same minute at one commit read as "#1" and "#2", in start order."""
    frame = _two_runs_one_commit()
    frame["git_commit"] = "a1b2c3d4e5f6"
    frame["timestamp"] = "2026-12-04T10:15:00"
    (group,) = [g for g in kernels.build_kernel_groups(frame) if g.kernel == "quantize_mxfp4"]
    for points in group.history.values():
        assert [p[0] for p in points] == ["2026-12-04 a1b2c3d #1", "2026-12-04 a1b2c3d #2"]


def _text_boxes(svg: str) -> tuple[tuple[float, float, float, float], list[tuple[str, list]]]:
    """The view box and, per <text>, the corners of a box estimated from its anchor point,
    rotation, font size and length (half an em per character, the font's height above the baseline)."""
    import math
    import re
    import xml.etree.ElementTree as ET

    root = ET.fromstring(svg)
    view = tuple(float(v) for v in root.attrib["viewBox"].split())
    out = []
    for el in root.iter("{http://www.w3.org/2000/svg}text"):
        style = el.attrib.get("style", "")
        size = float(re.search(r"font-size: ([0-9.]+)px", style).group(1))
        anchor = (re.search(r"text-anchor: (\w+)", style) or [None, "start"])[1]
        transform = el.attrib.get("transform", "")
        shift = re.search(r"translate\(([-0-9.e]+) ([-0-9.e]+)\)", transform)
        x, y = (float(shift.group(1)), float(shift.group(2))) if shift else (0.0, 0.0)
        x += float(el.attrib.get("x", 0))
        y += float(el.attrib.get("y", 0))
        turn = re.search(r"rotate\(([-0-9.e]+)", transform)
        angle = math.radians(float(turn.group(1)) if turn else 0.0)
        width = 0.5 * size * len(el.text or "")
        start = {"start": 0.0, "middle": -width / 2, "end": -width}[anchor]
        ux, uy = math.cos(angle), math.sin(angle)  # along the text (SVG: y grows downwards)
        vx, vy = math.sin(angle), -math.cos(angle)  # up from the baseline
        corners = [(x + (start + a) * ux + h * vx, y + (start + a) * uy + h * vy)
                   for a in (0.0, width) for h in (0.0, 0.8 * size)]
        out.append((el.text or "", corners))
    return view, out


def test_history_figure_text_lies_inside_its_view_box_and_the_legend_below_the_axis_title(tmp_path):
    runs = ["2026-12-04 a1b2c3d #1", "2026-12-04 a1b2c3d #2", "2026-12-05 ffff000 #1"]
    series = {f"{impl} 4096x4096x4096 bfloat16 @ NVIDIA H100 80GB HBM3": [(r, t, False) for r, t in zip(runs, times, strict=True)]
              for impl, times in (("triton", (1.0, 1.1, 1.0)), ("reference", (2.0, 2.1, 2.0)), ("torchao", (1.2, 1.2, 1.3)))}
    path = tmp_path / "h.svg"
    assert kernel_figures.history_svg(series, "matmul_fp8", path)
    (x0, y0, width, height), boxes = _text_boxes(path.read_text())
    texts = {t for t, _ in boxes}
    assert set(runs) <= texts and set(series) <= texts and kernel_figures.RUN_AXIS in texts
    for text, corners in boxes:
        for cx, cy in corners:
            assert x0 <= cx <= x0 + width and y0 <= cy <= y0 + height, (text, cx, cy, width, height)
    axis_title = next(c for t, c in boxes if t == kernel_figures.RUN_AXIS)
    legend_top = min(cy for t, c in boxes if t in series for _, cy in c)
    ticks_bottom = max(cy for t, c in boxes if t in runs for _, cy in c)
    assert legend_top > max(cy for _, cy in axis_title) and legend_top > ticks_bottom
