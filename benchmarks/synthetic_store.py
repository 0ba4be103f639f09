"""Generate result stores with the runner's row shapes, for tests, the render benchmark and demos.

The cells are GLUE-shaped (its subtask names, metric names and primary metrics, as data):
what the site and `suite compare` then show is scored by the task family itself, through the
registry, exactly as for real results. This lives beside the benchmarks, not in the reports
package, because nothing that renders a store needs it.

Every row is marked ``synthetic_data=True`` and ``data_source="synthetic"``, so a
generated store can never pass for real results on a site. Metrics are computed from the
generated per-example predictions (never typed in), so the paired tests see data that
agrees with the scores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from suite.results.store import ResultStore

# subtask -> (eval splits, metrics, primary metric name, regression?)
GLUE_SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str, bool]] = {
    "cola": (("dev",), ("mcc",), "mcc", False),
    "sst2": (("dev",), ("accuracy",), "accuracy", False),
    "mrpc": (("dev",), ("f1", "accuracy"), "f1_accuracy_mean", False),
    "stsb": (("dev",), ("pearson", "spearman"), "pearson_spearman_mean", True),
    "qqp": (("dev",), ("f1", "accuracy"), "f1_accuracy_mean", False),
    "mnli": (("dev_matched", "dev_mismatched"), ("accuracy",), "accuracy_m_mm_mean", False),
    "qnli": (("dev",), ("accuracy",), "accuracy", False),
    "rte": (("dev",), ("accuracy",), "accuracy", False),
}

DEFAULT_SKILL = {"lora": 0.86, "pissa": 0.87, "full": 0.88}
DEFAULT_PARAMS = {"lora": 296_450, "pissa": 296_450, "full": 22_713_218}


def _metrics(metric: str, pred: np.ndarray, gold: np.ndarray) -> float:
    if metric == "accuracy":
        return float((pred == gold).mean())
    if metric == "f1":
        tp = float(((pred == 1) & (gold == 1)).sum())
        fp = float(((pred == 1) & (gold != 1)).sum())
        fn = float(((pred != 1) & (gold == 1)).sum())
        return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
    if metric == "mcc":
        if pred.std() == 0 or gold.std() == 0:
            return 0.0
        return float(np.corrcoef(pred, gold)[0, 1])  # MCC of two binary vectors
    if metric == "pearson":
        return float(np.corrcoef(pred, gold)[0, 1])
    if metric == "spearman":
        from scipy.stats import spearmanr

        return float(spearmanr(pred, gold).statistic)
    raise ValueError(metric)


def cell_id_for(*parts: object) -> str:
    return hashlib.sha1(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def method_args_of(method: str, variant: str) -> str:
    """What the runner stores for ``variant``: the method's arguments resolved with its defaults; "[]"
    where the label is no spec of ``method`` (a hand-made label: reports then keep it as written)."""
    from suite.config import build_config, config_to_dict, parse_kv
    from suite.errors import UserError
    from suite.registry import METHODS

    name, _, args = variant.partition(":")
    if name != method or method not in METHODS:
        return "[]"
    cls = METHODS.get(method).target
    try:
        resolved = config_to_dict(build_config(cls.Config, parse_kv(args, method) if args else {}, method))
    except UserError:
        return "[]"
    return json.dumps([{"name": method, "args": resolved, "version": cls.version}])


def make_cell(
    method: str,
    subtask: str,
    seed: int,
    *,
    variant: str | None = None,
    skill: float = 0.86,
    params: float = 300_000,
    n_examples: int = 200,
    model: str = "all-MiniLM-L6-v2",
    failed: str | None = None,
    with_predictions: bool = True,
    commit: str = "0123abc",
) -> tuple[list[dict], pd.DataFrame | None]:
    """Rows (and predictions) of one synthetic GLUE cell, shaped like the runner's."""
    variant = variant or method
    cid = cell_id_for(variant, subtask, model, seed)
    rng = np.random.default_rng(int(cid[:8], 16))
    base = {
        "cell_id": cid, "run_id": "synthetic-run", "method": method, "variant": variant,
        "method_args": method_args_of(method, variant),
        "method_kind": "baseline" if method == "full" else "peft",
        "task": "glue", "subtask": subtask, "model": model, "seed": seed,
        "recipe": json.dumps({"lr": 2e-4, "epochs": 3, "batch_size": 32}),
        "config": json.dumps({"method": variant, "task": f"glue:{subtask}", "model": model,
                              "seed": seed, "recipe": {"lr": 2e-4}}),
        "data_source": "synthetic", "synthetic_data": True,
        "started_at": "2025-01-01T00:00:00", "finished_at": f"2025-01-01T00:{seed % 60:02d}:00",
        "suite_version": "0.1.0", "git_commit": commit, "python": "3.11", "torch": "2.13",
        "transformers": "5.23", "peft": "0.21.2", "datasets": "4.0", "device": "cpu",
        "cuda": "", "host": "synthetic",
    }
    if failed is not None:
        return [dict(base, status="failed", error=failed)], None
    splits, metric_names, primary, regression = GLUE_SHAPES[subtask]
    rows, frames = [], []
    all_values = []
    for split in splits:
        # The same examples (and gold labels) in every cell of a task; only predictions vary.
        gold_rng = np.random.default_rng(int(cell_id_for(subtask, split, n_examples)[:8], 16))
        if regression:
            gold = gold_rng.uniform(0, 5, n_examples)
            pred = gold + rng.normal(0, 2.0 * (1 - skill) + 0.3, n_examples)
            correct = -np.abs(pred - gold)
        else:
            gold = gold_rng.integers(0, 2, n_examples)
            right = rng.random(n_examples) < skill
            pred = np.where(right, gold, 1 - gold)
            correct = right.astype(float)
        for name in metric_names:
            value = _metrics(name, pred, gold)
            all_values.append(value)
            rows.append(dict(base, status="ok", error="", metric=name, value=value, split=split,
                             is_primary=name == primary and split == splits[0],
                             higher_is_better=True))
        frames.append(pd.DataFrame({"split": split, "example_id": np.arange(n_examples),
                                    "prediction": pred.astype(float), "label": gold.astype(float),
                                    "correct": correct}))
    if primary not in metric_names:
        rows.append(dict(base, status="ok", error="", metric=primary, value=float(np.mean(all_values)),
                         split="dev", is_primary=True, higher_is_better=True))
    cost = {
        "trainable_params": params, "total_params": 22_713_218 + (0 if method == "full" else params),
        "train_time_s": float(rng.uniform(50, 60) * (2.0 if method == "full" else 1.0)),
        "peak_memory_mb": float(rng.uniform(900, 950) * (2.5 if method == "full" else 1.0)),
        "train_samples_per_s": float(rng.uniform(100, 120)), "adapter_bytes": params * 4.0,
        "train_loss": float(rng.uniform(0.2, 0.4)),
    }
    for name, value in cost.items():
        rows.append(dict(base, status="ok", error="", metric=name, value=float(value), split="cost",
                         is_primary=False, higher_is_better=name in ("train_samples_per_s",)))
    preds = pd.concat(frames, ignore_index=True) if with_predictions else None
    return rows, preds


def make_curve(cell_id: str, skill: float, steps: int, eval_every: int = 0, metric: str = "accuracy",
               split: str = "dev") -> pd.DataFrame:
    """A cell's training curve as the runner stores it: ``train_loss`` at every step and ``metric`` every
    ``eval_every`` steps. Its own random stream (from the cell id and "curve"), so adding curves leaves
    every other generated value unchanged."""
    rng = np.random.default_rng(int(cell_id_for(cell_id, "curve")[:8], 16))
    step = np.arange(1, steps + 1)
    loss = 0.3 + 0.5 * np.exp(-step / max(1, steps / 4)) * (1.5 - skill) + rng.normal(0, 0.03, steps)
    rows = [{"step": int(s), "metric": "train_loss", "value": float(v), "split": "train"}
            for s, v in zip(step, loss, strict=True)]
    if eval_every:
        for s in range(eval_every, steps + 1, eval_every):
            value = skill - 0.2 * np.exp(-s / max(1, steps / 4)) + rng.normal(0, 0.01)
            rows.append({"step": s, "metric": metric, "value": float(value), "split": split})
    return pd.DataFrame(rows, columns=["step", "metric", "value", "split"])


def write_store(
    root: str | Path,
    methods: Iterable[str] = ("lora", "pissa", "full"),
    subtasks: Iterable[str] = ("sst2", "mrpc", "cola"),
    seeds: Iterable[int] = (0, 1, 2),
    skill: Mapping[str, float] | None = None,
    n_examples: int = 200,
    with_predictions: bool = True,
    curve_steps: int = 0,
    eval_every: int = 0,
) -> ResultStore:
    """A complete synthetic GLUE store: methods x subtasks x seeds; ``curve_steps`` > 0 adds each cell's
    training curve (its evaluations every ``eval_every`` steps on the primary split)."""
    store = ResultStore(root)
    skill = {**DEFAULT_SKILL, **(skill or {})}
    for method in methods:
        for sub in subtasks:
            for seed in seeds:
                rows, preds = make_cell(method, sub, seed, skill=skill.get(method, 0.85),
                                        params=DEFAULT_PARAMS.get(method, 300_000),
                                        n_examples=n_examples, with_predictions=with_predictions)
                store.write_cell(rows)
                if preds is not None:
                    store.write_predictions(rows[0]["cell_id"], preds)
                if curve_steps:
                    metric = GLUE_SHAPES[sub][2]
                    store.write_curve(rows[0]["cell_id"], make_curve(rows[0]["cell_id"], skill.get(method, 0.85),
                                                                     curve_steps, eval_every, metric,
                                                                     GLUE_SHAPES[sub][0][0]))
    return store


def kernel_rows(commits: Iterable[str] = ("c1", "c2", "c3"), slow_at: str | None = "c3",
                n_samples: int = 30) -> pd.DataFrame:
    """Kernel timing rows over a few commits; the triton impl gets 30% slower at ``slow_at``.

    Each row keeps its timing samples (``samples_ms``, and ``normalized_samples``: divided by
    a calibration op that does not change between commits), as the gate compares them.
    """
    from suite.results.schema import KERNEL_COLUMNS, SCHEMA_VERSION

    rows = []
    rng = np.random.default_rng(0)
    for i, commit in enumerate(commits):
        for kernel, shape, nbytes, flops in (("quantize_mxfp4", "4096x4096", 4096 * 4096 * 2.5, 4096 * 4096 * 4.0),
                                             ("matmul_fp8", "4096x4096x4096", 4096 * 4096 * 3.0, 2 * 4096**3)):
            for impl, base_ms in (("reference", 2.0), ("triton", 0.5), ("torchao", 0.6)):
                mean = base_ms * (1.3 if impl == "triton" and commit == slow_at else 1.0)
                samples = mean * rng.normal(1.0, 0.01, n_samples)
                calib = 0.1 * rng.normal(1.0, 0.01, n_samples)
                t = float(np.median(samples))
                rows.append({
                    "schema_version": SCHEMA_VERSION, "run_id": f"run-{i}",
                    "timestamp": f"2025-01-0{i + 1}T00:00:00", "kernel": kernel, "impl": impl,
                    "shape": shape, "dtype": "bfloat16", "time_ms": t,
                    "time_ms_p10": float(np.quantile(samples, 0.1)),
                    "time_ms_p90": float(np.quantile(samples, 0.9)), "n_samples": n_samples,
                    "bytes_moved": nbytes, "flops": flops,
                    "gbps": nbytes / t / 1e6, "tflops": flops / t / 1e9,
                    "roofline_fraction": min(1.0, nbytes / t / 1e6 / 3000.0), "peak_gbps": 3000.0,
                    "peak_tflops": 900.0, "normalized_time": float(np.median(samples / calib)), "correct": True,
                    "device": "NVIDIA H100 (synthetic)", "git_commit": commit, "suite_version": "0.1.0",
                    "samples_ms": samples.tolist(), "normalized_samples": (samples / calib).tolist(),
                })
    return pd.DataFrame(rows, columns=KERNEL_COLUMNS)
