"""From a long-form result frame to leaderboards: one shared model for the site and `suite compare`.

A *board* is one task family on one model: rows are method variants, columns are the
family's tasks (each scored by its primary metric, or by a metric the user names). Every
entry carries the seed statistics, the test against the baseline and the cells behind it,
so the site and the terminal table cannot disagree: both render this model.

Rows are ranked by one score (the family's headline aggregate, else the average rank, else
the single task's score); every method keeps a row, including one whose every cell failed.
Significance comes from a test over seeds (the unit of replication); the per-example test is
kept beside it for what it is. The board also carries the context a reader needs to trust a
comparison: the recipe, whether its cells mix commits, devices or library versions, what its
peak memory measured, and, for searched methods, default and tuned side by side with the
search's budget. Search trials are never ranked; they are kept as tuned-value curves, and each
row's protocol (searched, at defaults, or at the baseline's values; a selected value at a grid
edge) says whether the gaps stand at the baseline's optimum (``Protocol``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from suite import metrics
from suite.errors import UserError
from suite.metrics import MetricSpec
from suite.reports import stats
from suite.reports.format import common_scale, display_scale, f_duration, first_line, scrub_paths
from suite.results.store import CELLS, ResultStore

# Costs read beside the declared cost columns: step time and throughput of the gap tables, and
# whether a cell's GEMMs were emulated (its times then measure the emulation).
COSTS_READ = ("train_steps", "train_time_s", "train_tokens_per_s", "train_gemm_emulated")
# Provenance that must agree within a table for its numbers to compare (the host may differ).
PROVENANCE_CHECKED = ("git_commit", "suite_version", "device", "cuda", "torch", "transformers", "peft",
                      "datasets", "torchao", "triton", "lm_eval", "python")
# Recipe fields shown above a table, in this order (the rest are on the cell pages).
RECIPE_SHOWN = ("lr", "max_steps", "epochs", "batch_size", "grad_accum", "max_length", "optimizer",
                "schedule", "warmup_ratio", "weight_decay", "precision", "limit")
MDE_POWER = 0.8  # power at which the minimum detectable effect beside each comparison is computed
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
    # ``test`` is the seed-level test (paired t over seeds, else Welch; none below 3 seeds) that
    # the marks come from; ``example_test`` the per-example permutation test, which ignores
    # seed-to-seed training variance and is shown labelled as such.
    example_test: stats.TestResult | None = None
    example_p_adjusted: float = math.nan
    mde: float = math.nan  # smallest true difference the current seeds detect (80% power), metric units
    chance: str = ""  # "majority" | "chance" where the score is not above that level, else ""
    chance_level: float = math.nan  # the majority-class rate (or chance score) it was compared with
    emulated: bool = False  # some cell ran its low-precision GEMMs emulated: its times measure the emulation

    @property
    def n_cells(self) -> int:
        """Cells attempted for this entry: finished plus failed."""
        return self.summary.n + self.n_failed

    @property
    def ok_label(self) -> str:
        """"2/3 ok" where some cells failed, else ""."""
        return f"{self.summary.n}/{self.n_cells} ok" if self.n_failed else ""

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
    # Ranking (Board.rank_by names the score): 1 = best; None for rows without the score.
    rank: int | None = None
    score: float = math.nan  # the ranking score, in stored units (the aggregate's or metric's)
    delta: float = math.nan  # score minus the baseline row's score
    # 95% Student-t intervals over seeds of the per-seed aggregate and average rank, where the
    # row's seeds cover every task: name -> (low, high, seeds). "avg_rank" for the rank.
    intervals: dict[str, tuple[float, float, int]] = field(default_factory=dict)
    aggregate_gaps: dict[str, Gap] = field(default_factory=dict)  # per-seed aggregate minus the baseline's
    n_ok_cells: int = 0
    n_failed_cells: int = 0
    error: str = ""  # first line of the first failure's error, local paths removed
    stage: str = ""  # "" (default configuration) or "tuned" (selected by a hyperparameter search)
    tuned: list[str] = field(default_factory=list)  # the selected hyperparameters, "lr=0.0003", ...
    inherited: str = ""  # the baseline whose selected values this tuned row ran at (no search of its own)
    emulated: bool = False  # some cell ran emulated GEMMs: its times and throughputs are not speeds

    @property
    def status(self) -> str:
        """"ok", "partial" (some cells failed) or "failed" (every cell failed)."""
        if not self.entries:
            return "failed"
        return "partial" if self.n_failed_cells else "ok"

    @property
    def failed_label(self) -> str:
        """"failed 3/3" for an all-failed row, "2/3 ok" for a partial one, else ""."""
        total = self.n_ok_cells + self.n_failed_cells
        if not self.entries:
            return f"failed {self.n_failed_cells}/{total}"
        return f"{self.n_ok_cells}/{total} ok" if self.n_failed_cells else ""


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
class RecipeContext:
    """The training recipe behind a table: fields every cell shares, and those that differ."""

    common: dict[str, str] = field(default_factory=dict)  # field -> value (in RECIPE_SHOWN order)
    differs: dict[str, list[str]] = field(default_factory=dict)  # field -> "value (variants)" each


@dataclass
class TuningRow:
    """One method's default configuration beside its tuned one, with the search's cost."""

    method: str
    default: str | None  # the default row's variant (None where the store has none)
    tuned: str
    default_score: float
    tuned_score: float
    default_rank: int | None
    tuned_rank: int | None
    selected: list[str]  # hyperparameters the search chose ("lr=0.0003", per subtask where they differ)
    trials: int  # trial cells (finished or failed) of its searches
    hours: float  # summed training time of the trial cells, hours
    hardware: str  # "GPU", "CPU" or "GPU+CPU": where the trials ran
    # Per task the tuned row has: (column label, metric, default mean, tuned mean); the ranking
    # score needs every task, which a search run on some tasks does not have.
    per_column: list[tuple[str, str, float, float]] = field(default_factory=list)


# The key of a tuned cell's record naming the baseline whose selected values it ran at (``--tune-baseline``;
# suite.app.tuning.INHERITED, which reports may not import).
INHERITED = "inherited_from"
# The mark on a board's gap and Δ columns where its baseline ran off its tuned optimum, and its legend.
PROTOCOL_MARK = "†"
PROTOCOL_LEGEND = "the baseline ran off its tuned optimum: gaps may overstate"


@dataclass
class TrialPoint:
    """One setting a search tried: its held-out score over the trial cells (seeds) that ran it."""

    values: dict[str, object]  # every searched hyperparameter, as stored
    shown: dict[str, str]  # the same, as printed (local paths removed)
    mean: float
    low: float  # 95% Student-t interval over the seeds (nan with one)
    high: float
    n: int  # trial cells with a score
    failed: int  # trial cells without one
    selected: bool  # the setting the tuned row runs
    order: int = 0  # the first trial index that ran it

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.shown.items())


@dataclass
class CurvePoint:
    x: float  # the value (nan for a choice, placed by its label)
    label: str
    mean: float
    low: float
    high: float
    n: int
    selected: bool


@dataclass
class TrialCurve:
    """A search's held-out score against one hyperparameter: a slice at the other searched values'
    selected setting (``held``), or, where the trials hold none fixed (random draws), every trial
    (``projected``: the other values vary between points)."""

    label: str  # the searched configuration (its tuned row's name without " (tuned)")
    subtask: str
    name: str
    points: list[CurvePoint]
    numeric: bool
    log: bool  # log-spaced values (a learning rate): drawn on a log axis
    held: dict[str, str] = field(default_factory=dict)
    projected: bool = False


@dataclass
class GridEdge:
    """A selected value at the edge of what its search tried: the optimum may lie beyond the grid."""

    name: str
    value: str
    side: str  # "smallest", "largest" or "only" (one value tried)
    tried: int  # distinct values tried
    subtask: str

    @property
    def text(self) -> str:
        where = f" on {self.subtask}" if self.subtask else ""
        if self.side == "only":
            return f"{self.name}={self.value} is the only value tried{where}: search a grid around it"
        return (f"{self.name}={self.value} is the {self.side} of the {self.tried} values tried{where}: "
                f"widen the grid {'below' if self.side == 'smallest' else 'above'} it")


@dataclass
class SearchTrials:
    """The trials of one search (one configuration on one task): every tried setting and its score,
    the setting selected, the curves drawn from them and the selected values at a grid edge."""

    search_id: str
    label: str
    variant: str  # the tuned row it selected ("" where no tuned cell ran yet)
    method: str
    subtask: str
    metric: str  # the primary metric the trials were scored (and selected) by
    higher_is_better: bool
    names: list[str]
    points: list[TrialPoint]
    selected: dict[str, str]  # as printed; empty where no tuned cell ran yet
    edges: list[GridEdge] = field(default_factory=list)
    curves: list[TrialCurve] = field(default_factory=list)


@dataclass
class ProtocolStatus:
    """How one row's hyperparameters were chosen: searched (with its budget and grid edges) or defaults."""

    variant: str
    tuned: bool
    trials: int = 0
    hours: float = math.nan
    hardware: str = ""
    selected: list[str] = field(default_factory=list)
    edges: list[GridEdge] = field(default_factory=list)
    tuned_row: str = ""  # for a row at defaults: the board's tuned row of its configuration, where one ran
    checked: bool = False  # its searches' tried values are stored, so ``edges`` is known
    inherited_from: str = ""  # ran at this baseline's selected values (--tune-baseline), not searched itself

    @property
    def summary(self) -> str:
        """"tuned: 6 trials, 1.2 h on GPU; selected lr=0.001" or "defaults: not tuned"."""
        if self.inherited_from:
            return (f"at {self.inherited_from}'s tuned values"
                    + (f" ({'; '.join(self.selected)})" if self.selected else "") + ": not searched itself")
        if not self.tuned:
            return "defaults: not tuned" + (f" (tuned: {self.tuned_row})" if self.tuned_row else "")
        budget = f"{self.trials} trial{'s' if self.trials != 1 else ''}"
        if not math.isnan(self.hours):
            budget += f", {f_duration(self.hours * 3600)}"
        if self.hardware and self.hardware != "–":
            budget += f" on {self.hardware}"
        return f"tuned: {budget}" + (f"; selected {'; '.join(self.selected)}" if self.selected else "")


@dataclass
class Protocol:
    """Whether a board's comparisons stand at the baseline's optimum, per row and for the table."""

    statuses: dict[str, ProtocolStatus] = field(default_factory=dict)  # variant -> status, every row
    off_optimum: str = ""  # "" | "untuned" | "edge" | "inherited": how the baseline ran off its tuned optimum
    worst: bool = False  # an untuned baseline beside tuned methods
    warning: str = ""  # said above the table where ``off_optimum``

    @property
    def mark(self) -> str:
        return PROTOCOL_MARK if self.off_optimum else ""

    @property
    def searched(self) -> bool:
        return any(s.tuned or s.inherited_from for s in self.statuses.values())


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
    rank_by: str = ""  # what the rank column orders by (an aggregate's label, "avg rank", a column)
    rank_scale: float = 1.0  # display scale of the ranking score
    rank_higher_is_better: bool = True
    rank_metric: str = ""  # the metric behind the ranking score, for formatting ("" for aggregates)
    recipe: RecipeContext | None = None  # the training recipe of the whole table
    recipes: dict[str, RecipeContext] = field(default_factory=dict)  # per subtask (task pages)
    mixed: dict[str, list[str]] = field(default_factory=dict)  # provenance column -> its values, where >1
    memory_label: str = "peak memory"  # what "peak memory" measured on these cells
    cost_columns: list[MetricSpec] = field(default_factory=list)  # declared cost columns some row has
    tuning: list[TuningRow] = field(default_factory=list)  # default vs tuned, per tuned method
    searches: list[SearchTrials] = field(default_factory=list)  # the trials behind the tuned rows
    protocol: Protocol = field(default_factory=Protocol)  # tuned or defaults, per row and for the baseline
    # (variant, subtask) -> (failed cells, all cells, first line of the first error, paths removed)
    failures: dict[tuple[str, str], tuple[int, int, str]] = field(default_factory=dict)

    @property
    def headline(self) -> AggregateColumn | None:
        """The family's headline aggregate (the first it returns), if the board has one."""
        return self.aggregates[0] if self.aggregates else None

    @property
    def aggregate_label(self) -> str:
        return self.headline.label if self.headline else ""

    @property
    def model_label(self) -> str:
        """The model as published: a local folder without the folders above it (``<path>/name``)."""
        return scrub_paths(self.model)

    @property
    def slug(self) -> str:
        return slugify(f"{self.family}-{self.model_label}", key=f"{self.family}-{self.model}")

    @property
    def gap_columns(self) -> list[Column]:
        """Columns judged by the gap to the baseline over seeds: lower-is-better scores (losses,
        errors, perplexities), where the papers report a method as its gap to the baseline."""
        if self.baseline is None:
            return []
        return [c for c in self.columns if not c.higher_is_better
                and any(r.entries.get(c.key) is not None and r.entries[c.key].gap is not None for r in self.rows)]


@dataclass(frozen=True)
class Baselines:
    """Which row each board is tested against (``--baseline``).

    ``glue=lora,lm=bf16-train`` names one per task family, a bare name (``lora``) one for the
    families not named; a family with neither gets its default: the baseline its task declares
    (``Task.baseline``: ``bf16-train`` for language-model loss), else ``bf16-train`` where the
    board ranks training recipes, else ``lora``, the first of these the board has.
    """

    default: str | None = None
    per_family: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str | Baselines | None) -> Baselines:
        """``lora``, ``glue=lora,lm=bf16-train``, ``lora:r=16,alpha=32,lm=bf16-train``: a token
        ``name=value`` whose name is a task family starts a family's pair, any other continues the
        previous method's arguments. Each method is written as the boards write it (defaults dropped)."""
        from suite.registry import TASKS

        if isinstance(text, Baselines):
            return text
        specs: list[list[str]] = []  # [family or "", method spec]
        for token in (t.strip() for t in str(text or "").split(",")):
            if not token:
                continue
            name, sep, value = token.partition("=")
            if sep and name.strip() in TASKS:
                if not value.strip():
                    raise UserError(f"--baseline '{token}': write family=method, e.g. glue=lora,lm=bf16-train")
                specs.append([name.strip(), value.strip()])
            elif sep and ":" not in name and specs:
                specs[-1][1] += "," + token  # an argument of the method before it
            elif sep and ":" not in name:
                raise UserError(f"--baseline '{token}': '{name}' is no task family; write family=method "
                                f"(e.g. glue=lora) or a method (lora:r=16)")
            else:
                specs.append(["", token])
        defaults = [canonical_spec(m) for f, m in specs if not f]
        if len(defaults) > 1:
            raise UserError(f"--baseline names two methods for every family ({', '.join(defaults)}); give one, "
                            f"or one per family: glue={defaults[0]},lm={defaults[1]}")
        per_family = {f: canonical_spec(m) for f, m in specs if f}
        return cls(defaults[0] if defaults else None, tuple(sorted(per_family.items())))

    @property
    def explicit(self) -> bool:
        return self.default is not None or bool(self.per_family)

    def named(self, family: str) -> str | None:
        """The baseline the user named for ``family`` (None: the family's default applies)."""
        return dict(self.per_family).get(family, self.default)

    def choose(self, family: str, rows: dict[str, Row]) -> str | None:
        """The baseline of a board of ``family`` with these rows; None when it has no such row."""
        named = self.named(family)
        if named is not None:  # as named, else its tuned row (--tune-baseline runs no default cells)
            return next((v for v in (named, f"{named} (tuned)") if v in rows), None)
        for candidate in _default_baselines(family, rows):
            if candidate in rows:
                return candidate
        for candidate in _default_baselines(family, rows):  # --tune-baseline runs no default cells
            if f"{candidate} (tuned)" in rows:
                return f"{candidate} (tuned)"
        return None


def _default_baselines(family: str, rows: dict[str, Row]) -> list[str]:
    from suite.registry import TASKS

    declared = getattr(TASKS.get(family).target, "baseline", "") if family in TASKS else ""
    trains = any(r.kind == "train" for r in rows.values())
    return [b for b in (declared, "bf16-train" if trains else "", "lora") if b]


def slugify(text: str, key: str | None = None) -> str:
    """A file-name-safe, collision-resistant name for user-controlled text: readable from ``text``
    (already free of local paths), unique by a hash of ``key`` (default: the text)."""
    import hashlib

    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in str(text))[:60].strip("-.")
    return f"{safe or 'x'}-{hashlib.sha1(str(text if key is None else key).encode()).hexdigest()[:8]}"


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
        board = _build_board(str(family), str(model), part, scores, costs,
                             failed, baselines, predictions, alpha)
        board.tuning = _tuning_rows(board, part, trials)
        board.searches = _searches(board, part, trials)
        board.protocol = _protocol(board)
        boards.append(board)
    return boards


def canonical_variants(frame: pd.DataFrame) -> pd.DataFrame:
    """One configuration, one row: each cell's variant rewritten from its resolved arguments, without
    those at the method's defaults, in a fixed order (``lora`` and ``lora:r=8`` are one row). Cells
    whose arguments cannot be read, or whose method is not registered here, keep their label."""
    if frame.empty or "method_args" not in frame or "variant" not in frame:
        return frame
    stage = frame["stage"].fillna("").astype(str) if "stage" in frame else pd.Series("", index=frame.index)
    keys = frame["variant"].astype(str) + "\x00" + frame["method_args"].astype(str) + "\x00" + stage
    tuned = stage == "tuned"
    if "tuned" in frame and tuned.any():
        # A method run at a baseline's selected values is not the same row as its own tuned one.
        record = frame.loc[tuned, "tuned"].fillna("").astype(str)
        heir = record[record.str.contains(INHERITED, regex=False)]
        if not heir.empty:
            keys = keys + "\x00" + heir.reindex(frame.index, fill_value="")
    codes, uniques = pd.factorize(keys)
    labels = np.array([canonical_label(*key.split("\x00")) for key in uniques], dtype=object)
    return frame.assign(variant=labels[codes])


def canonical_label(variant: str, method_args: str, stage: str = "", tuned: str = "") -> str:
    """The label of a composition from its stored, resolved arguments (see ``canonical_variants``); a
    tuned cell that ran at a baseline's selected values says whose ("lora (at bf16-train's tuned lr)")."""
    import json

    values = _tuned_values(tuned) if stage == "tuned" else {}
    heir = str(values.pop(INHERITED, "") or "")
    suffix = f" (at {heir}'s tuned {', '.join(sorted(values)) or 'values'})" if heir else " (tuned)"
    try:
        parts = json.loads(method_args)
        label = "+".join(_canonical_part(p["name"], p.get("args") or {}) for p in parts)
    except (TypeError, ValueError, KeyError, AttributeError):
        label = ""
    if not label:
        return variant.removesuffix(" (tuned)") + suffix if heir else variant
    return label + (suffix if stage == "tuned" else "")


@functools.lru_cache(maxsize=512)
def canonical_spec(text: str) -> str:
    """A method spec as the boards label it (``lora:r=8`` -> ``lora``); as written where it does not parse."""
    import json

    from suite.config import build_config, config_to_dict, parse_kv
    from suite.registry import METHODS

    parts = []
    try:
        for piece in text.split("+"):
            name, _, args = piece.strip().partition(":")
            cls = METHODS.get(name).target
            resolved = build_config(cls.Config, parse_kv(args, name) if args else {}, name)
            parts.append({"name": name, "args": config_to_dict(resolved)})
    except UserError:
        return text
    return canonical_label(text, json.dumps(parts))


@functools.lru_cache(maxsize=512)
def _defaults(name: str) -> tuple[tuple[str, object], ...] | None:
    from suite.config import build_config, config_to_dict
    from suite.registry import METHODS

    if name not in METHODS:
        return None
    cls = METHODS.get(name).target
    return tuple(config_to_dict(build_config(cls.Config, {}, name)).items())


def _canonical_part(name: str, args: dict) -> str:
    defaults = _defaults(name)
    if defaults is None:
        raise KeyError(name)  # an unregistered method: its defaults are unknown here
    default = dict(defaults)
    changed = [(k, v) for k, v in sorted(args.items()) if k not in default or default[k] != v]
    return name + (":" + ",".join(f"{k}={_arg_text(v)}" for k, v in changed) if changed else "")


def _arg_text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ";".join(_arg_text(v) for v in value)
    return "none" if value is None else str(value)


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
    wanted = dict.fromkeys([*(s.name for s in metrics.columns()), *COSTS_READ])
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
    failures = _failures(part, fam_failed)
    for row in rows.values():
        _row_costs(row)

    board = Board(family, model, columns, list(rows.values()), Baselines.parse(baseline).choose(family, rows),
                  alpha=alpha, failures=failures)
    synth = part.get("synthetic_data")
    board.synthetic = bool(synth is not None and _bool(synth).any())
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
    import json

    pairs = cells[["variant", "recipe"]].drop_duplicates()
    parsed: dict[str, dict] = {}
    for text in pairs["recipe"].dropna().unique():
        try:
            value = json.loads(text)
        except (TypeError, ValueError):
            value = {}
        parsed[text] = value if isinstance(value, dict) else {}
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
            labels = g["label"].dropna()
            if labels.empty or labels.nunique() > 50 or not np.allclose(labels, np.round(labels)):
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
        for r in board.rows:
            e = r.entries.get(col.key)
            if e is None or math.isnan(e.summary.mean):
                continue
            top = e.summary.ci_low if e.summary.n > 1 and not math.isnan(e.summary.ci_low) else e.summary.mean
            if top <= level + 1e-12:
                e.chance, e.chance_level = kind, level


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
            values = _tuned_values(text)
            t.inherited = t.inherited or scrub_paths(values.pop(INHERITED, "") or "")
            label = scrub_paths(", ".join(f"{k}={_recipe_value(v)}" for k, v in sorted(values.items())))
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


def _tuned_values(text: object) -> dict:
    """The stored ``tuned`` JSON of a cell (the values its search set); {} where absent or unreadable."""
    import json

    if not isinstance(text, str) or not text:
        return {}
    try:
        values = json.loads(text)
    except ValueError:
        return {}
    return values if isinstance(values, dict) else {}


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
    return scrub_paths(_recipe_value(value) if not isinstance(value, (list, tuple)) else _arg_text(value))


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
            values = _tuned_values(text)
            if isinstance(sid, str) and sid and INHERITED not in values:  # the searched method's own cells
                chosen.setdefault(sid, (str(variant), values))
    primary = mine[(mine["status"] == "ok") & _bool(mine["is_primary"])] if "is_primary" in mine else mine.iloc[0:0]
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
            values = _tuned_values(text)
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
    matrices = _correct_matrices(preds)
    tests: list[Entry] = []
    for col, entry, b_entry in _against_baseline(board):
        entry.test = stats.seed_t_test(entry.values, b_entry.values, entry.keys, b_entry.keys)
        entry.example_test = _example_test(entry, b_entry, col, matrices)
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
