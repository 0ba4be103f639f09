"""Scoring a trained model in memory with lm-evaluation-harness (``lm-eval``), the field's scorer.

The adapted model goes to lm-eval as it is (``HFLM(pretrained=model, tokenizer=...)``): no save
and reload, so a PEFT adapter, a quantised base or a training recipe is scored exactly as it
trained. A task is an lm-eval task name, or a registered task's config with overrides (local
data files in the original layout instead of the hub, another prompt); lm-eval's own filters
and metrics do the scoring, and its per-sample log becomes the cell's per-example records.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from suite.errors import UserError

EXTRA = "eval"  # the optional dependency group that installs lm-eval


def require_lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError:
        raise UserError(f"scoring with lm-evaluation-harness needs lm-eval: pip install -e '.[{EXTRA}]' "
                        f"(or pip install lm-eval)") from None
    return lm_eval


def lm_eval_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("lm-eval")
    except metadata.PackageNotFoundError:
        return ""


@dataclass
class HarnessResult:
    """What one lm-eval task returned: metric -> value, and one row per scored sample and filter."""

    task: str
    version: str
    metrics: dict[str, float]
    samples: list[dict]


@lru_cache(maxsize=4)
def task_manager(include_path: str | None = None, builtin_folder: str | None = None) -> Any:
    """lm-eval's task index: the whole built-in set (slow: thousands of YAMLs), or only one folder of it."""
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    if builtin_folder:
        import lm_eval

        folder = Path(lm_eval.__file__).parent / "tasks" / builtin_folder
        paths = [str(folder)] + ([include_path] if include_path else [])
        return TaskManager(include_path=paths, include_defaults=False)
    return TaskManager(include_path=include_path) if include_path else TaskManager()


def task_config(name: str, overrides: Mapping[str, Any] | None = None, include_path: str | None = None,
                builtin_folder: str | None = None) -> dict:
    """A registered lm-eval task's config with ``overrides`` applied (e.g. local data files)."""
    manager = task_manager(include_path, builtin_folder)
    entry = manager.task_index.get(name)
    if entry is None or entry.cfg is None:
        raise UserError(f"lm-eval has no task '{name}'; see `lm-eval ls tasks`, or give a task YAML "
                        f"folder with --lm-eval-include")
    config = {k: v for k, v in dict(entry.cfg).items() if k not in ("tag", "group")}
    config.update(overrides or {})
    return config


def evaluate_in_memory(model: Any, tokenizer: Any, tasks: Sequence[str | dict], device: str, *,
                       batch_size: int = 8, max_length: int | None = None, num_fewshot: int | None = None,
                       limit: int | None = None, max_new_tokens: int | None = None,
                       apply_chat_template: bool = False, include_path: str | None = None,
                       builtin_folder: str | None = None, seed: int = 0) -> list[HarnessResult]:
    """Score ``model`` on lm-eval ``tasks`` (names or config dicts), keeping every sample."""
    require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    for name in ("lm-eval", "lm_eval"):  # one line per request batch is noise in a sweep's log
        logging.getLogger(name).setLevel(logging.ERROR)
    import datasets

    datasets.disable_progress_bars()  # lm-eval's data preparation of small local files
    harness_model = HFLM(pretrained=model, tokenizer=tokenizer, device=device, batch_size=batch_size,
                         max_length=max_length)
    gen_kwargs = {"max_gen_toks": max_new_tokens} if max_new_tokens else None
    output = simple_evaluate(model=harness_model, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                             log_samples=True, gen_kwargs=gen_kwargs, apply_chat_template=apply_chat_template,
                             task_manager=task_manager(include_path, builtin_folder), random_seed=seed,
                             numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    if output is None:  # pragma: no cover - lm-eval returns None only on non-zero ranks
        raise RuntimeError("lm-eval returned no results")
    results = []
    for task, values in output["results"].items():
        metrics = {key: float(value) for key, value in values.items()
                   if isinstance(value, (int, float)) and "_stderr" not in key and key != "sample_len"}
        results.append(HarnessResult(task, str(output.get("versions", {}).get(task, "")), metrics,
                                     list(output.get("samples", {}).get(task, []))))
    return results
