"""The Task contract: exactly what the runner and the training loop call, for every task family.

A registered task is a class; the runner makes one instance per (subtask, data source).
Families with subtasks (GLUE) list them in ``subtasks``; ``--tasks glue`` expands to all.
Family bases in ``suite.tasks`` (text classification, causal-LM fine-tuning, image
classification, language-model loss) implement most of it; a new task family is one new
file that subclasses ``Task`` (or a base) and registers itself, and touches no core module.

The runner calls, in this order::

    task.check_data()                                  before any cell (fail fast, UserError)
    bundle = task.build_model(model_name)              model + processor + new_modules
    data = task.train_data(bundle, recipe)             a map-style or iterable dataset
    (methods apply)
    task.before_training(bundle, recipe, device)       measure what needs the untrained model
    batch = task.collate(items, bundle)                a dict of tensors the model takes
    samples, tokens = task.count(batch)                for throughput metrics
    task.validate(bundle, recipe, device)              during training (--eval-every): a cheap score
    out = task.evaluate(bundle, recipe, device)        metrics + per-example records

and, for the leaderboard, ``type(task).aggregate(scores)`` (the GLUE score, VTAB group
means) and ``type(task).subtask_order(subtasks)``: core and reports reach benchmark-level
logic only through these two class methods, found through the registry.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from suite.config import NoOptions

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch


@dataclass
class Metric:
    name: str
    value: float
    split: str = "dev"
    is_primary: bool = False
    higher_is_better: bool = True


@contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[None]:
    """The model in eval mode (dropout off) for the block, then back in the mode it was in,
    also when evaluation raises, so a later evaluation or training step is not left in the wrong mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


@dataclass
class EvalOutput:
    """Metrics, and per-example records kept for paired significance tests.

    ``records`` has one row per evaluated example: ``split``, ``example_id`` and
    ``correct`` (a number: 1/0, or a negative error for regression) are what the
    statistics read; any other column (prediction, label, generated text, extracted
    answer) is stored as it is.
    """

    metrics: list[Metric]
    records: pd.DataFrame | None = None


@dataclass
class ModelBundle:
    """A model, what turns raw examples into its inputs, and what the task added to it.

    ``processor`` is a tokenizer, an image processor, or a mapping of both.
    ``new_modules`` are the modules the task created for this model and that must train
    under every method (a fresh classification head): methods read them from here instead
    of guessing what a "head" is, so every method trains at the same budget. A causal LM's
    ``lm_head`` and embeddings are pretrained, not new, unless a task says otherwise.
    """

    model: torch.nn.Module
    processor: Any = None
    new_modules: tuple[torch.nn.Module, ...] = ()
    family: str = ""  # the model's ``model_type`` ("bert", "llama", "vit"): default targets, recipes
    name: str = ""

    @property
    def tokenizer(self) -> Any:
        """The text processor: the processor itself, or its ``tokenizer`` part."""
        if isinstance(self.processor, Mapping):
            return self.processor.get("tokenizer")
        return getattr(self.processor, "tokenizer", self.processor)

    def new_parameters(self) -> list[torch.nn.Parameter]:
        return [p for module in self.new_modules for p in module.parameters()]

    def save_processor(self, folder: str) -> None:
        """Save whatever processors the bundle has next to an exported model."""
        parts = self.processor.values() if isinstance(self.processor, Mapping) else [self.processor]
        for part in parts:
            if part is not None and hasattr(part, "save_pretrained"):
                part.save_pretrained(folder)


@dataclass(frozen=True)
class Aggregate:
    """A benchmark-level score (the GLUE score, a VTAB group mean) and the subtasks it covers."""

    name: str
    value: float
    members: tuple[str, ...]  # the subtasks that entered
    expected: int  # how many subtasks the full benchmark has

    @property
    def complete(self) -> bool:
        return len(self.members) == self.expected


@dataclass(frozen=True)
class BatchCount:
    samples: int
    tokens: int = 0


def count_batch(batch: Mapping[str, Any]) -> BatchCount:
    """Samples from the first tensor; tokens from the attention mask, else the input ids, else 0."""
    first = next(v for v in batch.values() if hasattr(v, "shape"))
    samples = int(first.shape[0])
    if "attention_mask" in batch:
        return BatchCount(samples, int(batch["attention_mask"].sum()))
    if "input_ids" in batch:
        return BatchCount(samples, int(batch["input_ids"].numel()))
    return BatchCount(samples, 0)


class Task:
    """Base class of task plugins."""

    family: ClassVar[str] = ""
    subtasks: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[str] = "1"  # bump when results would change: it enters the cell id
    synthetic: ClassVar[bool] = False
    default_model: ClassVar[str] = ""
    # What the model is trained to do; methods read it as ``ctx.task_kind`` (peft's task type):
    # "classification" | "regression" | "causal-lm" | "image-classification" | "language-modeling"
    objective: str = "classification"
    primary_metric: str = "accuracy"
    higher_is_better: bool = True
    eval_splits: tuple[str, ...] = ("dev",)

    # The metrics this task produces (suite.metrics.MetricSpec): label, unit, direction, format.
    metrics: ClassVar[tuple[Any, ...]] = ()
    # The method its boards are judged against unless --baseline says otherwise ("": the report's rule).
    baseline: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions  # typed task options (``--train-data metamath``), stored with results
    # Families whose train_data and evaluate read their examples through ``examples`` can hold
    # out part of the training split for tuning (``for_selection``); others say how they select.
    carves_validation: ClassVar[bool] = False
    validation_fraction: ClassVar[float] = 0.1  # of the training split, held out in a selection view
    min_validation: ClassVar[int] = 16  # fewest held-out examples a selection view accepts
    selection: bool = False  # True in the view ``for_selection`` returns

    def __init__(self, subtask: str | None = None, data_dir: str | None = None, options: Any = None):
        self.subtask = subtask or ""
        self.data_dir = data_dir
        self.options = options if options is not None else self.Options()

    def identity(self) -> dict[str, Any]:
        """What besides family, subtask, version and data source decides this task's results (its
        options, the version of an external scorer); enters the cell id. Empty keeps old ids.
        Options marked ``recipe=True`` enter with the recipe instead (``suite.config.recipe_options``)."""
        from suite.config import config_to_dict, recipe_options

        moved = recipe_options(self.options, with_none=True)
        return {k: v for k, v in config_to_dict(self.options).items() if k not in moved}

    @property
    def name(self) -> str:
        return f"{self.family}:{self.subtask}" if self.subtask else self.family

    # -- data ---------------------------------------------------------------------------------
    def data_source(self) -> str:
        """Where the data comes from ("hub:nyu-mll/glue", "dir:/abs/path", "synthetic"): enters the cell id."""
        raise NotImplementedError

    def check_data(self) -> None:
        """Fail fast (UserError) before any training when the data cannot be found."""

    def train_data(self, bundle: ModelBundle, recipe: Any) -> Sequence | torch.utils.data.IterableDataset:
        """The training examples, ready for ``collate``: a map-style dataset (anything with
        ``len`` and indexing, shuffled by the loop) or an ``IterableDataset`` (streamed in order)."""
        raise NotImplementedError

    def collate(self, items: list, bundle: ModelBundle) -> dict:
        """A batch the model takes as ``model(**batch)``, with ``labels`` for the loss."""
        raise NotImplementedError

    def count(self, batch: Mapping[str, Any]) -> BatchCount:
        """Samples and tokens in a batch (tokens 0 where the inputs are not tokens)."""
        return count_batch(batch)

    # -- model ----------------------------------------------------------------------------------
    def build_model(self, model_name: str) -> ModelBundle:
        raise NotImplementedError

    def trains_from_scratch(self, model_name: str) -> bool:
        """Whether this task trains ``model_name`` from random weights, every module new: methods see it
        before any cell runs (``MethodTarget.from_scratch``) and may refuse what would then train nothing."""
        return False

    # -- evaluation -------------------------------------------------------------------------------
    def load(self, split: str, limit: int | None = None) -> list:
        """The examples of a split, at most ``limit`` (load-based families implement this)."""
        raise NotImplementedError

    def for_selection(self) -> Task:
        """This task as hyperparameter search sees it: training on the training split minus a held-out
        part and scored on that part, never on the split the leaderboard reports. Families that read
        their examples through ``examples`` get it here; others (a fixed validation split, VTAB's
        val200) override it."""
        import copy

        from suite.errors import UserError

        if not self.carves_validation:
            raise UserError(f"task '{self.name}' has no validation split to tune on; its family does not "
                            f"carve one from its training data")
        view = copy.copy(self)
        view.selection = True
        view.eval_splits = ("val",)
        return view

    def examples(self, split: str, limit: int | None = None) -> list:
        """``load(split)``, or in a selection view the training split cut in two by a fixed seed:
        ``train`` is what remains, every evaluation split is the held-out part (``val``)."""
        if not self.selection:
            return self.load(split, limit)
        import random

        from suite.errors import UserError

        train = self.load("train", None)
        held = max(self.min_validation, round(self.validation_fraction * len(train)))
        if len(train) < 2 * held:
            raise UserError(f"task '{self.name}' has {len(train)} training examples, too few to hold out "
                            f"{held} for tuning and train on the rest")
        order = list(range(len(train)))
        random.Random(0).shuffle(order)  # the same held-out part for every method, trial and seed
        chosen = order[held:] if split == "train" else order[:held]
        items = [train[i] for i in chosen]
        return items[:limit] if limit else items

    def before_training(self, bundle: ModelBundle, recipe: Any, device: str) -> None:
        """Once after the methods applied and before the first step (e.g. a forgetting baseline)."""

    def evaluate(self, bundle: ModelBundle, recipe: Any, device: str) -> EvalOutput:
        """The task's official metrics on its evaluation splits (at most ``recipe.limit`` examples).

        The scaffold every family shares: the model in eval mode and no gradients, ``evaluate_split``
        per split, the metric named ``primary_metric`` on the first split marked primary, and the
        per-example records of all splits in one frame. A family implements ``evaluate_split``.
        """
        import pandas as pd
        import torch

        metrics: list[Metric] = []
        frames = []
        with evaluation_mode(bundle.model), torch.no_grad():
            for split in self.eval_splits:
                split_metrics, records = self.evaluate_split(bundle, recipe, device, split)
                for metric in split_metrics:
                    metric.split = split
                    metric.is_primary = metric.name == self.primary_metric and split == self.eval_splits[0]
                metrics += split_metrics
                frames.append(records.assign(split=split) if "split" not in records else records)
        return EvalOutput(metrics=metrics, records=pd.concat(frames, ignore_index=True) if frames else None)

    def evaluate_split(self, bundle: ModelBundle, recipe: Any, device: str,
                       split: str) -> tuple[list[Metric], pd.DataFrame]:
        """The metrics of one split (their ``split`` and ``is_primary`` are set by ``evaluate``) and its
        per-example records (``example_id``, ``prediction``, ``label``, ``correct``, any other column)."""
        raise NotImplementedError

    @property
    def validation_split(self) -> str:
        """The split ``validate`` scores (its evaluations during training are stored under it)."""
        return self.eval_splits[0]

    def validate(self, bundle: ModelBundle, recipe: Any, device: str) -> dict[str, float]:
        """Scores during training (``--eval-every``): by default the primary metrics of ``evaluate``.
        A task whose evaluation is costly (generation on a test set) scores a validation slice here."""
        return {m.name: m.value for m in self.evaluate(bundle, recipe, device).metrics if m.is_primary}

    def default_recipe(self, model_family: str) -> dict[str, Any]:
        """Recipe values this task recommends for a model family (before user overrides)."""
        return {}

    # -- benchmark level (class methods: reports call them without data or a model) -----------------
    @classmethod
    def aggregate(cls, scores: Mapping[str, float]) -> list[Aggregate]:
        """Benchmark-level scores from per-subtask primary scores (GLUE score, VTAB group means).

        ``scores`` maps subtask -> primary metric (one seed, or a mean over seeds). The
        first item is the headline aggregate; empty when the family has none. An aggregate
        over part of its subtasks says so (``members`` vs ``expected``), so a partial score
        is never mistaken for the benchmark's.
        """
        return []

    @classmethod
    def resolve_subtask(cls, text: str) -> str:
        """The subtask ``family:text`` names. By default one of ``subtasks``; a family may accept
        aliases, variants (``vtab:cifar@val200``) or free-form names (``images:<dir>``)."""
        from suite.errors import UnknownNameError, UserError

        if not cls.subtasks:
            raise UserError(f"task '{cls.family}' has no subtasks (got '{cls.family}:{text}')")
        if text not in cls.subtasks:
            raise UnknownNameError(f"{cls.family} subtask", text, cls.subtasks)
        return text

    @classmethod
    def names_subtasks_itself(cls) -> bool:
        """Whether the family overrides ``resolve_subtask`` (then any token after it is its subtask)."""
        return cls.resolve_subtask.__func__ is not Task.resolve_subtask.__func__

    @classmethod
    def subtask_order(cls, subtasks: Iterable[str]) -> list[str]:
        """Display order of subtasks: the family's own order, unknown ones last, by name."""
        rank = {s: i for i, s in enumerate(cls.subtasks)}
        return sorted(subtasks, key=lambda s: (rank.get(s, len(rank)), s))


def in_batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``items`` of at most ``size`` (an evaluation batch)."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def mean_aggregate(name: str, members: Sequence[str], scores: Mapping[str, float]) -> list[Aggregate]:
    """The unweighted mean over the members that have a score (none: no aggregate)."""
    present = tuple(s for s in members if scores.get(s) is not None and not math.isnan(scores[s]))
    if not present:
        return []
    return [Aggregate(name, sum(scores[s] for s in present) / len(present), present, len(members))]

