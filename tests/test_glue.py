"""GLUE: every task's original layout loads, scores with its official metrics, and fails clearly."""

from __future__ import annotations

import math

import pytest

from suite.errors import UserError
from suite.tasks.glue import LAYOUTS, GlueTask, read_glue_tsv
from suite.tasks.glue_metrics import accuracy, f1_binary, matthews_corrcoef, pearson, spearman
from tests.conftest import SHARED_GLUE


@pytest.mark.parametrize("subtask", sorted(LAYOUTS))
def test_every_task_loads_from_the_original_layout(glue_dir, subtask):
    task = GlueTask(subtask, str(glue_dir))
    task.check_data()
    train = task.load("train")
    assert len(train) == 40
    for split in task.eval_splits:
        dev = task.load(split)
        assert len(dev) == 40
        example = dev[0]
        assert example["text_a"]
        assert (example["text_b"] is None) == (subtask in ("cola", "sst2"))
        if subtask == "stsb":
            assert isinstance(example["label"], float) and 0 <= example["label"] <= 5
        else:
            assert example["label"] in range(LAYOUTS[subtask].num_labels)


def test_real_sst2_loads():
    if not (SHARED_GLUE / "SST-2" / "dev.tsv").exists():
        pytest.skip("real SST-2 not present in ../shared/data/glue")
    task = GlueTask("sst2", str(SHARED_GLUE))
    dev = task.load("dev")
    assert len(dev) == 872  # the official SST-2 dev set
    assert {e["label"] for e in dev} == {0, 1}


def test_broken_row_names_file_and_line(glue_dir):
    path = glue_dir / "RTE" / "dev.tsv"
    lines = path.read_text().splitlines()
    lines[5] = "17\tonly one sentence"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"dev\.tsv, line 6: broken row"):
        GlueTask("rte", str(glue_dir)).load("dev")


def test_bad_label_and_missing_files(glue_dir, tmp_path):
    path = glue_dir / "QNLI" / "train.tsv"
    lines = path.read_text().splitlines()
    lines[2] = "\t".join(lines[2].split("\t")[:3] + ["maybe"])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="label 'maybe' is not valid; expected entailment, not_entailment"):
        GlueTask("qnli", str(glue_dir)).load("train")
    with pytest.raises(UserError, match="missing train.tsv"):
        GlueTask("sst2", str(tmp_path)).check_data()


def test_parquet_layout_of_the_hub_dataset(tmp_path):
    import pandas as pd

    folder = tmp_path / "glue" / "rte"
    folder.mkdir(parents=True)
    frame = pd.DataFrame({"sentence1": ["a b", "c d"], "sentence2": ["e", "f"], "label": [0, 1],
                          "idx": [0, 1]})
    frame.to_parquet(folder / "train-00000-of-00001.parquet")
    frame.to_parquet(folder / "validation-00000-of-00001.parquet")
    task = GlueTask("rte", str(tmp_path / "glue"))
    task.check_data()
    assert [e["label"] for e in task.load("dev")] == [0, 1]
    assert task.load("train")[1]["text_b"] == "f"


def test_official_metrics_on_known_values():
    pred, gold = [1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1]
    assert accuracy(pred, gold) == pytest.approx(4 / 6)
    assert f1_binary(pred, gold) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # MCC = (tp*tn - fp*fn) / sqrt(...) with tp=2, tn=2, fp=1, fn=1
    assert matthews_corrcoef(pred, gold) == pytest.approx((4 - 1) / math.sqrt(3 * 3 * 3 * 3))
    assert matthews_corrcoef([1, 1, 1], [0, 1, 0]) == 0.0
    x, y = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 5.0]
    assert pearson(x, y) == pytest.approx(0.8315, abs=1e-4)
    assert spearman(x, y) == pytest.approx(0.8, abs=1e-9)


def test_primary_metrics_are_the_glue_task_scores():
    assert GlueTask("cola").primary_metric == "mcc"
    assert GlueTask("mrpc").primary_metric == "f1_accuracy_mean"
    assert GlueTask("stsb").primary_metric == "pearson_spearman_mean"
    assert GlueTask("mnli").primary_metric == "accuracy_m_mm_mean"
    assert GlueTask("mnli").eval_splits == ("dev_matched", "dev_mismatched")


def test_read_tsv_respects_limit(glue_dir):
    rows = read_glue_tsv(str(glue_dir / "SST-2" / "train.tsv"), LAYOUTS["sst2"], limit=7)
    assert len(rows) == 7
