"""The board model both renderings read: a board is one task family on one model, its rows the
method variants, its columns the family's tasks; each entry carries seed statistics, the test
against the baseline and the cells behind it, and the board carries the context a reader needs
(recipe, mixed provenance, memory measured, tuning protocol). ``reports.leaderboard`` builds it;
``reports.site`` and ``reports.terminal`` only render it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from suite.metrics import MetricSpec
from suite.reports import stats
from suite.reports.format import f_duration, scrub_paths


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
    targets: str = ""  # the modules its adapters were placed on ("q_proj;v_proj"), " | " between differing cells

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
    by_variant: dict[str, dict[str, str]] = field(default_factory=dict)  # variant -> field -> its value(s)
    usual: dict[str, str] = field(default_factory=dict)  # differing field -> the value most rows ran, if one

    def value(self, variant: str, name: str) -> str:
        """A row's value of a recipe field: the common one, else its own ("a / b" where its cells differ)."""
        return self.common.get(name) or self.by_variant.get(variant, {}).get(name, "")

    def differing(self, variant: str) -> dict[str, str]:
        """The fields where this row ran other than most of the table (every differing field where no
        value is the most common), with this row's value: what sets it apart."""
        mine = self.by_variant.get(variant, {})
        return {k: mine[k] for k in self.differs if k in mine and mine[k] != self.usual.get(k)}


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
# suite.app.sweep.INHERITED, which reports may not import).
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
    # column key -> (level, "majority" | "chance"): the majority-class rate (accuracy) or chance score
    # (MCC) its scores were compared with, where the board knows it (reference lines on the Pareto plot)
    chance_levels: dict[tuple[str, str, str], tuple[float, str]] = field(default_factory=dict)

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



def slugify(text: str, key: str | None = None) -> str:
    """A file-name-safe, collision-resistant name for user-controlled text: readable from ``text``
    (already free of local paths), unique by a hash of ``key`` (default: the text)."""
    import hashlib

    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in str(text))[:60].strip("-.")
    return f"{safe or 'x'}-{hashlib.sha1(str(text if key is None else key).encode()).hexdigest()[:8]}"


PredictionLoader = Callable[[list[str]], pd.DataFrame]


