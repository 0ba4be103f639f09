"""Bad input ends in one clear message, exit code 2, and no traceback."""

from __future__ import annotations

import pytest

from tests.conftest import run_suite


def assert_clean_error(result, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.mark.parametrize("args, needles", [
    (["--methods", "lorra", "--tasks", "smoke"], ["unknown method 'lorra'", "Did you mean: lora"]),
    (["--methods", "lora", "--tasks", "glu"], ["unknown task 'glu'", "glue"]),
    (["--methods", "lora", "--tasks", "glue:sst3"], ["unknown glue subtask 'sst3'", "sst2"]),
    (["--methods", "lora:rank=4", "--tasks", "smoke"], ["method 'lora' has no argument 'rank'", "Valid arguments"]),
    (["--methods", "lora:r", "--tasks", "smoke"], ["malformed argument 'r'"]),
    (["--methods", "lora:r=x", "--tasks", "smoke"], ["expected an integer"]),
    (["--methods", "lora", "--tasks", "glue:sst2", "--data-dir", "/no/such/dir"], ["/no/such/dir", "does not exist"]),
    (["--methods", "lora", "--tasks", "smoke", "--seeds", "many"], ["--seeds"]),
    (["--methods", "lora", "--tasks", "smoke", "--models", "./no-such-model"], ["no-such-model", "does not exist"]),
    ([], ["nothing to run"]),
])
def test_bad_input_is_one_clear_message(args, needles, tmp_path):
    assert_clean_error(run_suite("run", *args, "--store", str(tmp_path / "s")), *needles)


def test_broken_tsv_row_stops_with_file_and_line(glue_dir, tmp_path):
    path = glue_dir / "SST-2" / "train.tsv"
    path.write_text(path.read_text() + "a sentence without a label\n")
    result = run_suite("run", "--methods", "lora", "--tasks", "glue:sst2", "--models", "tiny-bert",
                       "--data-dir", str(glue_dir), "--max-steps", "2", "--store", str(tmp_path / "s"))
    assert_clean_error(result, "train.tsv, line 42: broken row")


def test_missing_task_folder_in_data_dir(tmp_path):
    (tmp_path / "glue").mkdir()
    result = run_suite("run", "--methods", "lora", "--tasks", "glue:rte", "--data-dir", str(tmp_path / "glue"),
                       "--store", str(tmp_path / "s"))
    assert_clean_error(result, "missing train.tsv, dev.tsv", "RTE")


def test_unknown_recipe_key_in_sweep_file(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("methods: [lora]\ntasks: [smoke]\nrecipe: {max_step: 10}\n")
    assert_clean_error(run_suite("run", "-c", str(sweep)), "unknown recipe key", "'max_step'", "max_steps")
    sweep.write_text("methods: [lora]\ntasks: [smoke]\nepochz: 3\n")
    assert_clean_error(run_suite("run", "-c", str(sweep)), "unknown key in sweep file", "epochz")
    sweep.write_text("methods: [lora\n")
    assert_clean_error(run_suite("run", "-c", str(sweep)), "not valid YAML")
