"""Runs one cell: task.load -> build_model -> methods' apply -> train -> evaluate -> one record.

A cell that fails (exception, diverged loss, out of memory) becomes a ``failed`` record
with its error, and the sweep goes on. Errors the user caused (UserError) stop the sweep
with a clear message; everything finished before is already in the store.
"""

from __future__ import annotations

import gc
import json
import os
import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from suite.errors import UserError
from suite.results.schema import STATUS_FAILED, STATUS_OK
from suite.results.store import ResultStore
from suite.sweep import Cell


@dataclass
class CellOutcome:
    cell: Cell
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    primary: tuple[str, float] | None = None
    error: str = ""
    skipped: bool = False


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {requested} asked for, but no CUDA GPU is available here")
    return requested


def set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1e6) % 1_000_000:06d}Z"


class CellRunner:
    """Runs cells into a store. One instance per sweep (shares provenance and the device)."""

    def __init__(self, store: ResultStore, device: str = "auto", run_id: str = "",
                 export_dir: str | None = None, progress: bool = True):
        from suite.library_noise import quiet_library_noise

        self.store = store
        self.device = pick_device(device)
        quiet_library_noise(self.device)
        self.run_id = run_id or time.strftime("%Y%m%dT%H%M%S")
        self.export_dir = export_dir
        self.progress = progress

    def run(self, cell: Cell) -> CellOutcome:
        from suite import provenance

        started = _now()
        base = self._identity(cell, started) | provenance.collect(self.device)
        try:
            metrics, predictions, synthetic = self._execute(cell)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a cell is recorded, the sweep goes on
            error = f"{type(exc).__name__}: {exc}"
            tail = "".join(traceback.format_exception(exc)[-3:]).strip()
            row = base | {"status": STATUS_FAILED, "error": f"{error}\n{tail}"[:4000],
                          "finished_at": _now(), "metric": None, "value": float("nan")}
            self.store.write_cell([row])
            return CellOutcome(cell, STATUS_FAILED, error=error)
        finally:
            gc.collect()
            _empty_cuda_cache()
        finished = _now()
        rows = [base | {"status": STATUS_OK, "error": "", "finished_at": finished,
                        "synthetic_data": synthetic, **m} for m in metrics]
        if predictions is not None:
            self.store.write_predictions(cell.cell_id, predictions)
        self.store.write_cell(rows)
        primary = next(((m["metric"], m["value"]) for m in metrics if m["is_primary"]), None)
        return CellOutcome(cell, STATUS_OK, {m["metric"]: m["value"] for m in metrics if m["split"] == "cost"},
                           primary=primary)

    def _identity(self, cell: Cell, started: str) -> dict[str, Any]:
        kinds = [m.cls.kind for m in cell.methods]
        return {
            "cell_id": cell.cell_id, "run_id": self.run_id, "method": cell.spec.name,
            "variant": cell.spec.label, "method_args": json.dumps([m.to_dict() for m in cell.methods]),
            "method_kind": kinds[-1] if kinds else "", "task": cell.task, "subtask": cell.subtask or "",
            "model": cell.model, "seed": cell.seed, "recipe": json.dumps(cell.recipe.to_dict()),
            "config": json.dumps(cell.config(), sort_keys=True), "data_source": cell.data_source,
            "synthetic_data": cell.data_source == "synthetic", "started_at": started,
        }

    def _execute(self, cell: Cell) -> tuple[list[dict], Any, bool]:
        import torch

        from suite.method import MethodContext
        from suite.modeling import count_parameters, measure_adapter_size
        from suite.registry import TASKS
        from suite.train import Trainer

        set_seed(cell.seed)
        task_cls = TASKS.get(cell.task).target
        task = task_cls(subtask=cell.subtask, data_dir=cell.data_dir)
        recipe = cell.recipe
        train_examples = task.load(task.train_split, recipe.limit)
        bundle = task.build_model(cell.model)
        total_before = count_parameters(bundle.model)[1]
        bundle.model.to(self.device)
        items = task.tokenize(train_examples, bundle, recipe.max_length)

        def calibration(n_batches: int, batch_size: int | None = None) -> list[dict]:
            size = batch_size or recipe.batch_size
            rng = random.Random(cell.seed)
            chosen = rng.sample(items, min(len(items), n_batches * size))
            return [{k: v.to(self.device) for k, v in task.collate(chosen[i:i + size], bundle).items()}
                    for i in range(0, len(chosen), size)]

        ctx = MethodContext(device=self.device, dtype=torch.float32, seed=cell.seed,
                            model_family=bundle.family, task_kind=task.head,
                            tokenizer=bundle.tokenizer, calibration_source=calibration, recipe=recipe)
        methods = [m.instantiate() for m in cell.methods]
        for method in methods:
            set_seed(cell.seed)
            bundle.model = method.apply(bundle.model, ctx)
        bundle.model.to(self.device)
        trainable, total = count_parameters(bundle.model)

        def eval_primary() -> dict[str, float]:
            out = task.evaluate(bundle, recipe, self.device, recipe.limit)
            return {m.name: m.value for m in out.metrics if m.is_primary}

        trainer = Trainer(bundle.model, items, lambda chunk: task.collate(chunk, bundle), recipe,
                          methods, self.device, cell.seed, eval_fn=eval_primary,
                          progress=self.progress, description=f"{cell.spec.label} {cell.task_name} s{cell.seed}")
        result = trainer.train()
        evaluation = task.evaluate(bundle, recipe, self.device, recipe.limit)

        rows = [{"metric": m.name, "value": m.value, "split": m.split, "is_primary": m.is_primary,
                 "higher_is_better": m.higher_is_better} for m in evaluation.metrics]
        for step, values in result.evals:
            rows += [{"metric": f"{name}@step{step}", "value": v, "split": "dev", "is_primary": False,
                      "higher_is_better": True} for name, v in values.items()]
        wall = result.wall_time_s
        cost = {
            "train_time_s": wall,
            "train_steps": result.steps,
            "train_samples_per_s": result.samples / wall if wall else float("nan"),
            "train_tokens_per_s": result.tokens / wall if wall else float("nan"),
            "peak_memory_mb": result.peak_memory_bytes / 2**20 if result.steps else float("nan"),
            "trainable_params": trainable,
            "total_params": total,
            "base_params": total_before,
            "adapter_bytes": measure_adapter_size(methods[-1], bundle.model) if methods else 0,
            "train_loss": result.final_loss,
        }
        lower_better = {"train_time_s", "peak_memory_mb", "trainable_params", "total_params",
                        "adapter_bytes", "train_loss", "base_params"}
        for method in methods:
            cost.update({k: float(v) for k, v in method.measurements(bundle.model).items()})
            lower_better.update(method.lower_is_better)
        rows += [{"metric": k, "value": float(v), "split": "cost", "is_primary": False,
                  "higher_is_better": not _matches(k, lower_better)} for k, v in cost.items()]
        if self.export_dir:
            self._export(cell, methods, bundle)
        predictions = evaluation.predictions
        return rows, predictions, bool(task.synthetic)

    def _export(self, cell: Cell, methods: list, bundle: Any) -> None:
        """Save the trained model, merged into a plain transformers model, with its tokenizer."""
        model = bundle.model
        for method in reversed(methods):
            model = method.merge(model)
        folder = os.path.join(self.export_dir, f"{cell.spec.name}-{cell.task_name.replace(':', '-')}-"
                              f"s{cell.seed}-{cell.cell_id}")
        model.save_pretrained(folder)
        bundle.tokenizer.save_pretrained(folder)


def _matches(metric: str, names: set[str]) -> bool:
    """``metric`` is one of ``names`` or a per-part variant of one (``quant_rel_error/layer.3``)."""
    return metric in names or metric.split("/", 1)[0] in names


def _empty_cuda_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
