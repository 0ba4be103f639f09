"""The Method contract: a typed config dataclass and one verb, ``apply(model, ctx) -> model``.

Methods compose left to right (``nf4+lora``). The shared training loop calls the optional
hooks below, so methods that need more than backprop on their parameters (AdaLoRA's rank
schedule, LISA's layer sampling, SpIEL's regrowth, MeZO's zeroth-order step, SORSA's
regulariser) plug into the same loop instead of bringing their own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from suite.errors import CellFailure

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class NoConfig:
    """Config of a method that takes no arguments."""


@dataclass
class MethodContext:
    """What a method may need while applying itself: data for calibration, device, dtype."""

    device: str = "cpu"
    dtype: Any = None
    seed: int = 0
    model_family: str = ""
    task_kind: str = "classification"  # "classification" | "regression" | "causal-lm"
    tokenizer: Any = None
    calibration_source: Any = None  # callable(n_batches, batch_size) -> list[dict of tensors]
    recipe: Any = None
    notes: dict[str, Any] = field(default_factory=dict)  # methods report facts here (e.g. "simulated")

    def calibration_batches(self, n_batches: int = 8, batch_size: int | None = None) -> list[dict]:
        """Batches of the task's training data, on the device, for data-aware initialisation."""
        if self.calibration_source is None:
            raise CellFailure("this method needs calibration data, but the task provides none")
        return self.calibration_source(n_batches, batch_size)


@dataclass(frozen=True)
class MethodTarget:
    """What a method will be applied to, as known before any cell runs (no weights loaded)."""

    model: str  # the model name or folder as given
    model_type: str  # config.json's ``model_type`` ("bert", "llama"); "" when unknown without loading
    task_kind: str  # the task's head: "classification" | "regression" | "causal-lm"

    @property
    def family_label(self) -> str:
        return self.model_type or "unknown"


class Method:
    """Base class of every method plugin. Subclasses set ``Config`` and implement ``apply``."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "peft"  # "peft" | "quant" | "train"
    Config: ClassVar[type] = NoConfig
    mergeable: ClassVar[bool] = False
    version: ClassVar[str] = "1"  # bump when results would change: it enters the cell id
    default_lr: ClassVar[float | None] = None  # recommended learning rate; --lr overrides it
    # Names (or name prefixes) of this method's measurements where lower is better
    # (sizes, errors, times); every other measurement is stored as higher-is-better.
    lower_is_better: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    # -- before any cell runs ----------------------------------------------------------------
    def unsupported(self, target: MethodTarget) -> str | None:
        """Why this method cannot run on ``target`` with the installed libraries; None if it can.

        The sweep asks every method of every cell before training anything, so a method that
        a model family or a library version rules out is refused up front with this reason,
        never found out as a failed cell hours later. Say what to do in the reason.
        """
        return None

    # -- the verb ---------------------------------------------------------------------------
    def apply(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        raise NotImplementedError

    # -- hooks of the shared training loop (all optional) --------------------------------------
    def on_train_begin(self, model: torch.nn.Module, trainer: Any) -> None:
        """Called once after the optimizer exists (``trainer.optimizer``, ``trainer.total_steps``)."""

    def train_step(self, model: torch.nn.Module, batch: dict, trainer: Any) -> float | None:
        """Replace forward+backward+step for one batch; return the loss, or None for the default."""
        return None

    def regularizer(self, model: torch.nn.Module) -> torch.Tensor | None:
        """An extra loss term added to the task loss at every step."""
        return None

    def before_optimizer_step(self, model: torch.nn.Module, step: int, trainer: Any) -> None:
        """After backward and clipping, before ``optimizer.step()`` (e.g. mask gradients)."""

    def on_step_end(self, model: torch.nn.Module, step: int, trainer: Any) -> None:
        """After ``optimizer.step()`` and the scheduler, before the gradients are cleared.

        AdaLoRA's rank allocator scores importance from these gradients; LISA and SpIEL
        hook in here too. ``step`` counts the optimizer steps taken so far.
        """

    # -- cost and export -----------------------------------------------------------------------
    def measurements(self, model: torch.nn.Module) -> dict[str, float]:
        """Method-specific metrics stored with the cell (bits per weight, sparsity, ...)."""
        return {}

    def save_adapter(self, model: torch.nn.Module, path: str) -> None:
        """Write what a user must keep to restore the trained model (default: trainable tensors)."""
        from suite.modeling import save_trainable

        save_trainable(model, path)

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        """Fold the method into a plain transformers model with the original architecture."""
        raise CellFailure(f"method '{self.name}' cannot be merged into the base model")


def method_config_dict(method: Method) -> dict[str, Any]:
    from suite.config import config_to_dict

    return config_to_dict(method.config) if dataclasses.is_dataclass(method.config) else {}
