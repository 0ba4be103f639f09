"""Runs one cell: build the model -> methods' apply -> train -> evaluate -> one record, written nowhere.

``run_cell`` is a function of the cell and the run settings that returns its record
(``CellResult``: the store rows, the per-example records, the outcome); executors call
it where the cell runs (this process, a Ray worker, a SLURM job) and only the driver
writes the store. A cell that fails (exception, diverged loss, out of memory) becomes a
``failed`` record with its error, and the sweep goes on. Errors the user caused
(UserError) propagate: the sweep stops with a clear message, and everything finished
before is already in the store.
"""

from __future__ import annotations

import gc
import json
import os
import random
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from suite.app.sweep import Cell
from suite.errors import UserError
from suite.metrics import COST, higher_is_better, split_of
from suite.results.schema import STATUS_FAILED, STATUS_OK
from suite.task import ModelBundle, Task


@dataclass(frozen=True)
class RunSettings:
    """What every cell of one sweep shares: where it runs and what it writes besides the record."""

    device: str = "cpu"
    run_id: str = ""
    export_dir: str | None = None
    progress: bool = True
    kernels: str = "auto"  # suite.numerics.dispatch mode: which implementation serves the format operations
    fast_emulation: str = "auto"  # suite.numerics.compiled mode: the recipes' quantisers compiled or eager


@dataclass
class CellResult:
    """A finished cell: its store rows and per-example records, plus what the driver prints."""

    cell_id: str
    status: str
    rows: list[dict]
    records: Any = None  # pandas DataFrame of per-example records, or None
    curve: Any = None  # pandas DataFrame of the training curve (step, metric, value, split), or None
    error: str = ""
    primary: tuple[str, float] | None = None
    costs: dict[str, float] = field(default_factory=dict)


def pick_device(requested: str = "auto") -> str:
    import re

    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", requested):
        raise UserError(f"--device '{requested}' is not a device; use auto, cpu, cuda, cuda:N or mps")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {requested} asked for, but no CUDA GPU is available here")
    if requested.startswith("cuda:") and int(requested[5:]) >= torch.cuda.device_count():
        raise UserError(f"--device {requested}: this machine has {torch.cuda.device_count()} GPU(s)")
    return requested


def set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def now() -> str:
    """One clock read, ISO 8601 in UTC with microseconds."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Prepared:
    """A task's model and data on the device, with the context methods apply under."""

    task: Task
    bundle: ModelBundle
    train_data: Sequence | Any
    ctx: Any  # suite.method.MethodContext
    base_params: int


def prepare(task: Task, model_name: str, recipe: Any, device: str, seed: int,
            methods: Sequence[Any] = ()) -> Prepared:
    """Build the model, move it to the device, load the training data and make the method context.

    The precision policy is the recipe's, changed by ``methods`` (training recipes set theirs).
    """
    from suite.method import MethodContext
    from suite.models.accounting import count_parameters
    from suite.precision import resolve_policy

    set_seed(seed)
    bundle = task.build_model(model_name)
    base_params = count_parameters(bundle.model)[1]
    policy = resolve_policy(recipe.precision, device, list(methods))
    bundle.model.to(device=device, dtype=policy.param_dtype)
    data = task.train_data(bundle, recipe)

    def calibration(n_batches: int, batch_size: int | None = None) -> list[dict]:
        size = batch_size or recipe.batch_size
        chosen = _sample_items(data, n_batches * size, seed)
        return [{k: v.to(device) if hasattr(v, "to") else v
                 for k, v in task.collate(chosen[i:i + size], bundle).items()}
                for i in range(0, len(chosen), size)]

    ctx = MethodContext(device=device, dtype=policy.param_dtype, seed=seed, task_kind=task.objective, bundle=bundle,
                        calibration_source=calibration, recipe=recipe, precision=policy)
    return Prepared(task, bundle, data, ctx, base_params)


def _sample_items(data: Any, n: int, seed: int) -> list:
    """``n`` training items for calibration: a seeded sample of a dataset, the first ``n`` of a stream."""
    import itertools

    import torch

    if isinstance(data, torch.utils.data.IterableDataset):
        return list(itertools.islice(iter(data), n))
    rng = random.Random(seed)
    return [data[i] for i in rng.sample(range(len(data)), min(len(data), n))]


def apply_methods(prepared: Prepared, methods: Sequence[Any]) -> None:
    """Apply each method in order (each from the same seed), leaving the result in the bundle."""
    bundle = prepared.bundle
    for method in methods:
        set_seed(prepared.ctx.seed)
        bundle.model = method.apply(bundle.model, prepared.ctx)
    bundle.model.to(prepared.ctx.device)


def run_cell(cell: Cell, settings: RunSettings) -> CellResult:
    """Run one cell and return its record; nothing is written to the store here."""
    from suite.app import provenance
    from suite.numerics import compiled, dispatch

    started = now()
    base = identity_columns(cell, settings.run_id, started) | provenance.collect(settings.device)
    base["kernels"] = settings.kernels
    base["fast_emulation"] = settings.fast_emulation
    if settings.kernels == "triton" or (settings.kernels == "auto" and str(settings.device).startswith("cuda")):
        from suite.registry import KERNELS

        KERNELS.names()  # where a kernel may serve: the plugins register their implementations (in this worker)
    try:
        dispatch.reset_counts()
        compiled.reset_counts()
        with dispatch.kernels(settings.kernels), compiled.emulation(settings.fast_emulation):
            metrics, records, curve, synthetic = _execute(cell, settings)
        served = dispatch.counts()
        if served:  # the share of the cell's format operations a registered kernel ran
            metrics.append({"metric": "train_kernel_fraction", "value": dispatch.kernel_fraction(served),
                            "split": COST, "is_primary": False,
                            "higher_is_better": higher_is_better("train_kernel_fraction")})
        fused = compiled.counts()
        if fused:  # the share of the recipe's quantiser calls that ran compiled (--fast-emulation)
            metrics.append({"metric": "train_compiled_fraction", "value": compiled.compiled_fraction(fused),
                            "split": COST, "is_primary": False,
                            "higher_is_better": higher_is_better("train_compiled_fraction")})
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a cell is recorded, the sweep goes on
        error = f"{type(exc).__name__}: {exc}"
        tail = "".join(traceback.format_exception(exc)[-3:]).strip()
        row = base | {"status": STATUS_FAILED, "error": f"{error}\n{tail}"[:4000],
                      "finished_at": now(), "metric": None, "value": float("nan")}
        return CellResult(cell.cell_id, STATUS_FAILED, [row], error=error)
    finally:
        gc.collect()
        _empty_cuda_cache()
    finished = now()
    rows = [base | {"status": STATUS_OK, "error": "", "finished_at": finished,
                    "synthetic_data": synthetic, **m} for m in metrics]
    primary = next(((m["metric"], m["value"]) for m in metrics if m["is_primary"]), None)
    costs = {m["metric"]: m["value"] for m in metrics if m["split"] == "cost"}
    return CellResult(cell.cell_id, STATUS_OK, rows, records, curve, primary=primary, costs=costs)


def identity_columns(cell: Cell, run_id: str, started: str) -> dict[str, Any]:
    kinds = [m.cls.kind for m in cell.methods]
    return {
        "cell_id": cell.cell_id, "run_id": run_id, "method": cell.spec.name,
        "variant": cell.label, "method_args": json.dumps([m.to_dict() for m in cell.methods]),
        "stage": cell.stage, "search_id": cell.search_id, "trial": cell.trial,
        "tuned": json.dumps(cell.tuned, sort_keys=True) if cell.tuned else "",
        "method_kind": kinds[-1] if kinds else "", "task": cell.task, "subtask": cell.subtask or "",
        "model": cell.model, "seed": cell.seed, "recipe": json.dumps(cell.stored_recipe()),
        "config": json.dumps(cell.config(), sort_keys=True), "data_source": cell.data_source,
        "synthetic_data": cell.data_source == "synthetic", "started_at": started,
    }


def _execute(cell: Cell, settings: RunSettings) -> tuple[list[dict], Any, Any, bool]:
    from suite.models.accounting import count_parameters, measure_adapter_size
    from suite.train import Trainer

    device = settings.device
    task = cell.make_task()
    recipe = cell.recipe
    methods = [m.instantiate() for m in cell.methods]
    prepared = prepare(task, cell.model, recipe, device, cell.seed, methods)
    apply_methods(prepared, methods)
    bundle, policy = prepared.bundle, prepared.ctx.precision
    # where the methods placed themselves, before training (a method may unwrap the model after it)
    targets = ";".join(dict.fromkeys(k for m in methods for k in m.placement(bundle.model).split(";") if k))
    trainable, total = count_parameters(bundle.model)

    def evaluate() -> Any:
        with policy.autocast(device):
            return task.evaluate(bundle, recipe, device)

    def eval_primary() -> dict[str, float]:
        with policy.autocast(device):
            return task.validate(bundle, recipe, device)

    if recipe.grad_checkpointing:
        enable_gradient_checkpointing(bundle.model)
    with policy.autocast(device):
        task.before_training(bundle, recipe, device)

    trainer = Trainer(bundle.model, prepared.train_data, lambda items: task.collate(items, bundle), recipe,
                      methods, device, cell.seed, count=task.count, precision=policy, eval_fn=eval_primary,
                      progress=settings.progress,
                      description=f"{cell.spec.label} {cell.task_name} s{cell.seed}")
    result = trainer.train()
    prepared.ctx.evaluate = eval_primary
    prepared.ctx.evaluate_selection = eval_primary if cell.stage == "trial" else None  # trials score held-out data
    for method in methods:
        bundle.model = method.after_training(bundle.model, prepared.ctx)
    evaluation = evaluate()

    # Direction and split from each metric's declaration (suite.metrics), else what the task said.
    rows = [{"metric": m.name, "value": m.value, "split": split_of(m.name, m.split), "is_primary": m.is_primary,
             "higher_is_better": higher_is_better(m.name, m.higher_is_better)} for m in evaluation.metrics]
    for step, values in result.evals:
        rows += [{"metric": f"{name}@step{step}", "value": v, "split": task.validation_split, "is_primary": False,
                  "higher_is_better": higher_is_better(f"{name}@step{step}", _during_training(task, name))}
                 for name, v in values.items()]
    wall = result.wall_time_s
    cost = {
        "train_time_s": wall,
        "train_steps": result.steps,
        "train_samples_per_s": result.samples / wall if wall else float("nan"),
        "train_tokens_per_s": result.tokens / wall if wall else float("nan"),
        "peak_memory_mb": result.peak_memory_bytes / 2**20 if result.steps else float("nan"),
        "trainable_params": trainable,
        "total_params": total,
        "base_params": prepared.base_params,
        "adapter_bytes": measure_adapter_size(methods[-1], bundle.model) if methods else 0,
        "train_loss": result.final_loss,
    }
    for method in methods:
        cost.update({k: float(v) for k, v in method.measurements(bundle.model).items()})
    rows += [{"metric": k, "value": float(v), "split": COST, "is_primary": False,
              "higher_is_better": higher_is_better(k)} for k, v in cost.items()]
    if settings.export_dir:
        _export(cell, methods, bundle, settings.export_dir)
    for row in rows:
        row["targets"] = targets
    return rows, evaluation.records, training_curve(result, task.validation_split), bool(task.synthetic)


def _during_training(task: Any, name: str) -> bool:
    """The direction of an undeclared score ``validate`` returned: the task's primary metric's, else higher."""
    return bool(task.higher_is_better) if name == task.primary_metric else True


def training_curve(result: Any, validation_split: str) -> Any:
    """The loss at every optimizer step and the evaluations made during training, in long form."""
    import pandas as pd

    rows = [{"step": step, "metric": "train_loss", "value": loss, "split": "train"}
            for step, loss in enumerate(result.losses, 1)]
    rows += [{"step": step, "metric": name, "value": value, "split": validation_split}
             for step, values in result.evals for name, value in values.items()]
    return pd.DataFrame(rows, columns=["step", "metric", "value", "split"]) if rows else None


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute activations in the backward pass (non-reentrant: frozen inputs need no gradient)."""
    from suite.errors import CellFailure

    enable = getattr(model, "gradient_checkpointing_enable", None)
    if enable is None:
        raise CellFailure(f"{type(model).__name__} has no gradient checkpointing (recipe grad_checkpointing)")
    enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _export(cell: Cell, methods: list, bundle: ModelBundle, export_dir: str) -> None:
    """Save the trained model, merged into a plain transformers model, with its processor."""
    model = bundle.model
    for method in reversed(methods):
        model = method.merge(model)
    folder = os.path.join(export_dir, f"{cell.spec.name}-{cell.task_name.replace(':', '-')}-"
                          f"s{cell.seed}-{cell.cell_id}")
    model.save_pretrained(folder)
    bundle.save_processor(folder)


def _empty_cuda_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def timestamp_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S")
