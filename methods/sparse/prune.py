"""Pruning methods (kind ``prune``): magnitude, Wanda and SparseGPT, unstructured or N:M.

``--methods magnitude:sparsity=0.5``, ``wanda:sparsity=2:4``, ``sparsegpt:sparsity=0.5``.
Like the quantizers, they act on every linear layer of the backbone (never the task's new
head, nor a causal LM's output embedding) and draw calibration batches from the task (Wanda
and SparseGPT). Alone in a training cell they retrain what survived: the pruned layers'
remaining weights and biases (the mask kept) and the task's head, nothing else (the
prune-then-retrain pipeline of Han et al. 2015); evaluation-only cells (``--max-steps 0``)
are one-shot pruning.

Composition (``sparsegpt:sparsity=2:4+lora``, the LoRAPrune setting; ``+full``): the
pruned layers are ``SparseLinear`` (``suite.methods.sparse.masks``) whose forward uses
``W * M``, so full fine-tuning never revives a pruned weight. A LoRA update is dense; with
``mask_adapter=true`` (default) the layer computes ``M * (W + s B A)``, so what is kept
sparse is the whole merged layer, during training, at evaluation and in the exported
(merged) model. ``mask_adapter=false`` keeps only the base sparse and the adapter as a
dense side path (``sparsity`` is then measured on the merged weights, and drops).

Measurements: ``sparsity`` (zeros in the pruned layers' effective weights, after
training), ``sparse_size_bytes`` (the pruned base weights in a sparse storage format, see
``masks.sparse_bytes``), ``model_size_bytes`` (every parameter and buffer, the pruned base
weights at their sparse size; a composed adapter's own parameters count dense),
``prune_rel_error_mean/max`` and per layer (``||W - W_pruned||_F / ||W||_F``; SparseGPT
trades a larger weight error for a smaller output error), ``calibration_time_s``. Plugin
module: torch is imported lazily.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from suite.errors import CellFailure, UserError
from suite.method import Method, MethodContext, MethodTarget
from suite.methods.common import measurements
from suite.registry import register_method


@dataclass
class PruneConfig:
    sparsity: str = "0.5"  # the fraction pruned (0.5) or N:M (2:4: keep 2 of every 4)
    skip: tuple[str, ...] = ()  # layer-name substrings left dense
    mask_adapter: bool = True  # a composed LoRA's update is masked too (sparse merged model)
    per_layer_metrics: bool = True

    def __post_init__(self) -> None:
        from suite.methods.sparse.masks import SparsityPattern

        SparsityPattern.parse(self.sparsity)  # ValueError -> a UserError naming the method


@dataclass
class CalibratedPruneConfig(PruneConfig):
    calib_batches: int = 8
    # True: prune stage by stage, each from the inputs the already pruned layers produce
    # (SparseGPT's and Wanda's reference procedure); False: one dense pass for all layers.
    sequential: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.calib_batches < 1:
            raise ValueError("calib_batches must be at least 1")


@dataclass
class SparseGptConfig(CalibratedPruneConfig):
    damp: float = 0.01  # fraction of the mean Hessian diagonal added (GPTQ's dampening)
    block: int = 128  # columns per lazy-update block; unstructured masks are chosen per block

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.damp < 1:
            raise ValueError("damp must be in [0, 1)")
        if self.block < 1:
            raise ValueError("block must be a positive integer")


class PruneMethod(Method):
    """Shared apply(): find the layers, calibrate, choose masks, install ``SparseLinear``."""

    kind = "prune"
    mergeable = True
    needs_calibration = False
    metrics = measurements.PRUNE

    def __init__(self, config: Any = None):
        super().__init__(config)
        from suite.methods.sparse.masks import SparsityPattern

        self.pattern = SparsityPattern.parse(self.config.sparsity)
        self.errors: dict[str, float] = {}
        self.calibration_s = 0.0

    # -- before any cell runs --------------------------------------------------------------------
    def unsupported(self, target: MethodTarget) -> str | None:
        """An N:M pattern a layer's input dimension cannot take, read off the model's config."""
        if not self.pattern.structured:
            return None
        skeleton = target.skeleton()
        if skeleton is None:
            return None
        from torch import nn

        for name, module in skeleton.named_modules():
            # skeleton names lack the task model's prefix ("bert."): a skip matches either way
            skipped = any(s and (s in name or s.endswith(name)) for s in self.config.skip)
            if isinstance(module, nn.Linear) and not skipped:
                why = self.pattern.check_layer(name, module.in_features)
                if why:
                    return f"{why}; leave it dense with skip={name} or use an unstructured sparsity (0.5)"
        return None

    # -- the verb --------------------------------------------------------------------------------
    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from suite.methods.common.new_modules import not_adapted, train_new_modules
        from suite.methods.quant import engine
        from suite.methods.sparse.masks import SparseLinear

        start = time.perf_counter()
        layers = engine.target_linears(model, not_adapted(model, ctx), tuple(self.config.skip))
        for name, lin in layers.items():
            why = self.pattern.check_layer(name, lin.in_features)
            if why:
                raise UserError(f"{self.name}: {why}; leave it dense with skip={name} or use an "
                                f"unstructured sparsity (0.5)")
        batches = ctx.calibration_batches(self.config.calib_batches) if self.needs_calibration else None
        was_training = model.training
        model.eval()
        self.prune(model, layers, batches)
        model.train(was_training)
        # retrain what survived (masked) and the task's head; a method composed to the right
        # (lora: frozen base; full: everything) chooses its own parameters
        for p in model.parameters():
            p.requires_grad_(False)
        for module in model.modules():
            if isinstance(module, SparseLinear):
                for p in module.parameters():
                    p.requires_grad_(True)
        train_new_modules(ctx)
        self.calibration_s = time.perf_counter() - start
        return model

    def prune(self, model: Any, layers: dict, batches: list | None) -> None:
        """Prune stage by stage (sequential) or all at once; subclasses choose the masks."""
        from suite.methods.quant import algorithms as A

        if not self.needs_calibration:
            self.prune_stage(model, layers, None)
            return
        if not self.config.sequential:
            self.prune_stage(model, layers, A.collect_input_stats(model, layers, batches, hessian=self.hessian))
            return
        for stage in A.forward_stages(model, layers, batches[0]):
            stage_layers = {name: layers[name] for name in stage}
            stats = A.collect_input_stats(model, stage_layers, batches, stop_when_seen=True,
                                          hessian=self.hessian)
            self.prune_stage(model, stage_layers, stats)

    hessian = False

    def prune_stage(self, model: Any, layers: dict, stats: dict | None) -> None:
        from suite.methods.quant import engine
        from suite.methods.quant.algorithms import relative_error
        from suite.methods.sparse.masks import SparseLinear

        for name, lin in layers.items():
            if stats is not None and stats[name].n == 0:
                raise CellFailure(f"{self.name}: layer '{name}' saw no calibration input; skip it with skip={name}")
            weight, keep = self.choose(lin, None if stats is None else stats[name])
            self.errors[name] = relative_error(lin.weight, weight * keep)
            engine.set_module(model, name, SparseLinear.from_linear(lin, weight, keep))

    def choose(self, lin: Any, stats: Any) -> tuple[Any, Any]:
        """(new weight, keep mask) of one layer."""
        raise NotImplementedError

    # -- hooks of the loop -----------------------------------------------------------------------
    def on_train_begin(self, model: Any, state: Any) -> None:
        self._mask_adapters(model)

    def after_training(self, model: Any, ctx: MethodContext) -> Any:
        from suite.methods.sparse.masks import SparseLinear

        self._mask_adapters(model)
        for module in model.modules():
            if isinstance(module, SparseLinear):
                module.zero_pruned()
        return model

    def _mask_adapters(self, model: Any) -> None:
        if self.config.mask_adapter:
            from suite.methods.sparse.masks import mask_adapters

            mask_adapters(model)

    # -- cost and export -------------------------------------------------------------------------
    def measurements(self, model: Any) -> dict[str, float]:
        import torch

        from suite.methods.sparse import masks as sparse

        wrappers = {id(getattr(m, "base_layer", None)): m for m in model.modules()
                    if isinstance(getattr(m, "base_layer", None), sparse.SparseLinear)}
        zeros = total = sparse_size = dense_size = 0
        for module in model.modules():
            if not isinstance(module, sparse.SparseLinear):
                continue
            w = sparse.effective_weight(wrappers.get(id(module), module))
            zeros += int((w == 0).sum())
            total += w.numel()
            # the pruned base in sparse storage; a composed adapter's own parameters stay dense
            sparse_size += sparse.sparse_bytes(module.mask, module.weight.element_size(), self.pattern)
            dense_size += module.weight.numel() * module.weight.element_size()
        if not total:
            return {}
        seen: set[int] = set()
        model_dense = 0
        for t in list(model.parameters()) + list(model.buffers()):
            if id(t) not in seen and t.dtype != torch.bool:  # masks are not stored: zeros are
                seen.add(id(t))
                model_dense += t.numel() * t.element_size()
        errors = list(self.errors.values())
        out = {
            "sparsity": zeros / total,
            "pruned_params": float(total),
            "pruned_layers": float(len(errors)),
            "sparse_size_bytes": float(sparse_size),
            "model_size_bytes": float(model_dense - dense_size + sparse_size),
            "calibration_time_s": self.calibration_s,
            "prune_rel_error_mean": sum(errors) / max(len(errors), 1),
            "prune_rel_error_max": max(errors) if errors else float("nan"),
        }
        if self.config.per_layer_metrics:
            out.update({f"prune_rel_error/{n}": e for n, e in self.errors.items()})
        return out

    def merge(self, model: Any) -> Any:
        from suite.methods.sparse.masks import unprune

        return unprune(model, keep_mask=self.config.mask_adapter)


@register_method("magnitude", kind="prune",
                 summary="magnitude pruning: keep the largest |W| per layer (unstructured or N:M)",
                 source="suite", paper="Han et al. 2015; the baseline of SparseGPT and Wanda")
class MagnitudePrune(PruneMethod):
    Config = PruneConfig

    def choose(self, lin: Any, stats: Any) -> tuple[Any, Any]:
        from suite.methods.sparse.masks import magnitude_mask

        return lin.weight.detach(), magnitude_mask(lin.weight, self.pattern)


@register_method("wanda", kind="prune",
                 summary="Wanda: prune by |W| x input-feature norm per output, no weight update",
                 source="suite", paper="Sun et al. 2024, Wanda (arXiv:2306.11695)")
class Wanda(PruneMethod):
    Config = CalibratedPruneConfig
    needs_calibration = True

    def choose(self, lin: Any, stats: Any) -> tuple[Any, Any]:
        from suite.methods.sparse.masks import wanda_mask

        return lin.weight.detach(), wanda_mask(lin.weight, stats.sq_sum, self.pattern)


@register_method("sparsegpt", kind="prune",
                 summary="SparseGPT: OBS pruning with GPTQ's Hessian sweep, remaining weights updated",
                 source="suite", paper="Frantar & Alistarh 2023, SparseGPT (arXiv:2301.00774)")
class SparseGpt(PruneMethod):
    Config = SparseGptConfig
    needs_calibration = True
    hessian = True

    def choose(self, lin: Any, stats: Any) -> tuple[Any, Any]:
        from suite.methods.quant.algorithms import sparsegpt_prune

        c, p = self.config, self.pattern
        w, keep = sparsegpt_prune(lin.weight, stats.hessian_matrix(), p.fraction, p.n, p.m,
                                  damp=c.damp, block_size=c.block)
        return w.to(lin.weight.dtype), keep
