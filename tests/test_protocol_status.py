"""Every comparison at the baseline's optimum: each board says how every row's hyperparameters were
chosen, flags a selected value at the edge of its grid, warns above the table (and marks its gaps)
where the baseline ran off its tuned optimum, and shows the trials as tuned-value curves.

Stores are written in the runner's row shape (suite/app/runner.py identity_columns): trial cells
(stage "trial", one per tried setting and seed, scored on the held-out "val" split, the values they
set in ``tuned``), tuned cells (stage "tuned", the selected values in ``tuned``) and default cells.
The flags are checked against an enumeration of our own: the smallest and largest value each search
actually tried, read back from the stored ``tuned`` JSON.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest

import suite.results
from benchmarks import synthetic_store as synthetic
from suite.app.cli import main
from suite.reports import figures, leaderboard
from suite.reports.board import PROTOCOL_LEGEND, PROTOCOL_MARK, Board
from suite.reports.site import render_site
from suite.results.store import ResultStore

LRS = ("1e-4", "3e-4", "1e-3")
HOME = "/home/alice"


def _cell(method: str, sub: str, seed: int, variant: str, score: float, key: tuple, **identity) -> list[dict]:
    """One cell's rows as the runner writes them, every score set to ``score``."""
    rows, _ = synthetic.make_cell(method, sub, seed, variant=variant, with_predictions=False)
    cid = synthetic.cell_id_for(variant, sub, seed, *key)
    out = []
    for r in rows:
        r = dict(r, cell_id=cid, **identity)
        if r["split"] != "cost":
            r["value"] = score
            if identity.get("stage") == "trial":
                r["split"] = "val"  # trials score a split held out of the training data
        out.append(r)
    return out


def write_search(store: ResultStore, method: str, sub: str, curve: dict[str, float], *, trial_seeds=(0,),
                 seeds=(0, 1, 2), default: bool = True, selected: str | None = None) -> str:
    """A method searched over lr on one task: its trials (``curve``: value -> held-out score, each
    value run with every trial seed), its default cells and its tuned cells at the best value."""
    sid = f"{method}-{sub}-search"
    for i, (value, score) in enumerate(curve.items()):
        for seed in trial_seeds:
            store.write_cell(_cell(method, sub, seed, method, score + 0.01 * seed, ("trial", sid, i), stage="trial",
                                   search_id=sid, trial=i, tuned=json.dumps({"lr": value})))
    best = selected or max(curve, key=curve.get)
    for seed in seeds:
        store.write_cell(_cell(method, sub, seed, f"{method} (tuned)", curve[best] + 0.002 * seed, ("tuned", sid),
                               stage="tuned", search_id=sid, trial=-1, tuned=json.dumps({"lr": best})))
        if default:
            store.write_cell(_cell(method, sub, seed, method, curve[best] - 0.05 + 0.002 * seed, ("default",),
                                   stage="", search_id="", trial=-1, tuned=""))
    return sid


def write_defaults(store: ResultStore, method: str, sub: str, score: float, seeds=(0, 1, 2)) -> None:
    for seed in seeds:
        store.write_cell(_cell(method, sub, seed, method, score + 0.002 * seed, ("default",), stage="",
                               search_id="", trial=-1, tuned=""))


def edges_from_store(root: Path) -> dict[str, set[str]]:
    """Our own enumeration: per tuned row, the searched names whose selected value is the smallest or
    the largest value its search tried (read from the stored ``tuned`` JSON of every trial cell)."""
    frame = suite.results.load(root)
    cells = frame.drop_duplicates("cell_id")
    trials, tuned = cells[cells["stage"] == "trial"], cells[cells["stage"] == "tuned"]
    out: dict[str, set[str]] = {}
    for sid, variant, text in tuned[["search_id", "variant", "tuned"]].drop_duplicates().itertuples(index=False):
        chosen = json.loads(text)
        tried = [json.loads(t) for t in trials.loc[trials["search_id"] == sid, "tuned"]]
        for name, value in chosen.items():
            values = [float(t[name]) for t in tried]
            if float(value) in (min(values), max(values)):
                out.setdefault(variant, set()).add(name)
            else:
                out.setdefault(variant, set())
    return out


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#39;", "'").replace("&amp;", "&")


def _compare(root: Path, capsys, *extra: str) -> str:
    capsys.readouterr()
    assert main(["compare", str(root), "--width", "140", *extra]) == 0
    return capsys.readouterr().out


def _site_edges(index: str) -> set[str]:
    """The variants the site's protocol table flags at a grid edge."""
    table = index[index.index('<table class="protocol">'):]
    table = table[:table.index("</table>")]
    return set(re.findall(r'<tr data-variant="([^"]+)" class="edge">', table))


def _compare_edges(out: str) -> set[str]:
    """The rows compare lists with a 'grid edge:' line under them."""
    flagged, current = set(), None
    for line in out.splitlines():
        m = re.match(r"^    (\S.*?)(?: \(baseline\))?: (tuned|defaults)", line)
        if m:
            current = m.group(1)
        elif line.strip().startswith("grid edge:") and current:
            flagged.add(current)
    return flagged


@pytest.fixture(scope="module")
def edge_store(tmp_path_factory) -> Path:
    """The baseline lora tuned, but its best lr is the largest tried; pissa's optimum inside its grid."""
    root = tmp_path_factory.mktemp("edge") / "store"
    store = ResultStore(root)
    for sub in ("sst2", "rte"):
        write_search(store, "lora", sub, {"1e-4": 0.70, "3e-4": 0.75, "1e-3": 0.80}, trial_seeds=(0, 1, 2))
        write_search(store, "pissa", sub, {"1e-4": 0.72, "3e-4": 0.84, "1e-3": 0.74}, trial_seeds=(0, 1, 2))
    return root


@pytest.fixture(scope="module")
def untuned_store(tmp_path_factory) -> Path:
    """The baseline lora at its defaults beside a tuned pissa (interior optimum): the worst case."""
    root = tmp_path_factory.mktemp("untuned") / "store"
    store = ResultStore(root)
    write_defaults(store, "lora", "sst2", 0.78)
    write_search(store, "pissa", "sst2", {"1e-4": 0.72, "3e-4": 0.84, "1e-3": 0.74}, default=False)
    return root


@pytest.fixture(scope="module")
def interior_store(tmp_path_factory) -> Path:
    """Both methods tuned with their optimum inside the grid."""
    root = tmp_path_factory.mktemp("interior") / "store"
    store = ResultStore(root)
    write_search(store, "lora", "sst2", {"1e-4": 0.70, "3e-4": 0.81, "1e-3": 0.76})
    write_search(store, "pissa", "sst2", {"1e-4": 0.72, "3e-4": 0.84, "1e-3": 0.74})
    return root


def _board(root: Path, baseline: str) -> Board:
    store = ResultStore(root)
    (board,) = leaderboard.build_boards(store.load(), baseline)
    return board


def _board_csv(site: Path):
    import pandas as pd

    (path,) = (site / "data").glob("board-*.csv")
    return pd.read_csv(path)


def test_edge_of_the_grid_is_flagged_on_the_site_and_in_compare(edge_store, tmp_path, capsys):
    expected = edges_from_store(edge_store)
    flagged = {v for v, names in expected.items() if names}
    assert flagged == {"lora (tuned)"}  # the enumeration itself: lora's best lr is the largest tried
    board = _board(edge_store, "lora (tuned)")
    assert {v for v, s in board.protocol.statuses.items() if s.edges} == flagged
    assert board.protocol.off_optimum == "edge" and board.protocol.mark == PROTOCOL_MARK

    render_site(edge_store, tmp_path / "site", baseline="lora (tuned)", workers=1)
    index = (tmp_path / "site" / "index.html").read_text()
    assert _site_edges(index) == flagged
    text = _text(index)
    assert "Baseline tuned to the edge of its grid." in text
    assert "lr=1e-3 is the largest of the 3 values tried on sst2: widen the grid above it" in text
    assert text.index("Baseline tuned to the edge") < text.index("Δ vs lora (tuned)†")  # above the table
    assert PROTOCOL_LEGEND in text
    csv = _board_csv(tmp_path / "site")  # the exported board says it too, per row
    edge_rows = csv[csv["grid_edge"].fillna("") != ""]
    assert set(edge_rows["variant"]) == flagged and set(csv["baseline_off_optimum"]) == {"edge"}
    assert "widen the grid above it" in edge_rows["grid_edge"].iloc[0]
    assert set(csv.loc[csv["variant"] == "lora (tuned)", "hyperparameters"]) == {"tuned"}

    out = _compare(edge_store, capsys, "--baseline", "lora (tuned)")
    assert _compare_edges(out) == flagged
    assert "warning: The baseline lora (tuned) was tuned, but its selected value lies at the edge" in " ".join(
        line.strip() for line in out.splitlines())
    assert "Δ vs lora (tuned)† (Holm" in out and f"† {PROTOCOL_LEGEND}" in out


def test_an_untuned_baseline_is_said_above_the_table_and_its_gaps_marked(untuned_store, tmp_path, capsys):
    board = _board(untuned_store, "lora")
    assert board.protocol.off_optimum == "untuned" and board.protocol.worst
    assert not board.protocol.statuses["lora"].tuned and board.protocol.statuses["pissa (tuned)"].tuned

    render_site(untuned_store, tmp_path / "site", baseline="lora", workers=1)
    index = _text((tmp_path / "site" / "index.html").read_text())
    warning = index.index("Untuned baseline beside tuned methods.")
    assert "The baseline lora ran at its defaults, untuned, while 1 row here was tuned (pissa (tuned))" in index
    assert warning < index.index("Δ vs lora†") < index.index("† " + PROTOCOL_LEGEND)
    task = next((tmp_path / "site").glob("task-*sst2*.html")).read_text()
    assert "Untuned baseline beside tuned methods." in _text(task) and "Δ vs lora†" in _text(task)
    csv = _board_csv(tmp_path / "site")
    how = csv.groupby("variant")["hyperparameters"].agg(set).to_dict()
    assert how["lora"] == {"defaults"} and how["pissa (tuned)"] == {"tuned"}
    assert set(csv["baseline_off_optimum"]) == {"untuned"}

    out = _compare(untuned_store, capsys, "--baseline", "lora")
    lines = out.splitlines()
    first_table = next(i for i, line in enumerate(lines) if line.strip().startswith("method"))
    said = next(i for i, line in enumerate(lines) if "WARNING: The baseline lora ran at its defaults" in line)
    assert said < first_table
    assert "Δ vs lora† (Holm" in out
    assert "lora (baseline): defaults: not tuned" in out and "pissa (tuned): tuned: 3 trials" in out


def test_an_interior_optimum_is_not_flagged(interior_store, tmp_path, capsys):
    assert all(not names for names in edges_from_store(interior_store).values())
    board = _board(interior_store, "lora (tuned)")
    assert board.protocol.off_optimum == "" and board.protocol.warning == "" and board.protocol.mark == ""
    assert all(s.tuned and s.checked and not s.edges for v, s in board.protocol.statuses.items() if "tuned" in v)

    render_site(interior_store, tmp_path / "site", baseline="lora (tuned)", workers=1)
    index = (tmp_path / "site" / "index.html").read_text()
    assert _site_edges(index) == set() and "grid edge" not in _text(index).replace("(grid edge)", "")
    assert "†" not in index and "Untuned baseline" not in index and "inside the grid" in index

    out = _compare(interior_store, capsys, "--baseline", "lora (tuned)")
    assert _compare_edges(out) == set() and "†" not in out and "warning" not in out.lower()


def test_a_board_without_any_search_says_every_row_ran_at_defaults(tmp_path, capsys):
    root = tmp_path / "store"
    store = ResultStore(root)
    write_defaults(store, "lora", "sst2", 0.8)
    write_defaults(store, "pissa", "sst2", 0.82)
    board = _board(root, "lora")
    assert board.protocol.off_optimum == "untuned" and not board.protocol.worst and not board.protocol.searched
    out = _compare(root, capsys)
    assert "warning: The baseline lora ran at its defaults, untuned, as did every method here" in out
    assert "hyperparameters: no method here was tuned" in out


def test_curve_figure_draws_one_line_per_method_with_the_selected_point(edge_store, tmp_path, monkeypatch):
    drawn = []
    original = figures.tuning_curves

    def record(curves, ylabel, scale, path):
        drawn.append((list(curves), path))
        return original(curves, ylabel, scale, path)

    monkeypatch.setattr(figures, "tuning_curves", record)
    render_site(edge_store, tmp_path / "site", baseline="lora (tuned)", workers=1)
    assert len(drawn) == 2  # one figure per task of the board with trials: sst2 and rte
    frame = suite.results.load(edge_store)
    trials = frame[(frame["stage"] == "trial") & frame["is_primary"].astype(bool)]
    for curves, path in drawn:
        assert sorted(c.label for c in curves) == ["lora", "pissa"]  # one line per method
        for c in curves:
            assert c.name == "lr" and c.log and c.numeric and not c.projected
            assert [p.x for p in c.points] == sorted(float(v) for v in LRS)
            assert sum(p.selected for p in c.points) == 1
            mine = trials[(trials["method"] == c.label) & (trials["subtask"] == c.subtask)]
            for p in c.points:  # seed spread: each value ran with 3 seeds, the bars their t-interval
                values = mine.loc[mine["tuned"].map(lambda t: float(json.loads(t)["lr"])) == p.x, "value"]
                assert p.n == 3 and p.mean == pytest.approx(values.mean()) and p.low < p.mean < p.high
            best = max(c.points, key=lambda p: p.mean)
            assert best.selected
        svg = path.read_text()
        assert "lora" in svg and "pissa" in svg and "selected" in svg and "lr (log scale)" in svg
    index = (tmp_path / "site" / "index.html").read_text()
    for _, path in drawn:
        assert f'src="figures/{path.name}"' in index
        page = next(p for p in (tmp_path / "site").glob("task-*.html") if f"figures/{path.name}" in p.read_text())
        assert "Tuned values" in page.read_text()
        assert "(val)" not in _text(page.read_text())  # trial scores never join a row's other metrics


def test_compare_prints_each_tried_value_with_its_score(edge_store, capsys):
    out = _compare(edge_store, capsys, "--baseline", "lora (tuned)")
    frame = suite.results.load(edge_store)
    trials = frame[(frame["stage"] == "trial") & frame["is_primary"].astype(bool)]
    assert "trials of lora (accuracy on held-out training data):" in out
    block = out[out.index("trials of pissa"):]
    block = block[:block.index("\n\n")]
    for sub in ("sst2", "rte"):
        for value in LRS:
            mine = trials[(trials["method"] == "pissa") & (trials["subtask"] == sub)
                          & (trials["tuned"] == json.dumps({"lr": value}))]
            line = next(line for line in block.splitlines() if re.search(rf"\b{sub}\s+lr={value}\s", line))
            assert f"{mine['value'].mean() * 100:.2f} ±" in line and re.search(r"\s3(\s|$)", line)
            assert ("← selected" in line) == (value == "3e-4")


def test_several_searched_values_draw_slices_at_the_selected_setting(tmp_path):
    root = tmp_path / "store"
    store = ResultStore(root)
    sid, scores = "lora-grid", {}
    for i, (lr, r) in enumerate((lr, r) for lr in LRS for r in (4, 8, 12)):
        scores[(lr, r)] = 0.7 + 0.05 * LRS.index(lr) * (LRS.index(lr) < 2) + 0.01 * r
        store.write_cell(_cell("lora", "sst2", 0, "lora", scores[(lr, r)], ("trial", sid, i), stage="trial",
                               search_id=sid, trial=i, tuned=json.dumps({"lr": lr, "r": r})))
    best = max(scores, key=scores.get)
    assert best == ("3e-4", 12)
    for seed in range(3):
        store.write_cell(_cell("lora", "sst2", seed, "lora (tuned)", 0.86, ("tuned", sid), stage="tuned",
                               search_id=sid, trial=-1, tuned=json.dumps({"lr": best[0], "r": best[1]})))
    board = _board(root, "lora (tuned)")
    (search,) = board.searches
    by_name = {c.name: c for c in search.curves}
    assert by_name["lr"].held == {"r": "12"} and [p.x for p in by_name["lr"].points] == [1e-4, 3e-4, 1e-3]
    assert by_name["r"].held == {"lr": "3e-4"} and [p.x for p in by_name["r"].points] == [4, 8, 12]
    assert by_name["lr"].log and not by_name["r"].log  # log-spaced learning rates, evenly spaced ranks
    assert [p.selected for p in by_name["r"].points] == [False, False, True]
    assert [e.name for e in search.edges] == ["r"]  # r=12 is the largest tried; lr=3e-4 is inside
    assert board.protocol.off_optimum == "edge"


def test_store_text_is_cleaned_and_paths_scrubbed(tmp_path, capsys):
    root = tmp_path / "store"
    store = ResultStore(root)
    sid = "evil"
    for i, value in enumerate((f"{HOME}/data/a.txt", f"{HOME}/data/b.txt")):
        store.write_cell(_cell("lora", "sst2", 0, "lora", 0.7 + i / 10, ("trial", sid, i), stage="trial",
                               search_id=sid, trial=i, tuned=json.dumps({"x\x1b[31m": value})))
    for seed in range(2):
        store.write_cell(_cell("lora", "sst2", seed, "lora (tuned)", 0.8, ("tuned", sid), stage="tuned",
                               search_id=sid, trial=-1, tuned=json.dumps({"x\x1b[31m": f"{HOME}/data/b.txt"})))
    out = _compare(root, capsys, "--baseline", "lora (tuned)")
    assert HOME not in out and "\x1b" not in out and "<path>/b.txt" in out
    render_site(root, tmp_path / "site", baseline="lora (tuned)", workers=1)
    for page in (tmp_path / "site").glob("*.html"):
        assert HOME not in page.read_text()
    (figure,) = (tmp_path / "site" / "figures").glob("tuning-*.svg")
    ElementTree.parse(figure)  # no control character left to break the XML
    assert HOME not in figure.read_text()


def test_a_real_tiny_sweep_flags_its_two_value_grid(tmp_path, capsys):
    """End to end through the runner: two values always put the selected one at an edge."""
    store = tmp_path / "s"
    assert main(["run", "--methods", "lora", "--tasks", "smoke", "--tune", "lr=1e-4,1e-2", "--max-steps", "2",
                 "--limit", "32", "--no-progress", "--store", str(store)]) == 0
    expected = edges_from_store(store)
    assert expected == {"lora (tuned)": {"lr"}}
    out = _compare(store, capsys, "--baseline", "lora")
    assert _compare_edges(out) == {"lora (tuned)"}
    assert "WARNING: The baseline lora ran at its defaults" in out and "Δ vs lora†" in out
    assert "trials of lora" in out and out.count("← selected") == 1


def test_methods_at_the_baselines_tuned_values_are_their_own_rows(tmp_path, capsys):
    """--tune-baseline: only lora is searched; pissa runs at lora's choice (its tuned record names
    lora, its search id is lora's) and, with --tune-each-too, at its own tuned values as well."""
    root = tmp_path / "store"
    store = ResultStore(root)
    sid = write_search(store, "lora", "sst2", {"1e-4": 0.70, "3e-4": 0.81, "1e-3": 0.76}, default=False)
    for seed in range(3):
        store.write_cell(_cell("pissa", "sst2", seed, "pissa (tuned)", 0.83, ("heir", sid), stage="tuned",
                               search_id=sid, trial=-1, tuned=json.dumps({"lr": "3e-4", "inherited_from": "lora"})))
    write_search(store, "pissa", "sst2", {"1e-4": 0.72, "3e-4": 0.80, "1e-3": 0.86}, default=False)
    board = _board(root, None)  # the default baseline: lora's tuned row, as no default cell ran
    assert board.baseline == "lora (tuned)"
    heir = "pissa (at lora's tuned lr)"
    assert {r.variant for r in board.rows} == {"lora (tuned)", "pissa (tuned)", heir}
    status = board.protocol.statuses[heir]
    assert status.inherited_from == "lora" and not status.tuned and status.selected == ["lr=3e-4"]
    assert "at lora's tuned values (lr=3e-4): not searched itself" == status.summary
    assert sorted(t.tuned for t in board.tuning) == ["lora (tuned)", "pissa (tuned)"]  # the heir spent no trials
    assert board.protocol.off_optimum == "" and board.protocol.warning == ""  # lora's 3e-4 is inside its grid
    assert [e.text for e in board.protocol.statuses["pissa (tuned)"].edges] == [
        "lr=1e-3 is the largest of the 3 values tried on sst2: widen the grid above it"]
    out = _compare(root, capsys)
    assert f"{heir}: at lora's tuned values (lr=3e-4): not searched itself" in out and "†" not in out
