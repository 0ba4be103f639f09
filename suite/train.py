"""The one training loop every method and task shares.

AdamW, linear warm-up then linear/cosine/constant decay, gradient clipping, gradient
accumulation, bf16 autocast on a GPU, optional evaluation every N steps. Methods hook
in through ``suite.method.Method`` (custom steps, regularisers, gradient masks,
schedules) instead of bringing loops of their own. Nothing is written to disk.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from suite.errors import CellFailure
from suite.memory import PeakMemory


def autocast_context(device: str, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on a GPU (precision auto or bf16); plain fp32 otherwise."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.startswith("cuda"))
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


def lr_lambda(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return factor


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; biases and norm weights get no weight decay (the usual convention)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    return torch.optim.AdamW(groups, lr=lr)


@dataclass
class TrainResult:
    steps: int = 0
    samples: int = 0
    tokens: int = 0
    wall_time_s: float = 0.0
    final_loss: float = float("nan")
    losses: list[float] = field(default_factory=list)
    peak_memory_bytes: int = 0
    memory_kind: str = ""
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)


class Trainer:
    """Trains ``model`` on pre-tokenised ``items``; ``collate`` turns a list of items into a batch."""

    def __init__(
        self,
        model: torch.nn.Module,
        items: list[dict],
        collate: Callable[[list[dict]], dict],
        recipe: Any,
        methods: list[Any],
        device: str,
        seed: int,
        eval_fn: Callable[[], dict[str, float]] | None = None,
        progress: bool = True,
        description: str = "train",
    ):
        self.model = model
        self.items = items
        self.collate = collate
        self.recipe = recipe
        self.methods = methods
        self.device = device
        self.seed = seed
        self.eval_fn = eval_fn
        self.progress = progress
        self.description = description
        per_epoch = math.ceil(len(items) / recipe.batch_size / recipe.grad_accum)
        self.total_steps = recipe.max_steps if recipe.max_steps is not None else \
            max(1, math.ceil(per_epoch * recipe.epochs))
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self.step = 0

    def batches(self):
        """Micro-batches forever, reshuffled each epoch by a generator seeded from the cell seed."""
        generator = torch.Generator().manual_seed(self.seed)
        size = self.recipe.batch_size
        while True:
            order = torch.randperm(len(self.items), generator=generator).tolist()
            for start in range(0, len(order) - size + 1 if len(order) >= size else 1, size):
                chunk = [self.items[i] for i in order[start : start + size]]
                yield self.collate(chunk)

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def loss(self, batch: dict) -> torch.Tensor:
        with autocast_context(self.device, self.recipe.precision):
            loss = self.model(**batch).loss
            for method in self.methods:
                extra = method.regularizer(self.model)
                if extra is not None:
                    loss = loss + extra
        return loss

    def train(self) -> TrainResult:
        result = TrainResult()
        if self.recipe.max_steps == 0:
            return result
        has_custom_step = any(type(m).train_step is not _base_train_step() for m in self.methods)
        if not any(p.requires_grad for p in self.model.parameters()) and not has_custom_step:
            raise CellFailure("nothing to train: no parameter requires a gradient "
                              "(use --max-steps 0 to only evaluate)")
        self.model.train()
        self.optimizer = build_optimizer(self.model, self.recipe.lr, self.recipe.weight_decay) \
            if any(p.requires_grad for p in self.model.parameters()) else None
        warmup = int(self.recipe.warmup_ratio * self.total_steps)
        if self.optimizer is not None:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lr_lambda(self.recipe.schedule, warmup, self.total_steps))
        for method in self.methods:
            method.on_train_begin(self.model, self)
        bar = _progress(self.total_steps, self.description, self.progress)
        data = self.batches()
        params = [p for p in self.model.parameters() if p.requires_grad]
        eval_time = 0.0
        with PeakMemory(self.device) as memory:
            start = time.perf_counter()
            while self.step < self.total_steps:
                step_loss = 0.0
                for _ in range(self.recipe.grad_accum):
                    batch = self.to_device(next(data))
                    result.samples += int(batch["input_ids"].shape[0])
                    result.tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch \
                        else int(batch["input_ids"].numel())
                    custom = None
                    for method in self.methods:
                        custom = method.train_step(self.model, batch, self)
                        if custom is not None:
                            break
                    if custom is not None:
                        step_loss += float(custom) / self.recipe.grad_accum
                        continue
                    loss = self.loss(batch) / self.recipe.grad_accum
                    loss.backward()
                    step_loss += float(loss.detach())
                if not math.isfinite(step_loss):
                    raise CellFailure(f"training diverged: loss is {step_loss} at step {self.step + 1}")
                if self.optimizer is not None and not has_custom_step:
                    if self.recipe.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(params, self.recipe.max_grad_norm)
                    for method in self.methods:
                        method.before_optimizer_step(self.model, self.step, self)
                    self.optimizer.step()
                    self.scheduler.step()
                self.step += 1
                for method in self.methods:  # the step's gradients are still there (AdaLoRA scores them)
                    method.on_step_end(self.model, self.step, self)
                if self.optimizer is not None:
                    self.optimizer.zero_grad(set_to_none=True)
                result.losses.append(step_loss)
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.4f}", refresh=False)
                if self.eval_fn and self.recipe.eval_every and self.step % self.recipe.eval_every == 0 \
                        and self.step < self.total_steps:
                    t0 = time.perf_counter()
                    result.evals.append((self.step, self.eval_fn()))
                    self.model.train()
                    eval_time += time.perf_counter() - t0
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
            result.wall_time_s = time.perf_counter() - start - eval_time
        bar.close()
        result.steps = self.step
        tail = result.losses[-max(1, min(20, len(result.losses) // 10 or 1)):]
        result.final_loss = sum(tail) / len(tail)
        result.peak_memory_bytes = memory.peak_bytes
        result.memory_kind = memory.kind
        return result


def _base_train_step():
    from suite.method import Method

    return Method.train_step


def _progress(total: int, description: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, leave=False, disable=not enabled, dynamic_ncols=True)
