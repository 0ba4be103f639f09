"""From a long-form result frame to leaderboards: the steps that build the board model
(``reports.board``) both renderings read, so the site and `suite compare` cannot disagree.

Rows are ranked by one score (the family's headline aggregate, else the average rank, else
the single task's score); every method keeps a row, including one whose every cell failed.
Significance comes from a test over seeds (the unit of replication); the per-example test is
kept beside it for what it is. The board also carries the context a reader needs to trust a
comparison: the recipe, whether its cells mix commits, devices or library versions, what its
peak memory measured, and the tuning protocol (``reports.protocol``). Rows are named and
baselines chosen by ``reports.variants``; the store is read by ``reports.loading``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from suite import metrics
from suite.errors import UserError
from suite.reports import stats
from suite.reports.board import (
    AggregateColumn,
    Board,
    Column,
    Entry,
    Gap,
    PredictionLoader,
    RecipeContext,
    Row,
)
from suite.reports.format import common_scale, display_scale, first_line, scrub_paths
from suite.reports.loading import ok_and_failed, parsed_recipes, truthy
from suite.reports.protocol import _protocol, _searches, _tuning_rows
from suite.reports.variants import Baselines, canonical_variants

# Costs read beside the declared cost columns: step time and throughput of the gap tables, and
# whether a cell's GEMMs were emulated (its times then measure the emulation).
COSTS_READ = ("train_steps", "train_time_s", "train_tokens_per_s", "train_gemm_emulated")
# Provenance that must agree within a table for its numbers to compare (the host may differ).
PROVENANCE_CHECKED = ("git_commit", "suite_version", "device", "cuda", "torch", "transformers", "peft",
                      "datasets", "torchao", "triton", "lm_eval", "python")
# Recipe fields shown above a table, in this order (the rest are on the cell pages).
RECIPE_SHOWN = ("lr", "max_steps", "epochs", "batch_size", "grad_accum", "max_length", "optimizer",
                "schedule", "warmup_ratio", "weight_decay", "precision", "limit", "tokens_per_param",
                "train_tokens")
MDE_POWER = 0.8  # power at which the minimum detectable effect beside each comparison is computed
# Cells pair with the baseline's on these identity columns (where the store has them) and the seed.
PAIRING_COLUMNS = ("data_source", "recipe")



def build_boards(
    frame: pd.DataFrame,
    baseline: str | Baselines | None = None,
    predictions: PredictionLoader | None = None,
    metric: str | None = None,
    alpha: float = 0.05,
    where: str = "the store",
) -> list[Board]:
    """Leaderboards (one per family x model) from a long-form result frame.

    ``baseline``: a method for every family, ``family=method`` pairs, or None for each family's
    default (see ``Baselines``). Search trials (stage "trial", scored on held-out training data)
    are never ranked: they only enter the tuning budget of the tuned rows they selected."""
    baselines = Baselines.parse(baseline)
    families = sorted(set(frame["task"].dropna().astype(str))) if "task" in frame else []
    strays = [f for f, _ in baselines.per_family if f not in families]
    if strays:
        raise UserError(f"--baseline names task famil{'ies' if len(strays) > 1 else 'y'} {', '.join(strays)}, "
                        f"which the selected results do not have; they have: {', '.join(families) or 'none'}")
    if "recipe" in frame:  # cells from before and after a recipe option was added pair as one recipe
        from suite.recipe import canonical_recipe_json

        canonical = {t: canonical_recipe_json(t) for t in frame["recipe"].dropna().unique()}
        frame = frame.assign(recipe=frame["recipe"].map(canonical))
    frame = canonical_variants(frame)
    stage = frame["stage"].fillna("").astype(str) if "stage" in frame else pd.Series("", index=frame.index)
    trials = frame[stage == "trial"]
    frame = frame[stage != "trial"]
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
        chosen = score_rows[truthy(score_rows["is_primary"])]
        if chosen.empty:
            raise UserError("no result in the store marks a primary metric; name one with "
                            "--metric (e.g. --metric accuracy)")
    costs = _cost_table(cost_rows)
    # Aggregates always come from the primary metrics, whatever metric the columns show: the
    # family defines its benchmark scores over its tasks' primary scores.
    if metric is None:
        primary = chosen
    elif "is_primary" in score_rows:
        primary = score_rows[truthy(score_rows["is_primary"])]
    else:
        primary = score_rows.iloc[0:0]
    scores = _primary_scores(primary)
    boards = []
    for (family, model), part in chosen.groupby(["task", "model"], sort=True, dropna=False):
        board = _build_board(str(family), str(model), part, scores, costs,
                             failed, baselines, predictions, alpha)
        board.tuning = _tuning_rows(board, part, trials)
        board.searches = _searches(board, part, trials)
        board.protocol = _protocol(board)
        boards.append(board)
    return boards




@dataclass
class PrimaryScores:
    """Seed means of the primary metric per subtask, and the primary metrics' names and directions."""

    means: dict[tuple[str, str, str], dict[str, float]]  # (family, model, variant) -> subtask -> mean
    metrics: dict[tuple[str, str, str], list[str]]  # (family, model, subtask) -> primary metric names
    lower_is_better: set[tuple[str, str, str]]  # (family, model, subtask) whose primary metric falls
    # (family, model, variant) -> subtask -> seed -> that seed's primary score
    per_seed: dict[tuple[str, str, str], dict[str, dict]] = field(default_factory=dict)


def _primary_scores(primary: pd.DataFrame) -> PrimaryScores:
    """Per subtask, the mean over seeds of each seed's primary score: what ``aggregate`` takes."""
    out = PrimaryScores({}, {}, set(), {})
    if primary.empty:
        return out
    frame = primary.assign(task=primary["task"].astype(str), model=primary["model"].astype(str),
                           variant=primary["variant"].astype(str),
                           subtask=primary["subtask"].fillna("").astype(str))
    keys = ["task", "model", "variant", "subtask"]
    per_seed = frame.groupby([*keys, "seed"], dropna=False)["value"].mean()
    for (family, model, variant, sub, seed), value in per_seed.items():
        out.per_seed.setdefault((family, model, variant), {}).setdefault(sub, {})[seed] = float(value)
    for (family, model, variant, sub), value in per_seed.groupby(level=keys, dropna=False).mean().items():
        out.means.setdefault((family, model, variant), {})[sub] = float(value)
    names = frame.groupby(["task", "model", "subtask"], dropna=False)["metric"].unique()
    for key, names_of in names.items():
        out.metrics[key] = [str(m) for m in names_of]
    if "higher_is_better" in frame:
        pairs = frame[["metric", "higher_is_better"]].astype({"metric": str}).drop_duplicates()
        falling = {m for m, stored in pairs.itertuples(index=False) if not metrics.higher_is_better(m, stored)}
        falls = frame[frame["metric"].astype(str).isin(falling)]
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
            label = scrub_paths(sub) or family
            if len(ks) > 1:
                label += f" ({k[1]}{', ' + k[2] if len({x[2] for x in ks}) > 1 else ''})"
            stored = part.loc[(part["subtask"] == k[0]) & (part["split"] == k[1]) & (part["metric"] == k[2]),
                              "higher_is_better"].iloc[0]
            columns.append(Column(k, label, k[2], metrics.higher_is_better(k[2], stored)))

    fam_failed = failed[(failed["task"] == family) & (failed["model"] == model)].drop_duplicates("cell_id")
    failed_count = fam_failed.groupby(["variant", "subtask"]).size().to_dict()

    rows: dict[str, Row] = {}
    # Plain arrays and one groupby.indices: a pandas sub-frame per group is too slow at 10k cells.
    part = part.sort_values("seed", kind="stable")
    col_cid = part["cell_id"].to_numpy()
    col_seed = part["seed"].to_numpy()
    col_value = part["value"].to_numpy(dtype=float)
    col_method = part["method"].to_numpy()
    col_kind = part["method_kind"].to_numpy()
    col_stage = part["stage"].fillna("").astype(str).to_numpy() if "stage" in part else None
    pairing = [c for c in PAIRING_COLUMNS if c in part.columns]
    col_key = list(zip(part["seed"].astype(str), *(part[c].astype(str) for c in pairing), strict=True))
    wanted = dict.fromkeys([*(s.name for s in metrics.columns()), *(s.name for s in metrics.axes()), *COSTS_READ])
    cost_names = [c for c in wanted if c in costs.columns] if not costs.empty else []
    cost_pos = {cid: i for i, cid in enumerate(costs.index)} if cost_names else {}
    cost_arr = costs[cost_names].to_numpy(dtype=float) if cost_names else None
    groups = part.groupby(["variant", "subtask", "split", "metric"], sort=False).indices
    summaries = stats.summarize_many([col_value[idx] for idx in groups.values()])
    for ((variant, sub, split, met), idx), summ in zip(groups.items(), summaries, strict=True):
        row = rows.get(variant)
        if row is None:
            row = rows[variant] = Row(str(variant), str(col_method[idx[0]]), str(col_kind[idx[0]]))
            if col_stage is not None:
                row.stage = col_stage[idx[0]]
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
                entry.emulated = entry.costs.get("train_gemm_emulated", 0.0) > 0
        row.entries[(sub, split, met)] = entry
    _failed_rows(rows, part, fam_failed)
    _row_targets(rows, part)
    failures = _failures(part, fam_failed)
    for row in rows.values():
        _row_costs(row)

    board = Board(family, model, columns, list(rows.values()), Baselines.parse(baseline).choose(family, rows),
                  alpha=alpha, failures=failures)
    synth = part.get("synthetic_data")
    board.synthetic = bool(synth is not None and truthy(synth).any())
    board.cost_columns = [s for s in metrics.columns() if any(s.name in r.costs for r in board.rows)]
    _mark_best(board)
    all_ids = sorted({cid for r in board.rows for e in r.entries.values() for cid in e.cell_ids})
    preds = predictions(all_ids) if predictions and all_ids else pd.DataFrame()
    if board.baseline is not None:
        _test_against_baseline(board, part, preds)
        _seed_paired_gaps(board)
    _flag_chance(board, preds)
    _aggregate(board, scores)
    _aggregate_intervals(board, scores)
    _rank(board)
    _context(board, part, fam_failed)
    return board


def _failures(part: pd.DataFrame, fam_failed: pd.DataFrame) -> dict[tuple[str, str], tuple[int, int, str]]:
    """Per (variant, subtask) with a failed cell: failed cells, all cells, the first error's first line."""
    if fam_failed.empty:
        return {}
    ok = part.groupby(["variant", "subtask"], sort=False)["cell_id"].nunique().to_dict()
    out = {}
    for (variant, sub), g in fam_failed.groupby(["variant", "subtask"], sort=True):
        errors = g["error"].fillna("").astype(str) if "error" in g else pd.Series([], dtype=str)
        error = first_line(scrub_paths(next((e for e in errors if e.strip()), ""))) or "(no error message)"
        n_bad = int(g["cell_id"].nunique())
        out[(str(variant), str(sub))] = (n_bad, n_bad + int(ok.get((variant, sub), 0)), error)
    return out


def _failed_rows(rows: dict[str, Row], part: pd.DataFrame, fam_failed: pd.DataFrame) -> None:
    """Cell counts and the first error on every row, and a row for each variant whose every cell
    failed: a method never drops out of a table because nothing it ran finished."""
    for variant, g in fam_failed.groupby("variant", sort=True):
        row = rows.get(variant)
        if row is None:
            first = g.iloc[0]
            row = rows[variant] = Row(str(variant), str(first.get("method", variant)),
                                      str(first.get("method_kind", "")))
            stage = first.get("stage", "")
            row.stage = "" if stage is None or stage != stage else str(stage)
        row.n_failed_cells = int(g["cell_id"].nunique())
        errors = g["error"].fillna("").astype(str)
        row.error = first_line(scrub_paths(next((e for e in errors if e.strip()), "")))
    ok_ids = part.groupby("variant", sort=False)["cell_id"].nunique().to_dict()
    for variant, row in rows.items():
        row.n_ok_cells = int(ok_ids.get(variant, 0))


def _rank(board: Board) -> None:
    """Order rows by the board's ranking score (best first) and number them; ties share a rank.

    The score is the family's headline aggregate where the board has one, else the average
    rank over several tasks, else the single task's score. Rows without it follow (by name),
    then rows whose every cell failed."""
    head = board.headline
    if head is not None and any(head.name in r.aggregates for r in board.rows):
        board.rank_by, board.rank_scale = head.label, head.scale
        board.rank_higher_is_better = head.higher_is_better
        for r in board.rows:
            r.score = r.aggregates.get(head.name, math.nan)
    elif len(board.columns) > 1:
        board.rank_by, board.rank_higher_is_better = "avg rank", False
        for r in board.rows:
            r.score = r.avg_rank
    elif board.columns:
        col = board.columns[0]
        board.rank_by, board.rank_higher_is_better = col.label, col.higher_is_better
        board.rank_metric, board.rank_scale = col.metric, display_scale(col.metric)
        for r in board.rows:
            e = r.entries.get(col.key)
            r.score = e.summary.mean if e is not None else math.nan
    sign = -1.0 if board.rank_higher_is_better else 1.0
    scored = [r for r in board.rows if not math.isnan(r.score)]
    scored.sort(key=lambda r: (sign * r.score, r.variant))
    for r, rank in zip(scored, stats.competition_ranks([r.score for r in scored], board.rank_higher_is_better),
                       strict=True):
        r.rank = rank
    rest = sorted((r for r in board.rows if math.isnan(r.score) and r.entries), key=lambda r: r.variant)
    dead = sorted((r for r in board.rows if not r.entries), key=lambda r: r.variant)
    board.rows = scored + rest + dead
    base = next((r for r in board.rows if r.variant == board.baseline), None)
    if base is not None and not math.isnan(base.score):
        for r in board.rows:
            r.delta = r.score - base.score


def _aggregate_intervals(board: Board, scores: PrimaryScores) -> None:
    """Student-t intervals over seeds of each row's aggregates and average rank.

    A seed enters when the row has that seed on every task the aggregate covers: the family's
    aggregate of that seed's task scores is one replicate of the benchmark score. Against the
    baseline, the per-seed aggregates pair by seed (the same seed on both rows)."""
    per_row: dict[str, dict[str, dict]] = {}  # variant -> aggregate name -> seed -> value
    for col in board.aggregates:
        for r in board.rows:
            if col.name not in r.aggregates:
                continue
            by_sub = scores.per_seed.get((board.family, board.model, r.variant), {})
            seeds = set.intersection(*(set(by_sub.get(m, {})) for m in col.members)) if col.members else set()
            values = {}
            for seed in sorted(seeds, key=str):
                found = stats.family_aggregates(board.family, {m: by_sub[m][seed] for m in col.members})
                agg = next((a for a in found if a.name == col.name), None)
                if agg is not None and not math.isnan(float(agg.value)):
                    values[seed] = float(agg.value)
            per_row.setdefault(r.variant, {})[col.name] = values
            if len(values) >= 2:
                low, high = stats.t_interval(list(values.values()))
                r.intervals[col.name] = (low, high, len(values))
    base = per_row.get(board.baseline or "", {})
    for r in board.rows:
        if r.variant == board.baseline:
            continue
        for name, values in per_row.get(r.variant, {}).items():
            b = base.get(name, {})
            diffs = [v - b[s] for s, v in values.items() if s in b]
            if diffs:
                r.aggregate_gaps[name] = paired_gap(diffs, list(b.values()))
    # Average rank per seed, over the rows that have that seed on every task.
    if len(board.columns) < 2:
        return
    complete = [r for r in board.rows if not math.isnan(r.avg_rank)]
    by_seed: dict = {}
    for r in complete:
        for c in board.columns:
            e = r.entries[c.key]
            for seed, v in zip(e.seeds, e.values, strict=True):
                by_seed.setdefault(seed, {}).setdefault(r.variant, {})[c.label] = v
    hib = {c.label: c.higher_is_better for c in board.columns}
    ranks: dict[str, list[float]] = {}
    for per_variant in by_seed.values():
        full = {v: m for v, m in per_variant.items() if len(m) == len(board.columns)}
        if len(full) < 2:
            continue
        for v, rank in stats.average_rank(full, hib).items():
            if not math.isnan(rank):
                ranks.setdefault(v, []).append(rank)
    for r in complete:
        values = ranks.get(r.variant, [])
        if len(values) >= 2:
            low, high = stats.t_interval(values)
            r.intervals["avg_rank"] = (low, high, len(values))


def _context(board: Board, part: pd.DataFrame, fam_failed: pd.DataFrame) -> None:
    """Table-level context: the recipe, mixed provenance, what peak memory measured."""
    cells = part.drop_duplicates("cell_id")
    if "recipe" in cells:
        board.recipe = recipe_context(cells)
        board.recipes = {str(sub): recipe_context(g) for sub, g in cells.groupby("subtask", sort=False)}
    both = pd.concat([cells, fam_failed], ignore_index=True) if not fam_failed.empty else cells
    for col in PROVENANCE_CHECKED:
        if col in both:
            values = sorted({"" if v is None or v != v else str(v) for v in both[col]})
            if len(values) > 1:
                board.mixed[col] = [v or "(none)" for v in values]
    board.memory_label = memory_label(cells)


def memory_label(cells: pd.DataFrame) -> str:
    """What "peak memory" is on these cells: the runner measures CUDA max-allocated on a GPU and
    the whole process's peak resident set on a CPU (suite.memory)."""
    if "device" not in cells:
        return "peak memory"
    cuda = cells["cuda"].fillna("").astype(str) if "cuda" in cells else pd.Series("", index=cells.index)
    device = cells["device"].fillna("").astype(str)
    on_gpu = (cuda != "") | ~(device.str.startswith("cpu") | (device == ""))
    if on_gpu.all():
        return "peak memory: CUDA max allocated"
    if not on_gpu.any():
        return "peak memory: process peak RSS (CPU)"
    return "peak memory: CUDA max allocated on GPU cells, process peak RSS on CPU cells (not comparable)"


def recipe_context(cells: pd.DataFrame) -> RecipeContext:
    """The shown recipe fields shared by these cells, and per field the values where they differ."""
    pairs = cells[["variant", "recipe"]].drop_duplicates()
    parsed = parsed_recipes(pairs["recipe"].dropna().unique())
    values: dict[str, dict[str, list[str]]] = {}  # field -> shown value -> variants
    for variant, text in pairs.itertuples(index=False):
        recipe = parsed.get(text, {})
        for key in RECIPE_SHOWN:
            if key == "epochs" and recipe.get("max_steps") is not None:
                continue  # max_steps overrides epochs: showing both would name a count that did not run
            if key in recipe and recipe[key] is not None:
                values.setdefault(key, {}).setdefault(_recipe_value(recipe[key]), []).append(str(variant))
    out = RecipeContext()
    for key in RECIPE_SHOWN:
        seen = values.get(key)
        if not seen:
            continue
        if len(seen) == 1:
            out.common[key] = next(iter(seen))
        else:
            out.differs[key] = [f"{v} ({', '.join(sorted(set(names))[:6])}"
                                f"{', ...' if len(set(names)) > 6 else ''})" for v, names in seen.items()]
        for v, names in seen.items():
            for name in dict.fromkeys(names):
                mine = out.by_variant.setdefault(name, {})
                mine[key] = f"{mine[key]} / {v}" if key in mine else v
        if len(seen) > 1:
            counts = sorted(((len(set(names)), v) for v, names in seen.items()), reverse=True)
            if counts[0][0] > counts[1][0]:
                out.usual[key] = counts[0][1]
    return out


def _recipe_value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _flag_chance(board: Board, preds: pd.DataFrame) -> None:
    """Flag scores whose 95% interval does not clear the majority-class rate (accuracy; from the
    stored labels of the evaluation examples) or zero (MCC, whose chance level is 0): a method
    at that level has learnt nothing the label counts do not give."""
    majority: dict[tuple[str, str], float] = {}
    if preds is not None and not preds.empty and "label" in preds and len(board.rows):
        cells_by_sub: dict[str, str] = {}
        for r in board.rows:
            for (sub, _, _), e in r.entries.items():
                if e.cell_ids:
                    cells_by_sub.setdefault(sub, e.cell_ids[0])
        one = preds[preds["cell_id"].isin(set(cells_by_sub.values()))]
        sub_of = {cid: sub for sub, cid in cells_by_sub.items()}
        for (cid, split), g in one.groupby(["cell_id", "split"], sort=False):
            labels = pd.to_numeric(g["label"].dropna(), errors="coerce")  # answers stored as text (GSM8K)
            if labels.empty or labels.isna().any() or labels.nunique() > 50 or not np.allclose(labels, np.round(labels)):
                continue  # regression targets or generated text: no majority class
            majority[(sub_of[cid], str(split))] = float(labels.value_counts(normalize=True).iloc[0])
        for sub in {s for s, _ in majority}:
            # Composite metrics over several splits (MNLI matched + mismatched): the pooled rate.
            rates = [v for (s, _), v in majority.items() if s == sub]
            majority.setdefault((sub, "*"), float(np.mean(rates)))
    for col in board.columns:
        words = set(str(col.metric).lower().replace("-", "_").split("_"))
        if "mcc" in words or "matthews" in words:
            level, kind = 0.0, "chance"
        elif words & {"accuracy", "acc"} and not words & {"f1", "exact"}:
            level = majority.get((col.key[0], col.key[1]), majority.get((col.key[0], "*"), math.nan))
            kind = "majority"
        else:
            continue
        if math.isnan(level) or not col.higher_is_better:
            continue
        board.chance_levels[col.key] = (level, kind)
        for r in board.rows:
            e = r.entries.get(col.key)
            if e is None or math.isnan(e.summary.mean):
                continue
            top = e.summary.ci_low if e.summary.n > 1 and not math.isnan(e.summary.ci_low) else e.summary.mean
            if top <= level + 1e-12:
                e.chance, e.chance_level = kind, level



def _against_baseline(board: Board) -> Iterator[tuple[Column, Entry, Entry]]:
    """(column, entry, the baseline's entry in that column) for every other row that has both."""
    base = next(r for r in board.rows if r.variant == board.baseline)
    for col in board.columns:
        b_entry = base.entries.get(col.key)
        if b_entry is None:
            continue
        for row in board.rows:
            entry = row.entries.get(col.key)
            if entry is not None and row is not base:
                yield col, entry, b_entry


def _seed_paired_gaps(board: Board) -> None:
    """Every entry's ``Gap`` to the baseline entry of its column, paired by seed, data and recipe."""
    for _, entry, b_entry in _against_baseline(board):
        diffs = stats.paired_differences(entry.values, entry.keys, b_entry.values, b_entry.keys)
        if diffs.size:
            entry.gap = paired_gap(diffs.tolist(), b_entry.values)


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
    half = float(stats.t_quantile(d.size - 1, confidence) * d.std(ddof=1) / math.sqrt(d.size))
    low, high = mean - half, mean + half
    return Gap(mean, low, high, int(d.size), noise, relative, bool(low > 0 or high < 0))


def _row_targets(rows: dict[str, Row], part: pd.DataFrame) -> None:
    """Each row's adapted modules as its cells stored them (cells stored before the column have none)."""
    if "targets" not in part:
        return
    stored = part[["variant", "targets"]].dropna().drop_duplicates()
    for variant, keys in stored.groupby("variant")["targets"]:
        shown = sorted({str(k) for k in keys if str(k)})
        if variant in rows and shown:
            rows[variant].targets = " | ".join(shown)


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


ACROSS_TASKS = {"mean": np.mean, "median": np.median, "max": max, "sum": sum}


def _row_costs(row: Row) -> None:
    """A row's cost columns over its tasks, as each column's declaration says (median parameters,
    the largest peak memory, the summed train time, ...); a row is emulated when any cell was."""
    per = [e.costs for e in row.entries.values()]
    for spec in metrics.columns():
        values = [c[spec.name] for c in per if spec.name in c and not math.isnan(c[spec.name])]
        if values:
            row.costs[spec.name] = float(ACROSS_TASKS[spec.across_tasks](values))
    row.emulated = any(e.emulated for e in row.entries.values())


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


def _test_against_baseline(board: Board, part, preds: pd.DataFrame) -> None:
    """Each entry against the baseline's in its column. The mark comes from the seed-level test
    (seeds are the unit of replication), Holm-adjusted across the table; the per-example test
    is kept beside it, adjusted in its own family, and labelled as ignoring seed variance."""
    matrices: dict[str, dict[str, pd.Series]] = {}  # per-example column -> cell_id -> values
    tests: list[Entry] = []
    for col, entry, b_entry in _against_baseline(board):
        entry.test = stats.seed_t_test(entry.values, b_entry.values, entry.keys, b_entry.keys)
        spec = metrics.spec_of(col.metric)
        if spec is not None and spec.per_example:  # only a mean over examples has a per-example test
            if spec.per_example not in matrices:
                matrices[spec.per_example] = _example_matrices(preds, spec.per_example)
            entry.example_test = _example_test(entry, b_entry, col, matrices[spec.per_example])
        entry.mde = minimum_detectable_effect(entry.values, b_entry.values, board.alpha)
        tests.append(entry)
    for entry, p_adj in zip(tests, stats.holm_adjust([e.test.p_value for e in tests]), strict=True):
        entry.p_adjusted = p_adj
    example = [e for e in tests if e.example_test is not None]
    for entry, p_adj in zip(example, stats.holm_adjust([e.example_test.p_value for e in example]), strict=True):
        entry.example_p_adjusted = p_adj
    for col, entry, b_entry in _against_baseline(board):
        if entry.test is None or math.isnan(entry.p_adjusted):
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


def minimum_detectable_effect(method: list[float], baseline: list[float], alpha: float = 0.05,
                              target_power: float = MDE_POWER) -> float:
    """The smallest true difference the current seeds detect with ``target_power``, by the same
    two-sample t-test over seeds that ``suite plan`` plans with (sigma pooled over both sides,
    the smaller seed count); nan below two seeds a side, and nan where both sides have no spread
    (the same score on every seed says nothing about the noise, not that any difference shows)."""
    from suite.reports.planning import is_flat

    a = np.asarray([v for v in method if not math.isnan(v)], dtype=float)
    b = np.asarray([v for v in baseline if not math.isnan(v)], dtype=float)
    seeds = int(min(a.size, b.size))
    if seeds < 2:
        return math.nan
    sigma = math.sqrt((a.var(ddof=1) * (a.size - 1) + b.var(ddof=1) * (b.size - 1)) / (a.size + b.size - 2))
    if is_flat(sigma, float(np.abs(np.concatenate([a, b])).max())):
        return math.nan
    return sigma * _unit_detectable_effect(seeds, alpha, target_power)


@functools.lru_cache(maxsize=256)
def _unit_detectable_effect(seeds: int, alpha: float, target_power: float) -> float:
    """``planning.detectable_effect`` at sigma 1: it scales with sigma, so one solve per seed count."""
    from suite.reports.planning import detectable_effect

    return detectable_effect(1.0, seeds, alpha, target_power)


def _example_matrices(preds: pd.DataFrame, column: str) -> dict[str, pd.Series]:
    """cell_id -> the per-example ``column`` (correctness) indexed by (split, example_id)."""
    if preds is None or preds.empty or column not in preds:
        return {}
    preds = preds.dropna(subset=[column])
    out = {}
    for cid, g in preds.groupby("cell_id", sort=False):
        s = pd.Series(pd.to_numeric(g[column], errors="coerce").to_numpy(dtype=float),
                      index=pd.MultiIndex.from_arrays([g["split"].astype(str), g["example_id"]]))
        out[cid] = s[~s.index.duplicated()]
    return out


def _example_test(entry: Entry, base: Entry, col: Column, matrices) -> stats.TestResult | None:
    """Per-example paired permutation test where every cell of both sides has predictions, else None."""
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
    return None


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
