"""peft's weight-space tuners beyond the LoRA family, one table row each (``suite.methods.peft.tuners``).

Random projections, orthogonal rotations, Kronecker and Hadamard products, spectral and sparse
updates, vector banks, norm and bias tuning, trainable token embeddings. Tuners that draw a
random projection or mask take the cell seed (``seed_arg``), so each seed of a sweep draws its
own; block and vector sizes left at 0 become the largest power of two that divides every
targeted layer.

Not exposed, with the reason: ``poly`` (needs a task id per example) and ``shadow`` (peft
0.21.2 fails on BERT and Llama: 'ShadowCarrier' has no attribute 'view').
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from suite.method import MethodContext, MethodTarget
from suite.methods.peft.library import PeftMethod
from suite.methods.peft.tuners import Targets, TunerRow, define_tuners, tuner_lookup
from suite.registry import register_method


# -- typed configs -------------------------------------------------------------------------------
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
class TrainableTokensArgs:
    token_indices: tuple[int, ...] = ()  # () : the tokenizer's special tokens


# -- special cases: trainable tokens name the embedding and the tokens; SHiRA's budget must fit --------
class _TokenEmbeddingMethod(PeftMethod):
    def unsupported(self, target: MethodTarget) -> str | None:
        from suite.methods.peft.library import PEFT_TASK_TYPES

        if target.task_kind not in PEFT_TASK_TYPES:
            return f"it trains token embeddings, and a {target.task_kind} task's inputs are not tokens"
        return super().unsupported(target)


class _ShiraMethod(PeftMethod):
    def unsupported(self, target: MethodTarget) -> str | None:
        """SHiRA trains r * (rows + columns) entries of each adapted matrix: they must fit in it."""
        reason = super().unsupported(target)
        skeleton = target.skeleton()
        if reason or skeleton is None:
            return reason
        import torch

        from suite.methods.common.targets import matching_modules

        r = self.config.r
        for name, layer in matching_modules(skeleton, self.targets(skeleton) or [], torch.nn.Linear):
            if r * (layer.in_features + layer.out_features) > layer.in_features * layer.out_features:
                return (f"r={r} asks for {r * (layer.in_features + layer.out_features)} trainable entries in "
                        f"{name} ({layer.out_features}x{layer.in_features}), more than it has; choose a smaller r")
        return None



def _trainable_tokens_args(method: PeftMethod, model: Any, ctx: MethodContext) -> dict[str, Any]:
    indices = list(method.config.token_indices) or sorted(set(getattr(ctx.tokenizer, "all_special_ids", []) or [0]))
    emb = model.get_input_embeddings()
    names = [n for n, mod in model.named_modules() if mod is emb]
    return dict(token_indices=indices, target_modules=[names[0].rsplit(".", 1)[-1]] if names else None)


# -- the rows ----------------------------------------------------------------------------------------
# ``inert=("dropout",)``: the Config inherits a dropout that this peft tuner has no argument for;
# a non-zero value is refused before any cell runs (kept as a field so existing cell ids stay valid).
_NO_DROPOUT = ("dropout",)

ROWS: tuple[TunerRow, ...] = (
    TunerRow("vera", "VeraConfig", VeraArgs, renames={"dropout": "vera_dropout"},
             seed_arg="projection_prng_key", default_lr=4e-3,
             summary="shared frozen random low-rank projections, trainable scaling vectors",
             paper="Kopiczko et al. 2023, VeRA: Vector-based Random Matrix Adaptation (arXiv:2310.11454)"),
    TunerRow("pvera", "PveraConfig", PveraArgs, renames={"dropout": "pvera_dropout"},
             seed_arg="projection_prng_key", default_lr=4e-3,
             summary="probabilistic VeRA: sampled shared projections, trainable scaling vectors",
             paper="PVeRA (arXiv:2512.07703)"),
    TunerRow("ia3", "IA3Config", Ia3Args, target_kind=None, default_lr=3e-3,
             target_args={"target_modules": ("ia3", "target_modules"),
                          "feedforward_modules": ("ia3-ff", "feedforward_modules")},
             summary="learned vectors rescale keys, values and feed-forward activations",
             paper="Liu et al. 2022, Few-Shot PEFT is Better and Cheaper than In-Context Learning, IA3 "
                   "(arXiv:2205.05638)"),
    TunerRow("loha", "LoHaConfig", LycorisArgs, skip=_NO_DROPOUT, inert=_NO_DROPOUT, default_lr=5e-4,
             summary="low-rank Hadamard product update (two LoRA pairs multiplied elementwise)",
             paper="Hyeon-Woo et al. 2021, FedPara: Low-Rank Hadamard Product (arXiv:2108.06098)"),
    TunerRow("lokr", "LoKrConfig", LokrArgs, skip=_NO_DROPOUT, inert=_NO_DROPOUT, default_lr=5e-4,
             summary="Kronecker-product update with a low-rank factor",
             paper="Yeh et al. 2023, Navigating Text-To-Image Customization: LyCORIS, LoKr (arXiv:2309.14859)"),
    TunerRow("oft", "OFTConfig", OftArgs, renames={"block_size": "oft_block_size"},
             fixed={"r": 0},  # peft takes a block count r or a block size; 0: the size decides
             default_lr=1e-3,
             summary="block-diagonal orthogonal rotation of each weight matrix (Cayley parametrisation)",
             paper="Qiu et al. 2023, Controlling Text-to-Image Diffusion by Orthogonal Finetuning "
                   "(arXiv:2306.07280)"),
    TunerRow("boft", "BOFTConfig", BoftArgs,
             renames={"block_size": "boft_block_size", "butterfly_factor": "boft_n_butterfly_factor",
                      "dropout": "boft_dropout"},
             default_lr=1e-3,
             summary="orthogonal fine-tuning with butterfly-factorised rotations",
             paper="Liu et al. 2023, Parameter-Efficient Orthogonal Finetuning via Butterfly Factorization "
                   "(arXiv:2311.06243)"),
    TunerRow("hra", "HRAConfig", HraArgs, renames={"apply_gs": "apply_GS"}, skip=_NO_DROPOUT, inert=_NO_DROPOUT, default_lr=1e-3,
             summary="chain of r Householder reflections applied to each weight",
             paper="Yuan et al. 2024, Bridging the Gap Between Low-Rank and Orthogonal Adaptation via "
                   "Householder Reflection Adaptation (arXiv:2405.17484)"),
    TunerRow("miss", "MissConfig", MissArgs, renames={"dropout": "miss_dropout"}, default_lr=1e-3,
             summary="MiSS (formerly Bone): a shared trainable shard expanded over the weight matrix",
             paper="Kang 2024, MiSS / Bone: Block-Affine Adaptation (arXiv:2409.15371)"),
    TunerRow("shira", "ShiraConfig", ShiraArgs, skip=_NO_DROPOUT, inert=_NO_DROPOUT, seed_arg="random_seed",
             base=_ShiraMethod, default_lr=1e-3,
             summary="sparse high-rank adapter: a fixed random sparse set of weights trains",
             paper="Bhardwaj et al. 2024, Sparse High Rank Adapters (arXiv:2406.13175)"),
    TunerRow("randlora", "RandLoraConfig", RandLoraArgs,
             renames={"alpha": "randlora_alpha", "dropout": "randlora_dropout"},
             seed_arg="projection_prng_key", default_lr=1e-3,
             summary="full-rank update from shared random bases with trainable diagonal scalings",
             paper="Albert et al. 2025, RandLoRA: Full-rank parameter-efficient fine-tuning (arXiv:2502.00987)"),
    TunerRow("fourierft", "FourierFTConfig", FrequencyArgs, seed_arg="random_loc_seed", default_lr=5e-3,
             summary="trainable coefficients of a few random 2D Fourier frequencies of the update",
             paper="Gao et al. 2024, Parameter-Efficient Fine-Tuning with Discrete Fourier Transform "
                   "(arXiv:2405.03003)"),
    TunerRow("waveft", "WaveFTConfig", WaveftArgs, seed_arg="random_loc_seed", default_lr=5e-3,
             summary="trainable sparse wavelet coefficients of the update, inverse wavelet transform",
             paper="WaveFT: Wavelet Fine-Tuning (arXiv:2505.12532)"),
    TunerRow("vblora", "VBLoRAConfig", VbloraArgs, renames={"dropout": "vblora_dropout"},
             pow2_when_zero={"vector_length": 256}, default_lr=1e-3,
             summary="LoRA factors assembled from top-k mixtures of a shared vector bank",
             paper="Li et al. 2024, VB-LoRA: Extreme Parameter Efficient Fine-Tuning with Vector Banks "
                   "(arXiv:2405.15179)"),
    TunerRow("c3a", "C3AConfig", BlockArgs, pow2_when_zero={"block_size": 256}, default_lr=1e-2,
             summary="block-circular convolution update (FFT-applied circulant blocks)",
             paper="Chen et al. 2024, Parameter-Efficient Fine-Tuning via Circular Convolution (arXiv:2407.19342)"),
    TunerRow("road", "RoadConfig", RoadArgs, renames={"block_size": "group_size"},
             pow2_when_zero={"group_size": 64}, default_lr=1e-3,
             summary="2D rotary adaptation: learned rotations of output-feature pairs",
             paper="Liao et al. 2024, 3-in-1: 2D Rotary Adaptation, RoAd (arXiv:2409.00119)"),
    TunerRow("delora", "DeloraConfig", DeloraArgs, renames={"dropout": "module_dropout"}, default_lr=1e-3,
             summary="LoRA with normalised, norm-bounded (decoupled) updates",
             paper="Bini et al. 2025, Decoupling Angles and Strength in Low-rank Adaptation, DeLoRA "
                   "(arXiv:2503.18225)"),
    TunerRow("gralora", "GraloraConfig", GraloraArgs, renames={"k": "gralora_k", "dropout": "gralora_dropout"},
             default_lr=5e-4,
             summary="granular LoRA: k x k independent low-rank blocks per matrix",
             paper="Jung et al. 2025, GraLoRA: Granular Low-Rank Adaptation (arXiv:2505.20355)"),
    TunerRow("hira", "HiraConfig", HiraArgs, renames={"dropout": "hira_dropout"}, default_lr=5e-4,
             summary="high-rank update: Hadamard product of W with a low-rank matrix",
             paper="Huang et al. 2025, HiRA: Parameter-Efficient Hadamard High-Rank Adaptation (ICLR 2025)"),
    TunerRow("lily", "LilyConfig", LilyArgs, renames={"num_b": "num_B", "stride_a": "stride_A"},
             skip=_NO_DROPOUT, inert=_NO_DROPOUT, default_lr=5e-4, mergeable=False,
             summary="low-rank interconnected adapters: local A, shared router-mixed B projectors",
             paper="Zhong et al. 2024, Low-Rank Interconnected Adaptation across Layers, Lily (arXiv:2407.09946)"),
    TunerRow("glora", "GloraConfig", GloraArgs, skip=_NO_DROPOUT, inert=_NO_DROPOUT, default_lr=5e-4,
             summary="generalised LoRA: W0 + W0*A + B and bias terms, each low-rank or vector",
             paper="Chavan et al. 2023, One-for-All: Generalized LoRA (arXiv:2306.07967)"),
    TunerRow("deft", "DeftConfig", DeftArgs, renames={"dropout": "deft_dropout"}, default_lr=5e-4,
             summary="decompositional fine-tuning: residual projection (I - P) W + Q R",
             paper="DEFT: Decompositional Efficient Fine-Tuning for Text-to-Image Models, NeurIPS 2025"),
    TunerRow("psoft", "PsoftConfig", PsoftArgs, renames={"alpha": "psoft_alpha", "dropout": "psoft_dropout"},
             seed_arg="random_seed", default_lr=1e-3,
             summary="orthogonal r x r rotation between frozen principal-subspace factors",
             paper="PSOFT: Efficient Orthogonal Fine-Tuning with Principal Subspace Adaptation, ICLR 2026"),
    TunerRow("tinylora", "TinyLoraConfig", TinyLoraArgs, renames={"dropout": "tinylora_dropout"},
             seed_arg="projection_seed", default_lr=1e-3,
             summary="LoRA through fixed random projections of a tiny trainable vector",
             paper="TinyLoRA (arXiv:2602.04118)"),
    TunerRow("unilora", "UniLoraConfig", UniLoraArgs, renames={"dropout": "unilora_dropout"},
             seed_arg="proj_seed", default_lr=1e-3,
             summary="all LoRA entries indexed into one shared trainable vector",
             paper="Uni-LoRA: One Vector is All You Need (arXiv:2506.00799)"),
    TunerRow("frod", "FrodConfig", FrodArgs, renames={"dropout": "frod_dropout"},
             fixed={"progressbar": False}, seed_arg="projection_prng_key", default_lr=1e-3,
             summary="full-rank update from a joint decomposition of same-role layers, sparse trainable part",
             paper="FRoD, AAAI 2026 (doi:10.1609/aaai.v40i31.39813)"),
    TunerRow("beft", "BeftConfig", TargetsOnly, default_lr=1e-3,
             summary="bias-efficient fine-tuning of selected projections' biases",
             paper="BEFT (arXiv:2509.15974)"),
    TunerRow("osf", "OSFConfig", OsfArgs, omit_when_zero=("effective_rank",), default_lr=5e-4,
             summary="orthogonal subspace fine-tuning: top singular directions frozen, the rest trains",
             paper="Nayak et al. 2025, Sculpting Subspaces: Constrained Full Fine-Tuning in LLMs for "
                   "Continual Learning (OSF)"),
    TunerRow("adamss", "AdamssConfig", AdamssArgs, seed_arg="random_seed", default_lr=1e-3,
             summary="SVD subspaces clustered into several trainable low-rank subspaces",
             paper="AdaMSS, Adaptive Multi-Subspaces (see the peft docs)"),
    TunerRow("peanut", "PeanutConfig", PeanutArgs, skip=_NO_DROPOUT, inert=_NO_DROPOUT, default_lr=5e-4,
             summary="non-linear adapter: a small network of the weights produces the update",
             paper="PEANuT (arXiv:2410.01870)"),
    TunerRow("supertuning", "SupertuningConfig", SupertuningArgs, default_lr=1e-3,
             summary="sparse fine-tuning of a precomputed top subset of weights",
             paper="SuperTuning (arXiv:2607.09287)"),
    TunerRow("ln-tuning", "LNTuningConfig", TargetsOnly, target_kind="norm", default_lr=1e-3,
             summary="train only the layer-norm scales and shifts",
             paper="Zhao et al. 2023, Tuning LayerNorm in Attention (arXiv:2312.11420)"),
    TunerRow("trainable-tokens", "TrainableTokensConfig", TrainableTokensArgs, target_kind=None,
             base=_TokenEmbeddingMethod,
             skip=("token_indices",), extra=_trainable_tokens_args, default_lr=1e-3,
             summary="train the embeddings of a few tokens only (default: the special tokens)",
             paper="peft TrainableTokens (no paper)"),
)

TUNERS = define_tuners(ROWS, __name__, register_method)  # class name -> class
__getattr__ = tuner_lookup(TUNERS, __name__)  # suite.methods.peft.weight_tuners.PeftVera, also for pickle
