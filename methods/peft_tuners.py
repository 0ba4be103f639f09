"""The peft tuner zoo: every tuner of the installed peft by name, with defaults per model family.

One table row per method: a typed ``Config`` (the arguments users set), the peft config
class, how the Config maps onto peft's arguments, which modules it targets (per family,
from ``suite.methods.targets``), whether it merges, and its paper. Rows whose
initialisation needs data (CorDA, EVA, LoRA-GA) draw calibration batches from the task
through ``ctx.calibration_batches``. AdaLoRA's rank schedule is driven by the shared
training loop's hooks (``on_step_end``, which runs before the gradients are cleared,
calls peft's ``update_and_allocate``), with ``total_step`` set from
``state.total_steps``.

Not exposed, with the reason: ``xlora`` (mixes already-trained LoRA adapters), ``poly`` and
``multitask-prompt-tuning`` (need a task id per example), ``cpt`` (needs per-token context
masks of a causal LM), ``shadow`` (peft 0.21.2 fails on BERT and Llama: 'ShadowCarrier' has
no attribute 'view'), and LoRA sub-variants that need a quantised base or extra inputs
(qalora, alora, arrow, kasa, bdlora, velora, monteclora).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from suite.method import MethodContext, MethodTarget
from suite.methods.peft_wrapper import LORA_FAMILY_LR, LoraConfig, PeftMethod
from suite.methods.targets import DEFAULT_ADAPTER_TARGETS
from suite.registry import register_method

Targets = tuple[str, ...] | None


# -- typed configs -------------------------------------------------------------------------------
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


@dataclass
class RankArgs:
    """Tuners whose only size knob is a rank (plus targets and dropout)."""

    r: int = 8
    dropout: float = 0.0
    target_modules: Targets = None

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ValueError("r must be a positive integer")


@dataclass
class LycorisArgs(RankArgs):
    alpha: float = 8.0
    rank_dropout: float = 0.0
    module_dropout: float = 0.0


@dataclass
class LokrArgs(LycorisArgs):
    decompose_both: bool = False
    decompose_factor: int = -1


@dataclass
class VeraArgs(RankArgs):
    r: int = 256  # rank of the shared frozen random projections
    d_initial: float = 0.1


@dataclass
class RandLoraArgs(RankArgs):
    r: int = 32
    alpha: float = 640.0  # the paper's 20 * r
    sparse: bool = False


@dataclass
class Ia3Args:
    target_modules: Targets = None
    feedforward_modules: Targets = None


@dataclass
class OftArgs:
    block_size: int = 32
    coft: bool = False
    block_share: bool = False
    module_dropout: float = 0.0
    target_modules: Targets = None


@dataclass
class BoftArgs:
    block_size: int = 4
    butterfly_factor: int = 1
    dropout: float = 0.0
    target_modules: Targets = None


@dataclass
class HraArgs(RankArgs):
    apply_gs: bool = False  # Gram-Schmidt orthogonalisation of the reflections


@dataclass
class MissArgs(RankArgs):
    r: int = 16
    mini_r: int = 1


@dataclass
class ShiraArgs(RankArgs):
    r: int = 32  # trainable entries per matrix: r * (rows + columns)
    mask_type: Literal["random"] = "random"


@dataclass
class FrequencyArgs:
    n_frequency: int = 1000  # trainable spectral coefficients per matrix
    scaling: float = 150.0
    target_modules: Targets = None


@dataclass
class WaveftArgs(FrequencyArgs):
    scaling: float = 25.0
    wavelet_family: str = "db1"


@dataclass
class VbloraArgs(RankArgs):
    r: int = 4
    num_vectors: int = 256
    vector_length: int = 0  # 0: the largest power of two <= 256 dividing every target dimension
    topk: int = 2


@dataclass
class BlockArgs:
    block_size: int = 0  # 0: the largest power of two <= 256 (c3a) / 64 (road) dividing the dimensions
    target_modules: Targets = None


@dataclass
class RoadArgs(BlockArgs):
    variant: Literal["road_1", "road_2", "road_4"] = "road_1"


@dataclass
class DeloraArgs(RankArgs):
    delora_lambda: float = 15.0


@dataclass
class GraloraArgs(RankArgs):
    r: int = 32
    alpha: float = 64.0
    k: int = 2  # number of sub-blocks per dimension
    hybrid_r: int = 0


@dataclass
class HiraArgs(RankArgs):
    r: int = 32


@dataclass
class LilyArgs(RankArgs):
    r: int = 32
    num_b: int = 2  # shared high-level projectors
    stride_a: int = 1
    scaling: float = 1.0


@dataclass
class GloraArgs(RankArgs):
    pass


@dataclass
class DeftArgs(RankArgs):
    decomposition_method: Literal["relu", "qr"] = "relu"


@dataclass
class PsoftArgs(RankArgs):
    r: int = 32
    alpha: float = 32.0


@dataclass
class PveraArgs(VeraArgs):
    pass


@dataclass
class TinyLoraArgs(RankArgs):
    r: int = 2
    u: int = 64  # trainable vector length per matrix


@dataclass
class UniLoraArgs(RankArgs):
    r: int = 4
    theta_d_length: int = 256  # length of the shared trainable vector


@dataclass
class FrodArgs:
    sparse_rate: float = 0.01
    dropout: float = 0.0
    target_modules: Targets = None


@dataclass
class TargetsOnly:
    target_modules: Targets = None


@dataclass
class OsfArgs:
    effective_rank: int = 0  # 0: peft's default (half of each matrix's rank is preserved)
    target_modules: Targets = None


@dataclass
class AdamssArgs:
    r: int = 32
    num_subspaces: int = 4
    subspace_rank: int = 1
    target_modules: Targets = None


@dataclass
class PeanutArgs(RankArgs):
    r: int = 32
    depth: int = 0
    act_fn: str = "relu"


@dataclass
class SupertuningArgs:
    sparsity: float = 0.99
    target_modules: Targets = None


@dataclass
class VirtualTokenArgs:
    num_virtual_tokens: int = 20


@dataclass
class PrefixArgs(VirtualTokenArgs):
    prefix_projection: bool = False  # reparameterise the prefix through an MLP


@dataclass
class PtuningArgs(VirtualTokenArgs):
    encoder_hidden_size: int = 128
    encoder_type: Literal["MLP", "LSTM"] = "MLP"


@dataclass
class AdaptionPromptArgs:
    adapter_len: int = 10
    adapter_layers: int = 0  # 0: every layer


@dataclass
class TrainableTokensArgs:
    token_indices: tuple[int, ...] = ()  # () : the tokenizer's special tokens


# -- helpers -----------------------------------------------------------------------------------
def _lora(c: LoraConfig, **extra: Any) -> dict[str, Any]:
    return dict(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, use_rslora=c.rslora, **extra)


def _pow2_divisor(model: Any, keys: list[str] | None, cap: int) -> int:
    """Largest power of two <= cap dividing the in and out sizes of every targeted linear layer."""
    import math

    import torch

    from suite.methods.targets import matching_modules

    dims = [d for _, m in matching_modules(model, keys or [], torch.nn.Linear)
            for d in (m.in_features, m.out_features)]
    g = 0
    for d in dims:
        g = math.gcd(g, d)
    size = cap
    while size > 1 and (g == 0 or g % size):
        size //= 2
    return size


Kwargs = Callable[[Any, Any, MethodContext, PeftMethod], dict[str, Any]]


def _register(name: str, *, peft_class: str, config: type, kwargs: Kwargs, summary: str, paper: str,
              target_kind: str | None = DEFAULT_ADAPTER_TARGETS, mergeable: bool = True, default_lr: float | None = None,
              families: tuple[str, ...] = (), base: type = PeftMethod) -> type:
    """Make and register one PeftMethod subclass for a table row."""

    def peft_kwargs(self: PeftMethod, model: Any, ctx: MethodContext) -> dict[str, Any]:
        return kwargs(self.config, model, ctx, self)

    cls_name = "Peft" + "".join(p.capitalize() for p in name.replace("-", "_").split("_"))
    attrs = {"Config": config, "peft_config_class": peft_class, "mergeable": mergeable,
             "target_kind": target_kind, "default_lr": default_lr, "families": families,
             "peft_kwargs": peft_kwargs, "__module__": __name__, "__qualname__": cls_name,
             "__doc__": f"{summary} (peft {peft_class}). Paper: {paper}."}
    cls = type(cls_name, (base,), attrs)
    globals()[cls_name] = cls
    register_method(name, kind="peft", summary=summary, source="peft", paper=paper)(cls)
    return cls


# -- LoRA family ---------------------------------------------------------------------------------
_register("rslora", peft_class="LoraConfig", config=RsLoraConfig, default_lr=LORA_FAMILY_LR,
          kwargs=lambda c, m, ctx, s: _lora(c),
          summary="LoRA with rank-stabilised scaling alpha/sqrt(r)",
          paper="Kalajdzievski 2023, A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA "
                "(arXiv:2312.03732)")
_register("dora", peft_class="LoraConfig", config=LoraConfig, default_lr=LORA_FAMILY_LR,
          kwargs=lambda c, m, ctx, s: _lora(c, use_dora=True),
          summary="weight-decomposed LoRA: trainable magnitude, LoRA on the direction",
          paper="Liu et al. 2024, DoRA: Weight-Decomposed Low-Rank Adaptation (arXiv:2402.09353)")
_register("olora", peft_class="LoraConfig", config=LoraConfig, default_lr=LORA_FAMILY_LR,
          kwargs=lambda c, m, ctx, s: _lora(c, init_lora_weights="olora"),
          summary="LoRA initialised from a QR decomposition of W (orthonormal A, B), residual frozen",
          paper="Buyukakyuz 2024, OLoRA: Orthonormal Low-Rank Adaptation (arXiv:2406.01775)")
_register("mica", peft_class="LoraConfig", config=LoraConfig, default_lr=LORA_FAMILY_LR,
          kwargs=lambda c, m, ctx, s: _lora(c, init_lora_weights="mica"),
          summary="LoRA with B frozen to the minor singular vectors of W, only A trains",
          paper="Minor Component Adaptation, MiCA (arXiv:2604.01694)")


class _CordaMethod(PeftMethod):
    def prepare(self, model: Any, peft_config: Any, ctx: MethodContext) -> None:
        import torch
        from peft.tuners.lora.corda import preprocess_corda

        batches = ctx.calibration_batches(self.config.calibration_batches)

        @torch.no_grad()
        def run_model() -> None:
            was = model.training
            model.eval()
            for batch in batches:  # peft's CorDA hook takes one sequence per forward pass
                mask = batch.get("attention_mask")
                for i in range(batch["input_ids"].shape[0]):
                    length = int(mask[i].sum()) if mask is not None else batch["input_ids"].shape[1]
                    model(**{k: v[i:i + 1, :length] for k, v in batch.items() if k != "labels"})
            model.train(was)

        preprocess_corda(model, peft_config, run_model=run_model)


def _corda_kwargs(c: CordaArgs, model: Any, ctx: MethodContext, self: PeftMethod) -> dict[str, Any]:
    from peft.tuners.lora.config import CordaConfig

    return _lora(c, init_lora_weights="corda", corda_config=CordaConfig(corda_method=c.corda_method))


_register("corda", peft_class="LoraConfig", config=CordaArgs, kwargs=_corda_kwargs, base=_CordaMethod,
          default_lr=LORA_FAMILY_LR, summary="LoRA from a context-oriented SVD of W times the input covariance "
                                   "(task data calibrates it)",
          paper="Yang et al. 2024, CorDA: Context-Oriented Decomposition Adaptation (arXiv:2406.05223)")


class _EvaMethod(PeftMethod):
    def finish(self, model: Any, ctx: MethodContext) -> Any:
        from peft import initialize_lora_eva_weights

        batches = ctx.calibration_batches(self.config.calibration_batches)
        was = model.training
        model.eval()
        initialize_lora_eva_weights(model, dataloader=batches, show_progress_bar=False)
        model.train(was)
        return model


def _eva_kwargs(c: EvaArgs, model: Any, ctx: MethodContext, self: PeftMethod) -> dict[str, Any]:
    from peft import EvaConfig

    # Label masking assumes token-level labels (causal LM); a classifier has one label per sequence.
    eva = EvaConfig(rho=c.rho, tau=c.tau, use_label_mask=ctx.task_kind == "causal-lm")
    return _lora(c, init_lora_weights="eva", eva_config=eva)


_register("eva", peft_class="LoraConfig", config=EvaArgs, kwargs=_eva_kwargs, base=_EvaMethod,
          default_lr=LORA_FAMILY_LR, summary="LoRA A from the SVD of layer inputs on task data, ranks redistributed",
          paper="Paischer et al. 2024, One Initialization to Rule them All: Explained Variance Adaptation "
                "(arXiv:2410.07170)")


class _LoraGaMethod(PeftMethod):
    def prepare(self, model: Any, peft_config: Any, ctx: MethodContext) -> None:
        import torch
        from peft.tuners.lora.loraga import preprocess_loraga

        batches = ctx.calibration_batches(self.config.calibration_batches)

        def train_step() -> None:
            with torch.enable_grad():
                for batch in batches:
                    (model(**batch).loss / len(batches)).backward()

        preprocess_loraga(model, peft_config, train_step)


def _loraga_kwargs(c: LoraGaArgs, model: Any, ctx: MethodContext, self: PeftMethod) -> dict[str, Any]:
    from peft import LoraGAConfig

    ga = LoraGAConfig(direction=c.direction, scale=c.scale, stable_gamma=c.stable_gamma)
    return _lora(c, init_lora_weights="lora_ga", lora_ga_config=ga)


_register("lora-ga", peft_class="LoraConfig", config=LoraGaArgs, kwargs=_loraga_kwargs, base=_LoraGaMethod,
          default_lr=LORA_FAMILY_LR, summary="LoRA initialised from the SVD of the full gradient on task batches",
          paper="Wang et al. 2024, LoRA-GA: Low-Rank Adaptation with Gradient Approximation "
                "(arXiv:2407.05000)")


# -- AdaLoRA: the rank schedule runs inside the shared loop --------------------------------------
class _AdaLora(PeftMethod):
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


def _adalora_kwargs(c: AdaLoraArgs, model: Any, ctx: MethodContext, self: PeftMethod) -> dict[str, Any]:
    recipe = ctx.recipe
    total = getattr(recipe, "max_steps", None) or 1000  # provisional: on_train_begin sets the real one
    return dict(target_r=c.target_r, init_r=c.init_r, lora_alpha=c.alpha, lora_dropout=c.dropout,
                tinit=int(c.tinit_ratio * total), tfinal=int(c.tfinal_ratio * total), deltaT=c.delta_t,
                beta1=c.beta1, beta2=c.beta2, orth_reg_weight=c.orth_reg_weight, total_step=total)


_register("adalora", peft_class="AdaLoraConfig", config=AdaLoraArgs, kwargs=_adalora_kwargs, base=_AdaLora,
          default_lr=1e-3, summary="SVD-form LoRA whose rank budget is pruned by importance during training",
          paper="Zhang et al. 2023, AdaLoRA: Adaptive Budget Allocation for Parameter-Efficient "
                "Fine-Tuning (arXiv:2303.10512)")

# -- other weight-space tuners -------------------------------------------------------------------
_register("vera", peft_class="VeraConfig", config=VeraArgs, default_lr=4e-3,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, vera_dropout=c.dropout, d_initial=c.d_initial,
                                           projection_prng_key=ctx.seed),
          summary="shared frozen random low-rank projections, trainable scaling vectors",
          paper="Kopiczko et al. 2023, VeRA: Vector-based Random Matrix Adaptation (arXiv:2310.11454)")
_register("pvera", peft_class="PveraConfig", config=PveraArgs, default_lr=4e-3,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, pvera_dropout=c.dropout, d_initial=c.d_initial,
                                           projection_prng_key=ctx.seed),
          summary="probabilistic VeRA: sampled shared projections, trainable scaling vectors",
          paper="PVeRA (arXiv:2512.07703)")
_register("ia3", peft_class="IA3Config", config=Ia3Args, target_kind=None, default_lr=3e-3,
          kwargs=lambda c, m, ctx, s: dict(
              target_modules=s.targets(m, "ia3"),
              feedforward_modules=s.targets(m, "ia3-ff", c.feedforward_modules)),
          summary="learned vectors rescale keys, values and feed-forward activations",
          paper="Liu et al. 2022, Few-Shot PEFT is Better and Cheaper than In-Context Learning, IA3 "
                "(arXiv:2205.05638)")
_register("loha", peft_class="LoHaConfig", config=LycorisArgs, default_lr=5e-4,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, alpha=c.alpha, rank_dropout=c.rank_dropout,
                                           module_dropout=c.module_dropout),
          summary="low-rank Hadamard product update (two LoRA pairs multiplied elementwise)",
          paper="Hyeon-Woo et al. 2021, FedPara: Low-Rank Hadamard Product (arXiv:2108.06098)")
_register("lokr", peft_class="LoKrConfig", config=LokrArgs, default_lr=5e-4,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, alpha=c.alpha, rank_dropout=c.rank_dropout,
                                           module_dropout=c.module_dropout, decompose_both=c.decompose_both,
                                           decompose_factor=c.decompose_factor),
          summary="Kronecker-product update with a low-rank factor",
          paper="Yeh et al. 2023, Navigating Text-To-Image Customization: LyCORIS, LoKr (arXiv:2309.14859)")
_register("oft", peft_class="OFTConfig", config=OftArgs, default_lr=1e-3,
          kwargs=lambda c, m, ctx, s: dict(r=0, oft_block_size=c.block_size, coft=c.coft,
                                           block_share=c.block_share, module_dropout=c.module_dropout),
          summary="block-diagonal orthogonal rotation of each weight matrix (Cayley parametrisation)",
          paper="Qiu et al. 2023, Controlling Text-to-Image Diffusion by Orthogonal Finetuning "
                "(arXiv:2306.07280)")
_register("boft", peft_class="BOFTConfig", config=BoftArgs, default_lr=1e-3,
          kwargs=lambda c, m, ctx, s: dict(boft_block_size=c.block_size, boft_n_butterfly_factor=c.butterfly_factor,
                                           boft_dropout=c.dropout),
          summary="orthogonal fine-tuning with butterfly-factorised rotations",
          paper="Liu et al. 2023, Parameter-Efficient Orthogonal Finetuning via Butterfly Factorization "
                "(arXiv:2311.06243)")
_register("hra", peft_class="HRAConfig", config=HraArgs, default_lr=1e-3,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, apply_GS=c.apply_gs),
          summary="chain of r Householder reflections applied to each weight",
          paper="Yuan et al. 2024, Bridging the Gap Between Low-Rank and Orthogonal Adaptation via "
                "Householder Reflection Adaptation (arXiv:2405.17484)")
_register("miss", peft_class="MissConfig", config=MissArgs, default_lr=1e-3,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, mini_r=c.mini_r, miss_dropout=c.dropout),
          summary="MiSS (formerly Bone): a shared trainable shard expanded over the weight matrix",
          paper="Kang 2024, MiSS / Bone: Block-Affine Adaptation (arXiv:2409.15371)")
_register("shira", peft_class="ShiraConfig", config=ShiraArgs, default_lr=1e-3,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, mask_type=c.mask_type, random_seed=ctx.seed),
          summary="sparse high-rank adapter: a fixed random sparse set of weights trains",
          paper="Bhardwaj et al. 2024, Sparse High Rank Adapters (arXiv:2406.13175)")
_register("randlora", peft_class="RandLoraConfig", config=RandLoraArgs, default_lr=1e-3,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, randlora_alpha=c.alpha, randlora_dropout=c.dropout,
                                           sparse=c.sparse, projection_prng_key=ctx.seed),
          summary="full-rank update from shared random bases with trainable diagonal scalings",
          paper="Albert et al. 2025, RandLoRA: Full-rank parameter-efficient fine-tuning (arXiv:2502.00987)")
_register("fourierft", peft_class="FourierFTConfig", config=FrequencyArgs, default_lr=5e-3,
          kwargs=lambda c, m, ctx, s: dict(n_frequency=c.n_frequency, scaling=c.scaling, random_loc_seed=ctx.seed),
          summary="trainable coefficients of a few random 2D Fourier frequencies of the update",
          paper="Gao et al. 2024, Parameter-Efficient Fine-Tuning with Discrete Fourier Transform "
                "(arXiv:2405.03003)")
_register("waveft", peft_class="WaveFTConfig", config=WaveftArgs, default_lr=5e-3,
          kwargs=lambda c, m, ctx, s: dict(n_frequency=c.n_frequency, scaling=c.scaling,
                                           wavelet_family=c.wavelet_family, random_loc_seed=ctx.seed),
          summary="trainable sparse wavelet coefficients of the update, inverse wavelet transform",
          paper="WaveFT: Wavelet Fine-Tuning (arXiv:2505.12532)")


def _vblora_kwargs(c: VbloraArgs, model: Any, ctx: MethodContext, self: PeftMethod) -> dict[str, Any]:
    length = c.vector_length or _pow2_divisor(model, self.targets(model), 256)
    return dict(r=c.r, num_vectors=c.num_vectors, vector_length=length, topk=c.topk, vblora_dropout=c.dropout)


_register("vblora", peft_class="VBLoRAConfig", config=VbloraArgs, kwargs=_vblora_kwargs, default_lr=1e-3,
          summary="LoRA factors assembled from top-k mixtures of a shared vector bank",
          paper="Li et al. 2024, VB-LoRA: Extreme Parameter Efficient Fine-Tuning with Vector Banks "
                "(arXiv:2405.15179)")
_register("c3a", peft_class="C3AConfig", config=BlockArgs, default_lr=1e-2,
          kwargs=lambda c, m, ctx, s: dict(block_size=c.block_size or _pow2_divisor(m, s.targets(m), 256)),
          summary="block-circular convolution update (FFT-applied circulant blocks)",
          paper="Chen et al. 2024, Parameter-Efficient Fine-Tuning via Circular Convolution (arXiv:2407.19342)")
_register("road", peft_class="RoadConfig", config=RoadArgs, default_lr=1e-3,
          kwargs=lambda c, m, ctx, s: dict(variant=c.variant,
                                           group_size=c.block_size or _pow2_divisor(m, s.targets(m), 64)),
          summary="2D rotary adaptation: learned rotations of output-feature pairs",
          paper="Liao et al. 2024, 3-in-1: 2D Rotary Adaptation, RoAd (arXiv:2409.00119)")
_register("delora", peft_class="DeloraConfig", config=DeloraArgs, default_lr=1e-3,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, delora_lambda=c.delora_lambda, module_dropout=c.dropout),
          summary="LoRA with normalised, norm-bounded (decoupled) updates",
          paper="Bini et al. 2025, Decoupling Angles and Strength in Low-rank Adaptation, DeLoRA "
                "(arXiv:2503.18225)")
_register("gralora", peft_class="GraloraConfig", config=GraloraArgs, default_lr=5e-4,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, alpha=c.alpha, gralora_k=c.k, hybrid_r=c.hybrid_r,
                                           gralora_dropout=c.dropout),
          summary="granular LoRA: k x k independent low-rank blocks per matrix",
          paper="Jung et al. 2025, GraLoRA: Granular Low-Rank Adaptation (arXiv:2505.20355)")
_register("hira", peft_class="HiraConfig", config=HiraArgs, default_lr=5e-4,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, hira_dropout=c.dropout),
          summary="high-rank update: Hadamard product of W with a low-rank matrix",
          paper="Huang et al. 2025, HiRA: Parameter-Efficient Hadamard High-Rank Adaptation (ICLR 2025)")
_register("lily", peft_class="LilyConfig", config=LilyArgs, default_lr=5e-4, mergeable=False,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, num_B=c.num_b, stride_A=c.stride_a, scaling=c.scaling),
          summary="low-rank interconnected adapters: local A, shared router-mixed B projectors",
          paper="Zhong et al. 2024, Low-Rank Interconnected Adaptation across Layers, Lily (arXiv:2407.09946)")
_register("glora", peft_class="GloraConfig", config=GloraArgs, default_lr=5e-4,
          kwargs=lambda c, m, ctx, s: dict(r=c.r),
          summary="generalised LoRA: W0 + W0*A + B and bias terms, each low-rank or vector",
          paper="Chavan et al. 2023, One-for-All: Generalized LoRA (arXiv:2306.07967)")
_register("deft", peft_class="DeftConfig", config=DeftArgs, default_lr=5e-4,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, decomposition_method=c.decomposition_method,
                                           deft_dropout=c.dropout),
          summary="decompositional fine-tuning: residual projection (I - P) W + Q R",
          paper="DEFT: Decompositional Efficient Fine-Tuning for Text-to-Image Models, NeurIPS 2025")
_register("psoft", peft_class="PsoftConfig", config=PsoftArgs, default_lr=1e-3,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, psoft_alpha=c.alpha, psoft_dropout=c.dropout,
                                           random_seed=ctx.seed),
          summary="orthogonal r x r rotation between frozen principal-subspace factors",
          paper="PSOFT: Efficient Orthogonal Fine-Tuning with Principal Subspace Adaptation, ICLR 2026")
_register("tinylora", peft_class="TinyLoraConfig", config=TinyLoraArgs, default_lr=1e-3,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, u=c.u, tinylora_dropout=c.dropout, projection_seed=ctx.seed),
          summary="LoRA through fixed random projections of a tiny trainable vector",
          paper="TinyLoRA (arXiv:2602.04118)")
_register("unilora", peft_class="UniLoraConfig", config=UniLoraArgs, default_lr=1e-3,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, theta_d_length=c.theta_d_length, unilora_dropout=c.dropout,
                                           proj_seed=ctx.seed),
          summary="all LoRA entries indexed into one shared trainable vector",
          paper="Uni-LoRA: One Vector is All You Need (arXiv:2506.00799)")
_register("frod", peft_class="FrodConfig", config=FrodArgs, default_lr=1e-3,
          kwargs=lambda c, m, ctx, s: dict(sparse_rate=c.sparse_rate, frod_dropout=c.dropout,
                                           projection_prng_key=ctx.seed, progressbar=False),
          summary="full-rank update from a joint decomposition of same-role layers, sparse trainable part",
          paper="FRoD, AAAI 2026 (doi:10.1609/aaai.v40i31.39813)")
_register("beft", peft_class="BeftConfig", config=TargetsOnly, default_lr=1e-3,
          kwargs=lambda c, m, ctx, s: {},
          summary="bias-efficient fine-tuning of selected projections' biases",
          paper="BEFT (arXiv:2509.15974)")
_register("osf", peft_class="OSFConfig", config=OsfArgs, default_lr=5e-4,
          kwargs=lambda c, m, ctx, s: ({"effective_rank": c.effective_rank} if c.effective_rank else {}),
          summary="orthogonal subspace fine-tuning: top singular directions frozen, the rest trains",
          paper="Nayak et al. 2025, Sculpting Subspaces: Constrained Full Fine-Tuning in LLMs for "
                "Continual Learning (OSF)")
_register("adamss", peft_class="AdamssConfig", config=AdamssArgs, default_lr=1e-3,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, num_subspaces=c.num_subspaces, subspace_rank=c.subspace_rank,
                                           random_seed=ctx.seed),
          summary="SVD subspaces clustered into several trainable low-rank subspaces",
          paper="AdaMSS, Adaptive Multi-Subspaces (see the peft docs)")
_register("peanut", peft_class="PeanutConfig", config=PeanutArgs, default_lr=5e-4,
          kwargs=lambda c, m, ctx, s: dict(r=c.r, depth=c.depth, act_fn=c.act_fn),
          summary="non-linear adapter: a small network of the weights produces the update",
          paper="PEANuT (arXiv:2410.01870)")
_register("supertuning", peft_class="SupertuningConfig", config=SupertuningArgs, default_lr=1e-3,
          kwargs=lambda c, m, ctx, s: dict(sparsity=c.sparsity),
          summary="sparse fine-tuning of a precomputed top subset of weights",
          paper="SuperTuning (arXiv:2607.09287)")
_register("ln-tuning", peft_class="LNTuningConfig", config=TargetsOnly, target_kind="norm", default_lr=1e-3,
          kwargs=lambda c, m, ctx, s: {},
          summary="train only the layer-norm scales and shifts",
          paper="Zhao et al. 2023, Tuning LayerNorm in Attention (arXiv:2312.11420)")


def _trainable_tokens_kwargs(c: TrainableTokensArgs, model: Any, ctx: MethodContext,
                             self: PeftMethod) -> dict[str, Any]:
    indices = list(c.token_indices) or sorted(set(getattr(ctx.tokenizer, "all_special_ids", []) or [0]))
    emb = model.get_input_embeddings()
    names = [n for n, mod in model.named_modules() if mod is emb]
    return dict(token_indices=indices, target_modules=[names[0].rsplit(".", 1)[-1]] if names else None)


_register("trainable-tokens", peft_class="TrainableTokensConfig", config=TrainableTokensArgs, target_kind=None,
          kwargs=_trainable_tokens_kwargs, default_lr=1e-3,
          summary="train the embeddings of a few tokens only (default: the special tokens)",
          paper="peft TrainableTokens (no paper)")

# -- prompt learning: not mergeable (they change the input) -----------------------------------------
class PromptLearningMethod(PeftMethod):
    """Tuners that change the input sequence (soft prompts, prefixes): text tasks only."""

    def unsupported(self, target: MethodTarget) -> str | None:
        from suite.methods.peft_wrapper import PEFT_TASK_TYPES

        if target.task_kind not in PEFT_TASK_TYPES:
            return (f"peft's prompt learning needs a text task (sequence classification or causal LM), "
                    f"not {target.task_kind}")
        return super().unsupported(target)


class KvPrefixMethod(PromptLearningMethod):
    """Tuners that write a trainable prefix into every layer's KV cache (prefix tuning, cartridges)."""

    def unsupported(self, target: MethodTarget) -> str | None:
        reason = super().unsupported(target)
        if reason or not target.model_type:
            return reason
        from suite.methods.peft_compat import backbone_class, library_version, takes_kv_prefix

        backbone = backbone_class(target.model_type)
        if backbone is not None and not takes_kv_prefix(backbone.forward):
            return (f"transformers {library_version('transformers')}'s {backbone.__name__} takes no KV cache "
                    f"(neither past_key_values nor cache), which this method writes its prefix into; "
                    f"use a model family with a KV cache, or soft prompts ('prompt')")
        return None

    def prepare(self, model: Any, peft_config: Any, ctx: MethodContext) -> None:
        from suite.methods.peft_compat import accept_past_key_values

        accept_past_key_values(model)


_register("prefix", peft_class="PrefixTuningConfig", config=PrefixArgs, target_kind=None, mergeable=False,
          default_lr=1e-2, base=KvPrefixMethod,
          kwargs=lambda c, m, ctx, s: dict(num_virtual_tokens=c.num_virtual_tokens,
                                           prefix_projection=c.prefix_projection),
          summary="trainable key/value prefixes in every layer",
          paper="Li & Liang 2021, Prefix-Tuning (arXiv:2101.00190)")
_register("prompt", peft_class="PromptTuningConfig", config=VirtualTokenArgs, target_kind=None, mergeable=False,
          base=PromptLearningMethod, default_lr=3e-2,
          kwargs=lambda c, m, ctx, s: dict(num_virtual_tokens=c.num_virtual_tokens),
          summary="trainable soft-prompt embeddings prepended to the input",
          paper="Lester et al. 2021, The Power of Scale for Parameter-Efficient Prompt Tuning (arXiv:2104.08691)")
_register("p-tuning", peft_class="PromptEncoderConfig", config=PtuningArgs, target_kind=None, mergeable=False,
          base=PromptLearningMethod, default_lr=1e-2,
          kwargs=lambda c, m, ctx, s: dict(num_virtual_tokens=c.num_virtual_tokens,
                                           encoder_hidden_size=c.encoder_hidden_size,
                                           encoder_reparameterization_type=c.encoder_type),
          summary="soft prompts produced by a small trainable prompt encoder",
          paper="Liu et al. 2021, GPT Understands, Too (arXiv:2103.10385)")
_register("cartridge", peft_class="CartridgeConfig", config=VirtualTokenArgs, target_kind=None, mergeable=False,
          default_lr=1e-2, base=KvPrefixMethod,
          kwargs=lambda c, m, ctx, s: dict(num_virtual_tokens=c.num_virtual_tokens),
          summary="a trainable KV-cache prefix stored directly as parameters",
          paper="Eyuboglu et al. 2025, Cartridges (arXiv:2506.06266)")


def _adaption_kwargs(c: AdaptionPromptArgs, model: Any, ctx: MethodContext, self: PeftMethod) -> dict[str, Any]:
    layers = model.config.num_hidden_layers
    return dict(adapter_len=c.adapter_len, adapter_layers=min(c.adapter_layers or layers, layers))


_register("adaption-prompt", peft_class="AdaptionPromptConfig", config=AdaptionPromptArgs, target_kind=None,
          base=PromptLearningMethod, mergeable=False, default_lr=1e-2, kwargs=_adaption_kwargs, families=("llama", "mistral"),
          summary="LLaMA-Adapter: zero-gated adaption prompts in the top attention layers",
          paper="Zhang et al. 2023, LLaMA-Adapter (arXiv:2303.16199)")
