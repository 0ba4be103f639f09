"""LISA: layer-wise importance sampling, a few randomly chosen blocks train at a time.

Pan et al. 2024, LISA: Layerwise Importance Sampling for Memory-Efficient Large Language
Model Fine-Tuning (arXiv:2403.17919), Algorithm 1: of the N_L middle (transformer) blocks,
gamma are sampled uniformly every K steps and unfrozen, all others frozen. Frozen blocks get
no gradients, and their optimiser state is dropped when they are frozen again, so memory is
that of gamma blocks. The model stays a plain transformers model (merge is the identity).

The paper also always trains the embedding layer and the LM head. Here the task's new
modules (a fresh classification head) always train, and the pretrained embeddings and
output layer train only with ``embeddings=true``, so by default LISA trains no more
non-block parameters than any other method.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from suite.method import Method, MethodContext
from suite.registry import register_method

if TYPE_CHECKING:  # pragma: no cover
    from suite.train import TrainState


@dataclass
class LISAConfig:
    layers: int = 2  # gamma: blocks unfrozen at a time
    interval: int = 20  # K: steps between re-sampling
    embeddings: bool = False  # also train the input embeddings and output layer, as in the paper

    def __post_init__(self) -> None:
        if self.layers < 1 or self.interval < 1:
            raise ValueError("layers and interval must be >= 1")


@register_method("lisa", kind="peft", summary="train the new head and a few resampled blocks at a time",
                 source="suite", paper="Pan et al. 2024, LISA (arXiv:2403.17919)")
class LISA(Method):
    Config = LISAConfig
    mergeable = True
    default_lr = 5e-4
    version = "2"  # embeddings no longer train by default

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.blocks: list[Any] = []
        self.always: list[Any] = []  # parameters that train at every step
        self.active: list[int] = []
        self.history: list[list[int]] = []
        self._rng = random.Random(0)

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from suite.errors import UserError
        from suite.methods.common.targets import transformer_blocks

        self.blocks = list(transformer_blocks(model))
        if self.config.layers > len(self.blocks):
            raise UserError(f"method 'lisa': argument 'layers'={self.config.layers} exceeds the model's "
                            f"{len(self.blocks)} blocks; valid choices: 1..{len(self.blocks)}")
        self._rng = random.Random(ctx.seed)
        for p in model.parameters():
            p.requires_grad_(False)
        self.always = list(ctx.new_parameters())
        if self.config.embeddings:
            self.always.append(model.get_input_embeddings().weight)
            output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
            if output is not None:
                self.always += list(output.parameters())
        for p in self.always:
            p.requires_grad_(True)
        self._sample()
        return model

    def _sample(self) -> None:
        self.active = sorted(self._rng.sample(range(len(self.blocks)), self.config.layers))
        self.history.append(self.active)
        for i, block in enumerate(self.blocks):
            for p in block.parameters():
                p.requires_grad_(i in self.active)

    def optimizer_parameters(self, model: Any) -> list[Any]:
        """One optimizer over every block (states stay lazy), the always-trained parameters first."""
        chosen = {id(p): p for p in self.always}
        for block in self.blocks:
            chosen.update({id(p): p for p in block.parameters()})
        return list(chosen.values())

    def on_step_end(self, model: Any, step: int, state: TrainState) -> None:
        if step % self.config.interval or step >= state.total_steps:
            return
        previous = set(self.active)
        self._sample()
        if state.optimizer is not None:
            for i in previous - set(self.active):
                for p in self.blocks[i].parameters():
                    state.optimizer.state.pop(p, None)
                    p.grad = None

    def measurements(self, model: Any) -> dict[str, float]:
        return {"lisa_resamples": float(len(self.history) - 1)}

    def merge(self, model: Any) -> Any:
        return model
