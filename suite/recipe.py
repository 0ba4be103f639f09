"""The training recipe: one dataclass, declared once, resolved from defaults, task, method and the user.

Order of precedence (later wins): the dataclass defaults, the task's recommendation for
the model family, the method's recommended learning rate, the sweep file, the CLI flags.
The resolved recipe is stored with every result and enters the cell id.

Each field's ``help`` metadata is its documentation: ``suite run``'s flags (``--max-steps``)
and the sweep file's ``recipe:`` keys are generated from these fields
(``suite.config.option_flags``), so a new recipe option is one line here. What only one task
family reads belongs to that family's options, not here. A field marked ``added`` leaves the
cell id alone while it holds its default, so results stored before the option existed keep
their ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

from suite.config import build_config, config_to_dict, option


@dataclass(frozen=True)
class Recipe:
    lr: float = option(2e-5, "peak learning rate")
    epochs: float = option(3.0, "passes over the training data (max_steps overrides it)")
    max_steps: int | None = option(None, "optimizer steps; overrides epochs; 0 evaluates without training")
    batch_size: int = option(32, "examples per micro-batch")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    max_length: int = option(128, "tokens per example, longer ones truncated")
    warmup_ratio: float = option(0.06, "fraction of the steps with linear warm-up")
    schedule: Literal["linear", "cosine", "constant"] = option("linear", "learning-rate decay after warm-up")
    weight_decay: float = option(0.01, "decoupled weight decay (not on biases and norms, unless decay=all)")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: no clipping)")
    eval_every: int = option(0, "also evaluate every N optimizer steps (0: only at the end)")
    eval_batch_size: int = option(64, "examples per evaluation batch")
    limit: int | None = option(None, "at most this many examples per split")
    precision: Literal["auto", "fp32", "bf16"] = option(
        "auto", "auto: bf16 autocast on a GPU, fp32 elsewhere; training recipes may set their own")
    optimizer: str = option("adamw", "optimizer by name (suite.optim.OPTIMIZERS), unless a method "
                                     "supplies its own", added=True)
    grad_checkpointing: bool = option(False, "recompute activations in the backward pass (less memory, "
                                             "more time)", added=True)
    diverge_factor: float = option(10.0, "fail a cell as diverged when its running loss exceeds this multiple "
                                         "of its starting loss (0: only non-finite losses)", added=True)
    decay: Literal["matrices", "all"] = option("matrices", "which parameters weight decay applies to: matrices "
                                               "(not biases and norms) or all (as peft's benchmark does)",
                                               added=True)
    group_by_length: bool = option(False, "batch examples of similar length together (less padding); the "
                                          "order of the batches stays seeded and random", added=True)
    label_smoothing: float = option(0.0, "cross-entropy against labels smoothed by this much, as torch's "
                                         "label_smoothing (classification tasks only; 0: the model's own loss)",
                                    added=True)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value}")
        checks = [
            (self.lr > 0, "lr must be positive"),
            (self.epochs > 0, "epochs must be positive"),
            (self.max_steps is None or self.max_steps >= 0, "max_steps must be >= 0 (0: evaluate only)"),
            (self.batch_size > 0, "batch_size must be positive"),
            (self.grad_accum > 0, "grad_accum must be positive"),
            (self.max_length > 0, "max_length must be positive"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (self.max_grad_norm >= 0, "max_grad_norm must be >= 0"),
            (self.eval_every >= 0, "eval_every must be >= 0"),
            (self.eval_batch_size > 0, "eval_batch_size must be positive"),
            (self.limit is None or self.limit > 0, "limit must be positive"),
            (bool(self.optimizer), "optimizer must be named"),
            (self.diverge_factor == 0 or self.diverge_factor > 1, "diverge_factor must be 0 (off) or above 1"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def identity(self) -> dict[str, Any]:
        """What enters the cell id: every field, except options added later while at their default."""
        values = self.to_dict()
        for f in fields(self):
            if f.metadata.get("added") and values[f.name] == f.default:
                del values[f.name]
        return values


RECIPE_KEYS = [f.name for f in fields(Recipe)]
# Former recipe fields that are now a task family's options (marked ``recipe=True`` there, so they
# are stored and hashed with the recipe as before); cells of other tasks stored them as None.
MOVED_TO_TASK_OPTIONS = {"tokens_per_param": "lm", "train_tokens": "lm", "eval_tokens": "lm"}


def canonical_recipe_json(text: str) -> str:
    """A stored recipe (JSON) without the later-added options that sit at their default.

    Cells stored before an option existed lack it, later cells store its default: both ran
    the same recipe, and pairing or grouping by recipe must see them as one. Text that is
    not a JSON object comes back unchanged.
    """
    import json

    try:
        values = json.loads(text)
    except (TypeError, ValueError):
        return text
    if not isinstance(values, dict):
        return text
    for f in fields(Recipe):
        if f.metadata.get("added") and f.name in values and values[f.name] == f.default:
            del values[f.name]
    for name in MOVED_TO_TASK_OPTIONS:
        if name in values and values[name] is None:
            del values[name]
    return json.dumps(values, sort_keys=True)


def resolve_recipe(*layers: dict[str, Any] | None) -> Recipe:
    """Merge layers of overrides (later wins) and validate them into one Recipe."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer:
            merged.update({k: v for k, v in layer.items() if v is not None})
    return build_config(Recipe, merged, "recipe")
