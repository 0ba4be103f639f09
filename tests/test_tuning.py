"""Tuning inside a sweep: an equal budget per method, selection on held-out training data only.

The decisive test poisons the split the leaderboard reports (its labels flipped) and shows
the selection does not change: trials never read it.
"""

from __future__ import annotations

import json
import random
from typing import ClassVar

import pytest

import suite.results
from suite.app.cli import main
from suite.registry import TASKS, register_task
from suite.tasks.families.text_classification import TextClassificationTask

WORDS = ("red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "hat", "cup")
COMMON = ["--models", "tiny-bert", "--max-steps", "40", "--batch-size", "16", "--max-length", "16",
          "--no-progress", "--warmup-ratio", "0"]


class Poisonable(TextClassificationTask):
    """Label 1 when 'good' appears; ``POISON`` flips the labels of the reported split (dev)."""

    family = "test-poisonable"
    synthetic = True
    default_model = "tiny-bert"
    tiny_words: ClassVar[tuple[str, ...]] = (*WORDS, "good")
    POISON: ClassVar[bool] = False
    TRAIN_SIZE: ClassVar[int] = 240

    def data_source(self) -> str:
        return "synthetic"

    def load(self, split: str, limit: int | None = None) -> list[dict]:
        rng = random.Random(split)
        out = []
        for i in range(self.TRAIN_SIZE if split == "train" else 80):
            label = i % 2
            words = rng.choices(WORDS, k=5) + (["good"] if label else [])
            rng.shuffle(words)
            if split == "dev" and self.POISON:
                label = 1 - label
            out.append({"id": i, "text_a": " ".join(words), "text_b": None, "label": label})
        return out[:limit] if limit else out


if "test-poisonable" not in TASKS:
    register_task("test-poisonable", kind="classification", summary=Poisonable.__doc__, source="tests")(Poisonable)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tuned_choice(store) -> dict[str, dict]:
    frame = suite.results.load(store)
    tuned = frame[frame["stage"] == "tuned"].drop_duplicates("cell_id")
    return {row.method: json.loads(row.tuned) for row in tuned.itertuples()}


def test_selection_never_reads_the_reported_split(tmp_path, monkeypatch):
    args = ["run", "--methods", "lora,bitfit,full", "--tasks", "test-poisonable", "--tune", "lr=1e-5,3e-3", *COMMON]
    assert main([*args, "--store", str(tmp_path / "clean")]) == 0
    clean = tuned_choice(tmp_path / "clean")
    frame = suite.results.load(tmp_path / "clean")
    trials = frame[frame["stage"] == "trial"]
    per_method = trials.groupby("method")["cell_id"].nunique()
    assert set(per_method) == {2} and set(per_method.index) == {"lora", "bitfit", "full"}  # an equal budget
    assert set(trials.loc[trials["is_primary"].astype(bool), "split"]) == {"val"}  # scored on held-out train
    assert all(choice == {"lr": "3e-3"} for choice in clean.values()), clean  # the step size that learns

    monkeypatch.setattr(Poisonable, "POISON", True)
    assert main([*args, "--store", str(tmp_path / "poisoned")]) == 0
    assert tuned_choice(tmp_path / "poisoned") == clean  # flipped reported labels change no selection
    poisoned = suite.results.load(tmp_path / "poisoned")
    final = poisoned[(poisoned["stage"] == "tuned") & poisoned["is_primary"].astype(bool)]
    # ... while the final cells do score the reported (poisoned) split: the learned rule now scores low.
    assert (final["value"] <= 0.5).all() and (final["value"] < 0.2).any()


def test_tuned_cells_run_the_selected_values_with_every_seed_and_resume(tmp_path, capsys):
    store = tmp_path / "s"
    args = ["run", "--methods", "lora", "--tasks", "test-poisonable", "--tune", "lr=1e-5,3e-3;r=2,8",
            "--seeds", "2", "--store", str(store), *COMMON]
    assert main(args) == 0
    frame = suite.results.load(store)
    tuned = frame[frame["stage"] == "tuned"].drop_duplicates("cell_id")
    assert len(tuned) == 2 and set(tuned["seed"]) == {0, 1}
    choice = json.loads(tuned["tuned"].iloc[0])
    for row in tuned.itertuples():
        assert json.loads(row.recipe)["lr"] == float(choice["lr"])
        assert json.loads(row.method_args)[0]["args"]["r"] == int(choice["r"])
        assert row.variant.endswith("(tuned)") and row.search_id
    assert frame[frame["stage"] == "trial"]["cell_id"].nunique() == 4
    capsys.readouterr()
    assert main(args) == 0  # everything resumes: no cell runs again
    err = capsys.readouterr().err
    assert "2 already done, 0 to run" in err and "[1/" not in err


@pytest.mark.parametrize("argv, message", [
    (["--methods", "full", "--tune", "r=4,8"], "method 'full' has no argument 'r'"),
    (["--methods", "lora", "--tune", "lr="], "names no values"),
    (["--methods", "lora", "--tune", "lr=1e-3", "--tune-trials", "2"], "exclude each other"),
    (["--methods", "lora", "--tune-trials", "0"], "at least 1"),
    (["--methods", "lora", "--tune-trials", "2", "--tune-sampler", "grid"], "not one of: random, tpe"),
])
def test_bad_searches_are_refused_up_front(tmp_path, capsys, argv, message):
    assert main(["run", *argv, "--tasks", "test-poisonable", "--store", str(tmp_path / "s"), *COMMON]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s" / "cells").exists() or not any((tmp_path / "s" / "cells").iterdir())


def test_too_little_training_data_to_hold_out_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Poisonable, "TRAIN_SIZE", 20)
    code = main(["run", "--methods", "lora", "--tasks", "test-poisonable", "--tune", "lr=1e-3,3e-3",
                 "--store", str(tmp_path / "s"), *COMMON])
    assert code == 2
    assert "too few to hold out" in capsys.readouterr().err
    assert not (tmp_path / "s" / "cells").exists()  # refused before the default cells ran too


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_declared_spaces_give_every_method_the_same_number_of_draws(tmp_path, sampler):
    if sampler == "tpe":
        pytest.importorskip("optuna", reason="Optuna is not installed")
    store = tmp_path / sampler
    assert main(["run", "--methods", "lora,vera", "--tasks", "test-poisonable", "--tune-trials", "3",
                 "--tune-sampler", sampler, "--store", str(store), *COMMON]) == 0
    frame = suite.results.load(store)
    trials = frame[frame["stage"] == "trial"].drop_duplicates("cell_id")
    assert trials.groupby("method")["cell_id"].count().to_dict() == {"lora": 3, "vera": 3}
    drawn = [json.loads(t) for t in trials["tuned"]]
    assert all(set(d) == {"lr", "r"} for d in drawn)  # the learning rate and each method's declared rank
    assert len({round(d["lr"], 12) for d in drawn}) > 1
