"""COAT's memory savings: FP8 optimizer states with dynamic range expansion, FP8-stored activations.

Optimizer states (Xi et al. 2025, COAT, section 4; NVlabs/COAT's FP8 AdamW): both AdamW
moments are kept as FP8 E4M3 codes in groups of 128 consecutive values, each group with an
FP32 scale and its expansion. Dynamic range expansion maps a group ``x`` with
``R = max|x| / min|x|`` to ``sign(x) (|x| / c)^k`` with ``c = sqrt(max|x| min|x|)`` and
``k = floor(16 log2(R_E4M3) / log2(R)) / 16``, ``R_E4M3 = 448^2 / 2``, so that the group's
range fills E4M3's before the cast; decoding inverts it. The update itself is AdamW in
FP32 on the decoded moments (``suite.optim.adamw_step``'s halves, shared with GaLore). The codes and
scales come from ``suite.numerics.formats`` (E4M3 with one amax scale per group): real FP8
storage, on any device.

Activations (section 5): the inputs that norm layers and activation functions keep for
their backward are stored as FP8 E4M3 with one scale per group of 16 values along the
hidden dimension ("per group" of COAT's mixed granularity; its linear layers' inputs are
FP8 per tensor, see ``gemm.LinearRecipe.store_fp8_input``). The backward recomputes the
layer from the decoded input.
"""

from __future__ import annotations

import functools
import math
import types
from typing import Any

import torch
from torch import nn

from suite.numerics import formats as F
from suite.numerics.compiled import fused
from suite.optim import adamw_apply, adamw_moments

GROUP = 128
EXPAND_STEPS = 16  # k is a multiple of 1/16
BATCH_VALUES = {"cpu": 1 << 18}  # values per batch of CoatAdamW's step, by device type (none: no cap)
E4M3_RANGE = 448.0 * 448.0 / 2


class ExpandedFp8:
    """One moment tensor in FP8 E4M3 with dynamic range expansion, groups of ``GROUP`` values.

    ``data`` ``[groups, GROUP]`` (E4M3 codes), ``scale``, ``k`` and ``centre`` ``[groups, 1]``;
    the last group is zero-padded. The passes over the values are fused functions
    (``suite.numerics.compiled``: compiled where ``--fast-emulation`` allows, equal bit for bit to
    the same functions run eagerly) over groups, so ``CoatAdamW`` runs them once over all its
    parameters' groups (``encode_groups``, ``decode_groups``) and each state keeps views of the
    result; a state's own ``encode`` and ``decode`` are the same calls on its groups alone."""

    def __init__(self, like: torch.Tensor):
        self.shape = like.shape
        self.numel = like.numel()
        self.encode(torch.zeros_like(like, dtype=torch.float32))

    def encode(self, x: torch.Tensor) -> None:
        flat = x.detach().float().reshape(-1)
        pad = (-self.numel) % GROUP
        groups = torch.nn.functional.pad(flat, (0, pad)).reshape(-1, GROUP)
        self.hold(*encode_groups(groups, group_counts([self.numel], flat.device)))

    def hold(self, data: torch.Tensor, scale: torch.Tensor, k: torch.Tensor, centre: torch.Tensor) -> None:
        """Keep these codes, scales and expansions (this state's groups: its own or views of a batch's)."""
        self.data, self.scale, self.k, self.centre = data, scale, k, centre

    def decode(self) -> torch.Tensor:
        groups = decode_groups(self.data, self.scale, self.k, self.centre)
        return groups.reshape(-1)[:self.numel].reshape(self.shape)

    @property
    def groups(self) -> int:
        return self.data.shape[0]

    @property
    def q(self) -> F.QTensor:
        """The codes and their group scales as ``formats`` stores E4M3 with one scale per row."""
        return F.QTensor("fp8_e4m3", _row_opts(), tuple(self.data.shape), torch.float32, self.data, self.scale)

    @property
    def nbytes(self) -> int:
        return self.q.nbytes + (self.k.numel() + self.centre.numel()) * 4


@functools.cache
def _row_opts() -> dict:
    """The options ``formats.quantize`` stores with E4M3 codes of one scale per row (group)."""
    return F.quantize(torch.zeros(1, GROUP), "fp8_e4m3", granularity="row").opts


def group_counts(numels: list[int], device: torch.device) -> torch.Tensor:
    """How many values of each group are real (the rest pad a tensor's last group), ``[groups, 1]``
    int32, for tensors of ``numels`` values laid out one after another in whole groups."""
    counts = []
    for n in numels:
        counts += [GROUP] * (n // GROUP) + ([n % GROUP] if n % GROUP else [])
    return torch.tensor(counts, dtype=torch.int32, device=device).reshape(-1, 1)


def encode_groups(groups: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Dynamic range expansion and E4M3 codes of ``groups`` ``[groups, GROUP]`` (the first
    ``counts`` values of each real, the rest padding, left out): codes, scales, k, centres."""
    hi, lo = _group_range(groups, counts)
    # eager: torch.log2 and torch.sqrt on the CPU round differently from inductor's code
    # (MKL's vector functions), and these per-group values are small
    ratio = hi / lo
    k = torch.floor(math.log2(E4M3_RANGE) / torch.log2(ratio) * EXPAND_STEPS) / EXPAND_STEPS
    k = torch.where(ratio > 1, k, torch.ones_like(k)).clamp(min=1.0 / EXPAND_STEPS)
    centre = torch.sqrt(hi * lo)
    data, scale, _ = _expand_and_encode(groups, counts, k, centre)
    return data, scale.reshape(-1, 1), k, centre  # formats gives a single row's scale as a scalar


def _valid(groups: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    return torch.arange(GROUP, dtype=torch.int32, device=groups.device) < counts


@fused
def _group_range(groups: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each group's largest and smallest magnitude (padding left out), plus 1e-20: ``[groups, 1]``."""
    valid = _valid(groups, counts)
    mag = groups.abs()
    hi = torch.where(valid, mag, torch.zeros_like(mag)).amax(-1, keepdim=True) + 1e-20
    lo = torch.where(valid, mag, torch.full_like(mag, float("inf"))).amin(-1, keepdim=True) + 1e-20
    return hi, lo


@fused
def _expand_and_encode(groups: torch.Tensor, counts: torch.Tensor, k: torch.Tensor,
                       centre: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Dynamic range expansion of the groups with their ``k`` and centre, then E4M3 codes with one
    amax scale per group (``formats.quantize``, granularity ``row``): the codes ``[groups, GROUP]``,
    their scales ``[groups, 1]``, and the expanded values (returned so that the compiled code
    stores them once: else it computes the power twice, for the groups' amax and again for the
    codes, at twice the cost)."""
    expanded = torch.sign(groups) * (groups.abs() / centre) ** k
    expanded = torch.where(_valid(groups, counts), expanded, torch.zeros_like(expanded))
    q = F.quantize(expanded, "fp8_e4m3", granularity="row")
    return q.data, q.scale, expanded


@fused
def decode_groups(data: torch.Tensor, scale: torch.Tensor, k: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """``encode_groups`` undone: the codes dequantised (``formats.dequantize``'s product of the
    decoded E4M3 value and its group's scale), then the expansion inverted; ``[groups, GROUP]``
    (padding decodes to zero)."""
    y = data.float() * scale
    return torch.sign(y) * y.abs() ** (1.0 / k) * centre


def _chunks(params: list[torch.Tensor], cap: int | None) -> list[list[torch.Tensor]]:
    """``params`` in order, cut into runs of at most ``cap`` values (a larger one alone; None: one run)."""
    if cap is None:
        return [params]
    runs: list[list[torch.Tensor]] = [[]]
    size = 0
    for p in params:
        if runs[-1] and size + p.numel() > cap:
            runs.append([])
            size = 0
        runs[-1].append(p)
        size += p.numel()
    return runs


class CoatAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, bias correction) whose moments live as ``ExpandedFp8``.

    A step decodes, updates and re-encodes the moments of parameters that share a device, dtype
    and step count together, in one flat layout of whole groups (each parameter's last group
    padded): the same values, group for group and element for element, as one parameter at a
    time (the expansion is per group, AdamW per element), in a handful of fused calls per batch
    instead of a handful per parameter (on a GPU, kernel launches). Each state then keeps views
    of its batch's codes. On a CPU a batch holds at most ``BATCH_VALUES["cpu"]`` values: the
    passes over one batch then stay in cache, where passes over a whole model's moments go to
    memory each time and lose what the fewer calls save."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self._counts: dict[tuple, torch.Tensor] = {}  # group_counts per batch layout

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            batches: dict[tuple, list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = ExpandedFp8(p)
                    state["exp_avg_sq"] = ExpandedFp8(p)
                state["step"] += 1
                batches.setdefault((p.device, p.dtype, state["step"]), []).append(p)
            for (device, _, step), params in batches.items():
                for chunk in _chunks(params, BATCH_VALUES.get(device.type)):
                    self._step_batch(chunk, group, step, device)
        return loss

    def _step_batch(self, params: list[torch.Tensor], group: dict, step: int, device: torch.device) -> None:
        layout = (device, *(p.numel() for p in params))
        if layout not in self._counts:
            self._counts[layout] = group_counts([p.numel() for p in params], device)
        counts = self._counts[layout]
        states = [(self.state[p]["exp_avg"], self.state[p]["exp_avg_sq"]) for p in params]
        moments = []
        for i in range(2):  # the first and second moments, decoded: flat FP32 working copies
            parts = [s[i] for s in states]
            moments.append(decode_groups(*(torch.cat([getattr(s, name) for s in parts])
                                           for name in ("data", "scale", "k", "centre"))))
        m, v = moments
        grad = torch.zeros_like(m)
        starts = [0]
        for p, (state, _) in zip(params, states, strict=True):
            grad.view(-1)[starts[-1]:starts[-1] + p.numel()].copy_(p.grad.reshape(-1))
            starts.append(starts[-1] + state.groups * GROUP)
        denom = adamw_moments(grad, m, v, step, betas=group["betas"], eps=group["eps"], lerp=False)
        for p, start in zip(params, starts[:-1], strict=True):
            part = slice(start, start + p.numel())
            adamw_apply(p, m.view(-1)[part].view(p.shape), denom.view(-1)[part].view(p.shape), step,
                        lr=group["lr"], beta1=group["betas"][0], weight_decay=group["weight_decay"])
        for i, moment in enumerate((m, v)):
            codes = encode_groups(moment, counts)
            for state, start in zip(states, starts[:-1], strict=True):
                rows = slice(start // GROUP, start // GROUP + state[i].groups)
                state[i].hold(*(t[rows] for t in codes))

    def state_bytes(self) -> int:
        return sum(s[k].nbytes for s in self.state.values() for k in ("exp_avg", "exp_avg_sq") if k in s)


# -- FP8-stored activations of non-linear layers ----------------------------------------------------
class _RecomputeFromFp8(torch.autograd.Function):
    """Run ``fn(x)``, keep ``x`` for the backward as FP8 E4M3 codes (one scale per group of the
    last dimension), and in the backward recompute ``fn`` from the decoded input."""

    @staticmethod
    def forward(ctx: Any, fn: Any, group: int, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            y = fn(x)
        ctx.q = _fp8_activation(x.detach(), group)
        ctx.fn, ctx.shape, ctx.dtype = fn, x.shape, x.dtype
        ctx.autocast = (torch.is_autocast_enabled(x.device.type), torch.get_autocast_dtype(x.device.type))
        ctx.save_for_backward(*params)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        params = ctx.saved_tensors
        x = _fp8_activation_decoded(ctx.q.data, ctx.q.scale).reshape(ctx.shape).to(ctx.dtype).requires_grad_(True)
        enabled, dtype = ctx.autocast
        wanted = [x] + [p for p in params if p.requires_grad]
        with torch.enable_grad(), torch.autocast(grad.device.type, dtype=dtype, enabled=enabled):
            y = ctx.fn(x)
        grads = iter(torch.autograd.grad(y, wanted, grad, allow_unused=True))
        dx = next(grads)
        dparams = [next(grads) if p.requires_grad else None for p in params]
        return (None, None, dx, *dparams)


def _fp8_activation(x: torch.Tensor, group: int) -> F.QTensor:
    """``x`` as rows of its last dimension in E4M3, one scale per ``group`` values (per row where
    the group does not divide the row): ``formats.quantize``, run as one fused function."""
    granularity = "block" if x.shape[-1] % group == 0 else "row"
    data, scale = _fp8_rows(x.reshape(-1, x.shape[-1]), granularity, group)
    return F.QTensor("fp8_e4m3", _fp8_opts(granularity, group), tuple(data.shape), torch.float32, data, scale)


def fp8_tensor_copy(x: torch.Tensor) -> F.QTensor:
    """``x`` as FP8 E4M3 with one scale per tensor (``formats.quantize``, run as one fused function):
    COAT's copy of a linear layer's input, kept for the backward (``gemm.LinearRecipe.store_fp8_input``)."""
    data, scale = _fp8_rows(x, "tensor", GROUP)
    return F.QTensor("fp8_e4m3", _fp8_opts("tensor", GROUP), tuple(x.shape), x.dtype, data, scale)


@fused
def fp8_tensor_copy_decoded(data: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``formats.dequantize`` of ``fp8_tensor_copy``'s codes: each E4M3 value times the tensor's scale."""
    return data.float() * scale


@functools.cache
def _fp8_opts(granularity: str, group: int) -> dict:
    size = {"block_size": group} if granularity == "block" else {}
    return F.quantize(torch.zeros(1, group), "fp8_e4m3", granularity=granularity, **size).opts


@fused
def _fp8_rows(rows: torch.Tensor, granularity: str, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    size = {"block_size": group} if granularity == "block" else {}
    q = F.quantize(rows.float(), "fp8_e4m3", granularity=granularity, **size)
    return q.data, q.scale


@fused
def _fp8_activation_decoded(data: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``formats.dequantize`` of ``_fp8_activation``'s codes: each E4M3 value times its scale
    (``scale`` ``[rows, groups]``, one per group of the row)."""
    rows, n = data.shape
    blocks = scale.shape[-1]
    return (data.float().reshape(rows, blocks, n // blocks) * scale.reshape(rows, blocks, 1)).reshape(rows, n)


def is_nonlinear_layer(module: nn.Module) -> bool:
    """Norm layers and activation functions: what COAT stores FP8 activations for."""
    name = type(module).__name__
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.SiLU, nn.GELU, nn.ReLU, nn.Tanh, nn.Sigmoid)):
        return True
    return name.endswith(("RMSNorm", "LayerNorm", "Activation")) and not list(module.children())


def store_fp8_activations(model: nn.Module, group: int = 16) -> int:
    """Patch every norm and activation module's forward (in place, state dict unchanged) so it
    keeps its input as FP8 for the backward; returns how many were patched."""
    count = 0
    for module in model.modules():
        if not is_nonlinear_layer(module) or getattr(module, "_coat_fp8", False):
            continue
        original = module.forward
        params = tuple(module.parameters())

        def forward(self: nn.Module, x: torch.Tensor, *args: Any, _orig: Any = original,
                    _params: tuple = params, **kwargs: Any) -> torch.Tensor:
            if args or kwargs or not torch.is_grad_enabled() or not x.requires_grad:
                return _orig(x, *args, **kwargs)
            return _RecomputeFromFp8.apply(_orig, group, x, *_params)

        module.forward = types.MethodType(forward, module)
        module._coat_fp8 = True
        count += 1
    return count
