"""The experiments peft publishes for Llama-3.2-3B on MetaMathQA -> GSM8K that the suite's methods reproduce.

Facts read from huggingface/peft ``method_comparison/MetaMathQA`` at commit 5d602fdb (2026-08-21): per
experiment (``experiments/<method>/<name>/``), its adapter config's ``peft_type`` and the fields that
differ from peft's defaults (None: full fine-tuning, no adapter), its ``training_params.json``, and
what peft's ``results/<method>--<name>.json`` recorded: the GSM8K test accuracy after 5,000 steps
and the trainable parameter count (None where no result is published). The experiments whose
files the mapping refuses (peft's own optimizers, options no method here has) are left out;
``suite.methods.peft.experiments`` says why for any folder.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Published(NamedTuple):
    adapter: dict[str, Any] | None
    training: dict[str, Any]
    test_accuracy: float | None
    trainable_params: int | None


PUBLISHED: dict[str, Published] = {
    "adamss/llama-3.2-3B-rank32": Published(
        {"peft_type": "ADAMSS", "num_subspaces": 32},
        {
            "model_id": "meta-llama/Llama-3.2-3B",
            "max_steps": 5000,
            "batch_size": 4,
            "eval_steps": 250,
            "optimizer_kwargs": {"lr": 0.0001, "weight_decay": 0.1},
        },
        0.345,
        293888,
    ),
    "adaptionprompt/llama-3.2-3B-lr_0.0005": Published(
        {"peft_type": "ADAPTION_PROMPT", "adapter_layers": 28, "adapter_len": 100},
        {"optimizer_kwargs": {"lr": 0.0005}},
        0.2115,
        8601628,
    ),
    "adaptionprompt/llama-3.2-3B-lr_5e-3": Published(
        {"peft_type": "ADAPTION_PROMPT", "adapter_layers": 28, "adapter_len": 100},
        {"optimizer_kwargs": {"lr": 0.005}},
        0.3836,
        8601628,
    ),
    "beft/llama-3.2-3B-target-v_proj": Published(
        {"peft_type": "BEFT", "target_modules": ["v_proj"]}, {}, 0.3207, 28672
    ),
    "boft/llama-3.2-3B-default": Published({"peft_type": "BOFT"}, {}, 0.3434, 802816),
    "delora/llama-3.2-3B-rank32": Published(
        {"peft_type": "DELORA", "r": 32}, {"optimizer_kwargs": {"lr": 0.001}}, 0.4678, 9175096
    ),
    "fourierft/llama-3.2-3B-default": Published(
        {"peft_type": "FOURIERFT", "scaling": 300, "target_modules": ["q_proj", "v_proj"]},
        {},
        0.0,
        56000,
    ),
    "fourierft/llama-3.2-3B-n_frequency-5000": Published(
        {
            "peft_type": "FOURIERFT",
            "n_frequency": 5000,
            "scaling": 300,
            "target_modules": ["q_proj", "v_proj"],
        },
        {},
        0.0955,
        280000,
    ),
    "full-finetuning/llama-3.2-3B-lr_0.00001": Published(
        None, {"optimizer_kwargs": {"lr": 1e-05}}, 0.4716, 3212749824
    ),
    "glora/llama-3.2-3B-default": Published(
        {"peft_type": "GLORA", "target_modules": ["q_proj", "v_proj"]}, {}, 0.4185, 4587520
    ),
    "gralora/llama-3.2-3B-rank32": Published(
        {"peft_type": "GRALORA"}, {"optimizer_kwargs": {"lr": 0.0002}}, 0.4951, 9175040
    ),
    "hira/llama-3.2-3B-rank32-lr4.5e-3": Published(
        {"peft_type": "HIRA", "target_modules": ["q_proj", "v_proj"]},
        {"optimizer_kwargs": {"lr": 0.0045, "weight_decay": 0.0}},
        0.5133,
        9175040,
    ),
    "ia3/llama-3.2-3B-all-attn-5k-lr0.005": Published(
        {
            "peft_type": "IA3",
            "feedforward_modules": ["down_proj", "gate_proj", "up_proj"],
            "target_modules": [
                "down_proj",
                "gate_proj",
                "k_proj",
                "o_proj",
                "q_proj",
                "up_proj",
                "v_proj",
            ],
        },
        {"optimizer_kwargs": {"lr": 0.005, "weight_decay": 0.0}},
        0.4549,
        630784,
    ),
    "ia3/llama-3.2-3B-default": Published({"peft_type": "IA3"}, {}, 0.3108, 286720),
    "ia3/llama-3.2-3B-lr_0.001": Published(
        {"peft_type": "IA3"}, {"optimizer_kwargs": {"lr": 0.001}}, 0.398, 286720
    ),
    "lily/llama-3.2-3B-rank140-mlp-a2-b2-s8.0": Published(
        {
            "peft_type": "LILY",
            "r": 140,
            "scaling": 8.0,
            "stride_A": 14,
            "target_modules": ["down_proj", "gate_proj", "up_proj"],
        },
        {},
        0.5262,
        9485280,
    ),
    "lily/llama-3.2-3B-rank896-a2-b2-s2.0": Published(
        {
            "peft_type": "LILY",
            "r": 896,
            "scaling": 2.0,
            "stride_A": 14,
            "target_modules": ["q_proj", "v_proj"],
        },
        {},
        0.5049,
        18450432,
    ),
    "ln_tuning/llama-3.2-3B-default": Published({"peft_type": "LN_TUNING"}, {}, 0.0, 175104),
    "loha/llama-3.2-3B-rank32": Published(
        {"peft_type": "LOHA", "alpha": 64, "r": 32, "target_modules": ["q_proj", "v_proj"]},
        {},
        0.3927,
        18350080,
    ),
    "lokr/llama-3.2-3B-rank32-factor4-lr0.003": Published(
        {
            "peft_type": "LOKR",
            "alpha": 64,
            "decompose_factor": 4,
            "r": 32,
            "target_modules": ["q_proj", "v_proj"],
        },
        {"optimizer_kwargs": {"lr": 0.003, "weight_decay": 0.1}},
        0.4663,
        2294656,
    ),
    "lora/llama-3.2-3B-rank10-target-mlp": Published(
        {
            "peft_type": "LORA",
            "lora_alpha": 20,
            "r": 10,
            "target_modules": ["down_proj", "gate_proj", "up_proj"],
        },
        {},
        0.4943,
        9461760,
    ),
    "lora/llama-3.2-3B-rank32": Published(
        {"peft_type": "LORA", "lora_alpha": 64, "r": 32}, {}, 0.4784, 9175040
    ),
    "lora/llama-3.2-3B-rank32-dora": Published(
        {"peft_type": "LORA", "lora_alpha": 64, "r": 32, "use_dora": True}, {}, 0.4693, 9289728
    ),
    "lora/llama-3.2-3B-rank32-mica": Published(
        {"peft_type": "LORA", "init_lora_weights": "mica", "lora_alpha": 64, "r": 32},
        {},
        0.4306,
        5505024,
    ),
    "lora/llama-3.2-3B-rank64": Published(
        {"peft_type": "LORA", "lora_alpha": 128, "r": 64}, {}, 0.4738, 18350080
    ),
    "lora/llama-3.2-3B-rank64-rslora": Published(
        {"peft_type": "LORA", "lora_alpha": 64, "r": 64, "use_rslora": True}, {}, 0.5133, 18350080
    ),
    "miss/llama-3.2-3B-default": Published({"peft_type": "MISS"}, {}, 0.4867, 7340032),
    "prompt_tuning/llama-3.2-3B-default": Published(
        {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 200}, {}, 0.0569, 614400
    ),
    "prompt_tuning/llama-3.2-3B-lr_0.001": Published(
        {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 200},
        {"optimizer_kwargs": {"lr": 0.001}},
        0.2343,
        614400,
    ),
    "psoft/llama-3.2-3B-default": Published(
        {"peft_type": "PSOFT", "r": 256, "psoft_alpha": 256}, {}, 0.4488, 1856512
    ),
    "ptuning/llama-3.2-3B-default": Published(
        {"peft_type": "P_TUNING", "encoder_hidden_size": 3072, "num_virtual_tokens": 20},
        {},
        0.3495,
        28382208,
    ),
    "pvera/llama-3.2-3B-default": Published(
        {"peft_type": "PVERA"}, {"optimizer_kwargs": {"lr": 0.003}}, 0.3533, 143360
    ),
    "pvera/llama-3.2-3B-rank64": Published(
        {"peft_type": "PVERA", "r": 64}, {"optimizer_kwargs": {"lr": 0.003}}, 0.3563, 121856
    ),
    "randlora/llama-3.2-3B-default": Published({"peft_type": "RANDLORA"}, {}, 0.4776, 9289728),
    "road/llama-3.2-3B-lr_0.001": Published(
        {"peft_type": "ROAD", "variant": "road_2"},
        {"optimizer_kwargs": {"lr": 0.001}},
        0.3851,
        229376,
    ),
    "supertuning/llama-3.2-3B-s974-topk": Published(
        {"peft_type": "SUPERTUNING", "sparsity": 0.974, "target_modules": ["q_proj", "v_proj"]},
        {},
        None,
        None,
    ),
    "supertuning/llama-3.2-3B-s9935-topk": Published(
        {"peft_type": "SUPERTUNING", "sparsity": 0.9935, "target_modules": ["q_proj", "v_proj"]},
        {},
        None,
        None,
    ),
    "tinylora/llama-3.2-3B-default": Published(
        {"peft_type": "TINYLORA"}, {"optimizer_kwargs": {"lr": 0.001}}, 0.0121, 3584
    ),
    "unilora/llama-3.2-3B-default": Published(
        {"peft_type": "UNILORA", "r": 32, "target_modules": ["q_proj", "v_proj"]}, {}, 0.0015, 256
    ),
    "vblora/llama-3.2-3B-bank1024-lr5e4": Published(
        {"peft_type": "VBLORA", "num_vectors": 1024, "target_modules": ["q_proj", "v_proj"]},
        {"optimizer_kwargs": {"lr": 0.0005, "weight_decay": 0.1}},
        None,
        None,
    ),
    "vblora/llama-3.2-3B-default": Published(
        {"peft_type": "VBLORA", "target_modules": ["q_proj", "v_proj"]}, {}, 0.3336, 1212416
    ),
    "vera/llama-3.2-3B-default": Published(
        {"peft_type": "VERA"}, {"optimizer_kwargs": {"lr": 0.001}}, 0.3541, 129024
    ),
    "waveft/llama-3.2-3B-n_frequency-5000": Published(
        {"peft_type": "WAVEFT", "n_frequency": 5000, "target_modules": ["q_proj", "v_proj"]},
        {},
        0.4026,
        280000,
    ),
}
