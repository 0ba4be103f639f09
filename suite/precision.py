"""Precision policies: the dtype parameters live in and the autocast dtype of the forward pass.

The loop and the evaluation run under one policy, chosen by the recipe's ``precision``
(``auto``: bf16 autocast on a GPU, fp32 elsewhere) and then handed to each method's
``precision_policy`` hook, so a training recipe can set its own (master weights in fp32
with a low-precision compute dtype, or pure bf16) without reaching into the loop.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class PrecisionPolicy:
    name: str  # what the results say: "fp32", "bf16-autocast", ...
    param_dtype: torch.dtype = torch.float32  # master weights: what the optimizer updates
    autocast_dtype: torch.dtype | None = None  # None: run the forward pass in param_dtype

    def autocast(self, device: str) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.split(":")[0], dtype=self.autocast_dtype)


FP32 = PrecisionPolicy("fp32")
BF16_AUTOCAST = PrecisionPolicy("bf16-autocast", autocast_dtype=torch.bfloat16)


def policy_for(precision: str, device: str) -> PrecisionPolicy:
    """The recipe's ``precision`` on this device: auto is bf16 autocast on a GPU, fp32 elsewhere."""
    if precision == "bf16" or (precision == "auto" and device.startswith("cuda")):
        return BF16_AUTOCAST
    return FP32


def resolve_policy(precision: str, device: str, methods: list[Any]) -> PrecisionPolicy:
    """The recipe's policy, then each method's ``precision_policy`` hook in order (last wins)."""
    policy = policy_for(precision, device)
    for method in methods:
        policy = method.precision_policy(policy)
    return policy
