"""Silence library log lines that say nothing to the person running a sweep.

peft imports torchao when it is installed. On a host without CUDA, torchao logs one
"Failed to load ..._C_*.so" warning per CUDA extension, and torch logs a pytree
deprecation about torchao's enums: a dozen lines of stderr per run that concern neither
the run nor the user. On a CUDA host torchao's warnings stay, since a failed extension
load matters there.

peft 0.21 reads ``model.is_gradient_checkpointing``, which transformers 5.24 deprecated in
favour of ``is_activation_checkpointing``: a FutureWarning per adapted model that the user
can do nothing about. Only that message is filtered; any other deprecation still shows.
"""

from __future__ import annotations

import logging
import warnings


def quiet_library_noise(device: str) -> None:
    """Call before the first peft import, with the device the run will use."""
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                            category=FutureWarning)
    if not device.startswith("cuda"):
        logging.getLogger("torchao").setLevel(logging.ERROR)
