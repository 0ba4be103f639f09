"""Behaviour pinned across refactors: what a sweep stores, what the registry resolves, what peft gets.

Written before the layout moves (where each module lives) and kept after: a move must not change
what a user sees. The golden file ``tests/snapshots/behaviour.json`` holds, for four real sweeps
(the smoke preset; a LoRA cell of all-MiniLM-L6-v2 on the real SST-2 files; a GSM8K cell and an
``lm`` cell on generated data in the original layouts), every cell's id, stored configuration
and deterministic metrics, and the stored columns; every registered name (methods, tasks,
kernels, executors, optimizers, presets, recipe keys, model names); what every method declares
(kind, version, default arguments, learning rate: what enters cell ids and ``suite list``); and
the peft config every peft tuner builds on tiny BERT and tiny Llama, as JSON text.

Cell ids hash absolute data paths, so the inputs sit at one fixed place under the temporary
folder; the MiniLM folder is copied there too (a saved adapter names its base model's folder). Timings and memory are left out (they vary by
run); everything else must match. A change of behaviour that is meant (a new metric, a fixed
bug) rewrites the golden file with ``SUITE_WRITE_SNAPSHOT=1 pytest tests/test_behaviour_snapshot.py``
and says why in its commit.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MINILM, SHARED_GLUE, run_suite

GOLDEN = Path(__file__).parent / "snapshots" / "behaviour.json"
WRITE = os.environ.get("SUITE_WRITE_SNAPSHOT") == "1"
INPUTS = Path(tempfile.gettempdir()) / "suite-behaviour-snapshot"  # fixed: cell ids hash data paths
# Metrics that measure the machine, not the method: they differ from run to run.
VOLATILE = ("train_time_s", "train_samples_per_s", "train_tokens_per_s", "peak_memory_mb",
            "eval_time_s", "wall_time_s", "state_memory_mb",
            "train_compiled_fraction")  # whether torch.compile can build code depends on the machine
# Cells run on one thread so float results do not depend on the machine's core count.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

GSM8K_PROBLEMS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "3 + 4 = <<3+4=7>>7\n#### 7"),
    ("A box holds 1,000 pens and 250 are sold. How many are left?", "1000 - 250 = <<1000-250=750>>750\n#### 750"),
    ("It is 2 degrees and falls by 7. What is the temperature?", "2 - 7 = <<2-7=-5>>-5\n#### -5"),
    ("Sam reads 12 pages a day for 3 days. How many pages?", "12 * 3 = <<12*3=36>>36\n#### 36"),
]


# -- the inputs, at fixed paths ------------------------------------------------------------------
def _write_gsm8k(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.dumps({"question": q, "answer": a}) for q, a in GSM8K_PROBLEMS]
    (folder / "train.jsonl").write_text("\n".join(rows * 4) + "\n", encoding="utf-8")
    (folder / "test.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def _write_corpus(folder: Path) -> Path:
    rng = random.Random(0)
    subjects, verbs, objects = ("the cat", "a dog", "my friend"), ("sees", "likes"), ("the ball", "a book")
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 120), ("valid", 20)):
        lines = []
        for _ in range(n):
            text = " ".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}."
                            for _ in range(rng.randint(2, 4)))
            lines.append(json.dumps({"text": text}))
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _link(target: Path, link: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and os.readlink(link) != str(target):
        link.unlink()
    if not link.is_symlink():
        link.symlink_to(target, target_is_directory=True)
    return link


def _copy(source: Path, target: Path) -> Path:
    """A copy of a model folder at a fixed place: the saved adapter names its base model's path, so
    the adapter's size depends on where the model lies."""
    import shutil

    if not (target / "config.json").exists():
        shutil.copytree(source, target, dirs_exist_ok=True)
    return target


def _sweeps() -> dict[str, list[str] | None]:
    """The CLI arguments of each sweep (None: its inputs are absent here)."""
    sst2 = None
    if MINILM is not None and (SHARED_GLUE / "SST-2" / "train.tsv").exists():
        model = _copy(Path(MINILM), INPUTS / "minilm")  # a copy: a link resolves to the venv's own path
        glue = _link(SHARED_GLUE, INPUTS / "glue")
        sst2 = ["--methods", "lora", "--tasks", "glue:sst2", "--models", str(model), "--data-dir", str(glue),
                "--max-steps", "30", "--batch-size", "8", "--max-length", "32", "--limit", "128", "--lr", "1e-3"]
    gsm8k = _write_gsm8k(INPUTS / "gsm8k")
    corpus = _write_corpus(INPUTS / "lm")
    return {
        "smoke": ["--preset", "smoke"],
        "sst2": sst2,
        "gsm8k": ["--methods", "lora", "--tasks", "gsm8k", "--models", "tiny-llama", "--data-dir", str(gsm8k),
                  "--limit", "4", "--max-steps", "3", "--batch-size", "2", "--max-length", "64",
                  "--max-new-tokens", "6", "--validation-rows", "2"],
        "lm": ["--methods", "full,fp8-train", "--tasks", "lm", "--models", "llama-tiny", "--data-dir", str(corpus),
               "--tokens-per-param", "0.002", "--batch-size", "4", "--max-length", "32", "--eval-tokens", "1024",
               "--eval-every", "4", "--lr", "3e-3"],
    }


# -- what a sweep stored --------------------------------------------------------------------------
def _placeholders(text: str) -> str:
    return text.replace(str(INPUTS), "<INPUTS>")


def _number(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def stored_snapshot(store: Path) -> dict[str, Any]:
    from suite.recipe import canonical_recipe_json
    from suite.results.store import ResultStore

    results = ResultStore(store)
    frame = results.load()
    cells = {}
    for cell_id, rows in frame.groupby("cell_id", sort=True):
        first = rows.iloc[0]
        metrics = {f"{r.metric}|{r.split}": [_number(r.value), bool(r.is_primary), bool(r.higher_is_better)]
                   for r in rows.itertuples() if isinstance(r.metric, str) and r.metric not in VOLATILE}
        cells[cell_id] = {
            "status": first["status"],
            "error": first["error"] or "",
            **{key: _placeholders(str(first[key])) for key in (
                "method", "variant", "method_args", "method_kind", "task", "subtask", "model", "seed",
                "config", "data_source", "synthetic_data", "stage")},
            # as reports pair and group cells by it (fields that moved to a task's options dropped where None)
            "recipe": canonical_recipe_json(str(first["recipe"])),
            "metrics": dict(sorted(metrics.items())),
        }
    curves = results.load_curves()
    predictions = results.load_predictions()
    return {
        "columns": list(frame.columns),
        "cells": cells,
        "curve_columns": list(curves.columns),
        "curves": sorted(f"{r.cell_id}|{r.metric}|{r.step}|{_number(r.value)!r}"
                         for r in curves.itertuples() if r.metric not in VOLATILE),
        "prediction_columns": list(predictions.columns),
        "predictions": _digest(predictions),
    }


def _digest(predictions: Any) -> str:
    """The per-example records, in a fixed order, as one hash (what paired tests read)."""
    import hashlib

    if predictions.empty:
        return "empty"
    keys = [c for c in ("cell_id", "split", "example_id") if c in predictions.columns]
    ordered = predictions.sort_values(keys).reset_index(drop=True)
    text = ordered.drop(columns=[c for c in ("attempt_id", "run_id") if c in ordered.columns]).to_csv(index=False)
    return f"{len(ordered)} rows, sha256 " + hashlib.sha256(_placeholders(text).encode()).hexdigest()[:16]


# -- what the registry resolves -------------------------------------------------------------------
def registered_names() -> dict[str, list[str]]:
    from suite.registry import EXECUTORS, KERNELS, METHODS, TASKS

    return {
        "methods": [e.name for e in METHODS.entries() if e.source != "tests"],
        "tasks": [e.name for e in TASKS.entries() if e.source != "tests"],
        "kernels": [e.name for e in KERNELS.entries() if e.source != "tests"],
        "executors": [e.name for e in EXECUTORS.entries() if e.source != "tests"],
        "optimizers": sorted(_optimizers()),
        "presets": sorted(_presets()),
        "recipe_keys": sorted(_recipe_keys()),
        "models": ["tiny-bert", "tiny-llama", "tiny-vit", "llama-tiny", "llama-10m", "llama-30m", "llama-125m"],
    }


def _optimizers() -> list[str]:
    from suite.optim import OPTIMIZERS, build_optimizer  # noqa: F401 - importing registers the built-ins

    return list(OPTIMIZERS)


def _presets() -> list[str]:
    from suite.app.commands.run import PRESETS

    return list(PRESETS)


def _recipe_keys() -> list[str]:
    """Keys a sweep file's ``recipe:`` and ``suite run``'s flags accept."""
    from suite.recipe import RECIPE_KEYS

    return list(RECIPE_KEYS)


def _model_builds(name: str) -> str:
    """The model family a registered model name builds (no download: tiny and named sizes only)."""
    from suite.registry import TASKS

    task = "lm" if name.startswith("llama-") else ("images" if name == "tiny-vit" else "smoke")
    if task == "images":
        from suite.models.loading import model_config

        return model_config(name).model_type
    bundle = TASKS.get(task).target(subtask=None, data_dir=None).build_model(name)
    return bundle.family


# -- what each method declares ---------------------------------------------------------------------
def method_declarations() -> dict[str, dict[str, Any]]:
    """Per registered method: what enters its cells' ids and what ``suite list`` shows."""
    from suite.config import build_config, config_to_dict
    from suite.registry import METHODS

    out = {}
    for entry in METHODS.entries():
        if entry.source == "tests":
            continue
        cls = entry.target
        out[entry.name] = _jsonable({
            "kind": entry.kind, "source": entry.source, "summary": entry.summary, "paper": entry.paper,
            "version": cls.version, "default_lr": cls.default_lr, "mergeable": getattr(cls, "mergeable", None),
            "config": config_to_dict(build_config(cls.Config, {}, entry.name)),
        })
    return out


# -- what peft gets -------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (set, frozenset)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "value") and type(value).__module__.startswith("peft"):  # peft's enums
        return value.value
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def peft_configs() -> dict[str, str]:
    """Every peft tuner's config on tiny BERT (classification) and tiny Llama, as JSON text."""
    import torch

    from suite.config import build_config
    from suite.method import MethodTarget
    from suite.registry import METHODS
    from tests.conftest import tiny_setup

    torch.manual_seed(0)
    out: dict[str, str] = {}
    for model_name in ("tiny-bert", "tiny-llama"):
        model, ctx, *_ = tiny_setup(model_name, n_items=32)
        family = "bert" if model_name == "tiny-bert" else "llama"
        for entry in METHODS.entries():
            cls = entry.target
            if entry.source == "tests" or not hasattr(cls, "build_peft_config"):
                continue
            method = cls(build_config(cls.Config, {}, entry.name))
            refused = method.unsupported(MethodTarget(model_name, family, ctx.task_kind))
            if refused:
                out[f"{entry.name}|{model_name}"] = "refused: " + refused
                continue
            config = method.build_peft_config(model, ctx)
            out[f"{entry.name}|{model_name}"] = json.dumps(_jsonable(config.to_dict()), sort_keys=True)
    return out


# -- the test ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    if WRITE:
        return {}
    assert GOLDEN.exists(), f"{GOLDEN} is missing: write it with SUITE_WRITE_SNAPSHOT=1"
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


def _update_golden(key: str, value: Any) -> None:
    data = json.loads(GOLDEN.read_text(encoding="utf-8")) if GOLDEN.exists() else {}
    data[key] = value
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _assert_same(key: str, now: Any, golden: dict[str, Any]) -> None:
    if WRITE:
        _update_golden(key, now)
        return
    assert key in golden, f"the golden file has no '{key}': write it with SUITE_WRITE_SNAPSHOT=1"
    expected = golden[key]
    if now != expected:
        now_text = json.dumps(now, indent=1, sort_keys=True).splitlines()
        expected_text = json.dumps(expected, indent=1, sort_keys=True).splitlines()
        import difflib

        diff = "\n".join(list(difflib.unified_diff(expected_text, now_text, "golden", "now", lineterm=""))[:80])
        pytest.fail(f"behaviour changed for '{key}':\n{diff}")


@pytest.mark.parametrize("sweep", ["smoke", "sst2", "gsm8k", "lm"])
def test_a_sweep_stores_what_it_stored_before(sweep, tmp_path, golden):
    if sweep == "gsm8k":
        pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[eval]')")
    args = _sweeps()[sweep]
    if args is None:
        pytest.skip("all-MiniLM-L6-v2 or the real SST-2 files (../shared/data/glue) are absent")
    store = tmp_path / "store"
    result = run_suite("run", *args, "--store", str(store), "--no-progress", env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    _assert_same(f"sweep:{sweep}", stored_snapshot(store), golden)


def test_every_registered_name_still_resolves(golden):
    from suite.registry import EXECUTORS, KERNELS, METHODS, TASKS

    now = registered_names()
    if WRITE:
        _update_golden("names", now)
        _update_golden("models", {name: _model_builds(name) for name in now["models"]})
        return
    before = golden["names"]
    for group, registry in (("methods", METHODS), ("tasks", TASKS), ("kernels", KERNELS),
                            ("executors", EXECUTORS)):
        for name in before[group]:
            assert registry.get(name).name in (name, *registry.names()), f"{group}: '{name}' no longer resolves"
    for group in ("optimizers", "presets"):
        missing = sorted(set(before[group]) - set(now[group]))
        assert not missing, f"{group} no longer accepted: {missing}"
    from suite.app.sweep import check_recipe_keys

    for key in before["recipe_keys"]:  # a sweep file's recipe: still takes it (a moved key goes to its task)
        check_recipe_keys({key: 1}, "the snapshot")
    for name, family in golden["models"].items():
        assert _model_builds(name) == family, f"model '{name}' no longer builds a {family} model"


def test_every_method_declares_what_it_declared_before(golden):
    _assert_same("methods", method_declarations(), golden)


def test_every_peft_tuner_builds_the_config_it_built_before(golden):
    _assert_same("peft_configs", peft_configs(), golden)
