"""peft's weight-space tuners beyond the LoRA family, one declared class each (``suite.methods.peft.tuners``).

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
from suite.methods.peft.tuners import PeftTuner, Targets
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


# -- the tuners --------------------------------------------------------------------------------------
# ``inert = _NO_DROPOUT``: the Config inherits a dropout that this peft tuner has no argument for;
# a non-zero value is refused before any cell runs (kept as a field so existing cell ids stay valid).
_NO_DROPOUT = ("dropout",)


@register_method("vera", kind="peft", summary="shared frozen random low-rank projections, trainable scaling vectors",
                 source="peft", paper="Kopiczko et al. 2023, VeRA: Vector-based Random Matrix Adaptation "
                                      "(arXiv:2310.11454)")
class PeftVera(PeftTuner):
    peft_config_class = "VeraConfig"
    Config = VeraArgs
    renames = {"dropout": "vera_dropout"}
    seed_arg = "projection_prng_key"
    default_lr = 4e-3


@register_method("pvera", kind="peft",
                 summary="probabilistic VeRA: sampled shared projections, trainable scaling vectors",
                 source="peft", paper="PVeRA (arXiv:2512.07703)")
class PeftPvera(PeftTuner):
    peft_config_class = "PveraConfig"
    Config = PveraArgs
    renames = {"dropout": "pvera_dropout"}
    seed_arg = "projection_prng_key"
    default_lr = 4e-3


@register_method("ia3", kind="peft", summary="learned vectors rescale keys, values and feed-forward activations",
                 source="peft", paper="Liu et al. 2022, Few-Shot PEFT is Better and Cheaper than In-Context "
                                      "Learning, IA3 (arXiv:2205.05638)")
class PeftIa3(PeftTuner):
    peft_config_class = "IA3Config"
    Config = Ia3Args
    target_args = {"target_modules": ("ia3", "target_modules"),
                   "feedforward_modules": ("ia3-ff", "feedforward_modules")}
    target_kind = None  # both module lists come from target_args
    default_lr = 3e-3


@register_method("loha", kind="peft",
                 summary="low-rank Hadamard product update (two LoRA pairs multiplied elementwise)",
                 source="peft", paper="Hyeon-Woo et al. 2021, FedPara: Low-Rank Hadamard Product (arXiv:2108.06098)")
class PeftLoha(PeftTuner):
    peft_config_class = "LoHaConfig"
    Config = LycorisArgs
    inert = _NO_DROPOUT
    default_lr = 5e-4


@register_method("lokr", kind="peft", summary="Kronecker-product update with a low-rank factor",
                 source="peft", paper="Yeh et al. 2023, Navigating Text-To-Image Customization: LyCORIS, LoKr "
                                      "(arXiv:2309.14859)")
class PeftLokr(PeftTuner):
    peft_config_class = "LoKrConfig"
    Config = LokrArgs
    inert = _NO_DROPOUT
    default_lr = 5e-4


@register_method("oft", kind="peft",
                 summary="block-diagonal orthogonal rotation of each weight matrix (Cayley parametrisation)",
                 source="peft", paper="Qiu et al. 2023, Controlling Text-to-Image Diffusion by Orthogonal "
                                      "Finetuning (arXiv:2306.07280)")
class PeftOft(PeftTuner):
    peft_config_class = "OFTConfig"
    Config = OftArgs
    renames = {"block_size": "oft_block_size"}
    fixed = {"r": 0}  # peft takes a block count r or a block size; 0: the size decides
    default_lr = 1e-3


@register_method("boft", kind="peft", summary="orthogonal fine-tuning with butterfly-factorised rotations",
                 source="peft", paper="Liu et al. 2023, Parameter-Efficient Orthogonal Finetuning via Butterfly "
                                      "Factorization (arXiv:2311.06243)")
class PeftBoft(PeftTuner):
    peft_config_class = "BOFTConfig"
    Config = BoftArgs
    renames = {"block_size": "boft_block_size", "butterfly_factor": "boft_n_butterfly_factor",
               "dropout": "boft_dropout"}
    default_lr = 1e-3


@register_method("hra", kind="peft", summary="chain of r Householder reflections applied to each weight",
                 source="peft", paper="Yuan et al. 2024, Bridging the Gap Between Low-Rank and Orthogonal "
                                      "Adaptation via Householder Reflection Adaptation (arXiv:2405.17484)")
class PeftHra(PeftTuner):
    peft_config_class = "HRAConfig"
    Config = HraArgs
    renames = {"apply_gs": "apply_GS"}
    inert = _NO_DROPOUT
    default_lr = 1e-3


@register_method("miss", kind="peft",
                 summary="MiSS (formerly Bone): a shared trainable shard expanded over the weight matrix",
                 source="peft", paper="Kang 2024, MiSS / Bone: Block-Affine Adaptation (arXiv:2409.15371)")
class PeftMiss(PeftTuner):
    peft_config_class = "MissConfig"
    Config = MissArgs
    renames = {"dropout": "miss_dropout"}
    default_lr = 1e-3


@register_method("shira", kind="peft", summary="sparse high-rank adapter: a fixed random sparse set of weights trains",
                 source="peft", paper="Bhardwaj et al. 2024, Sparse High Rank Adapters (arXiv:2406.13175)")
class PeftShira(PeftTuner):
    peft_config_class = "ShiraConfig"
    Config = ShiraArgs
    seed_arg = "random_seed"
    inert = _NO_DROPOUT
    default_lr = 1e-3

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


@register_method("randlora", kind="peft",
                 summary="full-rank update from shared random bases with trainable diagonal scalings",
                 source="peft", paper="Albert et al. 2025, RandLoRA: Full-rank parameter-efficient fine-tuning "
                                      "(arXiv:2502.00987)")
class PeftRandlora(PeftTuner):
    peft_config_class = "RandLoraConfig"
    Config = RandLoraArgs
    renames = {"alpha": "randlora_alpha", "dropout": "randlora_dropout"}
    seed_arg = "projection_prng_key"
    default_lr = 1e-3


@register_method("fourierft", kind="peft",
                 summary="trainable coefficients of a few random 2D Fourier frequencies of the update",
                 source="peft", paper="Gao et al. 2024, Parameter-Efficient Fine-Tuning with Discrete Fourier "
                                      "Transform (arXiv:2405.03003)")
class PeftFourierft(PeftTuner):
    peft_config_class = "FourierFTConfig"
    Config = FrequencyArgs
    seed_arg = "random_loc_seed"
    default_lr = 5e-3


@register_method("waveft", kind="peft",
                 summary="trainable sparse wavelet coefficients of the update, inverse wavelet transform",
                 source="peft", paper="WaveFT: Wavelet Fine-Tuning (arXiv:2505.12532)")
class PeftWaveft(PeftTuner):
    peft_config_class = "WaveFTConfig"
    Config = WaveftArgs
    seed_arg = "random_loc_seed"
    default_lr = 5e-3


@register_method("vblora", kind="peft", summary="LoRA factors assembled from top-k mixtures of a shared vector bank",
                 source="peft", paper="Li et al. 2024, VB-LoRA: Extreme Parameter Efficient Fine-Tuning with "
                                      "Vector Banks (arXiv:2405.15179)")
class PeftVblora(PeftTuner):
    peft_config_class = "VBLoRAConfig"
    Config = VbloraArgs
    renames = {"dropout": "vblora_dropout"}
    pow2_when_zero = {"vector_length": 256}
    default_lr = 1e-3


@register_method("c3a", kind="peft", summary="block-circular convolution update (FFT-applied circulant blocks)",
                 source="peft", paper="Chen et al. 2024, Parameter-Efficient Fine-Tuning via Circular "
                                      "Convolution (arXiv:2407.19342)")
class PeftC3a(PeftTuner):
    peft_config_class = "C3AConfig"
    Config = BlockArgs
    pow2_when_zero = {"block_size": 256}
    default_lr = 1e-2


@register_method("road", kind="peft", summary="2D rotary adaptation: learned rotations of output-feature pairs",
                 source="peft", paper="Liao et al. 2024, 3-in-1: 2D Rotary Adaptation, RoAd (arXiv:2409.00119)")
class PeftRoad(PeftTuner):
    peft_config_class = "RoadConfig"
    Config = RoadArgs
    renames = {"block_size": "group_size"}
    pow2_when_zero = {"group_size": 64}
    default_lr = 1e-3


@register_method("delora", kind="peft", summary="LoRA with normalised, norm-bounded (decoupled) updates",
                 source="peft", paper="Bini et al. 2025, Decoupling Angles and Strength in Low-rank Adaptation, "
                                      "DeLoRA (arXiv:2503.18225)")
class PeftDelora(PeftTuner):
    peft_config_class = "DeloraConfig"
    Config = DeloraArgs
    renames = {"dropout": "module_dropout"}
    default_lr = 1e-3


@register_method("gralora", kind="peft", summary="granular LoRA: k x k independent low-rank blocks per matrix",
                 source="peft", paper="Jung et al. 2025, GraLoRA: Granular Low-Rank Adaptation (arXiv:2505.20355)")
class PeftGralora(PeftTuner):
    peft_config_class = "GraloraConfig"
    Config = GraloraArgs
    renames = {"k": "gralora_k", "dropout": "gralora_dropout"}
    default_lr = 5e-4


@register_method("hira", kind="peft", summary="high-rank update: Hadamard product of W with a low-rank matrix",
                 source="peft", paper="Huang et al. 2025, HiRA: Parameter-Efficient Hadamard High-Rank "
                                      "Adaptation (ICLR 2025)")
class PeftHira(PeftTuner):
    peft_config_class = "HiraConfig"
    Config = HiraArgs
    renames = {"dropout": "hira_dropout"}
    default_lr = 5e-4


@register_method("lily", kind="peft",
                 summary="low-rank interconnected adapters: local A, shared router-mixed B projectors",
                 source="peft", paper="Zhong et al. 2024, Low-Rank Interconnected Adaptation across Layers, "
                                      "Lily (arXiv:2407.09946)")
class PeftLily(PeftTuner):
    peft_config_class = "LilyConfig"
    Config = LilyArgs
    renames = {"num_b": "num_B", "stride_a": "stride_A"}
    inert = _NO_DROPOUT
    mergeable = False
    default_lr = 5e-4


@register_method("glora", kind="peft",
                 summary="generalised LoRA: W0 + W0*A + B and bias terms, each low-rank or vector",
                 source="peft", paper="Chavan et al. 2023, One-for-All: Generalized LoRA (arXiv:2306.07967)")
class PeftGlora(PeftTuner):
    peft_config_class = "GloraConfig"
    Config = GloraArgs
    inert = _NO_DROPOUT
    default_lr = 5e-4


@register_method("deft", kind="peft", summary="decompositional fine-tuning: residual projection (I - P) W + Q R",
                 source="peft", paper="DEFT: Decompositional Efficient Fine-Tuning for Text-to-Image Models, "
                                      "NeurIPS 2025")
class PeftDeft(PeftTuner):
    peft_config_class = "DeftConfig"
    Config = DeftArgs
    renames = {"dropout": "deft_dropout"}
    default_lr = 5e-4


@register_method("psoft", kind="peft", summary="orthogonal r x r rotation between frozen principal-subspace factors",
                 source="peft", paper="PSOFT: Efficient Orthogonal Fine-Tuning with Principal Subspace "
                                      "Adaptation, ICLR 2026")
class PeftPsoft(PeftTuner):
    peft_config_class = "PsoftConfig"
    Config = PsoftArgs
    renames = {"alpha": "psoft_alpha", "dropout": "psoft_dropout"}
    seed_arg = "random_seed"
    default_lr = 1e-3


@register_method("tinylora", kind="peft", summary="LoRA through fixed random projections of a tiny trainable vector",
                 source="peft", paper="TinyLoRA (arXiv:2602.04118)")
class PeftTinylora(PeftTuner):
    peft_config_class = "TinyLoraConfig"
    Config = TinyLoraArgs
    renames = {"dropout": "tinylora_dropout"}
    seed_arg = "projection_seed"
    default_lr = 1e-3


@register_method("unilora", kind="peft", summary="all LoRA entries indexed into one shared trainable vector",
                 source="peft", paper="Uni-LoRA: One Vector is All You Need (arXiv:2506.00799)")
class PeftUnilora(PeftTuner):
    peft_config_class = "UniLoraConfig"
    Config = UniLoraArgs
    renames = {"dropout": "unilora_dropout"}
    seed_arg = "proj_seed"
    default_lr = 1e-3


@register_method("frod", kind="peft",
                 summary="full-rank update from a joint decomposition of same-role layers, sparse trainable part",
                 source="peft", paper="FRoD, AAAI 2026 (doi:10.1609/aaai.v40i31.39813)")
class PeftFrod(PeftTuner):
    peft_config_class = "FrodConfig"
    Config = FrodArgs
    renames = {"dropout": "frod_dropout"}
    fixed = {"progressbar": False}
    seed_arg = "projection_prng_key"
    default_lr = 1e-3


@register_method("beft", kind="peft", summary="bias-efficient fine-tuning of selected projections' biases",
                 source="peft", paper="BEFT (arXiv:2509.15974)")
class PeftBeft(PeftTuner):
    peft_config_class = "BeftConfig"
    Config = TargetsOnly
    default_lr = 1e-3


@register_method("osf", kind="peft",
                 summary="orthogonal subspace fine-tuning: top singular directions frozen, the rest trains",
                 source="peft", paper="Nayak et al. 2025, Sculpting Subspaces: Constrained Full Fine-Tuning in "
                                      "LLMs for Continual Learning (OSF)")
class PeftOsf(PeftTuner):
    peft_config_class = "OSFConfig"
    Config = OsfArgs
    omit_when_zero = ("effective_rank",)
    default_lr = 5e-4


@register_method("adamss", kind="peft", summary="SVD subspaces clustered into several trainable low-rank subspaces",
                 source="peft", paper="AdaMSS, Adaptive Multi-Subspaces (see the peft docs)")
class PeftAdamss(PeftTuner):
    peft_config_class = "AdamssConfig"
    Config = AdamssArgs
    seed_arg = "random_seed"
    default_lr = 1e-3


@register_method("peanut", kind="peft",
                 summary="non-linear adapter: a small network of the weights produces the update",
                 source="peft", paper="PEANuT (arXiv:2410.01870)")
class PeftPeanut(PeftTuner):
    peft_config_class = "PeanutConfig"
    Config = PeanutArgs
    inert = _NO_DROPOUT
    default_lr = 5e-4


@register_method("supertuning", kind="peft", summary="sparse fine-tuning of a precomputed top subset of weights",
                 source="peft", paper="SuperTuning (arXiv:2607.09287)")
class PeftSupertuning(PeftTuner):
    peft_config_class = "SupertuningConfig"
    Config = SupertuningArgs
    default_lr = 1e-3


@register_method("ln-tuning", kind="peft", summary="train only the layer-norm scales and shifts",
                 source="peft", paper="Zhao et al. 2023, Tuning LayerNorm in Attention (arXiv:2312.11420)")
class PeftLnTuning(PeftTuner):
    peft_config_class = "LNTuningConfig"
    Config = TargetsOnly
    target_kind = "norm"
    default_lr = 1e-3


@register_method("trainable-tokens", kind="peft",
                 summary="train the embeddings of a few tokens only (default: the special tokens)",
                 source="peft", paper="peft TrainableTokens (no paper)")
class PeftTrainableTokens(PeftTuner):
    """Names the embedding and the tokens itself: its targets are no family's linear layers."""

    peft_config_class = "TrainableTokensConfig"
    Config = TrainableTokensArgs
    skip = ("token_indices",)
    target_kind = None
    default_lr = 1e-3

    def peft_kwargs(self, model: Any, ctx: MethodContext) -> dict[str, Any]:
        indices = list(self.config.token_indices) or sorted(set(getattr(ctx.tokenizer, "all_special_ids", []) or [0]))
        emb = model.get_input_embeddings()
        names = [n for n, mod in model.named_modules() if mod is emb]
        embedding = [names[0].rsplit(".", 1)[-1]] if names else None
        return {**super().peft_kwargs(model, ctx), "token_indices": indices, "target_modules": embedding}

    def unsupported(self, target: MethodTarget) -> str | None:
        from suite.methods.peft.library import PEFT_TASK_TYPES

        if target.task_kind not in PEFT_TASK_TYPES:
            return f"it trains token embeddings, and a {target.task_kind} task's inputs are not tokens"
        return super().unsupported(target)
