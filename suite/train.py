"""The one training loop every method and task shares.

Batches come through a DataLoader (map-style datasets reshuffled each epoch by a
generator seeded from the cell seed; iterable datasets streamed in order), then
linear warm-up and linear/cosine/constant decay, gradient clipping, gradient
accumulation, under the cell's precision policy, with optional evaluation every N steps.
Methods plug in through the hooks of ``suite.method.Method``, which see a typed
``TrainState``; the optimizer comes from a method that supplies one, else from the
recipe's ``optimizer`` (``suite.optim``). Nothing is written to disk.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from suite.errors import CellFailure
from suite.memory import PeakMemory
from suite.precision import FP32, PrecisionPolicy
from suite.task import BatchCount, count_batch


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


@dataclass
class TrainState:
    """What the loop's hooks see and may change: the model, the optimizer, the schedule, the step.

    Methods read this instead of reaching into the loop. ``loss(batch)`` is the task loss
    plus every method's regulariser under the cell's precision policy (a custom step such
    as MeZO's calls it); ``lr`` is the scheduled learning rate of the current step.
    """

    model: torch.nn.Module
    recipe: Any
    device: str
    total_steps: int
    precision: PrecisionPolicy = FP32
    step: int = 0
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    lr_factor: Callable[[int], float] = lambda step: 1.0
    loss: Callable[[dict], torch.Tensor] = field(default=None, repr=False)  # type: ignore[assignment]

    @property
    def lr(self) -> float:
        return self.recipe.lr * self.lr_factor(self.step)


class DivergenceGuard:
    """Ends a cell as failed (with the step) when training has blown up, in every task family.

    Diverged means: a non-finite loss; a running mean of the loss (over the last ``WINDOW``
    steps) above ``factor`` times the first step's loss, the loss of the untrained model;
    or a non-finite trainable parameter (checked every ``PARAMETER_EVERY`` steps and at the
    last). After the last step the loss of a training batch, in the model as trained, is
    held to the same factor (``check_final``): a run shorter than the window, or one that
    blew up in its last steps, has no running mean that saw it. A finite but exploded run
    would otherwise be stored as ok with a number that means nothing.
    """

    WINDOW = 10
    PARAMETER_EVERY = 50

    def __init__(self, factor: float, total_steps: int):
        self.factor = factor
        self.total_steps = total_steps
        self.losses: list[float] = []

    def check_loss(self, loss: float, step: int) -> None:
        if not math.isfinite(loss):
            raise CellFailure(f"training diverged: loss is {loss} at step {step}")
        self.losses.append(loss)
        if not self.factor or len(self.losses) < self.WINDOW:
            return
        start = self.losses[0]
        recent = sum(self.losses[-self.WINDOW:]) / self.WINDOW
        if start > 0 and recent > self.factor * start:
            raise CellFailure(f"training diverged: the loss rose to {recent:.4g} (mean of the last {self.WINDOW} "
                              f"steps) from {start:.4g} at the first step, above diverge_factor="
                              f"{self.factor:g}, at step {step}")

    def check_final(self, loss: float, step: int) -> None:
        """The loss after the last optimizer step (no step after it to report it) against the first."""
        if not math.isfinite(loss):
            raise CellFailure(f"training diverged: the loss after the last step ({step}) is {loss}")
        start = self.losses[0] if self.losses else None
        if self.factor and start is not None and start > 0 and loss > self.factor * start:
            raise CellFailure(f"training diverged: the loss after the last step ({step}) is {loss:.4g}, from "
                              f"{start:.4g} at the first step, above diverge_factor={self.factor:g}")

    def check_parameters(self, model: torch.nn.Module, step: int) -> None:
        if step % self.PARAMETER_EVERY and step != self.total_steps:
            return
        for name, p in model.named_parameters():
            if p.requires_grad and not bool(torch.isfinite(p).all()):
                raise CellFailure(f"training diverged: parameter {name} is no longer finite at step {step}")


class EpochPermutation(torch.utils.data.Sampler):
    """One seeded permutation of the dataset per epoch, and nothing else drawn from the generator.

    (torch's RandomSampler draws a second permutation at the end of every epoch, so the
    order of later epochs would depend on the sampler's internals rather than on the seed.)
    """

    def __init__(self, n: int, generator: torch.Generator):
        self.n = n
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=self.generator).tolist())

    def __len__(self) -> int:
        return self.n


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Batches of examples of similar length, in a seeded random order (less padding per batch).

    Each epoch draws one seeded permutation (as ``EpochPermutation``), cuts it into windows of
    ``window`` batches, sorts each window by length (longest first) and cuts it into batches;
    the batches are then shuffled with the same generator. Examples stay random across
    windows, so a batch's content is not fixed by the data's order, as in transformers'
    ``group_by_length``; the one draw per step keeps the order a function of the seed alone.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                 drop_last: bool, window: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.generator = generator
        self.drop_last = drop_last
        self.window = window * batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        batches: list[list[int]] = []
        for start in range(0, len(order), self.window):
            chunk = sorted(order[start:start + self.window], key=lambda i: -self.lengths[i])
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        shuffle = torch.randperm(len(batches), generator=self.generator).tolist()
        return iter([batches[i] for i in shuffle])

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full if self.drop_last or not rest else full + 1


def example_lengths(data: Sequence) -> list[int]:
    """Each example's token count (``input_ids``), for ``group_by_length``."""
    lengths = []
    for i in range(len(data)):
        item = data[i]
        ids = item.get("input_ids") if isinstance(item, dict) else None
        if ids is None:
            raise CellFailure("group_by_length needs examples with input_ids (a tokenised text task); this "
                              "task's examples have none: drop group_by_length")
        lengths.append(len(ids))
    return lengths


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
    """Trains ``model`` on ``data`` (a map-style or iterable dataset); ``collate`` makes batches."""

    def __init__(
        self,
        model: torch.nn.Module,
        data: Sequence | torch.utils.data.IterableDataset,
        collate: Callable[[list], dict],
        recipe: Any,
        methods: list[Any],
        device: str,
        seed: int,
        count: Callable[[dict], BatchCount] = count_batch,
        precision: PrecisionPolicy = FP32,
        eval_fn: Callable[[], dict[str, float]] | None = None,
        progress: bool = True,
        description: str = "train",
    ):
        self.model = model
        self.data = data
        self.collate = collate
        self.count = count
        self.recipe = recipe
        self.methods = methods
        self.device = device
        self.seed = seed
        self.eval_fn = eval_fn
        self.progress = progress
        self.description = description
        self.streaming = isinstance(data, torch.utils.data.IterableDataset)
        total = recipe.max_steps
        if total is None:
            if self.streaming:
                raise CellFailure("a streamed dataset has no length: set max_steps (or a token budget)")
            per_epoch = math.ceil(len(data) / recipe.batch_size / recipe.grad_accum)
            total = max(1, math.ceil(per_epoch * recipe.epochs))
        warmup = int(recipe.warmup_ratio * total)
        self.state = TrainState(model, recipe, device, total, precision,
                                lr_factor=lr_lambda(recipe.schedule, warmup, total), loss=self.loss)

    @property
    def total_steps(self) -> int:
        return self.state.total_steps

    # -- data -------------------------------------------------------------------------------------
    def batches(self) -> Iterator[dict]:
        """Micro-batches until the loop stops: epochs of a map-style dataset, or the stream, repeated."""
        from torch.utils.data import DataLoader

        size = self.recipe.batch_size
        # Each pass over a DataLoader draws a worker seed from its generator; a private one keeps
        # the global RNG (dropout masks, methods' sampling) exactly as the seed left it.
        private = torch.Generator().manual_seed(self.seed)
        if self.streaming:
            loader = DataLoader(self.data, batch_size=size, collate_fn=self.collate, generator=private)
        else:
            if len(self.data) == 0:
                raise CellFailure("the task produced no training examples")
            order = torch.Generator().manual_seed(self.seed)
            # A dataset smaller than one batch still trains, on one batch of everything.
            drop_last = len(self.data) >= size
            if getattr(self.recipe, "group_by_length", False):
                grouped = LengthGroupedBatches(example_lengths(self.data), size, order, drop_last)
                loader = DataLoader(self.data, batch_sampler=grouped, collate_fn=self.collate, generator=private)
            else:
                loader = DataLoader(self.data, batch_size=size, sampler=EpochPermutation(len(self.data), order),
                                    collate_fn=self.collate, drop_last=drop_last, generator=private)
        while True:
            produced = False
            for batch in loader:
                produced = True
                yield batch
            if not produced:
                raise CellFailure("the training data ran out before the first batch")

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if hasattr(v, "to") else v for k, v in batch.items()}

    # -- loss and optimizer ---------------------------------------------------------------------------
    def loss(self, batch: dict) -> torch.Tensor:
        with self.state.precision.autocast(self.device):
            smoothing = getattr(self.recipe, "label_smoothing", 0.0)
            if smoothing and "labels" in batch:  # build_cells admits it for classification tasks only
                logits = self.model(**{k: v for k, v in batch.items() if k != "labels"}).logits
                loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"], label_smoothing=smoothing)
            else:
                loss = self.model(**batch).loss
            for method in self.methods:
                extra = method.regularizer(self.model)
                if extra is not None:
                    loss = loss + extra
        return loss

    def make_optimizer(self) -> torch.optim.Optimizer | None:
        """A method's own optimizer if one supplies it, else the recipe's, over the parameters to train."""
        from suite.optim import build_optimizer, parameter_groups

        chosen = None
        for method in self.methods:
            chosen = method.optimizer_parameters(self.model)
            if chosen is not None:
                break
        wanted = {id(p) for p in chosen} if chosen is not None else None
        named = [(n, p) for n, p in self.model.named_parameters()
                 if (p.requires_grad if wanted is None else id(p) in wanted)]
        if not named:
            return None
        groups = parameter_groups(named, self.recipe.weight_decay, self.recipe.decay == "all")
        for method in self.methods:
            optimizer = method.make_optimizer(self.model, groups, self.recipe)
            if optimizer is not None:
                return optimizer
        return build_optimizer(self.recipe.optimizer, groups, self.recipe.lr)

    # -- the loop ----------------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        result = TrainResult()
        if self.recipe.max_steps == 0:
            return result
        state = self.state
        has_custom_step = any(type(m).train_step is not _base_train_step() for m in self.methods)
        if not any(p.requires_grad for p in self.model.parameters()) and not has_custom_step:
            raise CellFailure("nothing to train: no parameter requires a gradient "
                              "(use --max-steps 0 to only evaluate)")
        self.model.train()
        state.optimizer = None if has_custom_step else self.make_optimizer()
        if state.optimizer is not None:
            state.scheduler = torch.optim.lr_scheduler.LambdaLR(state.optimizer, state.lr_factor)
        for method in self.methods:
            method.on_train_begin(self.model, state)
        bar = _progress(state.total_steps, self.description, self.progress)
        data = self.batches()
        # Clipped in the model's parameter order (the norm's summation order is part of the result).
        held = {id(p) for group in state.optimizer.param_groups for p in group["params"]} \
            if state.optimizer is not None else set()
        clipped = [p for p in self.model.parameters() if id(p) in held]
        divergence = DivergenceGuard(self.recipe.diverge_factor, state.total_steps)
        eval_time = 0.0
        with PeakMemory(self.device) as memory:
            start = time.perf_counter()
            while state.step < state.total_steps:
                step_loss = 0.0
                for _ in range(self.recipe.grad_accum):
                    batch = self.to_device(next(data))
                    counted = self.count(batch)
                    result.samples += counted.samples
                    result.tokens += counted.tokens
                    custom = None
                    for method in self.methods:
                        custom = method.train_step(self.model, batch, state)
                        if custom is not None:
                            break
                    if custom is not None:
                        step_loss += float(custom) / self.recipe.grad_accum
                        continue
                    loss = self.loss(batch) / self.recipe.grad_accum
                    loss.backward()
                    step_loss += float(loss.detach())
                divergence.check_loss(step_loss, state.step + 1)
                if state.optimizer is not None:
                    if self.recipe.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_([p for p in clipped if p.grad is not None],
                                                       self.recipe.max_grad_norm)
                    for method in self.methods:
                        method.before_optimizer_step(self.model, state.step, state)
                    state.optimizer.step()
                    state.scheduler.step()
                state.step += 1
                for method in self.methods:  # the step's gradients are still there (AdaLoRA scores them)
                    method.on_step_end(self.model, state.step, state)
                if state.optimizer is not None:
                    state.optimizer.zero_grad(set_to_none=True)
                result.losses.append(step_loss)
                divergence.check_parameters(self.model, state.step)
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.4f}", refresh=False)
                if self.eval_fn and self.recipe.eval_every and state.step % self.recipe.eval_every == 0 \
                        and state.step < state.total_steps:
                    t0 = time.perf_counter()
                    result.evals.append((state.step, self.eval_fn()))
                    self.model.train()
                    eval_time += time.perf_counter() - t0
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
            result.wall_time_s = time.perf_counter() - start - eval_time
        bar.close()
        divergence.check_final(self.final_loss(batch), state.step)
        result.steps = state.step
        tail = result.losses[-max(1, min(20, len(result.losses) // 10 or 1)):]
        result.final_loss = sum(tail) / len(tail)
        result.peak_memory_bytes = memory.peak_bytes
        result.memory_kind = memory.kind
        return result

    def final_loss(self, batch: dict) -> float:
        """The loss of ``batch`` (the last one trained on) after the last step, without a gradient.

        It draws nothing a normal run draws: no new batch (the data order stays), no dropout mask
        (eval mode), and the global RNG states are restored afterwards, so the evaluation that
        follows sees what it saw before this check existed. (A layer that keeps state across
        forwards, such as delayed FP8 scaling's amax history, does see this batch once more.)"""
        was_training = self.model.training
        devices = []
        if self.device.startswith("cuda"):
            index = torch.device(self.device).index
            devices = [torch.cuda.current_device() if index is None else index]
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            self.model.eval()
            try:
                return float(self.loss(batch))
            finally:
                self.model.train(was_training)


def _base_train_step():
    from suite.method import Method

    return Method.train_step


def _progress(total: int, description: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, leave=False, disable=not enabled, dynamic_ncols=True)
