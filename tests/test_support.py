"""Version drift never ends in a cryptic failed cell: methods that cannot run on a model with the
installed libraries are refused before any cell runs, and KV-prefix methods run on the newest
transformers the ranges allow.
"""

from __future__ import annotations

import textwrap
import warnings

import pytest
import torch

import suite.results
from suite.errors import UserError
from suite.method import MethodTarget
from suite.registry import METHODS
from tests.conftest import run_suite
from tests.test_peft_zoo import make, tiny

FAST = ["--max-steps", "3", "--no-progress"]


def make_standin_plugin(root) -> None:
    """A third-party method that declares a stand-in library incompatibility with BERT models."""
    (root / "suite_standin_plugin.py").write_text(textwrap.dedent('''
        from suite.method import Method
        from suite.registry import register_method

        @register_method("standin", kind="peft", summary="refuses BERT, as a too-new library would")
        class StandIn(Method):
            def unsupported(self, target):
                if target.model_type == "bert":
                    return "needs standinlib>=9 for bert, installed standinlib 1.0; pip install -U standinlib"
                return None

            def apply(self, model, ctx):
                return model
    '''))
    info = root / "suite_standin_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: suite-standin-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[suite.methods]\nstandin = suite_standin_plugin\n")
    (info / "RECORD").write_text("")


def test_an_incompatible_method_is_refused_before_any_cell_runs(tmp_path):
    plugin_root = tmp_path / "site"
    plugin_root.mkdir()
    make_standin_plugin(plugin_root)
    env = {"PYTHONPATH": str(plugin_root)}
    store = tmp_path / "store"
    refused = run_suite("run", "--methods", "lora,standin", "--tasks", "smoke", "--store", str(store),
                        *FAST, env=env)
    assert refused.returncode == 2, refused.stderr
    message = refused.stderr
    assert "method 'standin' on model family 'bert'" in message
    assert "standinlib>=9" in message and "--skip-unsupported" in message
    assert "Traceback" not in message
    assert not (store / "cells").exists()  # lora, which could run, did not run either

    skipped = run_suite("run", "--methods", "lora,standin", "--tasks", "smoke", "--store", str(store),
                        "--skip-unsupported", *FAST, env=env)
    assert skipped.returncode == 0, skipped.stderr
    assert "leaving out 1 cell" in skipped.stderr and "standinlib>=9" in skipped.stderr
    frame = suite.results.load(store)
    assert set(frame["method"]) == {"lora"} and (frame["status"] == "ok").all()


def test_family_restricted_tuner_is_refused_up_front(tmp_path):
    result = run_suite("run", "--methods", "adaption-prompt", "--tasks", "smoke", "--models", "tiny-bert",
                       "--store", str(tmp_path / "store"), *FAST)
    assert result.returncode == 2
    assert "method 'adaption-prompt' on model family 'bert'" in result.stderr
    assert "llama, mistral" in result.stderr


def test_family_restricted_tuner_refuses_in_apply_too():
    model, ctx, *_ = tiny(n_items=16)
    with pytest.raises(UserError, match="adaption-prompt.*llama, mistral"):
        make("adaption-prompt").apply(model, ctx)


@pytest.mark.parametrize("name", ["prefix", "cartridge"])
def test_kv_prefix_methods_refuse_models_without_a_kv_cache(name):
    method = METHODS.get(name).target()
    assert method.unsupported(MethodTarget("tiny-bert", "bert", "classification")) is None
    assert method.unsupported(MethodTarget("tiny-llama", "llama", "causal-lm")) is None
    reason = method.unsupported(MethodTarget("distilbert-base-uncased", "distilbert", "classification"))
    assert reason and "DistilBertModel takes no KV cache" in reason and "transformers" in reason


@pytest.mark.parametrize("model_name", ["tiny-bert", "tiny-llama"])
@pytest.mark.parametrize("name", ["prefix", "cartridge"])
def test_kv_prefix_reaches_attention_and_trains(name, model_name):
    """The prefix changes the outputs and receives gradients, with no deprecation warning per step."""
    model, ctx, batch, *_ = tiny(model_name, n_items=32)
    adapted = make(name).apply(model, ctx)
    adapted.eval()
    prefix = next(p for n, p in adapted.named_parameters() if n.startswith("prompt_encoder") and p.requires_grad)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        out = adapted(**batch)
        with torch.no_grad():
            prefix.add_(torch.randn_like(prefix))
            moved = adapted(**batch).logits
    assert not torch.allclose(out.logits, moved, atol=1e-4)  # the prefix is attended to
    out.loss.backward()
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0


def test_smoke_preset_prints_versions_and_no_warnings(tmp_path):
    result = run_suite("run", "--preset", "smoke", "--store", str(tmp_path / "store"), *FAST)
    assert result.returncode == 0, result.stderr
    from suite.app.provenance import library_versions

    versions = library_versions()
    first = result.stderr.splitlines()[0]
    assert first.startswith("suite run with ")
    assert f"transformers {versions['transformers']}" in first and f"peft {versions['peft']}" in first
    noisy = [line for line in (result.stdout + result.stderr).splitlines() if "Warning" in line]
    assert not noisy, noisy
