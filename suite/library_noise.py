"""Silence library log lines that say nothing to the person running a sweep.

peft imports torchao when it is installed. On a host without CUDA, torchao logs one
"Failed to load ..._C_*.so" warning per CUDA extension, and torch logs a pytree
deprecation about torchao's enums: a dozen lines of stderr per run that concern neither
the run nor the user. On a CUDA host torchao's warnings stay, since a failed extension
load matters there.
"""

from __future__ import annotations

import logging


def quiet_library_noise(device: str) -> None:
    """Call before the first peft import, with the device the run will use."""
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    if not device.startswith("cuda"):
        logging.getLogger("torchao").setLevel(logging.ERROR)
