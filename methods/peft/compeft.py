"""ComPEFT: compress a trained update to its top-k signs times one scalar, then evaluate that.

Yadav et al. 2023, ComPEFT: Compression for Communicating Parameter Efficient Updates via
Sparsification and Quantization (arXiv:2311.13171). With the task vector tau = theta_trained
- theta_init of everything the earlier methods trained (LoRA's A and B, full fine-tuning's
weights, ...), flattened into one vector:

    tau_hat = alpha * sigma(tau) * sign(top_k(tau))

top_k keeps the ``density`` fraction of entries with the largest |tau| (the rest become 0) and
sigma(tau) is the standard deviation of the uncompressed tau (Bessel-corrected, ``tv.std()`` in
the authors' src/bert_eval.py), so the update becomes a ternary vector and one scalar.

alpha: the paper chooses it on validation data. The authors' repository (prateeky2806/ComPEFT,
commit 083ed51) takes one alpha per evaluation run (``--replace_factor``, default 1.0) and holds
no grid, so the grid here is ours: ``ALPHAS``, from half the repository's default to 8, finer
between 1 and 4, where the mean-magnitude scalar of a Gaussian- or Laplace-shaped update lies
(about 1.2 to 2.8 sigma at densities 0.5 to 0.05). With several values each is applied in turn
and scored, and the best is kept (the smallest on a tie):

- by the task's primary score on its selection split (``Task.for_selection``: part of the
  training split held out, never the split the leaderboard reports) where the runner offers it
  as ``ctx.evaluate_selection``, a callable like ``ctx.evaluate``;
- else by the task loss on ``loss_batches`` seeded training batches (the same batches as
  ``compeft_loss_before``). ``ctx.evaluate`` scores the reported split and never selects.

One value (``alpha=2.5``) fixes alpha. ``alpha=none`` is the mean-magnitude variant: the scalar
is the mean |tau| of the kept entries (the least-squares scalar for those signs, sparse ternary
compression's; the authors' "STC" option averages the signed kept values instead). It was this
method's default before version 2, and stored cells of that version read ``compeft:alpha=none``
on the boards, which still means it. ``quantize=false`` keeps the kept values themselves
(sparsification only, the paper's ablation; alpha plays no part); with ``density=1`` that is the
identity.

Composes after any method (``lora+compeft:density=0.05``, ``full+compeft``): it records the
trained parameters when training begins and compresses in ``after_training``, so the cell's
evaluation scores the compressed model. Alone it compresses what the model trains by itself
(every parameter: full fine-tuning's task vector). The task's new head is kept in full, not
compressed: it has no pretrained value and every method trains it in full.

What it stores is what a receiver needs besides the base model and the seed of the earlier
method's initialisation: the positions of the kept entries, Golomb-coded (gaps between kept
positions, Rice parameter from the density, as the sparse ternary compression the paper builds
on), one sign bit per kept entry, the scalar, and the head in full. ``adapter_bytes`` is that
file's size. The runner hands ``after_training`` the task's evaluation (``ctx.evaluate``), so the
primary metrics of the uncompressed model are stored as ``compeft_before/<metric>`` beside the
cell's own (after compression). Also stored: the task loss on a few training batches before and
after compression, the relative error ||tau - tau_hat|| / ||tau||, the alpha applied and, when
one was selected, its score (``compeft_selection/<metric>`` or ``compeft_selection_loss``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from suite.method import Method, MethodContext
from suite.metrics import cost
from suite.registry import register_method

if TYPE_CHECKING:  # pragma: no cover
    from suite.train import TrainState

GOLDEN = (1 + math.sqrt(5)) / 2
# The alpha grid searched by default (see the module docstring for where it comes from).
ALPHAS = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


@dataclass
class ComPEFTConfig:
    density: float = 0.1  # k: fraction of the update's entries kept
    # scale alpha * sigma(tau): several alphas are searched, one is fixed; none: the mean |kept tau|
    alpha: tuple[float, ...] | None = ALPHAS
    quantize: bool = True  # false: keep the kept values (sparsification only)
    loss_batches: int = 4  # training batches for the loss before and after compression (and the fallback selection)

    def __post_init__(self) -> None:
        if not 0 < self.density <= 1:
            raise ValueError("density must be in (0, 1]: the fraction of the update's entries kept")
        if isinstance(self.alpha, (int, float)):  # one number given directly, not through the CLI
            self.alpha = (float(self.alpha),)
        if self.alpha is not None:
            if not self.alpha or any(not math.isfinite(a) or a <= 0 for a in self.alpha):
                raise ValueError("alpha must be a positive number, several separated by ';' (a grid to "
                                 "select from), or none (the mean-magnitude scalar)")
            self.alpha = tuple(sorted(set(self.alpha)))  # one spelling per grid: it enters the cell id
        if self.loss_batches < 0:
            raise ValueError("loss_batches must be >= 0")


@dataclass
class Compressed:
    """A compressed flat update: sorted kept positions, their signs (or values), and the scalar."""

    n: int
    indices: Any  # int64, sorted
    signs: Any  # bool, True where tau > 0
    scale: float  # the one scalar (nan when not quantized)
    values: Any = None  # the kept values themselves when not quantized
    std: float = float("nan")  # sigma(tau) of the uncompressed update

    def with_alpha(self, alpha: float) -> Compressed:
        """The same signs with the paper's scalar alpha * sigma(tau)."""
        return dataclasses.replace(self, scale=alpha * self.std)

    def dense(self) -> Any:
        """tau_hat as a dense float32 vector."""
        import torch

        out = torch.zeros(self.n, dtype=torch.float32)
        if self.values is not None:
            out[self.indices] = self.values
        else:
            out[self.indices] = torch.where(self.signs, self.scale, -self.scale)
        return out

    @property
    def kept(self) -> int:
        return int(self.indices.numel())


def compress(tau: Any, density: float, alpha: float | None = None, quantize: bool = True) -> Compressed:
    """ComPEFT on a flat update: keep the top ``density`` of |tau|, then sign times one scalar,
    alpha * sigma(tau), or the mean |kept tau| where ``alpha`` is None."""
    import torch

    flat = tau.detach().float().reshape(-1).cpu()
    n = flat.numel()
    k = max(1, min(n, round(density * n)))
    indices = torch.topk(flat.abs(), k, sorted=False).indices
    indices = indices[flat[indices] != 0]  # an exact zero has no sign: it stays zero
    indices, _ = torch.sort(indices)
    kept = flat[indices]
    std = float(flat.std()) if n > 1 else 0.0  # Bessel-corrected, as the authors' tv.std()
    if not quantize:
        return Compressed(n, indices, kept > 0, float("nan"), values=kept.clone(), std=std)
    if alpha is None:
        scale = float(kept.abs().mean()) if kept.numel() else 0.0
    else:
        scale = alpha * std
    return Compressed(n, indices, kept > 0, scale, std=std)


def rice_parameter(kept: int, n: int) -> int:
    """b of the Golomb-Rice code (M = 2^b) for gaps between kept positions at density kept / n
    (Sattler et al. 2019's choice for geometric gaps: b = 1 + floor(log2(log(phi - 1) / log(1 - p))))."""
    p = kept / n if n else 1.0
    if p >= 1 or p <= 0:
        return 0
    return max(0, 1 + math.floor(math.log2(math.log(GOLDEN - 1) / math.log(1 - p))))


def golomb_encode(indices: Any, b: int) -> bytes:
    """Rice code of the gaps before each kept position: q = gap >> b ones, a zero, b remainder bits."""
    import numpy as np

    idx = np.asarray(indices, dtype=np.int64)
    gaps = np.diff(np.concatenate([[-1], idx])) - 1
    q = gaps >> b
    rem = gaps & ((1 << b) - 1)
    lengths = q + 1 + b
    starts = np.cumsum(lengths) - lengths
    bits = np.zeros(int(lengths.sum()), dtype=np.uint8)
    ones = np.repeat(starts, q) + (np.arange(int(q.sum())) - np.repeat(np.cumsum(q) - q, q))
    bits[ones] = 1
    for j in range(b):
        bits[starts + q + 1 + j] = (rem >> (b - 1 - j)) & 1
    return np.packbits(bits).tobytes()


def golomb_decode(data: bytes, count: int, b: int) -> list[int]:
    """The kept positions back from ``golomb_encode`` (a plain reference decoder)."""
    import numpy as np

    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    out, pos, previous = [], 0, -1
    for _ in range(count):
        q = 0
        while bits[pos]:
            q += 1
            pos += 1
        pos += 1
        rem = 0
        for _ in range(b):
            rem = (rem << 1) | int(bits[pos])
            pos += 1
        previous = previous + 1 + (q << b) + rem
        out.append(previous)
    return out


def pack_signs(signs: Any) -> bytes:
    import numpy as np

    return np.packbits(np.asarray(signs, dtype=np.uint8)).tobytes()


def head_module_ids(model: Any, ctx: MethodContext) -> set[int]:
    """Parameters of the task's new modules, including the trained copy a peft wrapper keeps of them
    (peft's modules_to_save holds the original as ``original_module`` beside a trained copy)."""
    wanted = {id(m) for m in ctx.new_modules}
    out: set[int] = set()
    for module in model.modules():
        if id(module) in wanted or id(getattr(module, "original_module", None)) in wanted:
            out.update(id(p) for p in module.parameters())
    return out


@register_method("compeft", kind="peft",
                 summary="compress the trained update to top-k signs times one scalar, then evaluate",
                 source="suite", paper="Yadav et al. 2023, ComPEFT (arXiv:2311.13171)")
class ComPEFT(Method):
    Config = ComPEFTConfig
    version = "2"  # the default became the paper's alpha * sigma(tau), alpha searched; version 1's is alpha=none
    mergeable = True
    metrics = (cost("compeft_compressed_bytes", "compressed update", "B", fmt="bytes"),
               cost("compeft_original_bytes", "update before compression", "B", fmt="bytes"),
               cost("compeft_rel_error", "relative error of the compressed update"),
               cost("compeft_loss_before", "loss before compression"),
               cost("compeft_loss_after", "loss after compression"))

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.ctx: MethodContext | None = None
        self.tracked: list[tuple[str, Any, Any]] = []  # (name, parameter, value when training began, on the CPU)
        self.head: list[tuple[str, Any]] = []
        self.result: Compressed | None = None
        self.facts: dict[str, float] = {}
        self.selection_scores: dict[float, float] = {}  # alpha -> its selection score (or loss), when searched

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        self.ctx = ctx  # compression happens after training; nothing changes now
        return model

    def on_train_begin(self, model: Any, state: TrainState) -> None:
        """Record theta_init of what trains: what requires a gradient or the optimizer holds."""
        held = {id(p) for g in state.optimizer.param_groups for p in g["params"]} \
            if state.optimizer is not None else set()
        head = head_module_ids(model, self.ctx) if self.ctx is not None else set()
        seen: set[int] = set()
        self.tracked, self.head = [], []
        for name, p in model.named_parameters():
            if id(p) in seen or not (p.requires_grad or id(p) in held):
                continue
            seen.add(id(p))
            if id(p) in head:
                self.head.append((name, p))
            else:
                self.tracked.append((name, p, p.detach().to("cpu", copy=True)))

    def task_vector(self) -> Any:
        import torch

        if not self.tracked:
            return torch.zeros(0)
        return torch.cat([(p.detach().float().cpu() - init.float()).reshape(-1) for _, p, init in self.tracked])

    def after_training(self, model: Any, ctx: MethodContext) -> Any:
        if not self.tracked:  # nothing trained (an evaluation-only cell): nothing to compress
            self.facts = {"compeft_compressed_params": 0.0}
            return model
        evaluate = getattr(ctx, "evaluate", None)  # the task's scores of the uncompressed model
        before = evaluate() if callable(evaluate) else {}
        loss_before = self._train_loss(model, ctx)
        tau = self.task_vector()
        c = self.config
        alphas = c.alpha or (None,)
        self.result = compress(tau, c.density, alphas[0], c.quantize)
        selection: dict[str, float] = {}
        if c.quantize and len(alphas) > 1:
            self.result, selection = self._select(model, ctx, self.result, alphas)
        else:
            self._write(self.result)
        loss_after = self._train_loss(model, ctx)
        tau_hat = self.result.dense()
        norm = float(tau.norm())
        self.facts = {
            "compeft_compressed_params": float(tau.numel()),
            "compeft_kept": float(self.result.kept),
            "compeft_density": self.result.kept / tau.numel(),
            "compeft_scale": self.result.scale,
            "compeft_alpha": self.result.scale / self.result.std if self.result.std else float("nan"),
            "compeft_rel_error": float((tau - tau_hat).norm()) / norm if norm else 0.0,
            "compeft_original_bytes": float(sum(init.numel() * init.element_size() for _, _, init in self.tracked)
                                            + self._head_bytes()),
            "compeft_compressed_bytes": float(self._payload_bytes()),
            **({"compeft_loss_before": loss_before, "compeft_loss_after": loss_after}
               if not math.isnan(loss_before) else {}),
            **{f"compeft_before/{k}": float(v) for k, v in before.items()},
            **selection,
        }
        return model

    def _write(self, result: Compressed) -> None:
        """theta_init + tau_hat into the tracked parameters; unquantized, the kept entries keep
        their trained value exactly and the rest return to theta_init."""
        import torch

        tau_hat = result.dense()
        kept = torch.zeros(result.n, dtype=torch.bool)
        kept[result.indices] = True
        offset = 0
        with torch.no_grad():
            for _, p, init in self.tracked:
                size = init.numel()
                if result.values is None:
                    new = init.float() + tau_hat[offset:offset + size].view(init.shape)
                else:
                    new = torch.where(kept[offset:offset + size].view(init.shape), p.detach().float().cpu(),
                                      init.float())
                p.copy_(new.to(device=p.device, dtype=p.dtype))
                offset += size

    def _select(self, model: Any, ctx: MethodContext, base: Compressed,
                alphas: tuple[float, ...]) -> tuple[Compressed, dict[str, float]]:
        """Apply each alpha of the grid, score it, and leave the best applied (the first on a tie):
        by the task's primary score on its selection split where the runner offers it, else by the
        task loss on training batches. Never by ``ctx.evaluate``: that is the reported split."""
        from suite.errors import CellFailure
        from suite.metrics import higher_is_better

        evaluate = ctx.evaluate_selection
        if not callable(evaluate) and not (self.config.loss_batches and ctx.calibration_source is not None):
            raise CellFailure(f"method '{self.name}': nothing to select alpha on (no selection split from the "
                              f"runner, no training batches with loss_batches={self.config.loss_batches}); "
                              f"give one alpha")
        scores: dict[float, float] = {}
        label, higher = "compeft_selection_loss", False
        for alpha in alphas:
            self._write(base.with_alpha(alpha))
            if callable(evaluate):
                primary = evaluate()
                if not primary:
                    raise CellFailure(f"method '{self.name}': the selection split gave no score to select alpha on")
                name, value = next(iter(primary.items()))  # the first primary metric
                label, higher = f"compeft_selection/{name}", higher_is_better(name)
            else:
                value = self._train_loss(model, ctx)
            scores[alpha] = float(value)

        def rank(alpha: float) -> tuple[float, float]:  # a NaN score ranks last; the smaller alpha wins a tie
            value = scores[alpha] if higher else -scores[alpha]
            return (value if value == value else -math.inf, -alpha)

        self.selection_scores = scores
        best = max(alphas, key=rank)
        chosen = base.with_alpha(best)
        self._write(chosen)
        return chosen, {label: scores[best]}

    def _train_loss(self, model: Any, ctx: MethodContext) -> float:
        """Mean task loss on ``loss_batches`` seeded training batches, in eval mode."""
        import contextlib

        import torch

        if not self.config.loss_batches or ctx.calibration_source is None:
            return float("nan")
        batches = ctx.calibration_batches(self.config.loss_batches)
        autocast = ctx.precision.autocast(ctx.device) if ctx.precision is not None else contextlib.nullcontext()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), autocast:
                losses = [float(model(**batch).loss) for batch in batches]
        finally:
            model.train(was_training)
        return sum(losses) / len(losses) if losses else float("nan")

    def _head_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for _, p in self.head)

    def _payload(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The tensors and metadata written by ``save_adapter``."""
        import numpy as np
        import torch

        r = self.result
        b = rice_parameter(r.kept, r.n)
        tensors: dict[str, Any] = {
            "compeft.positions": torch.from_numpy(np.frombuffer(golomb_encode(r.indices.numpy(), b),
                                                                dtype=np.uint8).copy()),
        }
        if r.values is None:
            tensors["compeft.signs"] = torch.from_numpy(np.frombuffer(pack_signs(r.signs.numpy()),
                                                                      dtype=np.uint8).copy())
            tensors["compeft.scale"] = torch.tensor([r.scale], dtype=torch.float32)
        else:
            tensors["compeft.values"] = r.values.to(torch.float32)
        for name, p in self.head:
            tensors[f"head.{name}"] = p.detach().contiguous().cpu()
        meta = {"rice_b": str(b), "kept": str(r.kept), "n": str(r.n),
                "parameters": json.dumps([[name, list(init.shape)] for name, _, init in self.tracked])}
        return tensors, meta

    def _payload_bytes(self) -> int:
        tensors, _ = self._payload()
        return sum(t.numel() * t.element_size() for t in tensors.values())

    def save_adapter(self, model: Any, path: str) -> None:
        """The compressed update (Golomb-coded positions, sign bits, the scalar) and the head in full."""
        if self.result is None:
            return super().save_adapter(model, path)
        from safetensors.torch import save_file

        os.makedirs(path, exist_ok=True)
        tensors, meta = self._payload()
        save_file(tensors, os.path.join(path, "compeft.safetensors"), metadata=meta)

    def measurements(self, model: Any) -> dict[str, float]:
        return dict(self.facts)

    def merge(self, model: Any) -> Any:
        return model  # the compressed update is already in the parameters; earlier methods merge it
