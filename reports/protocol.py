"""How each method's hyperparameters were chosen, and whether the baseline stands at its optimum:
default versus tuned rows with the search's budget, tuned-value curves from the trial cells, grid
edges, and the board's protocol status (``Protocol``)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from suite import metrics
from suite.reports import stats
from suite.reports.board import (
    INHERITED,
    Board,
    CurvePoint,
    GridEdge,
    Protocol,
    ProtocolStatus,
    SearchTrials,
    TrialCurve,
    TrialPoint,
    TuningRow,
)
from suite.reports.format import scrub_paths
from suite.reports.loading import truthy
from suite.reports.variants import arg_text, tuned_values


def _tuning_rows(board: Board, part: pd.DataFrame, trials: pd.DataFrame) -> list[TuningRow]:
    """Per tuned method on this board: its default row beside its tuned row, the selected
    hyperparameters and the search budget (trial cells, their summed training time)."""
    tuned_rows = [r for r in board.rows if r.stage == "tuned"]
    if not tuned_rows:
        return []
    out = []
    mine = trials[(trials["task"] == board.family) & (trials["model"] == board.model)] if not trials.empty else trials
    for t in tuned_rows:
        cells = part[part["variant"] == t.variant].drop_duplicates("cell_id")
        searches = set(cells["search_id"].dropna().astype(str)) if "search_id" in cells else set()
        chosen: dict[str, set[str]] = {}
        for sub, text in cells[["subtask", "tuned"]].drop_duplicates().itertuples(index=False) if "tuned" in cells else []:
            values = tuned_values(text)
            t.inherited = t.inherited or scrub_paths(values.pop(INHERITED, "") or "")
            label = scrub_paths(", ".join(f"{k}={arg_text(v)}" for k, v in sorted(values.items())))
            if label:
                chosen.setdefault(label, set()).add(str(sub))
        subs = {str(s) for s in cells["subtask"]}
        selected = [label if len(chosen) == 1 or where == subs else f"{label} ({', '.join(sorted(where))})"
                    for label, where in chosen.items()]
        t.tuned = selected
        if t.inherited:
            continue  # it ran at the baseline's choice: no search, default or budget of its own
        tr = mine[mine["search_id"].astype(str).isin(searches)] if not mine.empty and searches else mine.iloc[0:0]
        n_trials = int(tr["cell_id"].nunique()) if not tr.empty else 0
        seconds = tr.loc[(tr["metric"] == "train_time_s") & (tr["split"] == "cost")].drop_duplicates("cell_id")
        hours = float(seconds["value"].sum()) / 3600 if not seconds.empty else math.nan
        hardware = "–"
        if not tr.empty and "device" in tr:
            cuda = tr["cuda"] if "cuda" in tr else pd.Series("", index=tr.index)
            kinds = {"GPU" if (c if isinstance(c, str) else "") or not (d if isinstance(d, str) else "cpu")
                     .startswith("cpu") else "CPU" for d, c in zip(tr["device"], cuda, strict=True)}
            hardware = "+".join(sorted(kinds, reverse=True))
        defaults = [r for r in board.rows if r.stage != "tuned" and r.method == t.method]
        default = next((r for r in defaults if r.variant == t.method), defaults[0] if defaults else None)
        per_column = []
        for c in board.columns:
            te = t.entries.get(c.key)
            if te is None:
                continue
            de = default.entries.get(c.key) if default else None
            per_column.append((c.label, c.metric, de.summary.mean if de else math.nan, te.summary.mean))
        out.append(TuningRow(t.method, default.variant if default else None, t.variant,
                             default.score if default else math.nan, t.score,
                             default.rank if default else None, t.rank, selected, n_trials, hours, hardware,
                             per_column))
    return out


def _number(value: object) -> float | None:
    """A tried value as a number (grid values are stored as typed: "3e-4"); None for a choice."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _value_key(value: object) -> object:
    """Equality of tried values across cells: numerically where they are numbers."""
    x = _number(value)
    return x if x is not None else repr(value)


def _shown(value: object) -> str:
    return scrub_paths(arg_text(value))


def _log_spaced(xs: Iterable[float]) -> bool:
    """Whether values are spread on a log scale (learning rates, 1e-4 to 1e-2): a factor of ten or more
    between the ends, or steps more even in log than in value."""
    v = sorted({x for x in xs if x is not None and math.isfinite(x)})
    if len(v) < 2 or v[0] <= 0:
        return False
    if v[-1] / v[0] >= 10:
        return True
    if len(v) < 3:
        return False
    linear, logs = np.diff(v), np.diff(np.log(v))
    return float(logs.std() / logs.mean()) < float(linear.std() / linear.mean())


def _searches(board: Board, part: pd.DataFrame, trials: pd.DataFrame) -> list[SearchTrials]:
    """Every search on this board with its trials: each tried setting's held-out primary score (mean over
    the trial cells that ran it), the selected setting (the one its tuned cells ran), the curves per
    hyperparameter and the selected values at an edge of what was tried (failed trials count as tried)."""
    if trials.empty or "search_id" not in trials or "tuned" not in trials:
        return []
    mine = trials[(trials["task"] == board.family) & (trials["model"] == board.model)]
    mine = mine[mine["search_id"].notna() & (mine["search_id"].astype(str) != "")]
    if mine.empty:
        return []
    mine = mine.assign(subtask=mine["subtask"].fillna("").astype(str), search_id=mine["search_id"].astype(str))
    chosen: dict[str, tuple[str, dict]] = {}  # search -> (its tuned row, the values it runs)
    if "search_id" in part and "tuned" in part and "stage" in part:
        tuned = part[part["stage"].fillna("").astype(str) == "tuned"]
        for sid, variant, text in tuned[["search_id", "variant", "tuned"]].drop_duplicates().itertuples(index=False):
            values = tuned_values(text)
            if isinstance(sid, str) and sid and INHERITED not in values:  # the searched method's own cells
                chosen.setdefault(sid, (str(variant), values))
    primary = mine[(mine["status"] == "ok") & truthy(mine["is_primary"])] if "is_primary" in mine else mine.iloc[0:0]
    primary = primary.drop_duplicates("cell_id")
    score = dict(zip(primary["cell_id"], primary["value"].astype(float), strict=True))
    stored = primary["higher_is_better"] if "higher_is_better" in primary else pd.Series(None, index=primary.index)
    metric_of = {sid: (str(m), metrics.higher_is_better(str(m), h)) for sid, m, h in
                 zip(primary["search_id"], primary["metric"], stored, strict=True)}
    order = {sub: i for i, sub in enumerate(dict.fromkeys(c.key[0] for c in board.columns))}
    out = []
    cells = mine.drop_duplicates("cell_id")
    trial_index = cells["trial"] if "trial" in cells else pd.Series(0, index=cells.index)
    cells = cells.assign(trial=pd.to_numeric(trial_index, errors="coerce").fillna(0).astype(int))
    for (sid, sub), g in cells.groupby(["search_id", "subtask"], sort=False):
        variant, selected = chosen.get(sid, ("", {}))
        groups: dict[str, TrialPoint] = {}
        ids_of: dict[str, list[str]] = {}
        for cid, text, trial in g[["cell_id", "tuned", "trial"]].itertuples(index=False):
            values = tuned_values(text)
            key = repr(sorted((k, _value_key(v)) for k, v in values.items()))
            if key not in groups:
                groups[key] = TrialPoint(values, {_shown(k): _shown(v) for k, v in sorted(values.items())}, math.nan,
                                         math.nan, math.nan, 0, 0, False, int(trial))
            ids_of.setdefault(key, []).append(str(cid))
            groups[key].order = min(groups[key].order, int(trial))
        names = sorted({k for p in groups.values() for k in p.values})
        if not names:
            continue  # trials stored without the values they set: nothing to draw or check
        chosen_key = {k: _value_key(v) for k, v in selected.items()}
        for key, p in groups.items():
            values = [score[c] for c in ids_of[key] if c in score and math.isfinite(score[c])]
            p.n, p.failed = len(values), len(ids_of[key]) - len(values)
            p.mean = float(np.mean(values)) if values else math.nan
            p.low, p.high = stats.t_interval(values)
            p.selected = bool(selected) and all(chosen_key.get(k) == _value_key(p.values.get(k)) for k in names)
        points = sorted(groups.values(), key=lambda p: p.order)
        metric, hib = metric_of.get(sid, ("", True))
        method = str(g["method"].iloc[0]) if "method" in g else ""
        label = scrub_paths(variant.removesuffix(" (tuned)")) if variant else scrub_paths(method)
        search = SearchTrials(sid, label, variant, method, str(sub), metric, hib, names, points,
                              {_shown(k): _shown(v) for k, v in sorted(selected.items())})
        search.edges = _grid_edges(search, selected)
        search.curves = [_curve(search, name, selected) for name in names]
        out.append(search)
    out.sort(key=lambda s: (order.get(s.subtask, len(order)), s.subtask, s.label))
    return out


def _grid_edges(search: SearchTrials, selected: dict) -> list[GridEdge]:
    """Each selected number that is the smallest or the largest value its search tried (or the only
    one); choices have no order and are never at an edge."""
    edges = []
    for name in search.names:
        if name not in selected:
            continue
        tried = [_number(p.values.get(name)) for p in search.points if name in p.values]
        chosen = _number(selected[name])
        if chosen is None or any(x is None for x in tried):
            continue
        distinct = sorted(set(tried))
        side = ("only" if len(distinct) == 1 else "smallest" if chosen == distinct[0]
                else "largest" if chosen == distinct[-1] else "")
        if side:
            edges.append(GridEdge(_shown(name), _shown(selected[name]), side, len(distinct), scrub_paths(search.subtask)))
    return edges


def _curve(search: SearchTrials, name: str, selected: dict) -> TrialCurve:
    """The search's score against ``name``: where the other searched values have a selected setting and
    the trials at it try ``name`` more than once (a grid), that slice; else every trial (a projection)."""
    others = [n for n in search.names if n != name]
    points = [p for p in search.points if name in p.values]
    held: dict[str, str] = {}
    projected = False
    if others:
        fixed = {o: _value_key(selected[o]) for o in others if o in selected}
        grid = [p for p in points if len(fixed) == len(others)
                and all(_value_key(p.values.get(o)) == v for o, v in fixed.items())]
        if len({_value_key(p.values[name]) for p in grid}) >= 2:
            points, held = grid, {_shown(o): _shown(selected[o]) for o in others}
        else:
            projected = True
    xs = [_number(p.values[name]) for p in points]
    numeric = all(x is not None for x in xs)
    drawn = [CurvePoint(x if numeric and x is not None else math.nan, _shown(p.values[name]),
                        p.mean, p.low, p.high, p.n, p.selected) for p, x in zip(points, xs, strict=True)]
    if numeric:
        drawn.sort(key=lambda c: c.x)
    return TrialCurve(search.label, scrub_paths(search.subtask), _shown(name), drawn, numeric,
                      numeric and _log_spaced(x for x in xs if x is not None), held, projected)


def _protocol(board: Board) -> Protocol:
    """Each row tuned (its budget, selected values, grid edges) or at defaults; whether the baseline ran
    off its tuned optimum (untuned, or a selected value at a grid edge), and the sentence that says so."""
    out = Protocol()
    by_tuned = {t.tuned: t for t in board.tuning}
    tuned_of = {t.default: t.tuned for t in board.tuning if t.default}
    for r in board.rows:
        t = by_tuned.get(r.variant)
        if r.inherited:
            out.statuses[r.variant] = ProtocolStatus(r.variant, False, selected=list(r.tuned),
                                                     inherited_from=r.inherited)
        elif r.stage == "tuned":
            mine = [s for s in board.searches if s.variant == r.variant]
            out.statuses[r.variant] = ProtocolStatus(
                r.variant, True, t.trials if t else 0, t.hours if t else math.nan, t.hardware if t else "",
                list(t.selected) if t else list(r.tuned), [e for s in mine for e in s.edges], checked=bool(mine))
        else:
            out.statuses[r.variant] = ProtocolStatus(r.variant, False, tuned_row=tuned_of.get(r.variant, ""))
    base = out.statuses.get(board.baseline or "")
    if base is None:
        return out
    name = scrub_paths(base.variant)
    others = [v for v, s in out.statuses.items() if s.tuned and v != base.variant]
    if base.inherited_from:
        out.off_optimum = "inherited"
        out.warning = (f"The baseline {name} ran at {base.inherited_from}'s tuned values, not at its own "
                       f"optimum: gaps against it may overstate. Compare against {base.inherited_from}, whose "
                       f"search chose them.")
    elif not base.tuned:
        out.off_optimum = "untuned"
        out.worst = bool(others)
        if others:
            shown = ", ".join(scrub_paths(v) for v in others[:4]) + (", ..." if len(others) > 4 else "")
            out.warning = (f"The baseline {name} ran at its defaults, untuned, while {len(others)} "
                           f"row{'s' if len(others) > 1 else ''} here {'were' if len(others) > 1 else 'was'} "
                           f"tuned ({shown}): every gap sets a tuned method against an untuned baseline and "
                           f"may overstate its advantage.")
        else:
            out.warning = (f"The baseline {name} ran at its defaults, untuned, as did every method here: a gap "
                           f"may reflect how well each default suits this task rather than the method.")
        if base.tuned_row:
            out.warning += f" A tuned {name} ran: compare against it with --baseline '{scrub_paths(base.tuned_row)}'."
        else:
            out.warning += " Tune the baseline with the same search (suite run --tune ...) as the methods."
    elif base.edges:
        out.off_optimum = "edge"
        out.warning = (f"The baseline {name} was tuned, but its selected value lies at the edge of its grid ("
                       + "; ".join(e.text for e in base.edges)
                       + "): its optimum may lie beyond what was tried, so gaps may overstate.")
    return out


