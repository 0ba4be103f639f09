"""The LoRA family through peft: LoRA, PiSSA, and LoRA's reparameterisations and initialisations.

LoRA (Hu et al. 2021, eq. 3): h = W0 x + (alpha / r) B A x, with A random and B = 0.
PiSSA (Meng et al. 2024, eq. 2-4): A, B from the top-r singular triplets of W,
W_res = W - B A frozen, so adapter + residual reproduce W at initialisation (peft's
``init_lora_weights="pissa"``).

The other members are declared tuners (``suite.methods.peft.tuners.PeftTuner``): rsLoRA, DoRA,
OLoRA, MiCA, CorDA, EVA and LoRA-GA build peft's ``LoraConfig`` (``LoraFamilyTuner``), AdaLoRA its
``AdaLoraConfig``. Those whose initialisation needs data (CorDA, EVA, LoRA-GA) draw calibration
batches from the task through ``ctx.calibration_batches``. AdaLoRA's rank schedule is driven by
the shared training loop's hooks (``on_step_end``, which runs before the gradients are cleared,
calls peft's ``update_and_allocate``), with ``total_step`` set from ``state.total_steps``.

Not exposed, with the reason: LoRA sub-variants that need a quantised base or extra inputs
(qalora, alora, arrow, kasa, bdlora, velora, monteclora), and ``xlora`` (mixes already-trained
LoRA adapters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from suite.method import MethodContext
from suite.methods.peft.library import LORA_FAMILY_LR, LoraConfig, PeftMethod
from suite.methods.peft.tuners import PeftTuner, Targets
from suite.registry import register_method

__all__ = ["Lora", "LoraConfig", "Pissa", "PissaConfig"]

# Our LoRA fields -> peft's LoraConfig arguments, shared by every tuner that builds a LoraConfig.
LORA_ARGS = {"r": "r", "alpha": "lora_alpha", "dropout": "lora_dropout", "rslora": "use_rslora"}


@register_method("lora", kind="peft", summary="low-rank adapters on the linear layers",
                 source="peft", paper="Hu et al. 2021, LoRA (arXiv:2106.09685)")
class Lora(PeftMethod):
    Config = LoraConfig
    peft_config_class = "LoraConfig"
    default_lr = LORA_FAMILY_LR

    def peft_kwargs(self, model: Any, ctx: MethodContext) -> dict[str, Any]:
        c = self.config
        return {arg: getattr(c, name) for name, arg in LORA_ARGS.items()}

    @classmethod
    def peft_argument_map(cls) -> tuple[dict[str, str], dict[str, Any]]:
        return {**LORA_ARGS, "target_modules": "target_modules"}, {}


@dataclass
class PissaConfig(LoraConfig):
    alpha: float = 8.0  # PiSSA keeps alpha = r so the principal part is reproduced at init
    fast_svd_niter: int = 0  # 0: exact SVD; n > 0: randomised SVD with n subspace iterations

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fast_svd_niter < 0:
            raise ValueError("fast_svd_niter must be >= 0")


@register_method("pissa", kind="peft",
                 summary="LoRA initialised from the principal singular vectors, residual frozen",
                 source="peft", paper="Meng et al. 2024, PiSSA (arXiv:2404.02948)")
class Pissa(Lora):
    rank_bounded = True  # its A, B come from the top-r SVD of each weight
    Config = PissaConfig
    # The same step as LoRA, so the two compare at equal budget. At 2e-4 the fresh task head
    # barely trained in 300 steps (MiniLM, SST-2, query/value: 0.56 dev accuracy; 0.80 at 5e-4).
    default_lr = LORA_FAMILY_LR

    def peft_kwargs(self, model: Any, ctx: MethodContext) -> dict[str, Any]:
        kwargs = super().peft_kwargs(model, ctx)
        n = self.config.fast_svd_niter
        kwargs["init_lora_weights"] = f"pissa_niter_{n}" if n else "pissa"
        return kwargs

    @classmethod
    def peft_argument_map(cls) -> tuple[dict[str, str], dict[str, Any]]:
        fields, _ = super().peft_argument_map()
        return fields, {"init_lora_weights": "pissa"}  # the exact SVD (fast_svd_niter=0)


# -- typed configs of the tuners -----------------------------------------------------------------
@dataclass
class RsLoraConfig(LoraConfig):
    rslora: bool = True  # scaling alpha / sqrt(r) instead of alpha / r


@dataclass
class CordaArgs(LoraConfig):
    alpha: float = 8.0  # like PiSSA: alpha = r, the adapter carries the chosen components exactly
    corda_method: Literal["kpm", "ipm"] = "kpm"  # knowledge-preserved or instruction-previewed
    calibration_batches: int = 8


@dataclass
class EvaArgs(LoraConfig):
    rho: float = 2.0  # rank redistribution budget factor
    tau: float = 0.99  # cosine-similarity threshold for convergence of the incremental SVD
    calibration_batches: int = 8


@dataclass
class LoraGaArgs(LoraConfig):
    direction: Literal["ArBr", "A2rBr", "ArB2r", "random"] = "ArB2r"
    scale: Literal["stable", "weight_svd", "gd_scale", "unit"] = "stable"
    stable_gamma: int = 16
    calibration_batches: int = 4


@dataclass
class AdaLoraArgs:
    target_r: int = 8  # average final rank per matrix
    init_r: int = 12  # initial rank per matrix
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: Targets = None
    tinit_ratio: float = 0.1  # fraction of steps before pruning starts
    tfinal_ratio: float = 0.2  # fraction of steps at the end with a fixed budget
    delta_t: int = 10  # steps between budget re-allocations
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.target_r <= self.init_r:
            raise ValueError("need 0 < target_r <= init_r")
        if not (self.tinit_ratio >= 0 and self.tfinal_ratio >= 0 and self.tinit_ratio + self.tfinal_ratio < 1):
            raise ValueError("tinit_ratio + tfinal_ratio must be in [0, 1)")


# -- the tuners --------------------------------------------------------------------------------------
class LoraFamilyTuner(PeftTuner):
    """A member of the LoRA family: peft's LoraConfig with LoRA's arguments, trained at LoRA's step."""

    peft_config_class = "LoraConfig"
    Config = LoraConfig
    renames = LORA_ARGS
    default_lr = LORA_FAMILY_LR


_CALIBRATION = ("calibration_batches",)  # read by the prepare / finish hooks, not a peft argument


@register_method("rslora", kind="peft", summary="LoRA with rank-stabilised scaling alpha/sqrt(r)",
                 source="peft", paper="Kalajdzievski 2023, A Rank Stabilization Scaling Factor for "
                                      "Fine-Tuning with LoRA (arXiv:2312.03732)")
class PeftRslora(LoraFamilyTuner):
    Config = RsLoraConfig


@register_method("dora", kind="peft", summary="weight-decomposed LoRA: trainable magnitude, LoRA on the direction",
                 source="peft", paper="Liu et al. 2024, DoRA: Weight-Decomposed Low-Rank Adaptation (arXiv:2402.09353)")
class PeftDora(LoraFamilyTuner):
    fixed = {"use_dora": True}


@register_method("olora", kind="peft",
                 summary="LoRA initialised from a QR decomposition of W (orthonormal A, B), residual frozen",
                 source="peft", paper="Buyukakyuz 2024, OLoRA: Orthonormal Low-Rank Adaptation (arXiv:2406.01775)")
class PeftOlora(LoraFamilyTuner):
    fixed = {"init_lora_weights": "olora"}
    rank_bounded = True


@register_method("mica", kind="peft", summary="LoRA with B frozen to the minor singular vectors of W, only A trains",
                 source="peft", paper="Minor Component Adaptation, MiCA (arXiv:2604.01694)")
class PeftMica(LoraFamilyTuner):
    fixed = {"init_lora_weights": "mica"}


@register_method("corda", kind="peft",
                 summary="LoRA from a context-oriented SVD of W times the input covariance (task data calibrates it)",
                 source="peft", paper="Yang et al. 2024, CorDA: Context-Oriented Decomposition Adaptation "
                                      "(arXiv:2406.05223)")
class PeftCorda(LoraFamilyTuner):
    Config = CordaArgs
    fixed = {"init_lora_weights": "corda"}
    skip = ("corda_method", *_CALIBRATION)
    rank_bounded = True

    def peft_kwargs(self, model: Any, ctx: MethodContext) -> dict[str, Any]:
        from peft.tuners.lora.config import CordaConfig

        return {**super().peft_kwargs(model, ctx), "corda_config": CordaConfig(corda_method=self.config.corda_method)}

    def prepare(self, model: Any, peft_config: Any, ctx: MethodContext) -> None:
        import torch
        from peft.tuners.lora.corda import preprocess_corda

        batches = ctx.calibration_batches(self.config.calibration_batches)

        @torch.no_grad()
        def run_model() -> None:
            was = model.training
            model.eval()
            for batch in batches:  # peft's CorDA hook takes one example per forward pass
                inputs = {k: v for k, v in batch.items() if k != "labels"}
                mask = batch.get("attention_mask")
                for i in range(next(iter(inputs.values())).shape[0]):
                    if "input_ids" in inputs:  # a sequence without its padding
                        length = int(mask[i].sum()) if mask is not None else inputs["input_ids"].shape[1]
                        model(**{k: v[i:i + 1, :length] for k, v in inputs.items()})
                    else:
                        model(**{k: v[i:i + 1] for k, v in inputs.items()})
            model.train(was)

        preprocess_corda(model, peft_config, run_model=run_model)


# peft's EVA cycles its calibration batches until every layer's components converge, with no
# bound: a cell whose batches hold too few tokens would never end. It is bounded here.
EVA_MAX_PASSES = 50


@register_method("eva", kind="peft", summary="LoRA A from the SVD of layer inputs on task data, ranks redistributed",
                 source="peft", paper="Paischer et al. 2024, One Initialization to Rule them All: Explained "
                                      "Variance Adaptation (arXiv:2410.07170)")
class PeftEva(LoraFamilyTuner):
    Config = EvaArgs
    fixed = {"init_lora_weights": "eva"}
    skip = ("rho", "tau", *_CALIBRATION)

    def peft_kwargs(self, model: Any, ctx: MethodContext) -> dict[str, Any]:
        from peft import EvaConfig

        c = self.config
        # Label masking assumes token-level labels (causal LM); a classifier has one label per sequence.
        eva = EvaConfig(rho=c.rho, tau=c.tau, use_label_mask=ctx.task_kind == "causal-lm")
        return {**super().peft_kwargs(model, ctx), "eva_config": eva}

    def finish(self, model: Any, ctx: MethodContext) -> Any:
        from peft import initialize_lora_eva_weights

        from suite.errors import CellFailure

        batches = ctx.calibration_batches(self.config.calibration_batches)
        tokens = "input_ids" in batches[0]
        needed = int(self.config.r * self.config.rho)  # components EVA computes per layer
        counted = [_eva_tokens(b, ctx.task_kind == "causal-lm") for b in batches] if tokens else [needed]
        if min(counted) < needed:
            raise CellFailure(f"eva needs at least r*rho = {needed} tokens in every calibration batch "
                              f"(label tokens on a causal LM) and a batch has {min(counted)}; use longer "
                              f"examples, a larger --batch-size, or a smaller r or rho")
        calls = 0

        def forward(module: Any, inputs: dict) -> Any:
            nonlocal calls
            calls += 1
            if calls > EVA_MAX_PASSES * len(batches):
                raise CellFailure(f"eva's components did not converge in {EVA_MAX_PASSES} passes over "
                                  f"{len(batches)} calibration batches (tau={self.config.tau}); lower tau "
                                  f"or give more calibration batches")
            return module(**inputs)

        was = model.training
        model.eval()
        # Token inputs: peft's language-modeling helpers pick the unpadded (label) tokens. Other
        # inputs (image patches): every position of every example is a row of the SVD.
        helpers = {} if tokens else {"prepare_model_inputs_fn": None, "prepare_layer_inputs_fn": _all_positions}
        initialize_lora_eva_weights(model, dataloader=batches, forward_fn=forward, show_progress_bar=False,
                                    **helpers)
        model.train(was)
        return model


def _all_positions(layer_input: Any, model_input: Any, layer_name: str) -> Any:
    """A layer's input as (positions, features): every example and position enters EVA's SVD."""
    if isinstance(layer_input, (tuple, list)):
        layer_input = layer_input[0]
    return layer_input.reshape(-1, layer_input.shape[-1])


def _eva_tokens(batch: dict, label_mask: bool) -> int:
    """Rows EVA's SVD sees from a batch: unmasked label tokens on a causal LM, else attended tokens."""
    if label_mask and "labels" in batch:
        return int((batch["labels"] != -100).sum())
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


@register_method("lora-ga", kind="peft", summary="LoRA initialised from the SVD of the full gradient on task batches",
                 source="peft", paper="Wang et al. 2024, LoRA-GA: Low-Rank Adaptation with Gradient Approximation "
                                      "(arXiv:2407.05000)")
class PeftLoraGa(LoraFamilyTuner):
    Config = LoraGaArgs
    fixed = {"init_lora_weights": "lora_ga"}
    skip = ("direction", "scale", "stable_gamma", *_CALIBRATION)
    rank_bounded = True

    def peft_kwargs(self, model: Any, ctx: MethodContext) -> dict[str, Any]:
        from peft import LoraGAConfig

        c = self.config
        ga = LoraGAConfig(direction=c.direction, scale=c.scale, stable_gamma=c.stable_gamma)
        return {**super().peft_kwargs(model, ctx), "lora_ga_config": ga}

    def prepare(self, model: Any, peft_config: Any, ctx: MethodContext) -> None:
        import torch
        from peft.tuners.lora.loraga import preprocess_loraga

        batches = ctx.calibration_batches(self.config.calibration_batches)

        def train_step() -> None:
            with torch.enable_grad():
                for batch in batches:
                    (model(**batch).loss / len(batches)).backward()

        preprocess_loraga(model, peft_config, train_step)


@register_method("adalora", kind="peft",
                 summary="SVD-form LoRA whose rank budget is pruned by importance during training",
                 source="peft", paper="Zhang et al. 2023, AdaLoRA: Adaptive Budget Allocation for "
                                      "Parameter-Efficient Fine-Tuning (arXiv:2303.10512)")
class PeftAdalora(PeftTuner):
    peft_config_class = "AdaLoraConfig"
    Config = AdaLoraArgs
    renames = {"alpha": "lora_alpha", "dropout": "lora_dropout", "delta_t": "deltaT"}
    skip = ("tinit_ratio", "tfinal_ratio")
    default_lr = 1e-3

    def peft_kwargs(self, model: Any, ctx: MethodContext) -> dict[str, Any]:
        c = self.config
        total = getattr(ctx.recipe, "max_steps", None) or 1000  # provisional: on_train_begin sets the real one
        schedule = {"tinit": int(c.tinit_ratio * total), "tfinal": int(c.tfinal_ratio * total), "total_step": total}
        return {**super().peft_kwargs(model, ctx), **schedule}

    def on_train_begin(self, model: Any, state: Any) -> None:
        total = int(state.total_steps)
        config = model.peft_config["default"]
        config.total_step = total
        config.tinit = int(self.config.tinit_ratio * total)
        config.tfinal = int(self.config.tfinal_ratio * total)
        model.base_model.rankallocator.set_total_step(total)

    def on_step_end(self, model: Any, step: int, state: Any) -> None:
        # The shared loop calls this after optimizer.step() and before clearing gradients,
        # which is where peft's update_and_allocate expects to run.
        model.base_model.update_and_allocate(step)

    def measurements(self, model: Any) -> dict[str, float]:
        pattern = model.peft_config["default"].rank_pattern or {}
        ranks = [int(sum(bool(x) for x in mask)) for mask in pattern.values()]
        return {"adalora_mean_rank": sum(ranks) / len(ranks)} if ranks else {}
