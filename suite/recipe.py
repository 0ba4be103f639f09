"""The training recipe: one dataclass, resolved from defaults, task, method and the user.

Order of precedence (later wins): the dataclass defaults, the task's recommendation for
the model family, the method's recommended learning rate, the sweep file, the CLI flags.
The resolved recipe is stored with every result and enters the cell id.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from suite.config import build_config, config_to_dict


@dataclass(frozen=True)
class Recipe:
    lr: float = 2e-5
    epochs: float = 3.0
    max_steps: int | None = None  # when set, overrides epochs; 0 evaluates without training
    batch_size: int = 32
    grad_accum: int = 1
    max_length: int = 128
    warmup_ratio: float = 0.06
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    eval_every: int = 0  # evaluate every N optimizer steps as well (0: only at the end)
    eval_batch_size: int = 64
    limit: int | None = None  # at most this many examples per split
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on a GPU

    def __post_init__(self) -> None:
        checks = [
            (self.lr > 0, "lr must be positive"),
            (self.epochs > 0, "epochs must be positive"),
            (self.max_steps is None or self.max_steps >= 0, "max_steps must be >= 0 (0: evaluate only)"),
            (self.batch_size > 0, "batch_size must be positive"),
            (self.grad_accum > 0, "grad_accum must be positive"),
            (self.max_length > 0, "max_length must be positive"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (self.eval_every >= 0, "eval_every must be >= 0"),
            (self.limit is None or self.limit > 0, "limit must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


RECIPE_KEYS = [f.name for f in fields(Recipe)]


def resolve_recipe(*layers: dict[str, Any] | None) -> Recipe:
    """Merge layers of overrides (later wins) and validate them into one Recipe."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer:
            merged.update({k: v for k, v in layer.items() if v is not None})
    return build_config(Recipe, merged, "recipe")


def with_overrides(recipe: Recipe, **overrides: Any) -> Recipe:
    return replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
