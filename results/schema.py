"""The result schema: one row per cell per metric (long form), plus identity and provenance.

A failed cell is one row with ``status == "failed"``, its ``error`` and no metric. The
schema version travels in every row, so a reader can adapt to old stores.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

# Columns that identify a cell and say how it ended.
CELL_COLUMNS = [
    "schema_version",
    "cell_id",
    "attempt_id",  # unique per attempt: a record's identity is (cell_id, attempt_id)
    "run_id",
    "method",  # the composition as written, e.g. "nf4+lora"
    "variant",  # the composition with the arguments the user set, e.g. "lora:r=16"
    "method_args",  # JSON: list of {"name":..., "args": {...}} with defaults resolved
    "method_kind",  # kind of the last method: peft | quant | prune | train
    "task",  # task family, e.g. "glue"
    "subtask",  # e.g. "sst2"; "" for tasks without subtasks
    "model",
    "seed",
    "recipe",  # JSON of the resolved recipe
    "config",  # JSON of the fully resolved cell configuration (what the id hashes)
    "data_source",  # "hub:nyu-mll/glue", "dir:/data/glue", "synthetic"
    "synthetic_data",  # True when the data was generated, never real
    "stage",  # "" (a plain cell), "trial" (a search trial, scored on held-out training data) or "tuned"
    "search_id",  # the hyperparameter search a trial or tuned cell belongs to ("" otherwise)
    "trial",  # the trial's index within its search (-1 otherwise)
    "tuned",  # JSON of the hyperparameters the search selected, on tuned cells
    "targets",  # the module keys the methods placed themselves on, ';'-joined, as resolved on the model ("" if none)
    "status",  # "ok" | "failed"
    "error",
    "started_at",
    "finished_at",
]

# One metric per row.
METRIC_COLUMNS = [
    "metric",
    "value",
    "split",  # "dev", "dev_mismatched", "test", "train" or "cost" (time, memory, params)
    "is_primary",
    "higher_is_better",
]

# Where and with what the cell ran.
PROVENANCE_COLUMNS = [
    "suite_version",
    "git_commit",
    "python",
    "torch",
    "transformers",
    "peft",
    "datasets",
    "torchao",
    "triton",
    "lm_eval",
    "device",
    "cuda",
    "host",
]

COLUMNS = CELL_COLUMNS + METRIC_COLUMNS + PROVENANCE_COLUMNS

# Per-example predictions, stored beside the metrics for paired significance tests.
PREDICTION_COLUMNS = ["cell_id", "split", "example_id", "prediction", "label", "correct"]

STATUS_OK = "ok"
STATUS_FAILED = "failed"

# Kernel microbenchmark rows (table "kernels"): one row per kernel x shape x impl x run.
KERNEL_COLUMNS = [
    "schema_version",
    "run_id",
    "timestamp",  # when the run started (UTC, ISO 8601); every row of a run shares it and the run id
    "kernel",  # registered kernel name, e.g. "quantize_mxfp4"
    "impl",  # "reference", "triton", "torch_compile", "torchao", "torch_mm", ...
    "shape",  # e.g. "8192x8192"
    "dtype",
    "status",  # "ok", or "failed" when the case could not be measured (bad shape, an impl raised)
    "error",  # why a failed case failed ("" when ok)
    "time_ms",  # median over samples
    "time_ms_p10",
    "time_ms_p90",
    "n_samples",
    "bytes_moved",
    "flops",
    "gbps",
    "tflops",
    "roofline_fraction",  # of the roof named in "roof", measured in the same run
    "roof",  # which roof the fraction is of: "memory" (peak_gbps) or "compute" (peak_tflops)
    "peak_gbps",  # measured in this run (large device-to-device copy)
    "peak_tflops",  # measured in this run (large matmul in peak_tflops_dtype)
    "peak_tflops_dtype",  # the dtype of that matmul (bf16 on a GPU; the faster of fp32/bf16 on a CPU)
    "normalized_time",  # time / in-run calibration op time (for cross-machine gates)
    "samples_ms",  # every timed sample (list): the gate's statistic needs them, not just quantiles
    "normalized_samples",  # every sample divided by the in-run calibration op (list)
    "correct",  # the impl matched the reference on this run's inputs
    "device",
    "git_commit",  # the suite's own checkout (not the current directory's), else "v<version>"
    "suite_version",
]
