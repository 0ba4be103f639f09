"""Every registered method against three model families, through tasks defined here as plugins.

The tasks below are third-party plugins: they subclass the family bases in ``suite.tasks``
and register through the public API, touching no core module. Each (method, family) pair
either ends in an ok cell or is refused before any cell runs, with a reason. Built from
configs (tiny BERT, Llama, ViT), data generated here, a few steps each.
"""

from __future__ import annotations

import random
import re
from typing import ClassVar

import numpy as np
import pytest

from suite.app.cli import main
from suite.registry import METHODS, TASKS, register_task
from suite.results.store import ResultStore
from suite.tasks.families.answer_generation import CausalLMTask
from suite.tasks.families.image_classification import ImageClassificationTask
from suite.tasks.families.text_classification import TextClassificationTask

WORDS = ("red", "blue", "green", "cat", "dog", "sun", "moon", "tree")
SIZES = {"train": 48, "dev": 16}


class CueText(TextClassificationTask):
    """Label 1 when the sentence holds the cue word 'good'."""

    family = "conf-text"
    synthetic = True
    default_model = "tiny-bert"
    tiny_words: ClassVar[tuple[str, ...]] = (*WORDS, "good")

    def data_source(self) -> str:
        return "synthetic"

    def load(self, split: str, limit: int | None = None) -> list[dict]:
        rng = random.Random(split)
        out = []
        for i in range(SIZES[split] if limit is None else min(limit, SIZES[split])):
            label = i % 2
            words = rng.choices(WORDS, k=5) + (["good"] if label else [])
            out.append({"id": i, "text_a": " ".join(words), "text_b": None, "label": label})
        return out


class RepeatWord(CausalLMTask):
    """Answer with the last word of the prompt."""

    family = "conf-causal"
    synthetic = True
    default_model = "tiny-llama"
    max_new_tokens: ClassVar[int] = 4
    tiny_words: ClassVar[tuple[str, ...]] = (*WORDS, "say")

    def data_source(self) -> str:
        return "synthetic"

    def load(self, split: str, limit: int | None = None) -> list[dict]:
        rng = random.Random(split)
        n = SIZES[split] if limit is None else min(limit, SIZES[split])
        out = []
        for i in range(n):
            word = rng.choice(WORDS)
            out.append({"id": i, "prompt": f"say {word}", "answer": word, "target": word})
        return out


class BrightHalf(ImageClassificationTask):
    """Label 1 when the left half of the image is the bright one."""

    family = "conf-image"
    synthetic = True
    default_model = "tiny-vit"

    def data_source(self) -> str:
        return "synthetic"

    def load(self, split: str, limit: int | None = None) -> list[dict]:
        rng = np.random.default_rng(0 if split == "train" else 1)
        out = []
        for i in range(SIZES[split] if limit is None else min(limit, SIZES[split])):
            label = i % 2
            image = rng.integers(0, 60, size=(16, 16, 3))
            image[:, :8] += 180 * label
            image[:, 8:] += 180 * (1 - label)
            out.append({"id": i, "image": image.astype(np.uint8), "label": label})
        return out


for task_cls, kind in ((CueText, "classification"), (RepeatWord, "causal-lm"),
                       (BrightHalf, "image-classification")):
    if task_cls.family not in TASKS:
        register_task(task_cls.family, kind=kind, summary=task_cls.__doc__.strip(), source="tests")(task_cls)

# (task, model, batch size): EVA's SVD needs r*rho = 16 label tokens per calibration batch, and a
# causal example here has two (the word and EOS).
FAMILIES = [("conf-text", "tiny-bert", 4), ("conf-causal", "tiny-llama", 8), ("conf-image", "tiny-vit", 4)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def refused_methods(stderr: str) -> dict[str, str]:
    """Method -> reason from the driver's list of pairs it left out."""
    return {m.group(1): m.group(2) for m in re.finditer(r"method '([^']+)' on model family '[^']*' \([^)]*\): (.*)",
                                                        stderr)}


def sweep(tmp_path, task: str, model: str, batch: int, methods: list[str], steps: int, capsys) -> tuple[dict, dict]:
    store = tmp_path / f"{task}-{steps}"
    code = main(["run", "--methods", ",".join(methods), "--tasks", task, "--models", model,
                 "--max-steps", str(steps), "--limit", "16", "--batch-size", str(batch), "--eval-batch-size", "16",
                 "--max-length", "16", "--skip-unsupported", "--no-progress", "--store", str(store)])
    err = capsys.readouterr().err
    assert code in (0, 1), err
    frame = ResultStore(store).load()
    status = {m: (g["status"].iloc[0], str(g["error"].iloc[0])) for m, g in frame.groupby("method")} \
        if not frame.empty else {}
    return status, refused_methods(err)


@pytest.mark.parametrize("task,model,batch", FAMILIES)
def test_every_method_runs_or_is_refused_up_front(tmp_path, capsys, task, model, batch):
    builtin = [e for e in METHODS.entries() if e.source != "tests"]  # not other test modules' plugins
    trained = [e.name for e in builtin if e.kind != "quant"]
    quantizers = [e.name for e in builtin if e.kind == "quant"]
    status, refused = sweep(tmp_path, task, model, batch, trained, 2, capsys)
    quant_status, quant_refused = sweep(tmp_path, task, model, batch, quantizers, 0, capsys)
    status.update(quant_status)
    refused.update(quant_refused)
    failed = {m: err for m, (s, err) in status.items() if s != "ok"}
    assert not failed, failed
    assert set(status) | set(refused) == set(trained) | set(quantizers)
    assert not set(status) & set(refused)
    assert all(reason.strip() for reason in refused.values())
    assert len(status) >= len(refused)  # most methods apply to every family


# Methods whose definition trains pretrained input/output layers: full fine-tuning and the other
# full-parameter methods (MeZO and Sparse MeZO, zeroth-order; GaLore, projected gradients; ComPEFT
# alone, which compresses full fine-tuning's update), and trainable-tokens (rows of the embedding).
TRAINS_EMBEDDINGS = {"full", "mezo", "sparse-mezo", "galore", "compeft", "trainable-tokens"}


def test_no_method_but_full_trains_a_causal_lms_embeddings_or_lm_head():
    from suite.app.runner import apply_methods, prepare
    from suite.app.sweep import parse_method_spec, resolve_method_spec
    from suite.method import MethodTarget
    from suite.models.loading import model_config
    from suite.recipe import Recipe

    checked = 0
    for entry in METHODS.entries():
        if entry.name in TRAINS_EMBEDDINGS or entry.source == "tests":
            continue
        resolved = resolve_method_spec(parse_method_spec(entry.name))[0]
        method = resolved.instantiate()
        if method.unsupported(MethodTarget("tiny-llama", "llama", "causal-lm", model_config("tiny-llama"))):
            continue
        prepared = prepare(TASKS.get("conf-causal").target(), "tiny-llama", Recipe(limit=16, max_length=16), "cpu", 0,
                           [method])
        apply_methods(prepared, [method])
        trainable = [n for n, p in prepared.bundle.model.named_parameters() if p.requires_grad]
        io = [n for n in trainable if "embed_tokens" in n or "lm_head" in n]
        assert not io, (entry.name, io)
        checked += 1
    assert checked >= 40
