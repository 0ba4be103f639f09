"""From a long-form result frame to leaderboards: one shared model for the site and `suite compare`.

A *board* is one task family on one model: rows are method variants, columns are the
family's tasks (each scored by its primary metric, or by a metric the user names). Every
entry carries the seed statistics, the test against the baseline and the cells behind it,
so the site and the terminal table cannot disagree: both render this model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from suite import stats
from suite.errors import UserError
from suite.reports.format import common_scale
from suite.results.store import CELLS, ResultStore

COST_METRICS = ("trainable_params", "peak_memory_mb", "train_time_s", "train_steps", "train_tokens_per_s")
# Cells pair with the baseline's on these identity columns (where the store has them) and the seed.
PAIRING_COLUMNS = ("data_source", "recipe")


@dataclass
class Column:
    key: tuple[str, str, str]  # (subtask, split, metric)
    label: str
    metric: str
    higher_is_better: bool


@dataclass
class Gap:
    """A method's score minus the baseline's, paired cell by cell: the same subtask, seed, data
    and recipe (so the same model, tokens and data order), averaged over the pairs.

    A seed fixes initialisation and data order for both methods, so each pair's difference
    is free of that seed's own luck, and the spread of the differences is the seed noise of
    the gap. ``low``/``high``: the 95% Student-t interval of the mean gap over the pairs (nan
    with one pair); ``distinguishable``: the interval excludes zero, i.e. the gap is larger
    than the seeds make it vary (None with one pair: one run says nothing about noise).
    ``noise``: the baseline's own seed-to-seed standard deviation, for scale; ``relative``:
    the mean gap over the baseline's mean magnitude.
    """

    mean: float
    low: float
    high: float
    n: int
    noise: float
    relative: float
    distinguishable: bool | None

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass
class Entry:
    """One method on one task: seed statistics, test against the baseline, its cells."""

    summary: stats.Summary
    cell_ids: list[str]
    seeds: list
    values: list[float] = field(default_factory=list)
    n_failed: int = 0
    costs: dict[str, float] = field(default_factory=dict)
    test: stats.TestResult | None = None
    p_adjusted: float = math.nan
    significant: bool = False
    better: bool | None = None  # direction of a significant difference (vs the baseline)
    best: bool = False
    gap: Gap | None = None  # minus the baseline, paired by seed, data and recipe
    keys: list = field(default_factory=list)  # each cell's pairing key (seed, data, recipe)

    @property
    def step_time_s(self) -> float:
        """Mean training time per optimizer step (nan where the costs lack it)."""
        steps = self.costs.get("train_steps", math.nan)
        return self.costs.get("train_time_s", math.nan) / steps if steps else math.nan


@dataclass
class Row:
    variant: str
    method: str
    kind: str
    entries: dict[tuple[str, str, str], Entry] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    aggregates: dict[str, float] = field(default_factory=dict)  # AggregateColumn.name -> value
    avg_rank: float = math.nan


@dataclass
class AggregateColumn:
    """A benchmark-level score of the board's family (its ``aggregate``), shown beside the tasks.

    ``members`` are the subtasks it covers on this board, ``expected`` how many the full
    benchmark has; ``label`` says so when they differ, so a partial score is never read as
    the benchmark's. ``scale`` is the display scale of its members' metrics, and its
    direction theirs (higher is better unless every member's metric is lower-is-better).
    """

    name: str
    members: tuple[str, ...]
    expected: int
    scale: float = 1.0
    higher_is_better: bool = True

    @property
    def complete(self) -> bool:
        return len(self.members) >= self.expected

    @property
    def label(self) -> str:
        return stats.aggregate_label(self)


@dataclass
class Board:
    family: str
    model: str
    columns: list[Column]
    rows: list[Row]
    baseline: str | None
    aggregates: list[AggregateColumn] = field(default_factory=list)  # headline first
    alpha: float = 0.05
    synthetic: bool = False

    @property
    def headline(self) -> AggregateColumn | None:
        """The family's headline aggregate (the first it returns), if the board has one."""
        return self.aggregates[0] if self.aggregates else None

    @property
    def aggregate_label(self) -> str:
        return self.headline.label if self.headline else ""

    @property
    def slug(self) -> str:
        return slugify(f"{self.family}-{self.model}")

    @property
    def gap_columns(self) -> list[Column]:
        """Columns judged by the gap to the baseline over seeds: lower-is-better scores (losses,
        errors, perplexities), where the papers report a method as its gap to the baseline."""
        if self.baseline is None:
            return []
        return [c for c in self.columns if not c.higher_is_better
                and any(r.entries.get(c.key) is not None and r.entries[c.key].gap is not None for r in self.rows)]


def slugify(text: str) -> str:
    """A file-name-safe, collision-resistant name for user-controlled text."""
    import hashlib

    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in str(text))[:60].strip("-.")
    return f"{safe or 'x'}-{hashlib.sha1(str(text).encode()).hexdigest()[:8]}"


PredictionLoader = Callable[[list[str]], pd.DataFrame]


@dataclass
class Skipped:
    """Store files that could not be read and were left out, so the site can name them."""

    root: Path
    paths: list[Path] = field(default_factory=list)

    def loader(self, store: ResultStore) -> PredictionLoader:
        """``store.load_predictions``, but recording the prediction files it had to skip."""

        def load(cell_ids: list[str]) -> pd.DataFrame:
            return store.load_predictions(cell_ids, skipped=self.paths)

        return load

    def as_list(self) -> list[str]:
        out = []
        for p in dict.fromkeys(self.paths):
            try:
                out.append(str(Path(p).relative_to(self.root)))
            except ValueError:
                out.append(str(p))
        return out


def load_store(store_path: str | Path) -> tuple[ResultStore, pd.DataFrame, pd.DataFrame]:
    """Read cells and kernel rows; a missing or empty store is a UserError (corrupt files are skipped)."""
    store, cells, kern, _ = load_store_report(store_path)
    return store, cells, kern


def load_store_report(store_path: str | Path) -> tuple[ResultStore, pd.DataFrame, pd.DataFrame, Skipped]:
    """``load_store`` plus the unreadable files it skipped (each also named on stderr)."""
    root = Path(store_path)
    if not root.exists():
        raise UserError(f"no result store at '{root}': run 'suite run ... --store {root}' first")
    if not root.is_dir():
        raise UserError(f"'{root}' is a file, not a result store folder")
    store = ResultStore(root)
    skipped = Skipped(root)
    cells = _load_table(store, CELLS, skipped)
    kern = _load_table(store, "kernels", skipped)
    if cells.empty and kern.empty:
        raise UserError(f"the result store at '{root}' holds no results: run "
                        f"'suite run --methods ... --tasks ... --store {root}' first")
    return store, cells, kern, skipped


def _load_table(store: ResultStore, table: str, skipped: Skipped) -> pd.DataFrame:
    """``ResultStore.load``, keeping the names of unreadable files for the overview page."""
    return store.load(table, skipped=skipped.paths)


# -- building ------------------------------------------------------------------------------


def _bool(series: pd.Series) -> pd.Series:
    return series.map(lambda v: bool(v) if v is not None and v == v else False)


def select_tasks(frame: pd.DataFrame, tasks: Iterable[str] | None) -> pd.DataFrame:
    """Keep rows of the named tasks: a family, "family:subtask" or a bare subtask."""
    if not tasks:
        return frame
    wanted = [t.strip() for t in tasks if t and t.strip()]
    mask = pd.Series(False, index=frame.index)
    for t in wanted:
        if ":" in t:
            fam, sub = t.split(":", 1)
            mask |= (frame["task"] == fam) & (frame["subtask"] == sub)
        else:
            mask |= (frame["task"] == t) | (frame["subtask"] == t)
    if not mask.any():
        known = sorted(set(frame["task"].dropna()) | {f"{a}:{b}" for a, b in
                       frame[["task", "subtask"]].dropna().itertuples(index=False) if b})
        raise UserError(f"no results for tasks {', '.join(wanted)} in this store; "
                        f"it has: {', '.join(known) or 'none'}")
    return frame[mask]


def ok_and_failed(frame: pd.DataFrame, where: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a store's rows; an empty store or one with only failures is a UserError."""
    if frame.empty or "status" not in frame:
        raise UserError(f"the result store at '{where}' holds no results: run "
                        f"'suite run --methods ... --tasks ... --store {where}' first")
    ok = frame[frame["status"] == "ok"]
    failed = frame[frame["status"] != "ok"]
    if ok.empty:
        n = failed["cell_id"].nunique()
        errors = failed.drop_duplicates("cell_id")["error"].fillna("").astype(str)
        common = errors.value_counts().index[0] if len(errors) else ""
        raise UserError(f"all {n} cells in '{where}' failed, nothing to rank; most common "
                        f"error: {common[:300]!r}. Fix the cause and re-run the failed cells "
                        f"('suite run ... --store {where}' retries them)")
    return ok, failed


def build_boards(
    frame: pd.DataFrame,
    baseline: str | None = None,
    predictions: PredictionLoader | None = None,
    metric: str | None = None,
    alpha: float = 0.05,
    where: str = "the store",
) -> list[Board]:
    """Leaderboards (one per family x model) from a long-form result frame."""
    ok, failed = ok_and_failed(frame, where)
    ok = ok.copy()
    ok["subtask"] = ok["subtask"].fillna("").astype(str)
    failed = failed.copy()
    failed["subtask"] = failed["subtask"].fillna("").astype(str)
    cost_rows = ok[ok["split"] == "cost"]
    score_rows = ok[ok["split"] != "cost"]
    if metric:
        want = str(metric).lower()
        chosen = score_rows[score_rows["metric"].astype(str).str.lower() == want]
        if chosen.empty:
            known = sorted(score_rows["metric"].dropna().unique())
            raise UserError(f"no metric '{metric}' in the selected results; they have: "
                            f"{', '.join(known)}")
    else:
        chosen = score_rows[_bool(score_rows["is_primary"])]
        if chosen.empty:
            raise UserError("no result in the store marks a primary metric; name one with "
                            "--metric (e.g. --metric accuracy)")
    costs = _cost_table(cost_rows)
    # Aggregates always come from the primary metrics, whatever metric the columns show: the
    # family defines its benchmark scores over its tasks' primary scores.
    if metric is None:
        primary = chosen
    elif "is_primary" in score_rows:
        primary = score_rows[_bool(score_rows["is_primary"])]
    else:
        primary = score_rows.iloc[0:0]
    scores = _primary_scores(primary)
    boards = []
    for (family, model), part in chosen.groupby(["task", "model"], sort=True, dropna=False):
        boards.append(_build_board(str(family), str(model), part, scores, costs,
                                   failed, baseline, predictions, alpha))
    return boards


@dataclass
class PrimaryScores:
    """Seed means of the primary metric per subtask, and the primary metrics' names and directions."""

    means: dict[tuple[str, str, str], dict[str, float]]  # (family, model, variant) -> subtask -> mean
    metrics: dict[tuple[str, str, str], list[str]]  # (family, model, subtask) -> primary metric names
    lower_is_better: set[tuple[str, str, str]]  # (family, model, subtask) whose primary metric falls


def _primary_scores(primary: pd.DataFrame) -> PrimaryScores:
    """Per subtask, the mean over seeds of each seed's primary score: what ``aggregate`` takes."""
    out = PrimaryScores({}, {}, set())
    if primary.empty:
        return out
    frame = primary.assign(task=primary["task"].astype(str), model=primary["model"].astype(str),
                           variant=primary["variant"].astype(str),
                           subtask=primary["subtask"].fillna("").astype(str))
    keys = ["task", "model", "variant", "subtask"]
    per_seed = frame.groupby([*keys, "seed"], dropna=False)["value"].mean()
    for (family, model, variant, sub), value in per_seed.groupby(level=keys, dropna=False).mean().items():
        out.means.setdefault((family, model, variant), {})[sub] = float(value)
    names = frame.groupby(["task", "model", "subtask"], dropna=False)["metric"].unique()
    for key, metrics in names.items():
        out.metrics[key] = [str(m) for m in metrics]
    if "higher_is_better" in frame:
        falls = frame[frame["higher_is_better"].map(lambda v: v is not None and v == v and not bool(v))]
        out.lower_is_better = set(falls[["task", "model", "subtask"]].itertuples(index=False, name=None))
    return out


def _cost_table(cost_rows: pd.DataFrame) -> pd.DataFrame:
    if cost_rows.empty:
        return pd.DataFrame()
    wide = cost_rows.pivot_table(index="cell_id", columns="metric", values="value", aggfunc="first")
    return wide


def _build_board(family, model, part, scores: PrimaryScores, costs, failed, baseline, predictions,
                 alpha) -> Board:
    # Columns: one per (subtask, split, metric) of the chosen metric.
    keys = part[["subtask", "split", "metric"]].drop_duplicates()
    by_sub: dict[str, list[tuple[str, str, str]]] = {}
    for sub, split, met in keys.itertuples(index=False):
        by_sub.setdefault(sub, []).append((sub, split, met))
    columns = []
    for sub in stats.family_subtask_order(family, by_sub):
        ks = sorted(by_sub[sub])
        for k in ks:
            label = sub or family
            if len(ks) > 1:
                label += f" ({k[1]}{', ' + k[2] if len({x[2] for x in ks}) > 1 else ''})"
            hib = part.loc[(part["subtask"] == k[0]) & (part["split"] == k[1]) & (part["metric"] == k[2]),
                           "higher_is_better"].iloc[0]
            columns.append(Column(k, label, k[2], True if hib is None or hib != hib else bool(hib)))

    fam_failed = failed[(failed["task"] == family) & (failed["model"] == model)]
    failed_count = fam_failed.drop_duplicates("cell_id").groupby(["variant", "subtask"]).size().to_dict()

    rows: dict[str, Row] = {}
    # Plain arrays and one groupby.indices: a pandas sub-frame per group is too slow at 10k cells.
    part = part.sort_values("seed", kind="stable")
    col_cid = part["cell_id"].to_numpy()
    col_seed = part["seed"].to_numpy()
    col_value = part["value"].to_numpy(dtype=float)
    col_method = part["method"].to_numpy()
    col_kind = part["method_kind"].to_numpy()
    pairing = [c for c in PAIRING_COLUMNS if c in part.columns]
    col_key = list(zip(part["seed"].astype(str), *(part[c].astype(str) for c in pairing), strict=True))
    cost_names = [c for c in COST_METRICS if c in costs.columns] if not costs.empty else []
    cost_pos = {cid: i for i, cid in enumerate(costs.index)} if cost_names else {}
    cost_arr = costs[cost_names].to_numpy(dtype=float) if cost_names else None
    groups = part.groupby(["variant", "subtask", "split", "metric"], sort=False).indices
    summaries = stats.summarize_many([col_value[idx] for idx in groups.values()])
    for ((variant, sub, split, met), idx), summ in zip(groups.items(), summaries, strict=True):
        row = rows.get(variant)
        if row is None:
            row = rows[variant] = Row(str(variant), str(col_method[idx[0]]), str(col_kind[idx[0]]))
        ids = col_cid[idx].tolist()
        values = col_value[idx]
        entry = Entry(
            summary=summ,
            cell_ids=ids,
            seeds=col_seed[idx].tolist(),
            values=values.tolist(),
            n_failed=int(failed_count.get((variant, sub), 0)),
            keys=[col_key[i] for i in idx],
        )
        if cost_arr is not None:
            pos = [cost_pos[c] for c in ids if c in cost_pos]
            if pos:
                block = cost_arr[pos]
                entry.costs = {name: _nanmean(block[:, j]) for j, name in enumerate(cost_names)}
        row.entries[(sub, split, met)] = entry
    ordered = sorted(rows.values(), key=lambda r: r.variant)
    for row in ordered:
        _row_costs(row)

    board = Board(family, model, columns, ordered, baseline if baseline in rows else None, alpha=alpha)
    synth = part.get("synthetic_data")
    board.synthetic = bool(synth is not None and _bool(synth).any())
    _mark_best(board)
    if board.baseline is not None:
        _test_against_baseline(board, part, predictions)
        _seed_paired_gaps(board)
    _aggregate(board, scores)
    return board


def _seed_paired_gaps(board: Board) -> None:
    """Every entry's ``Gap`` to the baseline entry of its column, paired by seed, data and recipe."""
    base = next(r for r in board.rows if r.variant == board.baseline)
    for col in board.columns:
        b_entry = base.entries.get(col.key)
        if b_entry is None:
            continue
        by_key = dict(zip(b_entry.keys, b_entry.values, strict=True))
        for row in board.rows:
            entry = row.entries.get(col.key)
            if entry is None or row is base:
                continue
            diffs = [v - by_key[k] for k, v in zip(entry.keys, entry.values, strict=True)
                     if k in by_key and not (math.isnan(v) or math.isnan(by_key[k]))]
            if diffs:
                entry.gap = paired_gap(diffs, b_entry.values)


def paired_gap(diffs: list[float], baseline: list[float], confidence: float = 0.95) -> Gap:
    """The mean of per-pair differences, its Student-t interval and whether that excludes zero."""
    d = np.asarray(diffs, dtype=float)
    base = np.asarray([v for v in baseline if not math.isnan(v)], dtype=float)
    mean = float(d.mean())
    noise = float(base.std(ddof=1)) if base.size > 1 else math.nan
    scale = float(abs(base.mean())) if base.size else math.nan
    relative = mean / scale if scale else math.nan
    if d.size < 2:
        return Gap(mean, math.nan, math.nan, int(d.size), noise, relative, None)
    from scipy import stats as scipy_stats

    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    low, high = mean - half, mean + half
    return Gap(mean, low, high, int(d.size), noise, relative, bool(low > 0 or high < 0))


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


def _row_costs(row: Row) -> None:
    """Row-level cost: median params, the largest peak memory, total train time over tasks."""
    per = [e.costs for e in row.entries.values()]

    def vals(name):
        v = [c[name] for c in per if name in c and not math.isnan(c[name])]
        return v

    if vals("trainable_params"):
        row.costs["trainable_params"] = float(np.median(vals("trainable_params")))
    if vals("peak_memory_mb"):
        row.costs["peak_memory_mb"] = float(max(vals("peak_memory_mb")))
    if vals("train_time_s"):
        row.costs["train_time_s"] = float(sum(vals("train_time_s")))


def _mark_best(board: Board) -> None:
    for col in board.columns:
        means = [(r.entries[col.key].summary.mean, r) for r in board.rows if col.key in r.entries]
        means = [(m, r) for m, r in means if not math.isnan(m)]
        if not means:
            continue
        pick = max if col.higher_is_better else min
        best = pick(m for m, _ in means)
        for m, r in means:
            r.entries[col.key].best = m == best


def _test_against_baseline(board: Board, part, predictions) -> None:
    base = next(r for r in board.rows if r.variant == board.baseline)
    all_ids = [cid for r in board.rows for e in r.entries.values() for cid in e.cell_ids]
    preds = predictions(sorted(set(all_ids))) if predictions else pd.DataFrame()
    matrices = _correct_matrices(preds)
    tests: list[tuple[Entry, float]] = []
    for col in board.columns:
        b_entry = base.entries.get(col.key)
        if b_entry is None:
            continue
        for row in board.rows:
            entry = row.entries.get(col.key)
            if entry is None or row is base:
                continue
            entry.test = _paired_or_seed(entry, b_entry, col, matrices)
            tests.append((entry, entry.test.p_value))
    adjusted = stats.holm_adjust([p for _, p in tests])
    for (entry, _), p_adj in zip(tests, adjusted, strict=True):
        entry.p_adjusted = p_adj
    for col in board.columns:
        b_entry = base.entries.get(col.key)
        if b_entry is None:
            continue
        for row in board.rows:
            entry = row.entries.get(col.key)
            if entry is None or entry.test is None or math.isnan(entry.p_adjusted):
                continue
            diff = entry.summary.mean - b_entry.summary.mean
            better = diff > 0 if col.higher_is_better else diff < 0
            # A mark needs the test and the reported scores to agree on the direction.
            agree = entry.test.delta == 0 or diff == 0 or (
                (entry.test.delta > 0) == (diff > 0) if col.higher_is_better
                else (entry.test.delta > 0) == (diff < 0)
            )
            if entry.p_adjusted < board.alpha and agree and diff != 0:
                entry.significant = True
                entry.better = bool(better)


def _correct_matrices(preds: pd.DataFrame) -> dict[str, pd.Series]:
    """cell_id -> per-example correctness indexed by (split, example_id)."""
    if preds is None or preds.empty or "correct" not in preds:
        return {}
    preds = preds.dropna(subset=["correct"])
    out = {}
    for cid, g in preds.groupby("cell_id", sort=False):
        s = pd.Series(g["correct"].to_numpy(dtype=float),
                      index=pd.MultiIndex.from_arrays([g["split"].astype(str), g["example_id"]]))
        out[cid] = s[~s.index.duplicated()]
    return out


def _paired_or_seed(entry: Entry, base: Entry, col: Column, matrices) -> stats.TestResult:
    """Per-example paired test where every cell of both sides has predictions, else seeds."""
    cells = entry.cell_ids + base.cell_ids
    if matrices and all(c in matrices for c in cells):
        series = [matrices[c] for c in cells]
        # The column's split if the predictions have it (SST-2 "dev"), else all eval splits of
        # the task (MNLI's primary metric averages dev_matched and dev_mismatched).
        splits = {s for s in series[0].index.get_level_values(0)}
        if col.key[1] in splits:
            series = [s.xs(col.key[1], level=0, drop_level=False) for s in series]
        common = series[0].index
        for s in series[1:]:
            common = common.intersection(s.index)
        if len(common):
            mat = np.vstack([s.reindex(common).to_numpy() for s in series])
            k = len(entry.cell_ids)
            return stats.paired_permutation_test(mat[:k], mat[k:])
    return stats.seed_permutation_test(entry.values, base.values)


def _aggregate(board: Board, scores: PrimaryScores) -> None:
    """The family's aggregates (through the registry) and the average rank. Both need every
    task: a row missing one gets none, rather than a number over an easier subset that would
    look comparable and is not."""
    complete = [r for r in board.rows if all(c.key in r.entries for c in board.columns)]
    means = {r.variant: {c.label: r.entries[c.key].summary.mean for c in board.columns} for r in complete}
    hib = {c.label: c.higher_is_better for c in board.columns}
    if len(board.columns) > 1 and complete:
        ranks = stats.average_rank(means, hib)
        for r in complete:
            r.avg_rank = ranks[r.variant]
    if not complete:
        return
    subtasks = list(dict.fromkeys(c.key[0] for c in board.columns))
    found: dict[str, list] = {}  # aggregate name -> [(row, Aggregate)], in the family's order
    for r in complete:
        primary = scores.means.get((board.family, board.model, r.variant), {})
        for agg in stats.family_aggregates(board.family, {s: primary.get(s) for s in subtasks}):
            found.setdefault(agg.name, []).append((r, agg))
    for name, pairs in found.items():
        # Rows must cover the same subtasks to compare: the column covers every subtask any
        # complete row has a score for, and a row with fewer (a diverged run) shows none.
        members = tuple(stats.family_subtask_order(
            board.family, {m for _, agg in pairs for m in agg.members}))
        metrics = [m for sub in members for m in scores.metrics.get((board.family, board.model, sub), [])]
        falls = [(board.family, board.model, sub) in scores.lower_is_better for sub in members]
        column = AggregateColumn(name, members, max(agg.expected for _, agg in pairs),
                                 common_scale(metrics), not all(falls))
        board.aggregates.append(column)
        for r, agg in pairs:
            if set(agg.members) == set(members):
                r.aggregates[name] = float(agg.value)
