"""The PEFT zoo end to end: every registered method runs through the runner, parameter counts
match their formulas, merged models equal adapted ones, errors name method, argument, choices.

Tiny models from configs, synthetic data, one torch thread (the CPU is shared; thread
oversubscription makes tiny matmuls 10x slower, not faster).
"""

from __future__ import annotations

import pytest
import torch

from suite.config import build_config
from suite.errors import UserError
from suite.registry import METHODS
from tests.conftest import tiny_setup

GPU_ONLY: set[str] = set()  # methods that cannot run on a CPU (none at present)
LLAMA_ONLY = {"adaption-prompt"}
VISION_ONLY = {"adaptformer", "houlsby", "vpt"}  # refused on text tasks by design (tests/test_vtab.py runs them)
NO_BIAS_MODELS = {"bitfit"}  # Llama has no bias terms


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def peft_methods() -> list[str]:
    """The shipped peft-kind methods (not the stand-ins other test modules register)."""
    return [e.name for e in METHODS.entries() if e.kind == "peft" and e.source != "tests"]


def tiny(model_name: str = "tiny-bert", n_items: int = 128):
    return tiny_setup(model_name, n_items)


def make(name: str, **args):
    cls = METHODS.get(name).target
    return cls(build_config(cls.Config, args, f"method '{name}'"))


def run_sweep(tmp_path, methods: list[str], model: str) -> dict[str, tuple[str, str]]:
    from suite.app.cli import main
    from suite.results.store import ResultStore

    store = tmp_path / f"store-{model}"
    code = main(["run", "--methods", ",".join(methods), "--tasks", "smoke", "--models", model,
                 "--max-steps", "3", "--limit", "32", "--batch-size", "8", "--max-length", "32",
                 "--store", str(store), "--no-progress"])
    assert code in (0, 1), f"the sweep was refused before any cell ran (exit {code})"
    frame = ResultStore(store).load()
    return {m: (g["status"].iloc[0], str(g["error"].iloc[0])) for m, g in frame.groupby("method")}


def test_every_peft_method_runs_the_smoke_task_on_tiny_bert(tmp_path):
    names = [n for n in peft_methods() if n not in GPU_ONLY | LLAMA_ONLY | VISION_ONLY]
    assert len(names) >= 50
    status = run_sweep(tmp_path, names, "tiny-bert")
    failed = {m: err for m, (s, err) in status.items() if s != "ok"}
    assert not failed, failed
    assert set(status) == set(names)


def test_causal_lm_family_defaults_on_tiny_llama(tmp_path):
    names = ["lora", "dora", "pissa", "adalora", "vera", "ia3", "loha", "oft", "ln-tuning", "prefix", "prompt",
             "adaption-prompt", "eva", "ssf", "s2ft", "lora-xs", "sorsa", "spiel", "lisa", "mezo"]
    status = run_sweep(tmp_path, names, "tiny-llama")
    failed = {m: err for m, (s, err) in status.items() if s != "ok"}
    assert not failed, failed
    assert set(status) == set(names)


# -- parameter counts ------------------------------------------------------------------------------
def _dims(model):
    c = model.config
    return c.hidden_size, c.intermediate_size, c.num_hidden_layers


def _head(model) -> int:
    return sum(p.numel() for p in model.classifier.parameters())


def _biases(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias") and "classifier" not in n)


def expected_trainable(name: str, model) -> int:
    """Each method's formula on tiny-bert (hidden h, FFN f, L layers; by default every
    linear layer of the blocks is adapted: q, k, v, attention out (h x h), FFN up (h -> f)
    and down (f -> h), as (in, out) pairs)."""
    h, f, L = _dims(model)
    mats = L * ([(h, h)] * 4 + [(h, f), (f, h)])

    def per_matrix(fn) -> int:
        return sum(fn(i, o) for i, o in mats)

    heads = model.config.num_attention_heads
    linears = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "classifier" not in n]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    formulas = {
        "lora": per_matrix(lambda i, o: 8 * (i + o)),
        "rslora": per_matrix(lambda i, o: 8 * (i + o)),
        "pissa": per_matrix(lambda i, o: 8 * (i + o)),
        "loftq": per_matrix(lambda i, o: 8 * (i + o)),
        "olora": per_matrix(lambda i, o: 8 * (i + o)),
        "dora": per_matrix(lambda i, o: 8 * (i + o) + o),  # + magnitude vector
        "mica": per_matrix(lambda i, o: 8 * i),  # B frozen, only A (r x in) trains
        "adalora": per_matrix(lambda i, o: 12 * (i + o) + 12),  # init_r: A, B and the singular values E
        "vera": per_matrix(lambda i, o: 256 + o),  # lambda_d (r) and lambda_b (out)
        "loha": per_matrix(lambda i, o: 2 * 8 * (i + o)),
        "hra": per_matrix(lambda i, o: 8 * i),  # r Householder vectors of the input space
        "miss": per_matrix(lambda i, o: 16 * o),  # an r x out block
        "shira": per_matrix(lambda i, o: 32 * (i + o)),
        "fourierft": len(mats) * 1000,
        "ia3": L * (h + h + h + f),  # key, value (out), attention.output.dense (in h), output.dense (in f)
        "ln-tuning": sum(2 * m.normalized_shape[0] for m in norms),
        "prefix": 20 * L * 2 * h,
        "prompt": 20 * h,
        "bitfit": _biases(model),
        "ssf": sum(m.out_features * (1 + (m.bias is not None)) for m in linears)
        + sum(2 * m.normalized_shape[0] for m in norms),
        "s2ft": L * (h * (h // heads) * 1 + h * 32),  # one head's O columns + 32 down columns
        "lora-xs": len(mats) * 16 * 16,
        "svfit": len(mats) * 16,
        "sorsa": per_matrix(lambda i, o: 8 * (i + o + 1)),
        "spiel": sum(round(0.01 * m.weight.numel()) for n, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear) and "classifier" not in n and "pooler" not in n),
    }
    return formulas[name] + _head(model)


@pytest.mark.parametrize("name", ["lora", "rslora", "pissa", "loftq", "olora", "dora", "mica", "adalora", "vera", "loha",
                                  "hra", "miss", "shira", "fourierft", "ia3", "ln-tuning", "prefix", "prompt",
                                  "bitfit", "ssf", "s2ft", "lora-xs", "svfit", "sorsa", "spiel"])
def test_trainable_parameters_match_the_formula(name):
    from suite.models.accounting import count_parameters

    model, ctx, *_ = tiny()
    expected = expected_trainable(name, model)
    adapted = make(name).apply(model, ctx)
    assert count_parameters(adapted)[0] == expected


def test_vblora_parameter_count_uses_an_auto_vector_length():
    from suite.models.accounting import count_parameters

    model, ctx, *_ = tiny()
    h, _, L = _dims(model)
    head = _head(model)
    adapted = make("vblora").apply(model, ctx)
    f = model.config.intermediate_size
    length = 64  # largest power of two <= 256 dividing every adapted dimension (h = 64, f = 128)
    bank = 256 * length
    mats = L * ([(h, h)] * 4 + [(h, f), (f, h)])
    logits = sum(4 * (i // length + o // length) * 256 for i, o in mats)  # r x (in/len + out/len) x vectors
    assert count_parameters(adapted)[0] == bank + logits + head


# -- merging ---------------------------------------------------------------------------------------
def mergeable_methods() -> list[str]:
    out = []
    for e in METHODS.entries():
        if e.kind == "peft" and e.target.mergeable and e.name not in GPU_ONLY | LLAMA_ONLY:
            out.append(e.name)
    return out


def test_merged_models_equal_adapted_models():
    """Perturb every trainable tensor (so adapters are not at their identity init), then merge."""
    mismatched, failed = {}, {}
    for name in mergeable_methods():
        model, ctx, batch, *_ = tiny(n_items=64)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        method = make(name)
        adapted = method.apply(model, ctx)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in adapted.parameters():
                if p.requires_grad and p.is_floating_point():
                    p.add_(0.02 * torch.randn(p.shape, generator=generator))
        adapted.eval()
        with torch.no_grad():
            want = adapted(**inputs).logits
        try:
            merged = method.merge(adapted)
        except Exception as exc:  # noqa: BLE001 - collect every method's problem in one report
            failed[name] = f"{type(exc).__name__}: {exc}"
            continue
        merged.eval()
        assert "Peft" not in type(merged).__name__, name
        with torch.no_grad():
            got = merged(**inputs).logits
        err = (got - want).abs().max().item()
        if not err <= 1e-4 * max(1.0, want.abs().max().item()):
            mismatched[name] = err
    assert not failed, failed
    assert not mismatched, mismatched


def test_non_mergeable_methods_say_so():
    from suite.errors import CellFailure

    for name in ["prefix", "prompt", "p-tuning", "lily"]:
        model, ctx, *_ = tiny(n_items=16)
        method = make(name)
        adapted = method.apply(model, ctx)
        with pytest.raises(CellFailure, match=f"method '{name}' cannot be merged"):
            method.merge(adapted)


def test_peft_adapters_save_in_peft_format(tmp_path):
    import json

    model, ctx, *_ = tiny(n_items=16)
    method = make("dora")
    adapted = method.apply(model, ctx)
    method.save_adapter(adapted, str(tmp_path))
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["use_dora"] is True and config["peft_type"] == "LORA"
    assert (tmp_path / "adapter_model.safetensors").is_file()


# -- AdaLoRA's schedule in the shared loop ------------------------------------------------------------
def test_adalora_rank_schedule_runs_in_the_shared_loop():
    from suite.recipe import Recipe
    from suite.train import Trainer

    model, ctx, _, items, task, bundle = tiny(n_items=64)
    method = make("adalora", target_r=2, init_r=6, delta_t=1, tinit_ratio=0.1, tfinal_ratio=0.3)
    bundle.model = method.apply(model, ctx)
    recipe = Recipe(lr=1e-2, max_steps=12, batch_size=8, warmup_ratio=0.0)
    trainer = Trainer(bundle.model, items, lambda c: task.collate(c, bundle), recipe, [method], "cpu", 0,
                      progress=False)
    trainer.train()
    config = bundle.model.peft_config["default"]
    assert config.total_step == 12 and config.tinit == 1 and config.tfinal == 3
    ranks = [int(sum(bool(x) for x in mask)) for mask in config.rank_pattern.values()]
    assert ranks and sum(ranks) == 2 * len(ranks)  # pruned from init_r=6 to a total budget of target_r per matrix
    assert method.measurements(bundle.model)["adalora_mean_rank"] == pytest.approx(2.0)


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lora", "vera", "oft", "s2ft", "mezo", "spiel"])
def test_unknown_argument_names_method_argument_and_choices(name):
    cls = METHODS.get(name).target
    with pytest.raises(UserError) as info:
        build_config(cls.Config, {"rank_typo": "3"}, f"method '{name}'")
    text = str(info.value)
    assert f"method '{name}'" in text and "rank_typo" in text and "Valid arguments" in text


@pytest.mark.parametrize("name", ["lora", "dora", "vera", "boft", "lora-xs", "spiel", "svfit"])
def test_absent_target_modules_end_in_a_clear_message(name):
    model, ctx, *_ = tiny(n_items=16)
    method = make(name, target_modules=("q_proj",))
    with pytest.raises(UserError) as info:
        method.apply(model, ctx)
    text = str(info.value)
    assert f"method '{name}'" in text and "target_modules" in text and "q_proj" in text
    assert "query" in text  # the valid choices name the modules the model has


def test_list_shows_kind_source_and_paper(capsys):
    from suite.app.cli import main

    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    for name, source in [("dora", "peft"), ("s2ft", "suite"), ("mezo", "suite"), ("vera", "peft")]:
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert line.split()[1] == "peft" and line.split()[2] == source and "arXiv" in line


def test_every_method_config_is_a_typed_dataclass():
    import dataclasses
    import typing

    for entry in METHODS.entries():
        if entry.kind != "peft":
            continue
        config = entry.target.Config
        assert dataclasses.is_dataclass(config), entry.name
        hints = typing.get_type_hints(config)
        assert all(f.name in hints for f in dataclasses.fields(config)), entry.name
