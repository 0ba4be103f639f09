"""Model surgery and bookkeeping shared by the quantizer methods.

Finds the linear layers to quantise (every ``nn.Linear`` except the task head and names the
user skips), swaps them for ``QuantLinear``, and keeps one record per layer (storage bytes,
relative error) from which ``measurements`` reports effective bits per weight, model size
and the per-layer quantisation error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from suite.errors import CellFailure, UserError
from suite.methods.common.new_modules import inside
from suite.methods.quant.algorithms import relative_error
from suite.methods.quant.layers import PackedWeight, QuantLinear, fake_quantize
from suite.numerics import formats as F


@dataclass
class LayerRecord:
    name: str
    numel: int
    storage_bytes: int
    rel_error: float
    bits: float


def target_linears(model: nn.Module, keep: tuple[str, ...], skip: tuple[str, ...] = ()) -> dict[str, nn.Linear]:
    """Linear layers to quantise: all but those inside ``keep`` (``heads.unquantised_names``),
    peft's adapters and ``skip`` names."""
    out: dict[str, nn.Linear] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or isinstance(module, QuantLinear):
            continue
        parts = name.split(".")
        if inside(name, keep) or any(p.startswith("lora_") for p in parts):
            continue
        if any(s and s in name for s in skip):
            continue
        out[name] = module
    if not out:
        raise CellFailure("the model has no linear layers left to quantise")
    return out


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def fit_group(group: int, k: int, what: str = "group") -> int:
    """A group of 0 or at least the row length is one scale per row (returns 0); otherwise
    the group must divide the row, else a UserError names both numbers."""
    if group <= 0 or group >= k:
        return 0
    if k % group:
        raise UserError(
            f"{what} size {group} does not divide the input dimension {k} of a layer; "
            f"choose a {what} size that divides every layer's input dimension (e.g. 32 or 64)"
        )
    return group


def int_weight_opts(bits: int, group: int, k: int, symmetric: bool = True) -> dict:
    g = fit_group(group, k)
    opts = {"symmetric": symmetric, "granularity": "group" if g else "channel"}
    if g:
        opts["group_size"] = g
    return opts


def weight_format_options(fmt: str, group: int, k: int, symmetric: bool = True) -> tuple[str, dict]:
    """(format name, options) of a weight with ``k`` inputs in ``fmt``: integers with a scale
    per ``group`` inputs (or per channel), any minifloat likewise (a float32 scale per block
    or per row), every other format with its own scaling (MX, NVFP4, NF4, FP8 per tensor)."""
    spec = F.resolve_format(fmt)
    if spec.family == "int":
        return spec.name, int_weight_opts(spec.bits, group, k, symmetric)
    if spec.family == "float":
        g = fit_group(group, k)
        return spec.name, ({"granularity": "block", "block_size": g} if g else {"granularity": "row"})
    return spec.name, {}


def activation_options(fmt: str) -> dict:
    """Dynamic activation quantisation: per token for INT/FP8/minifloats, per block for MX/NVFP4."""
    if fmt.startswith("int"):
        return {"granularity": "token"}
    if fmt.startswith("fp8"):
        return {"granularity": "row"}
    if fmt.startswith("fp") and F.resolve_format(fmt).family == "float":  # "fp4" alone is NVFP4
        return {"granularity": "row"}
    return {}


def quantize_weight(w: torch.Tensor, fmt: str, opts: dict) -> tuple[torch.Tensor, int]:
    """(dequantised weight, storage bytes with ideal bit packing, scales included:
    ``formats.effective_bits``; equal to ``QTensor.nbytes`` except int2/3/5/6/7, which
    this implementation stores in nibbles / bytes). The values are ``formats.fake_quantize``'s,
    through ``layers.fake_quantize``: a registered kernel serves the options it takes."""
    wf = w.detach().float()
    deq = fake_quantize(wf, fmt, opts)
    nbytes = int(round(F.effective_bits(fmt, tuple(w.shape), **opts) * w.numel() / 8))
    return deq.to(w.dtype), nbytes


def pack_weight(w: torch.Tensor, fmt: str, opts: dict, *, col_divisor: torch.Tensor | None = None,
                dtype: torch.dtype | None = None) -> PackedWeight | None:
    """The packed path: ``formats.quantize`` of the float32 weight, kept as real storage.
    It must dequantise to what ``quantize_weight`` (the fake-quantised path) installs.
    None where the layout cannot pack this shape (e.g. 4-bit codes need an even row
    length): the layer still runs on its dequantised weight, as before packing existed."""
    try:
        qt = F.quantize(w.detach().float(), fmt, **opts)
    except UserError:
        return None
    return PackedWeight(qt, dtype or w.dtype, col_divisor=col_divisor)


def pack_gptq(codes, bits: int, group: int, symmetric: bool, dtype: torch.dtype) -> PackedWeight | None:
    """GPTQ's own codes and scales (``algorithms.GptqCodes``), packed as chosen, in the
    column order GPTQ visited (with that order kept for act_order)."""
    rows, cols = codes.codes.shape
    opts = {"symmetric": symmetric, "granularity": "group" if group else "channel"}
    if group:
        opts["group_size"] = group
    try:
        qt = F.int_qtensor(codes.codes, codes.scales, codes.zeros, f"int{bits}", torch.float32, **opts)
    except UserError:  # a shape the nibble layout cannot pack (odd row length)
        return None
    return PackedWeight(qt, dtype, perm=codes.perm)


def install(model: nn.Module, name: str, linear: nn.Linear, weight_q: torch.Tensor,
            storage_bytes: int, records: list[LayerRecord], *, reference: torch.Tensor | None = None,
            packed: PackedWeight | None = None, **kwargs) -> QuantLinear:
    """Swap ``linear`` for a QuantLinear and record its error against ``reference`` (the
    original weight in the same basis as ``weight_q``; default the layer's weight).
    ``packed``: the weight's real low-bit storage (``pack_weight``), kept on the layer."""
    ref = linear.weight if reference is None else reference
    layer = QuantLinear.from_linear(linear, weight_q, storage_bytes=storage_bytes, **kwargs)
    layer.packed = packed
    set_module(model, name, layer)
    numel = linear.weight.numel()
    records.append(LayerRecord(name, numel, storage_bytes, relative_error(ref, weight_q),
                               8.0 * storage_bytes / numel))
    return layer


def model_bytes(model: nn.Module, stored_weights: dict[int, int] | None = None, buffers: bool = True) -> int:
    """Bytes of the model as stored: quantised layers at their packed size, the rest dense.

    ``stored_weights`` gives the stored size of other layers' weights by ``id(module)`` (QAT's
    converted layers); ``buffers=False`` leaves buffers out.
    """
    stored_weights = stored_weights or {}
    total = 0
    seen: set[int] = set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if pname == "weight" and isinstance(module, QuantLinear):
                total += module.storage_bytes
            elif pname == "weight" and id(module) in stored_weights:
                total += stored_weights[id(module)]
            else:
                total += p.numel() * p.element_size()
        if not buffers:
            continue
        for b in module.buffers(recurse=False):
            if b is not None and id(b) not in seen:
                seen.add(id(b))
                total += b.numel() * b.element_size()
    return total


def measurements(records: list[LayerRecord], model: nn.Module, calibration_s: float,
                 real_matmul: bool, per_layer: bool = True) -> dict[str, float]:
    numel = sum(r.numel for r in records)
    errors = [r.rel_error for r in records]
    out = {
        "bits_per_weight": 8.0 * sum(r.storage_bytes for r in records) / max(numel, 1),
        "quantized_params": float(numel),
        "quantized_layers": float(len(records)),
        "model_size_bytes": float(model_bytes(model)),
        "calibration_time_s": calibration_s,
        "quant_rel_error_mean": sum(errors) / max(len(errors), 1),
        "quant_rel_error_max": max(errors) if errors else float("nan"),
        "quant_real_matmul": 1.0 if real_matmul else 0.0,
    }
    if per_layer:
        for r in records:
            out[f"quant_rel_error/{r.name}"] = r.rel_error
            out[f"bits_per_weight/{r.name}"] = r.bits
    return out


def merge_quant_linears(model: nn.Module) -> nn.Module:
    """Replace every QuantLinear by a plain nn.Linear with its effective weight (the
    dequantised weight in the original basis). Activation quantisation is dropped."""
    for name, module in list(model.named_modules()):
        if isinstance(module, QuantLinear):
            if module.weight_changed_under_transform():
                raise CellFailure(
                    "cannot merge: an adapter was merged into a smoothed/rotated quantised "
                    "layer, whose weight lives in another basis; export the adapter instead"
                )
            linear = nn.Linear(module.in_features, module.out_features, module.bias is not None,
                               device=module.weight.device, dtype=module.weight.dtype)
            with torch.no_grad():
                linear.weight.copy_(module.effective_weight())
                if module.bias is not None:
                    linear.bias.copy_(module.bias)
            set_module(model, name, linear)
    return model
