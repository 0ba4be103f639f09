"""`suite run` end to end on the smoke task: records, resume, --force, failures, kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

import suite.results
from suite.results.schema import COLUMNS, PROVENANCE_COLUMNS, SCHEMA_VERSION
from suite.results.store import ResultStore
from tests.conftest import run_suite

FAST = ["--max-steps", "4", "--no-progress"]


def test_smoke_run_stores_long_form_records_with_provenance(store_dir):
    result = run_suite("run", "--methods", "lora,full", "--tasks", "smoke", "--store", str(store_dir), *FAST)
    assert result.returncode == 0, result.stderr
    assert "primary (mean)" in result.stdout  # the summary table
    import torch

    if not torch.cuda.is_available():  # torchao's CUDA-extension warnings are noise on a CPU host
        assert "Failed to load" not in result.stderr and "_pytree" not in result.stderr
    frame = suite.results.load(store_dir)
    assert set(COLUMNS) <= set(frame.columns)
    assert (frame["schema_version"] == SCHEMA_VERSION).all()
    assert frame["cell_id"].nunique() == 2
    assert (frame["status"] == "ok").all()
    assert frame["synthetic_data"].astype(bool).all() and (frame["data_source"] == "synthetic").all()
    from suite.app.provenance import library_versions, package_column

    optional = {package_column(name) for name, version in library_versions().items() if not version}
    for column in PROVENANCE_COLUMNS:
        if column not in {"cuda", "git_commit"} | optional:
            assert frame[column].astype(str).str.len().gt(0).all(), column
    assert frame["transformers"].eq(library_versions()["transformers"]).all()
    metrics = set(frame["metric"])
    assert {"accuracy", "train_time_s", "train_samples_per_s", "train_tokens_per_s", "peak_memory_mb",
            "trainable_params", "total_params", "adapter_bytes", "train_loss"} <= metrics
    primary = frame[frame["is_primary"].astype(bool)]
    assert len(primary) == 2 and set(primary["metric"]) == {"accuracy"}
    cost = frame[frame["split"] == "cost"].pivot_table(index="method", columns="metric", values="value")
    assert cost.loc["lora", "trainable_params"] < cost.loc["full", "trainable_params"]
    assert cost.loc["full", "trainable_params"] == cost.loc["full", "total_params"]
    assert cost.loc["lora", "adapter_bytes"] < cost.loc["full", "adapter_bytes"]
    config = json.loads(frame["config"].iloc[0])
    assert config["recipe"]["max_steps"] == 4
    predictions = ResultStore(store_dir).load_predictions()
    assert set(predictions["cell_id"]) == set(frame["cell_id"])
    assert len(predictions) == 2 * 400  # every dev example of both cells


def test_rerun_skips_done_cells_and_force_reruns(store_dir):
    args = ["run", "--methods", "lora", "--tasks", "smoke", "--store", str(store_dir), *FAST]
    assert run_suite(*args).returncode == 0
    first = suite.results.load(store_dir)
    again = run_suite(*args)
    assert again.returncode == 0
    assert "1 already done, 0 to run" in again.stderr
    pd.testing.assert_frame_equal(first, suite.results.load(store_dir))
    forced = run_suite(*args, "--force")
    assert "0 already done, 1 to run" in forced.stderr
    after = suite.results.load(store_dir)
    assert after["cell_id"].nunique() == 1
    assert after["finished_at"].iloc[0] > first["finished_at"].iloc[0]


def test_same_cell_is_deterministic(store_dir, tmp_path):
    args = ["run", "--methods", "lora", "--tasks", "smoke", *FAST]
    run_suite(*args, "--store", str(store_dir))
    run_suite(*args, "--store", str(tmp_path / "other"))
    a, b = suite.results.load(store_dir), suite.results.load(tmp_path / "other")
    pick = lambda f: f[f["split"] != "cost"].set_index("metric")["value"]  # noqa: E731
    pd.testing.assert_series_equal(pick(a), pick(b))


def test_failing_cell_is_stored_and_the_sweep_goes_on(store_dir):
    # lr=1e30 makes the loss non-finite: the cell fails, the next cell still runs.
    result = run_suite("run", "--methods", "full", "--tasks", "smoke", "--store", str(store_dir),
                       "--lr", "1e30", "--max-steps", "20", "--no-progress")
    assert result.returncode == 1, result.stderr
    assert "1 cell(s) failed" in result.stderr and "Traceback" not in result.stderr
    ok = run_suite("run", "--methods", "lora", "--tasks", "smoke", "--store", str(store_dir), *FAST)
    assert ok.returncode == 0
    frame = suite.results.load(store_dir)
    failed = frame[frame["status"] == "failed"]
    assert len(failed) == 1 and "diverged" in failed["error"].iloc[0]
    assert (frame[frame["method"] == "lora"]["status"] == "ok").all()


def test_sigkill_mid_sweep_then_resume_loses_nothing(store_dir):
    args = [sys.executable, "-m", "suite.app.cli", "run", "--methods", "lora,pissa,full,linear-probe",
            "--tasks", "smoke", "--seeds", "2", "--store", str(store_dir), "--max-steps", "15", "--no-progress"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    cells = store_dir / "cells"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(cells.glob("*.parquet")) if cells.exists() else []) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = ResultStore(store_dir).ok_cell_ids()
    assert 2 <= len(done_before) < 8, "the kill should land mid-sweep"
    finished_at = suite.results.load(store_dir).groupby("cell_id")["finished_at"].first()
    resumed = subprocess.run(args, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(done_before)} already done, {8 - len(done_before)} to run" in resumed.stderr
    frame = suite.results.load(store_dir)
    assert frame["cell_id"].nunique() == 8 and (frame["status"] == "ok").all()
    after = frame.groupby("cell_id")["finished_at"].first()
    for cell_id in done_before:  # finished cells were not re-run
        assert after[cell_id] == finished_at[cell_id]


def test_sweep_file_runs_the_same_as_flags(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        "methods: [{name: lora, args: {r: 4}}, linear-probe]\n"
        "tasks: [smoke]\nmodels: [tiny-bert]\nseeds: [3]\n"
        f"store: {tmp_path / 'store'}\nrecipe: {{max_steps: 3, batch_size: 16}}\n")
    result = run_suite("run", "-c", str(sweep), "--no-progress")
    assert result.returncode == 0, result.stderr
    frame = suite.results.load(tmp_path / "store")
    assert set(frame["variant"]) == {"lora:r=4", "linear-probe"}
    assert set(frame["seed"]) == {3}
    assert json.loads(frame["recipe"].iloc[0])["batch_size"] == 16


def test_max_steps_zero_evaluates_only_and_method_metrics_keep_their_direction(store_dir):
    result = run_suite("run", "--methods", "rtn", "--tasks", "smoke", "--max-steps", "0",
                       "--store", str(store_dir), "--no-progress")
    assert result.returncode == 0, result.stderr
    frame = suite.results.load(store_dir)
    cost = frame[frame["split"] == "cost"].set_index("metric")
    assert cost.loc["train_steps", "value"] == 0
    assert not cost.loc["bits_per_weight", "higher_is_better"]  # declared by the quantizer
    per_layer = cost[cost.index.str.startswith("quant_rel_error/")]
    assert len(per_layer) and not per_layer["higher_is_better"].astype(bool).any()
    assert frame[frame["is_primary"].astype(bool)]["value"].notna().all()


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # building the CUDA autocast on a CPU
def test_bf16_autocast_is_chosen_on_a_gpu_and_runs_end_to_end_on_the_cpu(store_dir):
    """auto -> bf16 on CUDA devices, fp32 elsewhere; --precision bf16 trains under autocast."""
    import contextlib

    import torch

    from suite.precision import policy_for

    assert isinstance(policy_for("auto", "cpu").autocast("cpu"), contextlib.nullcontext)
    assert isinstance(policy_for("fp32", "cuda:0").autocast("cuda:0"), contextlib.nullcontext)
    gpu = policy_for("auto", "cuda:0").autocast("cuda:0")
    assert isinstance(gpu, torch.autocast) and gpu.device == "cuda" and gpu.fast_dtype == torch.bfloat16
    with policy_for("bf16", "cpu").autocast("cpu"):
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16
    result = run_suite("run", "--methods", "lora", "--tasks", "smoke", "--precision", "bf16",
                       "--store", str(store_dir), *FAST)
    assert result.returncode == 0, result.stderr
    frame = suite.results.load(store_dir)
    cost = frame[frame["split"] == "cost"].set_index("metric")["value"]
    assert frame["status"].eq("ok").all() and 0 < cost["train_loss"] < 10


def test_each_cell_stores_its_training_curve(store_dir):
    result = run_suite("run", "--methods", "lora", "--tasks", "smoke", "--eval-every", "2", "--store", str(store_dir),
                       *FAST)
    assert result.returncode == 0, result.stderr
    store = ResultStore(store_dir)
    (cell_id,) = store.ok_cell_ids()
    curve = store.load_curves([cell_id])
    train = curve[curve["metric"] == "train_loss"]
    assert list(train["step"]) == [1, 2, 3, 4] and train["value"].notna().all()
    assert set(curve.loc[curve["split"] == "dev", "step"]) == {2}  # evaluated every 2 steps, not at the end
    cost = suite.results.load(store_dir).set_index("metric")["value"]
    assert train["value"].iloc[-1] == pytest.approx(cost["train_loss"])  # the final loss is the curve's tail
