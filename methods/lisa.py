"""LISA: layer-wise importance sampling, a few randomly chosen blocks train at a time.

Pan et al. 2024, LISA: Layerwise Importance Sampling for Memory-Efficient Large Language
Model Fine-Tuning (arXiv:2403.17919), Algorithm 1: the embedding layer and the head always
train; of the N_L middle (transformer) blocks, gamma are sampled uniformly every K steps and
unfrozen, all others frozen. Frozen blocks get no gradients, and their optimiser state is
dropped when they are frozen again, so memory is that of gamma blocks. The model stays a
plain transformers model (merge is the identity).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from suite.method import Method, MethodContext
from suite.registry import register_method


@dataclass
class LISAConfig:
    layers: int = 2  # gamma: blocks unfrozen at a time
    interval: int = 20  # K: steps between re-sampling

    def __post_init__(self) -> None:
        if self.layers < 1 or self.interval < 1:
            raise ValueError("layers and interval must be >= 1")


@register_method("lisa", kind="peft", summary="train embeddings, head and a few resampled blocks at a time",
                 source="suite", paper="Pan et al. 2024, LISA (arXiv:2403.17919)")
class LISA(Method):
    Config = LISAConfig
    mergeable = True
    default_lr = 5e-4

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.blocks: list[Any] = []
        self.active: list[int] = []
        self.history: list[list[int]] = []
        self._rng = random.Random(0)
        self._pending_hook: Any = None

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from suite.errors import UserError
        from suite.methods.heads import head_parameters
        from suite.methods.targets import transformer_blocks

        self.blocks = list(transformer_blocks(model))
        if self.config.layers > len(self.blocks):
            raise UserError(f"method 'lisa': argument 'layers'={self.config.layers} exceeds the model's "
                            f"{len(self.blocks)} blocks; valid choices: 1..{len(self.blocks)}")
        self._rng = random.Random(ctx.seed)
        for p in model.parameters():
            p.requires_grad_(False)
        model.get_input_embeddings().weight.requires_grad_(True)
        for p in head_parameters(model):
            p.requires_grad_(True)
        self._sample()
        return model

    def _sample(self) -> None:
        self.active = sorted(self._rng.sample(range(len(self.blocks)), self.config.layers))
        self.history.append(self.active)
        for i, block in enumerate(self.blocks):
            for p in block.parameters():
                p.requires_grad_(i in self.active)

    def on_train_begin(self, model: Any, trainer: Any) -> None:
        """Give the optimizer every block (states stay lazy), then restore the sampled freeze.

        The loop builds its optimizer from the parameters that train at its start and lists
        the parameters it clips right after this hook, so every block trains here briefly and
        the sampled freeze comes back at the first forward pass.
        """
        import torch

        from suite.train import build_optimizer, lr_lambda

        for block in self.blocks:
            for p in block.parameters():
                p.requires_grad_(True)
        recipe = trainer.recipe
        trainer.optimizer = build_optimizer(model, recipe.lr, recipe.weight_decay)
        warmup = int(recipe.warmup_ratio * trainer.total_steps)
        trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(
            trainer.optimizer, lr_lambda(recipe.schedule, warmup, trainer.total_steps))
        active = list(self.active)

        def refreeze(module: Any, args: Any) -> None:
            for i, block in enumerate(self.blocks):
                for p in block.parameters():
                    p.requires_grad_(i in active)
            self._pending_hook.remove()
            self._pending_hook = None

        self._pending_hook = model.register_forward_pre_hook(refreeze)

    def on_step_end(self, model: Any, step: int, trainer: Any) -> None:
        if step % self.config.interval or step >= trainer.total_steps:
            return
        previous = set(self.active)
        self._sample()
        if trainer.optimizer is not None:
            for i in previous - set(self.active):
                for p in self.blocks[i].parameters():
                    trainer.optimizer.state.pop(p, None)
                    p.grad = None

    def measurements(self, model: Any) -> dict[str, float]:
        return {"lisa_resamples": float(len(self.history) - 1)}

    def merge(self, model: Any) -> Any:
        return model
