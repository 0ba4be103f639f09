"""Every metric declared once: what it is called, its unit, which way is better, where it is stored,
how it aggregates its examples, how it prints, and whether it is a leaderboard column or a Pareto axis.

A metric is declared where it is produced: the costs every cell measures are ``COSTS`` below
(the runner and the training loop produce them); a task declares its scores in
``Task.metrics``; a method its measurements in ``Method.metrics``. The runner stores direction
and split from the declaration, and every view (``suite compare``, the site's tables, figures
and CSV files, the end-of-run table) reads label, unit, format and direction from it, so no
view decides them on its own. A derived metric inherits from its base: ``val_loss@step100``
(an evaluation during training) is ``val_loss``'s, ``quant_rel_error/layer.3`` (one part) is
``quant_rel_error``'s. A metric nobody declared keeps what its row stored.

Adding a leaderboard column is one declaration with ``column=True`` where the metric is
produced (``tests/test_boards.py`` adds one through a test plugin).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from suite.errors import UserError

Format = Literal["score", "count", "params", "memory_mb", "bytes", "duration_s", "rate", "number", "fraction"]
COST = "cost"  # the split of every cost measurement


@dataclass(frozen=True)
class MetricSpec:
    """One metric (or cost), as every view shows it."""

    name: str
    label: str = ""  # how a heading names it ("" : the name)
    unit: str = ""  # "nats", "s", "MB", "B", "params", "tokens/s", "" for a unitless score
    higher_is_better: bool = True
    split: str = ""  # where it is stored: "cost" for costs, "" for the task's evaluation splits
    format: Format = "score"  # how a value prints (reports.format.format_value)
    points: bool = False  # a fraction readers expect in points (x100): accuracy, F1, correlations
    column: bool = False  # a cost column of the leaderboards
    axis: bool = False  # a Pareto axis of the leaderboards (score against this cost)
    log_axis: bool = False  # that axis on a log scale (counts and sizes spanning decades)
    timing: bool = False  # measures speed: marked wherever GEMMs ran emulated, never ranked as speed
    across_tasks: Literal["mean", "median", "max", "sum"] = "mean"  # one row's value over a board's tasks
    # How the score aggregates its examples: the stored per-example column whose mean over the
    # evaluation examples it is ("correct" for accuracy), which the per-example paired test compares;
    # "" where it is computed over the whole set (F1, MCC, correlations, losses), so no per-example
    # test stands for it. Over seeds every view takes the mean with its Student-t interval.
    per_example: str = ""
    summary: str = ""  # one line for a legend or a column's tooltip

    @property
    def heading(self) -> str:
        """A column heading: the label, and the unit where the printed values do not carry it."""
        label = self.label or self.name
        carried = self.format in ("params", "memory_mb", "bytes", "duration_s") or self.unit in ("", "params")
        return label if carried else f"{label} ({self.unit})"

    @property
    def axis_label(self) -> str:
        """A figure axis: the label and the unit of the plotted numbers."""
        label = self.label or self.name
        return f"{label} ({self.unit})" if self.unit and self.unit != "params" else label

    @property
    def display_scale(self) -> float:
        return 100.0 if self.points else 1.0

    def derived(self, name: str, what: str) -> MetricSpec:
        """The spec of ``name``, a variant of this metric (``what`` says which): same unit and
        direction, never a column or an axis of its own."""
        return replace(self, name=name, label=f"{self.label or self.name} ({what})", column=False, axis=False)


def cost(name: str, label: str, unit: str = "", *, higher_is_better: bool = False, fmt: Format = "number",
         **more) -> MetricSpec:
    """A cost measurement (stored in split ``cost``); lower is better unless said otherwise."""
    return MetricSpec(name, label, unit, higher_is_better, COST, fmt, **more)


def score(name: str, label: str = "", *, points: bool = True, **more) -> MetricSpec:
    """A task's score (a fraction shown in points unless ``points=False``); higher is better unless said."""
    return MetricSpec(name, label or name, points=points, **more)


def loss(name: str, label: str, unit: str = "nats", **more) -> MetricSpec:
    """A loss-like score: lower is better, shown as stored."""
    return MetricSpec(name, label, unit, higher_is_better=False, format="number", **more)


# Scores more than one task family produces, declared here once so their declarations agree.
ACCURACY = score("accuracy", "accuracy", per_example="correct")
VAL_LOSS = loss("val_loss", "validation loss", summary="mean token cross-entropy on held-out text")
PERPLEXITY = loss("perplexity", "perplexity", unit="", summary="exp(validation loss)")

# What every cell measures: the runner's costs and the training loop's measurements.
COSTS: tuple[MetricSpec, ...] = (
    cost("trainable_params", "trainable parameters", "params", fmt="params", column=True, axis=True, log_axis=True,
         across_tasks="median", summary="trainable parameters: those that received gradient updates"),
    cost("total_params", "total parameters", "params", fmt="params"),
    cost("base_params", "base parameters", "params", fmt="params", summary="the model's parameters before methods"),
    cost("peak_memory_mb", "peak memory", "MB", fmt="memory_mb", column=True, axis=True, across_tasks="max",
         summary="CUDA max allocated on a GPU, peak resident memory on a CPU"),
    cost("train_time_s", "train time", "s", fmt="duration_s", column=True, axis=True, timing=True,
         across_tasks="sum", summary="wall time of training, summed over a row's tasks"),
    # A budget, not a score: stored as higher-is-better, as before it was declared.
    cost("train_steps", "steps", higher_is_better=True, fmt="count"),
    cost("train_samples_per_s", "samples/s", "samples/s", higher_is_better=True, fmt="rate", timing=True),
    cost("train_tokens_per_s", "tokens/s", "tokens/s", higher_is_better=True, fmt="rate", timing=True, axis=True,
         summary="training throughput; a speed only where the GEMMs ran on hardware, not emulated"),
    cost("adapter_bytes", "adapter size", "B", fmt="bytes", summary="what the method saves to keep its training"),
    cost("train_loss", "final train loss", fmt="number"),
    cost("train_kernel_fraction", "kernel share", higher_is_better=True, fmt="fraction",
         summary="the share of the cell's number-format operations a registered kernel ran (--kernels)"),
    cost("train_compiled_fraction", "compiled share", higher_is_better=True, fmt="fraction",
         summary="the share of an emulated recipe's quantiser calls that ran fused by torch.compile "
                 "(--fast-emulation); the numbers are the same either way"),
)


def _declared() -> dict[str, MetricSpec]:
    """Every declared spec by name: the costs, then each registered task's and method's."""
    from suite.registry import METHODS, TASKS

    found: dict[str, MetricSpec] = {}
    sources: dict[str, str] = {}

    def add(specs: Iterable[MetricSpec], source: str) -> None:
        for spec in specs:
            known = found.get(spec.name)
            if known is not None and known != spec:
                raise UserError(f"metric '{spec.name}' is declared twice, differently: by {sources[spec.name]} "
                                 f"and by {source}")
            found[spec.name], sources[spec.name] = spec, source

    add(COSTS, "the runner")
    for entry in TASKS.entries():
        add(getattr(entry.target, "metrics", ()), f"task '{entry.name}'")
    for entry in METHODS.entries():
        add(getattr(entry.target, "metrics", ()), f"method '{entry.name}'")
    return found


_DERIVED = re.compile(r"^(?P<base>.+?)(?:@(?P<step>step\d+)|/(?P<part>.+))$")
_STATE: dict[str, object] = {"revision": None, "specs": {}, "lookups": {}}


def declared() -> dict[str, MetricSpec]:
    """Every declared spec by name, read again whenever a plugin registered since the last read."""
    from suite.registry import METHODS, TASKS

    if _STATE["revision"] is None:
        METHODS.names(), TASKS.names()  # load the built-in plugins before the first read
    revision = (METHODS.revision, TASKS.revision)
    if _STATE["revision"] != revision:
        _STATE.update(revision=revision, specs=_declared(), lookups={})
    return _STATE["specs"]  # type: ignore[return-value]


def spec_of(name: str) -> MetricSpec | None:
    """The declaration of ``name``, or of its base for a derived name (``val_loss@step100``,
    ``quant_rel_error/layer.3``); None when nobody declared it."""
    specs = declared()
    lookups: dict = _STATE["lookups"]  # type: ignore[assignment]
    if name not in lookups:
        lookups[name] = _lookup(str(name), specs)
    return lookups[name]


def _lookup(name: str, specs: dict[str, MetricSpec]) -> MetricSpec | None:
    if name in specs:
        return specs[name]
    match = _DERIVED.match(name)
    if match is None or match["base"] not in specs:
        return None
    base = specs[match["base"]]
    what = f"at {match['step'].replace('step', 'step ')}" if match["step"] else match["part"]
    return base.derived(name, what)


def higher_is_better(name: str, stored: object = None) -> bool:
    """The direction of ``name``: declared, else what its row stored, else higher."""
    spec = spec_of(name)
    if spec is not None:
        return spec.higher_is_better
    if stored is None or stored != stored:  # None or NaN: not stored
        return True
    return bool(stored)


def split_of(name: str, reported: str) -> str:
    """Where ``name`` is stored: its declared split, else the evaluation split its task reported
    (a score declared with no split is stored on whichever split the task evaluated: dev, test)."""
    spec = spec_of(name)
    return spec.split if spec is not None and spec.split else reported


def columns() -> list[MetricSpec]:
    """The leaderboards' cost columns, in declaration order."""
    return [s for s in declared().values() if s.column]


def axes() -> list[MetricSpec]:
    """The Pareto axes, in declaration order."""
    return [s for s in declared().values() if s.axis]
