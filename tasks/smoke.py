"""smoke: a synthetic, offline sentiment task in GLUE's SST-2 format, for quick end-to-end runs.

Sentences are random filler words with a few polarity cue words; the label is the
polarity of the cues, so a tiny model learns it within a few dozen steps. The data is
written as SST-2 TSV files and read back through the GLUE loader, so the smoke path
exercises the real data path. Every result of this task is marked ``synthetic_data``.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
from functools import lru_cache
from typing import Any, ClassVar

from suite.registry import register_task
from suite.tasks.families.text_classification import TextClassificationTask
from suite.tasks.glue import LAYOUTS, read_glue_tsv

POSITIVE = ("good", "great", "superb", "lovely", "fine", "brilliant", "warm", "fun")
NEGATIVE = ("bad", "awful", "dull", "poor", "boring", "weak", "cold", "sad")
FILLER = tuple(f"w{i}" for i in range(120))
SIZES = {"train": 2000, "dev": 400}


def synthetic_sentences(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.randint(0, 1)
        cues = POSITIVE if label else NEGATIVE
        words = rng.choices(FILLER, k=rng.randint(6, 14)) + rng.choices(cues, k=rng.randint(1, 2))
        rng.shuffle(words)
        out.append((" ".join(words), label))
    return out


@lru_cache(maxsize=1)
def smoke_data_dir() -> str:
    """Write the synthetic SST-2-format files once per process (fixed seed: same data everywhere);
    the folder is removed when the process exits."""
    root = tempfile.mkdtemp(prefix="suite-smoke-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    folder = os.path.join(root, "SST-2")
    os.makedirs(folder)
    for i, (split, n) in enumerate(SIZES.items()):
        with open(os.path.join(folder, f"{split}.tsv"), "w", encoding="utf-8") as fh:
            fh.write("sentence\tlabel\n")
            for text, label in synthetic_sentences(n, seed=1000 + i):
                fh.write(f"{text}\t{label}\n")
    return root


@register_task("smoke", kind="classification",
               summary="synthetic sentiment in SST-2 format (offline, seconds on a CPU)")
class SmokeTask(TextClassificationTask):
    family = "smoke"
    synthetic = True
    default_model = "tiny-bert"
    tiny_words: ClassVar[tuple[str, ...]] = POSITIVE + NEGATIVE + FILLER

    def data_source(self) -> str:
        return "synthetic"

    def load(self, split: str, limit: int | None = None) -> list[dict]:
        return read_glue_tsv(os.path.join(smoke_data_dir(), "SST-2", f"{split}.tsv"),
                             LAYOUTS["sst2"], limit)

    def default_recipe(self, model_family: str) -> dict[str, Any]:
        return {"lr": 1e-3, "max_steps": 60, "batch_size": 32, "max_length": 32,
                "eval_batch_size": 200}
