"""The Method contract: a typed config dataclass and one verb, ``apply(model, ctx) -> model``.

Methods compose left to right (``nf4+lora``). The shared training loop calls the optional
hooks below with a typed ``suite.train.TrainState``, so methods that need more than backprop
on their parameters (AdaLoRA's rank schedule, LISA's layer sampling, SpIEL's regrowth,
MeZO's zeroth-order step, SORSA's regulariser) plug into the same loop instead of bringing
their own. Seams instead of reach-ins: a method names the parameters the optimizer holds
(``optimizer_parameters``), may supply the optimizer (``make_optimizer``) and may set the
precision policy (``precision_policy``).

What is new in a model (a fresh classification head) is the task's decision, handed over
in ``ctx.new_modules``: a method keeps those trainable and never decides for itself that,
say, a causal LM's ``lm_head`` is a head to train.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from suite.errors import CellFailure

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from suite.precision import PrecisionPolicy
    from suite.task import ModelBundle
    from suite.train import TrainState


@dataclass
class NoConfig:
    """Config of a method that takes no arguments."""


@dataclass
class MethodContext:
    """What a method may need while applying itself: what is new, calibration data, device, dtype.

    The model's processor, family and the modules the task added are read from the task's
    ``bundle`` (``suite.task.ModelBundle``), never copied here.
    """

    device: str = "cpu"
    dtype: Any = None  # the parameters' dtype under the cell's precision policy
    seed: int = 0
    task_kind: str = "classification"  # the task's objective (suite.task.Task.objective)
    bundle: ModelBundle | None = None  # the model as the task built it: processor, new modules, family
    calibration_source: Any = None  # callable(n_batches, batch_size) -> list[dict of tensors]
    recipe: Any = None
    precision: Any = None  # suite.precision.PrecisionPolicy of the cell
    # The task's primary scores of the model as it stands (set by the runner before after_training),
    # so a method that changes the trained model (ComPEFT) can record the score before its change.
    evaluate: Any = None
    # The same on data held out from training (a tuning trial's selection split), where the cell has
    # such data; None elsewhere: a method choosing a value after training (ComPEFT's scale) must not
    # choose it on the split the leaderboard reports.
    evaluate_selection: Any = None
    notes: dict[str, Any] = field(default_factory=dict)  # methods report facts here (e.g. "simulated")

    @property
    def processor(self) -> Any:
        """Tokenizer, image processor, or a mapping of both."""
        return self.bundle.processor if self.bundle is not None else None

    @property
    def tokenizer(self) -> Any:
        return self.bundle.tokenizer if self.bundle is not None else None

    @property
    def model_family(self) -> str:
        return self.bundle.family if self.bundle is not None else ""

    @property
    def new_modules(self) -> tuple[Any, ...]:
        """The modules the task added (its fresh head): every method trains them in full."""
        return tuple(self.bundle.new_modules) if self.bundle is not None else ()

    def new_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters of the task's new modules: every method trains them."""
        return self.bundle.new_parameters() if self.bundle is not None else []

    def new_module_names(self, model: torch.nn.Module) -> list[str]:
        """Where the new modules sit in ``model`` (found by identity, so wrappers do not hide them)."""
        wanted = {id(m) for m in self.new_modules}
        return [name for name, module in model.named_modules() if id(module) in wanted]

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
    task_kind: str  # the task's objective: "classification", "regression", "causal-lm", ...
    config: Any = field(default=None, compare=False, hash=False)  # transformers config, None if unknown
    from_scratch: bool = False  # the task trains this model from random weights: every module is new

    @property
    def family_label(self) -> str:
        return self.model_type or "unknown"

    def skeleton(self) -> Any:
        """The model's backbone on the meta device (structure only), or None when unknown offline."""
        from suite.models.loading import model_skeleton

        return model_skeleton(self.model) if self.model else None


class Method:
    """Base class of every method plugin. Subclasses set ``Config`` and implement ``apply``."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "peft"  # "peft" | "quant" | "train"
    Config: ClassVar[type] = NoConfig
    mergeable: ClassVar[bool] = False
    version: ClassVar[str] = "1"  # bump when results would change: it enters the cell id
    default_lr: ClassVar[float | None] = None  # recommended learning rate; --lr overrides it
    # What ``measurements`` produces (suite.metrics.MetricSpec): direction, unit, format, and whether it
    # is a leaderboard column. A measurement not declared here is stored as higher-is-better.
    metrics: ClassVar[tuple[Any, ...]] = ()

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    # -- hyperparameter search (suite.app.tuning) -------------------------------------------------
    @classmethod
    def search_space(cls, config: Any) -> dict[str, tuple]:
        """What ``--tune-trials`` draws besides the learning rate: name -> ("log" | "uniform" | "int",
        low, high) or ("choice", values). By default a rank argument ``r`` around the configured one."""
        r = getattr(config, "r", None)
        if isinstance(r, int) and not isinstance(r, bool) and r > 0:
            return {"r": ("choice", tuple(sorted({max(1, r // 2), r, 2 * r})))}
        return {}

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

    # -- seams of the shared training loop (all optional) ----------------------------------------
    def precision_policy(self, policy: PrecisionPolicy) -> PrecisionPolicy:
        """The cell's precision policy with this method's changes (a training recipe sets its own)."""
        return policy

    def optimizer_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter] | None:
        """The parameters the optimizer holds; None: those that require a gradient when training starts.

        A method that switches parameters on and off during training (LISA) names them all
        here, so the loop builds one optimizer and the method never rebuilds it.
        """
        return None

    def make_optimizer(self, model: torch.nn.Module, groups: list[dict], recipe: Any) -> torch.optim.Optimizer | None:
        """Supply the optimizer over ``groups`` (GaLore, FP8 optimizer states); None: the recipe's."""
        return None

    # -- hooks of the shared training loop (all optional) --------------------------------------
    def on_train_begin(self, model: torch.nn.Module, state: TrainState) -> None:
        """Called once after the optimizer exists (``state.optimizer``, ``state.total_steps``)."""

    def train_step(self, model: torch.nn.Module, batch: dict, state: TrainState) -> float | None:
        """Replace forward+backward+step for one batch; return the loss, or None for the default.

        ``state.loss(batch)`` is the task loss under the cell's precision; ``state.lr`` the
        scheduled learning rate. The loop builds no optimizer for a method with its own step.
        """
        return None

    def regularizer(self, model: torch.nn.Module) -> torch.Tensor | None:
        """An extra loss term added to the task loss at every step."""
        return None

    def before_optimizer_step(self, model: torch.nn.Module, step: int, state: TrainState) -> None:
        """After backward and clipping, before ``optimizer.step()`` (e.g. mask gradients)."""

    def on_step_end(self, model: torch.nn.Module, step: int, state: TrainState) -> None:
        """After ``optimizer.step()`` and the scheduler, before the gradients are cleared.

        AdaLoRA's rank allocator scores importance from these gradients; LISA and SpIEL
        hook in here too. ``step`` counts the optimizer steps taken so far.
        """

    def after_training(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        """Once after the last step, before the evaluation: e.g. compress the trained update
        (ComPEFT) or convert fake quantisation into real low-bit layers (QAT). Also runs for
        evaluation-only cells (``--max-steps 0``)."""
        return model

    # -- cost and export -----------------------------------------------------------------------
    def placement(self, model: torch.nn.Module) -> str:
        """The module keys it adapted on ``model`` after ``apply`` (';'-joined), stored with the cell so
        equal placement can be checked; "" for a method that places nothing on named modules."""
        return ""

    def measurements(self, model: torch.nn.Module) -> dict[str, float]:
        """Method-specific metrics stored with the cell (bits per weight, sparsity, ...)."""
        return {}

    def save_adapter(self, model: torch.nn.Module, path: str) -> None:
        """Write what a user must keep to restore the trained model (default: trainable tensors)."""
        from suite.models.accounting import save_trainable

        save_trainable(model, path)

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        """Fold the method into a plain transformers model with the original architecture."""
        raise CellFailure(f"method '{self.name}' cannot be merged into the base model")

