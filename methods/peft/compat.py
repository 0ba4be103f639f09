"""Adapting the installed peft to the installed transformers, where one moved ahead of the other.

KV-cache prefix methods (prefix tuning, cartridges): peft passes its trainable key/value
prefix as ``past_key_values`` and, for heads it does not drive itself (sequence
classification), first checks that the backbone's ``forward`` signature lists
``past_key_values``. transformers 5.24 renamed that argument to ``cache`` (the old name
stays accepted, with a FutureWarning, until 5.40), so peft 0.21.2 refuses every model.
``accept_past_key_values`` gives peft the signature it checks for: a forward that takes
``past_key_values`` and hands it on as ``cache``. The prefix still reaches attention
through the same cache object (``tests/test_peft_zoo.py`` checks that it changes the
outputs and receives gradients).
"""

from __future__ import annotations

import inspect
from importlib import metadata
from typing import Any

KV_ARGUMENT = "past_key_values"
RENAMED_KV_ARGUMENT = "cache"


def _forward_parameters(forward: Any) -> set[str]:
    try:
        return set(inspect.signature(forward).parameters)
    except (TypeError, ValueError):
        return set()


def takes_kv_prefix(forward: Any) -> bool:
    """Whether a model's forward accepts a KV cache under either of transformers' names."""
    params = _forward_parameters(forward)
    return KV_ARGUMENT in params or RENAMED_KV_ARGUMENT in params


def _renaming_forward(original: Any) -> Any:
    def forward(*args: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        if past_key_values is not None:
            kwargs[RENAMED_KV_ARGUMENT] = past_key_values
        return original(*args, **kwargs)

    forward.__doc__ = original.__doc__
    forward.__wrapped_for_peft__ = True
    # Keep the original parameters visible (transformers' generate() validates its inputs
    # against forward's signature) and add the one peft looks for.
    signature = inspect.signature(original)
    params = list(signature.parameters.values())
    extra = inspect.Parameter(KV_ARGUMENT, inspect.Parameter.KEYWORD_ONLY, default=None)
    variadic = [i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD]
    params.insert(variadic[0] if variadic else len(params), extra)
    forward.__signature__ = signature.replace(parameters=params)
    return forward


def accept_past_key_values(model: Any) -> int:
    """Let peft pass ``past_key_values`` to every transformers model in ``model`` that calls it ``cache``.

    Patches the instances' ``forward`` (never the classes), the top model and its
    backbone alike, so peft's signature check passes and no deprecation warning is
    raised per step. Returns how many modules were patched (0 on transformers < 5.24).
    """
    from transformers import PreTrainedModel

    patched = 0
    for module in model.modules():
        if not isinstance(module, PreTrainedModel):
            continue
        params = _forward_parameters(module.forward)
        if KV_ARGUMENT in params or RENAMED_KV_ARGUMENT not in params:
            continue
        module.forward = _renaming_forward(module.forward)
        patched += 1
    return patched


def backbone_class(model_type: str) -> type | None:
    """The transformers base-model class of a ``model_type`` (``bert`` -> BertModel), if known."""
    try:
        import transformers
        from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES
    except ImportError:  # pragma: no cover - transformers is a dependency
        return None
    name = MODEL_MAPPING_NAMES.get(model_type)
    if isinstance(name, (tuple, list)):
        name = name[0]
    return getattr(transformers, name, None) if name else None


def library_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
