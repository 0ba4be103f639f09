"""One generic wrapper around the installed peft: a method is a peft config plus defaults.

A subclass names the peft config class and maps its own typed ``Config`` onto peft's arguments
(peft's tuners declare that mapping: ``suite.methods.peft.tuners.PeftTuner``). The wrapper picks
the peft task type from the task's head (the head stays trainable: peft's sequence-classification
model keeps ``classifier``/``score`` in ``modules_to_save``), resolves target modules per model
family (``suite.methods.common.targets``), runs data-aware initialisation through optional
``prepare``/``finish`` hooks, and turns peft's errors about absent target modules into one clear
message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from suite.errors import CellFailure, UserError
from suite.method import Method, MethodContext, MethodTarget
from suite.methods.common.targets import DEFAULT_ADAPTER_TARGETS, resolve_targets

# peft's task type per task objective; objectives without one (image classification) get a
# plain PeftModel, with the task's new modules in modules_to_save.
PEFT_TASK_TYPES = {"classification": "SEQ_CLS", "regression": "SEQ_CLS", "causal-lm": "CAUSAL_LM",
                   "language-modeling": "CAUSAL_LM"}


SEQ_CLS_HEADS = ("classifier", "score")  # what peft's SEQ_CLS task type keeps trainable by itself


def peft_task_type(ctx: MethodContext) -> str | None:
    return PEFT_TASK_TYPES.get(ctx.task_kind)


@dataclass
class LoraConfig:
    """Arguments shared by the LoRA family (lora, rslora, dora, pissa, olora, corda, eva, ...)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None  # None: the family default (targets.DEFAULT_ADAPTER_TARGETS)
    rslora: bool = False

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ValueError("r must be a positive integer")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")


# One step size for LoRA and every method with LoRA's parameterisation (PiSSA, DoRA, rsLoRA,
# OLoRA, MiCA, LoftQ, CorDA, EVA, LoRA-GA), so they compare at an equal budget; the fresh
# task head trains at the same step. MiniLM + SST-2, 300 steps of 32, all linear layers:
# LoRA 0.826 at 5e-4 and 0.842 at 1e-3; PiSSA 0.836 and 0.838 (one seed each).
LORA_FAMILY_LR = 1e-3


# A task that trains its model from scratch (MethodTarget.from_scratch) makes the whole model its new
# module, which trains in full under every method, so an adapter beside it adds nothing (and peft
# cannot put the whole model in modules_to_save).
FROM_SCRATCH = ("the model is trained from scratch, so every module is new and trains in full, and an adapter "
                "on it trains nothing useful; pretrain with full or a training recipe (bf16-train, fp8-train, "
                "...), or continue pretraining a pretrained model (a folder or hub id) with this method")


def _accepts(config_class: type, name: str) -> bool:
    import dataclasses

    return dataclasses.is_dataclass(config_class) and name in {f.name for f in dataclasses.fields(config_class)}


class PeftMethod(Method):
    """Base of methods implemented by peft. Subclasses set ``peft_config_class`` and ``peft_kwargs``."""

    peft_config_class: ClassVar[str] = ""
    mergeable = True
    target_kind: ClassVar[str | None] = DEFAULT_ADAPTER_TARGETS  # key of the targets tables; None: no targets
    families: ClassVar[tuple[str, ...]] = ()  # model families the tuner supports; empty: any
    rank_bounded: ClassVar[bool] = False  # SVD-initialised: r above a layer's rank is refused up front

    def peft_kwargs(self, model: Any, ctx: MethodContext) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def peft_argument_map(cls) -> tuple[dict[str, str], dict[str, Any]] | None:
        """How this method's arguments become peft's, for reading a peft config back into them
        (``suite.methods.peft.experiments``): our field -> peft argument (target modules included), and
        the peft arguments it always sets. None: not declared, so no peft config is read as this method."""
        return None

    # -- helpers for subclasses --------------------------------------------------------------
    def targets(self, model: Any, kind: str | None = None, explicit: Any = "config") -> list[str] | None:
        """Target module keys: the config's ``target_modules`` if set, else the family default."""
        if explicit == "config":
            explicit = getattr(self.config, "target_modules", None)
        return resolve_targets(model, self.name, kind or self.target_kind or DEFAULT_ADAPTER_TARGETS, explicit)

    # -- before any cell runs ----------------------------------------------------------------------
    def unsupported(self, target: MethodTarget) -> str | None:
        """A model trained from scratch, a family the tuner does not support, or a peft too old to have the tuner."""
        if target.from_scratch:
            return FROM_SCRATCH
        if self.families and target.model_type and target.model_type not in self.families:
            return (f"it applies only to model families {', '.join(self.families)}; "
                    f"drop it for this model or choose one of those")
        from suite.methods.peft.compat import library_version

        try:
            import peft
        except ImportError:
            return "peft is not installed: pip install peft (or the project's lock, constraints.txt)"
        if not hasattr(peft, self.peft_config_class):
            return (f"the installed peft {library_version('peft')} has no {self.peft_config_class}; "
                    f"install the tested versions (pip install -c constraints.txt -e .) or a newer peft")
        if self.target_kind is not None:
            from suite.methods.common.targets import (
                no_default_targets,
                peft_default_targets,
                placement_refusal,
            )

            explicit = getattr(self.config, "target_modules", None)
            peft_knows = peft_default_targets(target.model_type) is not None  # peft then picks the modules
            reason = no_default_targets(self.name, target.model_type, explicit, peft_knows=peft_knows)
            if reason:
                return reason
            rank = getattr(self.config, "r", None) if self.rank_bounded else None
            return placement_refusal(self.name, target, self.target_kind, explicit, rank)
        return None

    # -- data-aware initialisation hooks ---------------------------------------------------------
    def prepare(self, model: Any, peft_config: Any, ctx: MethodContext) -> None:
        """Before ``get_peft_model``: e.g. CorDA's covariance, LoRA-GA's gradient estimate."""

    def finish(self, model: Any, ctx: MethodContext) -> Any:
        """After ``get_peft_model``: e.g. EVA's SVD of layer inputs."""
        return model

    # -- the verb --------------------------------------------------------------------------------
    def build_peft_config(self, model: Any, ctx: MethodContext) -> Any:
        import peft

        config_class = getattr(peft, self.peft_config_class)
        kwargs = self.peft_kwargs(model, ctx)
        if self.target_kind is not None and "target_modules" not in kwargs:
            keys = self.targets(model)
            if keys is not None:
                kwargs["target_modules"] = keys
        task_type = peft_task_type(ctx)
        if task_type is not None:
            kwargs.setdefault("task_type", task_type)
        # The task's new head trains in full under every tuner. peft adds a sequence-classification
        # head (classifier / score) to modules_to_save itself; name any other new module.
        covered = SEQ_CLS_HEADS if task_type == "SEQ_CLS" else ()
        new = [n for n in ctx.new_module_names(model) if n.rsplit(".", 1)[-1] not in covered]
        if "" in new:  # the model itself is new (trained from scratch): see FROM_SCRATCH
            raise UserError(f"method '{self.name}': {FROM_SCRATCH}")
        if new and "modules_to_save" not in kwargs and _accepts(config_class, "modules_to_save"):
            kwargs["modules_to_save"] = new
        try:
            return config_class(**kwargs)
        except (TypeError, ValueError) as exc:
            raise UserError(f"method '{self.name}': peft rejected the arguments: {exc}") from None

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from peft import get_peft_model

        from suite.methods.common.targets import adaptable_names, family_of

        family = family_of(model)
        reason = self.unsupported(MethodTarget("", family or "?", ctx.task_kind))
        if reason:
            raise UserError(f"method '{self.name}' cannot run on model family '{family or 'unknown'}': {reason}")
        config = self.build_peft_config(model, ctx)
        self.prepare(model, config, ctx)
        try:
            peft_model = get_peft_model(model, config)
        except ValueError as exc:
            text = str(exc)
            if "target" in text.lower():
                raise UserError(
                    f"method '{self.name}' cannot apply to this model: {text}. Set target_modules "
                    f"(separate names with ';') to names it has, e.g. one of: "
                    f"{', '.join(adaptable_names(model)[:40])}"
                ) from None
            raise
        return self.finish(peft_model, ctx)

    # -- cost and export ---------------------------------------------------------------------------
    def placement(self, model: Any) -> str:
        """As peft resolved them (its own default included)."""
        from suite.methods.common.targets import adapted_targets

        return adapted_targets(model)

    def save_adapter(self, model: Any, path: str) -> None:
        """The peft format: adapter_config.json + adapter_model.safetensors (trained head included)."""
        model.save_pretrained(path)

    def merge(self, model: Any) -> Any:
        if not self.mergeable:
            raise CellFailure(f"method '{self.name}' cannot be merged into the base model "
                              f"(it changes the input or the architecture); save the adapter instead")
        return model.merge_and_unload()
