"""The Task contract: load data, build the model with the right head, evaluate officially.

A registered task is a class; the runner makes one instance per (subtask, data source).
Families with subtasks (GLUE) list them in ``subtasks``; ``--tasks glue`` expands to all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

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


@dataclass
class EvalOutput:
    """Metrics, and per-example predictions kept for paired significance tests."""

    metrics: list[Metric]
    predictions: pd.DataFrame | None = None  # columns: split, example_id, prediction, label, correct


@dataclass
class ModelBundle:
    """A model with what the loop needs to feed it."""

    model: torch.nn.Module
    tokenizer: Any
    family: str = ""  # "bert", "llama", ...: chooses default target modules and recipes
    name: str = ""
    extras: dict = field(default_factory=dict)


class Task:
    """Base class of task plugins."""

    family: ClassVar[str] = ""
    subtasks: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[str] = "1"  # bump when results would change: it enters the cell id
    synthetic: ClassVar[bool] = False
    default_model: ClassVar[str] = ""
    head: str = "classification"  # "classification" | "regression" | "causal-lm"
    primary_metric: str = "accuracy"
    higher_is_better: bool = True
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("dev",)

    def __init__(self, subtask: str | None = None, data_dir: str | None = None):
        self.subtask = subtask or ""
        self.data_dir = data_dir

    @property
    def name(self) -> str:
        return f"{self.family}:{self.subtask}" if self.subtask else self.family

    def data_source(self) -> str:
        raise NotImplementedError

    def check_data(self) -> None:
        """Fail fast (UserError) before any training when the data cannot be found."""

    def load(self, split: str, limit: int | None = None) -> list[dict]:
        raise NotImplementedError

    def build_model(self, model_name: str) -> ModelBundle:
        raise NotImplementedError

    def collate(self, examples: list[dict], bundle: ModelBundle, max_length: int) -> dict:
        raise NotImplementedError

    def evaluate(self, bundle: ModelBundle, recipe: Any, device: str, limit: int | None) -> EvalOutput:
        raise NotImplementedError

    def default_recipe(self, model_family: str) -> dict[str, Any]:
        """Recipe values this task recommends for a model family (before user overrides)."""
        return {}
