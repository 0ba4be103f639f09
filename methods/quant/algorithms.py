"""The quantisation algorithms, on plain tensors so they can be tested layer by layer.

* ``gptq_quantize``: GPTQ (Frantar et al. 2023, arXiv:2210.17323): quantise the weight
  column by column and spread each column's error over the not yet quantised columns with
  the inverse Hessian ``H = 2 X^T X`` (Cholesky form, lazy block updates, dampening).
* ``smoothquant_scales``: SmoothQuant (Xiao et al. 2023, arXiv:2211.10438):
  ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)``.
* ``awq_search``: AWQ (Lin et al. 2024, arXiv:2306.00978): ``s = mean|X|^alpha``, the
  ``alpha`` on a grid that minimises the layer's output error after quantisation.
* ``sparsegpt_prune``: SparseGPT (Frantar & Alistarh 2023, arXiv:2301.00774, Algorithm 1):
  GPTQ's column sweep with the same inverse-Hessian Cholesky factor (``inverse_hessian_factor``),
  pruning instead of rounding: the mask is chosen block by block from ``w^2 / [H^-1]_cc^2``
  (the OBS saliency), and each pruned column's error is spread over the later columns.
* ``hutchinson_traces``: Hessian traces per parameter with Hutchinson's estimator
  ``tr(H) ~ E[v^T H v]``, v Rademacher (HAWQ-v2, Dong et al. 2020, arXiv:1911.03852).
* ``allocate_bits``: HAWQ-style mixed precision: lower the bits of the least sensitive
  layers (trace x quantisation perturbation per bit saved) until the budget holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from suite.errors import UserError
from suite.numerics import formats as F


# -- calibration statistics ------------------------------------------------------------------
class InputStats:
    """Accumulates, per linear layer, what the algorithms need from its inputs."""

    def __init__(self, hessian: bool = False, keep_samples: int = 0):
        self.hessian = hessian
        self.keep_samples = keep_samples
        self.xtx: torch.Tensor | None = None
        self.n = 0
        self.abs_max: torch.Tensor | None = None
        self.abs_sum: torch.Tensor | None = None
        self.sq_sum: torch.Tensor | None = None  # sum of x_j^2 per input channel (Wanda's norms)
        self.samples: list[torch.Tensor] = []

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        amax = x.abs().amax(0)
        asum = x.abs().sum(0)
        self.abs_max = amax if self.abs_max is None else torch.maximum(self.abs_max, amax)
        self.abs_sum = asum if self.abs_sum is None else self.abs_sum + asum
        sq = x.pow(2).sum(0)
        self.sq_sum = sq if self.sq_sum is None else self.sq_sum + sq
        if self.hessian:
            xtx = x.t() @ x
            self.xtx = xtx if self.xtx is None else self.xtx + xtx
        self.n += x.shape[0]
        kept = sum(s.shape[0] for s in self.samples)
        if kept < self.keep_samples:
            self.samples.append(x[: self.keep_samples - kept].cpu())

    @property
    def abs_mean(self) -> torch.Tensor:
        return self.abs_sum / max(self.n, 1)

    def hessian_matrix(self) -> torch.Tensor:
        return 2.0 * self.xtx / max(self.n, 1)


class _StageComplete(Exception):
    """Raised by a hook to end a forward pass once the layers of interest have their inputs."""


def _model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


def collect_input_stats(model: nn.Module, layers: dict[str, nn.Linear], batches: Iterable[dict],
                        stop_when_seen: bool = False, **kwargs) -> dict[str, InputStats]:
    """One forward pass per batch with hooks that record every target layer's inputs,
    skipping tokens that are padding (attention_mask == 0).

    With ``stop_when_seen`` each pass ends as soon as every layer in ``layers`` has fired:
    the rest of the network cannot change those inputs, so sequential calibration costs
    a fraction of a forward pass per stage instead of a whole one.
    """
    stats = {name: InputStats(**kwargs) for name in layers}
    state: dict = {"mask": None, "seen": set()}

    def hook(name: str) -> Callable:
        def fn(module: nn.Module, inputs: tuple) -> None:
            x = inputs[0]
            mask = state["mask"]
            if mask is not None and x.dim() == 3 and x.shape[:2] == mask.shape:
                x = x[mask.bool()]
            stats[name].add(x)
            state["seen"].add(name)
            if stop_when_seen and len(state["seen"]) == len(layers):
                raise _StageComplete
        return fn

    handles = [layer.register_forward_pre_hook(hook(name)) for name, layer in layers.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                state["mask"] = batch.get("attention_mask")
                state["seen"] = set()
                try:
                    model(**_model_inputs(batch))
                except _StageComplete:
                    pass
    finally:
        for h in handles:
            h.remove()
    return stats


def forward_stages(model: nn.Module, layers: dict[str, nn.Linear], batch: dict) -> list[list[str]]:
    """The target layers in the order one forward pass reaches them, grouped into stages of
    consecutive layers that read the same input tensor (q, k and v; gate and up).

    Sequential calibration quantises one stage, then collects the next stage's inputs from
    the partly quantised model. Layers the pass never reaches form a last stage.
    """
    order: list[tuple[str, int]] = []
    inputs_seen: list[torch.Tensor] = []  # keep the tensors alive so ids stay unique

    def hook(name: str) -> Callable:
        def fn(module: nn.Module, inputs: tuple) -> None:
            if all(n != name for n, _ in order):
                inputs_seen.append(inputs[0])
                order.append((name, id(inputs[0])))
        return fn

    handles = [layer.register_forward_pre_hook(hook(name)) for name, layer in layers.items()]
    try:
        with torch.no_grad():
            model(**_model_inputs(batch))
    finally:
        for h in handles:
            h.remove()
    stages: list[list[str]] = []
    last_input = None
    for name, input_id in order:
        if stages and input_id == last_input:
            stages[-1].append(name)
        else:
            stages.append([name])
        last_input = input_id
    unreached = [name for name in layers if all(n != name for n, _ in order)]
    if unreached:
        stages.append(unreached)
    return stages


# -- integer quantisation with given parameters (GPTQ quantises one column at a time) -------
def int_qparams(w: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    return F.int_qparams(w, bits, symmetric)


def int_fake_quant(w: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor | None, bits: int,
                   symmetric: bool) -> torch.Tensor:
    """Quantise and dequantise with given parameters: the formats' integer rules."""
    return F.int_dequant(F.int_codes(w, scale, zp, bits, symmetric), scale, zp)


def inverse_hessian_factor(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + damp * mean(diag H) I)^-1``: the rows GPTQ and SparseGPT
    read their error feedback from (GPTQ section 3.3 "Cholesky reformulation"). ``h`` is
    changed in place (dampened); not positive definite even then: damp harder."""
    cols = h.shape[0]
    h += damp * torch.mean(torch.diag(h)) * torch.eye(cols, device=h.device)
    try:
        return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    except RuntimeError:
        h += 0.1 * torch.mean(torch.diag(h)) * torch.eye(cols, device=h.device)
        return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)


def _prepare_hessian(w: torch.Tensor, hessian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 copies of W and H with dead inputs (never non-zero in calibration) zeroed in W
    and given a unit diagonal in H, as the GPTQ and SparseGPT reference code do."""
    w = w.detach().float().clone()
    h = hessian.detach().float().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    return w, h


class GptqCodes:
    """What GPTQ chose, for packed storage: integer codes ``[rows, cols]`` (columns in the
    order GPTQ visited them), one scale (and zero point) per row and group of those columns,
    and the visiting order ``perm`` (act_order) or None."""

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                 perm: torch.Tensor | None):
        self.codes, self.scales, self.zeros, self.perm = codes, scales, zeros, perm


def gptq_quantize(w: torch.Tensor, hessian: torch.Tensor, bits: int = 4, group_size: int = 0,
                  symmetric: bool = True, damp: float = 0.01, block_size: int = 128,
                  act_order: bool = False, return_codes: bool = False
                  ) -> torch.Tensor | tuple[torch.Tensor, GptqCodes]:
    """GPTQ: the dequantised weight (same shape) that minimises ``||X W^T - X Q^T||``
    greedily with optimal error feedback. ``group_size`` 0 means one scale per row.
    ``return_codes``: also the codes and scales it chose (``GptqCodes``), for packing."""
    w, h = _prepare_hessian(w, hessian)
    rows, cols = w.shape
    if group_size and cols % group_size:
        raise UserError(f"gptq: group size {group_size} does not divide the input dimension {cols}")
    perm = None
    if act_order:
        perm = torch.argsort(torch.diag(h), descending=True)
        w, h = w[:, perm], h[perm][:, perm]
    hinv = inverse_hessian_factor(h, damp)
    if group_size:
        block_size = max(group_size, (block_size // group_size) * group_size)
    scale, zp = (None, None) if group_size else int_qparams(w, bits, symmetric)
    scales, zeros = ([], []) if group_size else ([scale], [zp])
    q = torch.zeros_like(w)
    codes = torch.zeros_like(w) if return_codes else None
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            if group_size and (i1 + i) % group_size == 0:
                scale, zp = int_qparams(w1[:, i:i + group_size], bits, symmetric)
                scales.append(scale)
                zeros.append(zp)
            col = w1[:, i:i + 1]
            # int_fake_quant, with the codes kept: the same two operations
            ccol = F.int_codes(col, scale, zp, bits, symmetric)
            qcol = F.int_dequant(ccol, scale, zp)
            q[:, i1 + i] = qcol[:, 0]
            if codes is not None:
                codes[:, i1 + i] = ccol[:, 0]
            e = (col - qcol) / hinv1[i, i]
            w1[:, i:] -= e @ hinv1[i:i + 1, i:]
            err1[:, i] = e[:, 0]
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    if perm is not None:
        q = q[:, torch.argsort(perm)]
    if not return_codes:
        return q
    zero_t = None if symmetric else torch.cat(zeros, dim=1)
    return q, GptqCodes(codes, torch.cat(scales, dim=1), zero_t, perm)


def sparsegpt_prune(w: torch.Tensor, hessian: torch.Tensor, sparsity: float = 0.5,
                    n: int = 0, m: int = 0, damp: float = 0.01,
                    block_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT (Frantar & Alistarh 2023, Algorithm 1): (pruned weight, keep mask).

    Unstructured (``n = m = 0``): for each block of ``block_size`` columns, the
    ``round(sparsity * rows * block)`` weights of lowest saliency ``w^2 / [H^-1]_cc^2``
    (eq. 3, with the Cholesky rows of ``H^-1`` as in GPTQ) are pruned; the reference code
    takes a threshold instead, which prunes one more weight per block on ties. N:M: in
    each run of ``m`` columns, each row keeps the ``n`` most salient weights (section 3.4).
    Then the column sweep: each column's pruning error ``(w - q) / [H^-1]_cc`` is spread over
    the later columns (eq. 4, the OBS update), exactly GPTQ's loop with pruning as the
    quantiser. ``damp`` as GPTQ (1% of the mean diagonal)."""
    w, h = _prepare_hessian(w, hessian)
    rows, cols = w.shape
    structured = m > 0
    if structured:
        block_size = max(m, (block_size // m) * m)
    hinv = inverse_hessian_factor(h, damp)
    keep = torch.ones_like(w, dtype=torch.bool)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        d = torch.diag(hinv1).reshape(1, -1)
        prune1 = torch.zeros_like(w1, dtype=torch.bool)
        if not structured:
            score = w1.pow(2) / d.pow(2)
            k = int(round(sparsity * score.numel()))
            if k:
                idx = torch.topk(score.flatten(), k, largest=False).indices
                prune1.view(-1)[idx] = True
        for i in range(i2 - i1):
            if structured and i % m == 0:
                score = w1[:, i:i + m].pow(2) / d[:, i:i + m].pow(2)
                drop = torch.topk(score, m - n, dim=1, largest=False).indices
                prune1.scatter_(1, i + drop, True)
            col = w1[:, i]
            qcol = torch.where(prune1[:, i], torch.zeros_like(col), col)
            q1[:, i] = qcol
            e = (col - qcol) / hinv1[i, i]
            w1[:, i:] -= e.unsqueeze(1) @ hinv1[i:i + 1, i:]
            err1[:, i] = e
        w[:, i1:i2] = q1
        keep[:, i1:i2] = ~prune1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w, keep


# -- scale migration ---------------------------------------------------------------------------
def smoothquant_scales(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Per input channel divisor ``s``: ``x / s`` and ``W * s`` balance their ranges."""
    w_max = weight.detach().abs().amax(0).float().clamp(min=1e-5)
    a_max = act_absmax.float().clamp(min=1e-5)
    return (a_max.pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5)


def awq_search(weight: torch.Tensor, x: torch.Tensor, act_absmean: torch.Tensor,
               quant: Callable[[torch.Tensor], torch.Tensor], grid: int = 20) -> tuple[torch.Tensor, float]:
    """Search ``alpha`` in [0, 1): ``s = mean|X|^alpha`` (normalised), minimising the output
    error ``||X W^T - (X / s) Q(W s)^T||``. Returns (s, best alpha); alpha = 0 is plain RTN."""
    w = weight.detach().float()
    x = x.float()
    ref = x @ w.t()
    best = (float("inf"), torch.ones_like(act_absmean), 0.0)
    mean = act_absmean.float().clamp(min=1e-8)
    for k in range(grid):
        alpha = k / grid
        s = mean.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        out = (x / s) @ quant(w * s).t()
        loss = (ref - out).pow(2).mean().item()
        if loss < best[0]:
            best = (loss, s, alpha)
    return best[1], best[2]


# -- Hessian traces and bit allocation ----------------------------------------------------------
def hutchinson_traces(loss_fn: Callable[[], torch.Tensor], params: dict[str, torch.Tensor],
                      n_samples: int = 8, seed: int = 0) -> dict[str, float]:
    """``tr(d^2 L / dW^2)`` per named parameter, Hutchinson estimator with Rademacher v."""
    names = list(params)
    tensors = [params[n] for n in names]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    totals = dict.fromkeys(names, 0.0)
    for _ in range(n_samples):
        loss = loss_fn()
        grads = torch.autograd.grad(loss, tensors, create_graph=True)
        vs = [(torch.randint(0, 2, t.shape, generator=gen) * 2 - 1).to(t.device, t.dtype) for t in tensors]
        hvs = torch.autograd.grad(grads, tensors, grad_outputs=vs)
        for n, v, hv in zip(names, vs, hvs, strict=True):
            totals[n] += float((v * hv).sum())
    return {n: t / n_samples for n, t in totals.items()}


def layer_hessian_traces(model: nn.Module, layers: dict[str, nn.Linear], batches: list[dict],
                         samples: int, seed: int = 0) -> dict[str, float]:
    """Hessian trace of the task loss per layer weight, averaged over labelled ``batches``
    (Hutchinson, ``samples`` probes per batch); the weights' grad flags are restored."""
    params = {name: lin.weight for name, lin in layers.items()}
    flags = {n: p.requires_grad for n, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)
    traces = dict.fromkeys(params, 0.0)
    try:
        for i, batch in enumerate(batches):
            if "labels" not in batch:
                raise UserError("hawq needs labelled calibration batches for the loss")

            def loss_fn(b=batch):
                # the math SDPA backend is the one with a double backward (Hv products)
                from torch.nn.attention import SDPBackend, sdpa_kernel

                with sdpa_kernel(SDPBackend.MATH):
                    return model(**b).loss

            for n, t in hutchinson_traces(loss_fn, params, samples, seed=seed + i).items():
                traces[n] += t / len(batches)
    finally:
        for n, p in params.items():
            p.requires_grad_(flags[n])
    return traces


def layer_loss_sensitivity(model: nn.Module, layers: dict[str, nn.Linear], batches: list[dict],
                           quantized: Callable[[str, nn.Linear, int], torch.Tensor],
                           choices: Iterable[int]) -> dict[str, dict[int, float]]:
    """Measured loss increase on ``batches`` when only one layer is quantised to ``b`` bits
    (``quantized(name, layer, b)`` gives its weight), for every layer and bit width; each
    weight is restored before the next. The ground truth a trace estimate approximates."""
    if any("labels" not in b for b in batches):
        raise UserError("hawq needs labelled calibration batches for the loss")

    def loss() -> float:
        with torch.no_grad():
            return sum(float(model(**b).loss) for b in batches) / len(batches)

    base = loss()
    out: dict[str, dict[int, float]] = {}
    for name, lin in layers.items():
        original = lin.weight.detach().clone()
        candidates = {b: quantized(name, lin, b) for b in choices}  # all from the original weight
        out[name] = {}
        try:
            for b, weight in candidates.items():
                with torch.no_grad():
                    lin.weight.copy_(weight)
                out[name][b] = loss() - base
        finally:
            with torch.no_grad():
                lin.weight.copy_(original)
    return out


def allocate_bits(sensitivity: dict[str, dict[int, float]], numel: dict[str, int],
                  budget: float) -> dict[str, int]:
    """Bits per layer under an average bits-per-weight ``budget`` (weighted by size).

    ``sensitivity[layer][b]`` is the expected loss increase at ``b`` bits (HAWQ-v2:
    Hessian trace / n x ||Q_b(W) - W||^2). Greedy: start at the most bits, repeatedly drop
    the layer whose next step down costs the least sensitivity per bit saved."""
    choices = {n: sorted(s) for n, s in sensitivity.items()}
    bits = {n: c[-1] for n, c in choices.items()}
    total = sum(numel.values())
    lowest = sum(numel[n] * choices[n][0] for n in choices) / total
    if budget < lowest - 1e-9:
        raise UserError(f"hawq: a budget of {budget} bits per weight is below the lowest "
                        f"choice ({lowest:.3g}); raise the budget or add lower bit choices")

    def avg() -> float:
        return sum(numel[n] * bits[n] for n in bits) / total

    while avg() > budget + 1e-9:
        best_name, best_cost = None, float("inf")
        for n, c in choices.items():
            i = c.index(bits[n])
            if i == 0:
                continue
            lower = c[i - 1]
            cost = (sensitivity[n][lower] - sensitivity[n][bits[n]]) / (numel[n] * (bits[n] - lower))
            if cost < best_cost:
                best_name, best_cost = n, cost
        if best_name is None:
            break
        c = choices[best_name]
        bits[best_name] = c[c.index(bits[best_name]) - 1]
    return bits


def relative_error(w: torch.Tensor, wq: torch.Tensor) -> float:
    """``||W - Wq||_F / ||W||_F``: the per-layer quantisation error the results report."""
    w = w.detach().float()
    return float((w - wq.detach().float()).norm() / w.norm().clamp(min=1e-30))


__all__ = [
    "InputStats", "collect_input_stats", "forward_stages", "layer_hessian_traces", "layer_loss_sensitivity", "int_qparams", "int_fake_quant", "gptq_quantize",
    "smoothquant_scales", "awq_search", "hutchinson_traces", "allocate_bits", "relative_error",
    "inverse_hessian_factor", "GptqCodes", "sparsegpt_prune",
]
