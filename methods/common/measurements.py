"""Measurements several method families produce, declared once (``suite.metrics``) so they agree.

A method lists the specs of what its ``measurements`` returns in its ``metrics``; a per-part
measurement (``quant_rel_error/<layer>``) inherits from its base. Undeclared measurements are
stored as higher-is-better and shown as plain numbers.
"""

from __future__ import annotations

from suite.metrics import cost

CALIBRATION_TIME = cost("calibration_time_s", "calibration time", "s", fmt="duration_s", timing=True)
MODEL_SIZE = cost("model_size_bytes", "model size", "B", fmt="bytes", column=True, axis=True, log_axis=True,
                  across_tasks="max", summary="every parameter and buffer as stored, quantised or sparse")
OPTIMIZER_STATE = cost("optimizer_state_bytes", "optimizer state", "B", fmt="bytes",
                       summary="the optimizer's state at its peak")

QUANT = (
    cost("bits_per_weight", "bits/weight", "", column=True, axis=True, across_tasks="median",
         summary="stored bits per quantised weight, scales included"),
    cost("stored_bits_per_weight", "stored bits/weight"),
    MODEL_SIZE,
    CALIBRATION_TIME,
    cost("quant_rel_error", "relative weight error", summary="||W - q(W)|| / ||W|| of a layer"),
    cost("quant_rel_error_mean", "mean relative weight error"),
    cost("quant_rel_error_max", "largest relative weight error"),
)

PRUNE = (
    cost("sparse_size_bytes", "sparse weights", "B", fmt="bytes"),
    MODEL_SIZE,
    CALIBRATION_TIME,
    cost("prune_rel_error", "relative weight error", summary="||W - pruned W|| / ||W|| of a layer"),
    cost("prune_rel_error_mean", "mean relative weight error"),
    cost("prune_rel_error_max", "largest relative weight error"),
)

# Whether a training recipe's GEMMs ran on low-precision hardware or were emulated: where they were
# emulated, times and throughputs measure the emulation, not the recipe.
GEMM_EMULATED = cost("train_gemm_emulated", "emulated GEMMs", higher_is_better=True, fmt="number",  # a flag, not ranked
                     summary="1 where the low-precision GEMMs were emulated (quantise-dequantise) rather than run")
GEMM_REAL_FRACTION = cost("train_gemm_real_fraction", "real GEMM fraction", higher_is_better=True, fmt="number")
