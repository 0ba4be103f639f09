"""Guards before the work, through the real ``suite`` command: a sweep too large once its search is
counted, a mistyped seed count, a tuned value the method or the recipe refuses and a sweep file
that is no file are refused before any cell runs (exit 2, one message); a blow-up in one or two
steps is a failed cell with its reason (exit 1), not an ok cell at the majority-class rate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from suite.app.cli import main
from suite.results.store import ResultStore
from tests.test_faults import COUNTS

FAST = ["--tasks", "smoke", "--models", "tiny-bert", "--max-steps", "2", "--limit", "32", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def refused(capsys, store: Path, *argv: str) -> str:
    """Run ``suite run`` expecting a refusal before any cell: exit 2, no traceback, no store written."""
    capsys.readouterr()
    code = main(["run", *argv, "--store", str(store)])
    err = capsys.readouterr().err
    COUNTS["faults injected"] += 1
    assert code == 2, err[-1500:]
    assert "Traceback" not in err
    assert not store.exists() or not any(store.iterdir()), sorted(store.rglob("*"))  # no cell ran
    return err


# -- the cell-count guard counts a search's trials and tuned cells, before anything is built ---------------
def test_trials_count_towards_the_yes_guard(tmp_path, capsys):
    err = refused(capsys, tmp_path / "s", "--methods", "lora", *FAST, "--tune-trials", "1500")
    assert "1,502 cells (1 default, 1,500 trials, 1 tuned)" in err and "--yes" in err


def test_a_large_tune_grid_counts_towards_the_yes_guard(tmp_path, capsys):
    grid = "lr=" + ",".join(f"{i}e-4" for i in range(1, 41)) + ";r=" + ",".join(str(r) for r in range(1, 31))
    err = refused(capsys, tmp_path / "s", "--methods", "lora", *FAST, "--tune", grid)
    assert "1,202 cells" in err and "1,200 trials" in err and "--yes" in err


@pytest.mark.parametrize("yes", [[], ["--yes"]])
def test_an_absurd_seed_count_is_refused_by_count_without_building_it(tmp_path, capsys, yes):
    err = refused(capsys, tmp_path / "s", "--methods", "lora", *FAST, "--seeds", "99999999999", *yes)
    assert "99,999,999,999 cells" in err and "--seeds" in err and "MemoryError" not in err


def test_a_seed_numpy_cannot_take_is_refused_before_the_other_seeds_train(tmp_path, capsys):
    err = refused(capsys, tmp_path / "s", "--methods", "lora", *FAST, "--seeds", "1,4294967296")
    assert "below 2**32" in err and "4294967296" in err


# -- tuned values are resolved with the default sweep, before any default cell trains ------------------------
@pytest.mark.parametrize("grid, message", [
    ("lr=abc", "expected a number, got 'abc'"),
    ("lr=-1", "lr must be positive"),
    ("lr=nan", "expected a finite number"),
    ("r=0", "r must be a positive integer"),
    ("lr=1e-3;r=4,2.5", "expected an integer, got '2.5'"),
    ("optimizer=adamw,nosuch", "unknown optimizer 'nosuch'"),
])
def test_a_refused_tune_value_stops_the_sweep_before_any_cell(tmp_path, capsys, grid, message):
    err = refused(capsys, tmp_path / "s", "--methods", "lora", *FAST, "--tune", grid)
    assert message in err
    if not grid.startswith("optimizer"):
        assert "--tune sets" in err and "correct or drop that value" in err


def test_a_tune_value_the_model_cannot_take_stops_the_sweep_before_any_cell(tmp_path, capsys):
    err = refused(capsys, tmp_path / "s", "--methods", "pissa", *FAST, "--tune", "r=8,1000")
    assert "pissa:r=1000" in err and "exceeds the rank" in err and "Drop those values from --tune" in err


# -- a sweep file that is no file says what it is -------------------------------------------------------------
def test_a_device_a_folder_and_an_empty_file_are_named_as_such(tmp_path, capsys):
    store = tmp_path / "s"
    err = refused(capsys, store, "-c", "/dev/null")
    assert "not a regular file (a device)" in err and "does not exist" not in err
    err = refused(capsys, store, "-c", str(tmp_path))
    assert "is a folder" in err and "does not exist" not in err
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here yet\n")
    err = refused(capsys, store, "-c", str(empty))
    assert "is empty, so it names nothing to run" in err
    assert "does not exist" in refused(capsys, store, "-c", str(tmp_path / "missing.yaml"))


# -- a blow-up in one or two steps is a failed cell with its reason ---------------------------------------------
@pytest.mark.parametrize("steps, lr", [("1", "1e6"), ("2", "1e3")])
def test_a_blow_up_in_one_or_two_steps_is_a_failed_cell(tmp_path, capsys, steps, lr):
    store = tmp_path / "s"
    argv = ["run", "--methods", "full", *FAST, "--lr", lr, "--max-steps", steps, "--store", str(store)]
    code = main(argv)
    COUNTS["faults injected"] += 1
    assert code == 1, capsys.readouterr().err[-1500:]
    frame = ResultStore(store).load(warn=False)
    assert set(frame["status"]) == {"failed"}
    assert frame["error"].str.contains(f"training diverged: the loss after the last step ({steps})", regex=False).all()
    assert "training diverged" in capsys.readouterr().err


class _Dropout(torch.nn.Module):
    """A model with dropout whose forward returns a loss, as a task's model does."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x: torch.Tensor):
        return type("Out", (), {"loss": self.drop(self.linear(x)).pow(2).mean()})()


def test_the_check_after_the_last_step_draws_nothing_and_leaves_the_mode():
    from suite.recipe import Recipe
    from suite.train import Trainer

    model = _Dropout()
    data = [{"x": torch.randn(4)} for _ in range(8)]
    trainer = Trainer(model, data, lambda items: {"x": torch.stack([i["x"] for i in items])},
                      Recipe(max_steps=1, batch_size=4), [], "cpu", 0, progress=False)
    model.train()
    before = torch.random.get_rng_state()
    loss = trainer.final_loss({"x": torch.ones(2, 4)})
    assert torch.equal(before, torch.random.get_rng_state())  # dropout's generator untouched
    assert model.training and model.drop.training
    model.eval()
    assert loss == model(torch.ones(2, 4)).loss.item()  # dropout off: the model as evaluated
