"""The kernel benchmark follows the methods: ``suite bench kernels`` names, for each kernel, the
training recipes, quantizers and QAT methods that run it, derived from the recipes' declared operands
(``Operand.dispatched``), the quantizers' and QAT's declared formats (``format_calls``) and the
dispatch registry (``timed_by``); here each recipe trains a step, and each quantizer and QAT method
applies and runs a forward, under dispatch counting, and the calls made are held to the declared ones. ``suite bench recipes`` (step time with the
kernels off and on) joins the regression gate; its wiring is checked, never its timings.
"""

from __future__ import annotations

import json

import pytest

from suite.bench import recipes as rb
from suite.bench.methods import format_methods, kernel_methods, method_kernels

# Off the default configurations, held to their declarations too (the defaults come from the registry).
EXTRA_RECIPES = ("fp8-train:scaling=delayed", "mxfp4-train:scale=rceil")
EXTRA_QUANT = ("qat:backend=suite,format=mxfp4,acts=fp8_e4m3", "qat:backend=suite,format=int8,group=0,acts=int8",
               "l4q:format=nvfp4", "l4q:format=int8,group=0,learn_scale=false", "rtn:format=fp8_e4m3,group=0",
               "w8a8:format=fp8", "mxfp8:acts=false", "quarot:format=mxfp4", "awq:sym=true,grid=2",
               "qat:backend=suite")


@pytest.fixture(scope="module")
def derived(one_torch_thread):
    from suite.registry import KERNELS

    KERNELS.names()
    return kernel_methods()


@pytest.fixture(scope="module")
def template():
    return rb.build_llama(rb.CPU_SIZE)


def test_each_recipe_makes_the_dispatch_calls_its_operands_declare(derived, template):
    """One training step of every registered training recipe (kernels off: the calls are the same
    either way) against ``suite.bench.methods``' declaration: the same calls, none missing or extra."""
    import torch

    from suite.numerics import dispatch

    _, found = derived
    ids = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(0))
    checked = []
    for mk in [*found, *map(method_kernels, EXTRA_RECIPES)]:
        if not mk.linear or mk.kind != "train":
            continue  # a peer library's recipe (its own kernels, no suite operands), or a quantizer
        entry = rb.prepare(mk.method, template, "cpu")
        dispatch.reset_counts()
        rb.train_step(entry, ids, "cpu", "torch")
        assert set(dispatch.calls()) == set(mk.calls), mk.method
        checked.append(mk.method)
    assert {"mxfp4-train", "nvfp4-train", "quartet-train", "fp8-train", *EXTRA_RECIPES} <= set(checked)
    assert method_kernels("fp8-train:scaling=delayed").kernels[("fake_quantize_given_amax", "fp8_e4m3")] == (
        "quantize_fp8_tensor_given", "dequantize_fp8_row")


def _tiny_bert():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    # every layer over 128 inputs: INT4 groups of 128 everywhere (torchao's QAT takes one group rule)
    cfg = BertConfig(vocab_size=100, hidden_size=256, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=512, max_position_embeddings=32, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


def test_each_quantizer_and_qat_method_makes_the_dispatch_calls_its_formats_declare(derived, one_torch_thread):
    """Every listed quantizer and QAT method (its default configuration, and some others) applied to a
    tiny BERT and run forward, under dispatch counting (kernels off: the calls are the same either
    way): the calls made (weights quantised when it applies, the weights or activations of every
    forward) are exactly those its ``format_calls`` declares for the model's layer widths."""
    import torch

    from suite.bench.methods import instantiate
    from suite.method import MethodContext
    from suite.methods.common.new_modules import not_adapted
    from suite.methods.quant import engine
    from suite.numerics import dispatch
    from suite.task import ModelBundle

    _, found = derived
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(5, 100, (2, 12), generator=g), "attention_mask": torch.ones(2, 12, dtype=torch.long),
             "labels": torch.tensor([0, 1])}  # hawq's Hessian traces take the task loss
    listed = [mk.method for mk in found if mk.kind == "quant"]
    assert {"qat", "l4q", "w8a8", "mxfp4", "nvfp4", "awq", "hawq"} <= set(listed)
    served = set()
    for spec in [*listed, *EXTRA_QUANT]:
        model = _tiny_bert()
        ctx = MethodContext(device="cpu", dtype=torch.float32, seed=0, task_kind="classification",
                            calibration_source=lambda n, bs=None: [batch] * n,
                            bundle=ModelBundle(model, new_modules=(model.classifier,)))
        (method,) = instantiate(spec)
        widths = {lin.in_features for lin in engine.target_linears(model, not_adapted(model, ctx)).values()}
        # qat's backend=auto declares both paths; the one this environment runs is held to its calls
        path = {"torchao": method.uses_torchao()} if hasattr(method, "uses_torchao") else {}
        declared = {call for k in widths for _, _, call in method.format_calls(k, **path) if call is not None}
        dispatch.reset_counts()
        with dispatch.kernels("torch"):
            model = method.apply(model, ctx)
            model(**batch)
        assert set(dispatch.calls()) == declared, spec
        served |= {spec for call in declared if method_kernels(spec).kernels.get(call)}
    assert {"w8a8", "mxfp4", "nvfp4", "rtn", "hawq", *EXTRA_QUANT[:2], "l4q:format=nvfp4", "w8a8:format=fp8",
            "awq:sym=true,grid=2", "qat:backend=suite"} <= served


def test_every_kernel_a_method_runs_is_a_benchmark_kernel_and_the_gaps_are_stated(derived):
    from suite.registry import KERNELS

    by_kernel, found = derived
    assert set(by_kernel) <= set(KERNELS.names())
    served = {mk.method for mk in found if any(mk.kernels.values())}
    assert served == {m for methods in by_kernel.values() for m in methods}
    # a declared operand with no dispatch call is a gap; every recipe's dispatch call has a kernel, and
    # a quantizer's that has none (a format or option no kernel takes) is a stated gap
    for mk in found:
        if mk.linear and mk.kind == "train":
            assert all(names for names in mk.kernels.values()), mk.method
        for call, names in mk.kernels.items():
            if not names:
                assert any("/".join(call) in gap for gap in mk.gaps), (mk.method, call)
    text = format_methods(sorted(KERNELS.names()), by_kernel, found)
    for mk in found:
        for gap in mk.gaps:
            assert gap in text


def test_bench_kernels_prints_the_methods_of_its_kernels(tmp_path, capsys, monkeypatch):
    from suite.app.cli import main

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert main(["bench", "kernels", "--kernels", "fake_quantize_nvfp4_sr,quantize_fp8_row", "--shapes", "16x64",
                 "--impls", "reference", "--rounds", "3", "--no-store", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split(None, 1)[1] for line in out.split("methods that run each kernel")[1]
             .splitlines()[1:3]}
    _, found = kernel_methods()
    expected = {k: sorted(mk.method for mk in found if k in {n for names in mk.kernels.values() for n in names})
                for k in ("fake_quantize_nvfp4_sr", "quantize_fp8_row")}
    assert lines["fake_quantize_nvfp4_sr"] == ", ".join(expected["fake_quantize_nvfp4_sr"]) != ""
    assert lines["quantize_fp8_row"] == (", ".join(expected["quantize_fp8_row"]) or "- (no method dispatches to it)")
    assert "operations of the methods that no kernel serves" in out


def test_the_recipe_benchmark_joins_the_gate(tmp_path, capsys, monkeypatch, one_torch_thread):
    """A real run saves a recipe baseline (apart from the kernels'); a run whose steps are slower
    than it fails --compare and one as fast passes (samples supplied: no timing is judged)."""
    from suite.app.cli import main

    store = str(tmp_path)
    assert main(["bench", "recipes", "--recipes", "bf16-train,nvfp4-train:rht=false,tiles=false",
                 "--modes", "torch,auto", "--rounds", "5", "--save", "base", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "nvfp4-train:rht=false,tiles=false  auto" in out
    saved = json.loads((tmp_path / "kernel-baselines" / "recipes" / "base.json").read_text())
    keys = {(r["kernel"], r["impl"]) for r in saved["rows"]}
    assert keys == {(f"recipe:{r}", f"kernels-{m}") for r in ("bf16-train", "nvfp4-train:rht=false,tiles=false")
                    for m in ("torch", "auto")}
    assert all(len(r["samples_ms"]) == 5 == len(r["normalized_samples"]) for r in saved["rows"])
    assert not (tmp_path / "kernel-baselines" / "base.json").exists()  # the kernels' baseline is apart

    # from here on fixed samples (the real run's noise on a shared CPU must not decide the verdicts)
    steady = [10.0, 10.1, 9.9, 10.05, 9.95]
    saved["rows"] = [{**r, "samples_ms": steady, "normalized_samples": steady} for r in saved["rows"]]
    (tmp_path / "kernel-baselines" / "recipes" / "base.json").write_text(json.dumps(saved))

    def replay(factor):
        def run(opts, progress=None):
            res = rb.RecipeBenchResult(device=saved["meta"]["device"], shape=saved["meta"]["shape"])
            for r in saved["rows"]:
                slow = factor if r["impl"] == "kernels-auto" and "nvfp4" in r["kernel"] else 1.0
                res.samples.append({**r, "samples_ms": [t * slow for t in steady],
                                    "normalized_samples": [t * slow for t in steady]})
                res.rows.append({"recipe": r["kernel"][7:], "kernels": r["impl"][8:], "step_ms": 1.0,
                                 "kernel_fraction": float("nan"), "n_samples": 5})
            return res
        return run

    monkeypatch.setattr(rb, "run_recipes", replay(3.0))
    assert main(["bench", "recipes", "--rounds", "5", "--compare", "base", "--store", store]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION: 1 recipe step(s)" in out and "recipe:nvfp4-train:rht=false,tiles=false/kernels-auto" in out
    monkeypatch.setattr(rb, "run_recipes", replay(1.0))
    assert main(["bench", "recipes", "--rounds", "5", "--compare", "base", "--store", store]) == 0
    assert "no regression against recipe baseline 'base'" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["bench", "recipes", "--shapes", "8x8"], "--shapes is for 'suite bench kernels', not 'recipes'"),
    (["bench", "kernels", "--recipes", "mxfp4-train"], "--recipes is for 'suite bench recipes', not 'kernels'"),
    (["bench", "recipes", "--compare", "nope"], "no recipe baseline 'nope'"),
    (["bench", "recipes", "--size", "64,1,3,128"], "hidden a multiple of heads"),
    (["bench", "recipes", "--modes", "fast"], "--kernels 'fast': choose one of"),
    (["bench", "recipes", "--recipes", "nope-train"], "nope-train"),
    (["bench", "recipes", "--recipes", "mxfp4-train:bogus=1"], "bogus"),
])
def test_recipe_bench_user_errors_are_one_clear_message(tmp_path, capsys, argv, message):
    from suite.app.cli import main

    assert main([*argv, "--store", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_the_kernel_table_states_the_methods_and_gaps_the_code_derives(derived):
    """kernels/RESULTS.md carries the generated sections (a GPU run re-renders them): every kernel
    row, every gap, the configurations off the defaults and the notes there are what
    ``suite.bench.methods`` derives now."""
    from pathlib import Path

    from suite.bench.methods import markdown_methods

    text = (Path(__file__).resolve().parents[1] / "kernels" / "RESULTS.md").read_text()
    now = markdown_methods()
    table = [line for line in now.splitlines() if line.startswith("| ") and not line.startswith("| kernel ")]
    present = [line for line in table if line.split(" | ")[0] + " |" in text]
    assert present and all(line in text for line in present), "re-generate kernels/RESULTS.md's sections"
    gaps = now.split("## What no kernel serves yet", 1)[1]
    assert gaps in text, "kernels/RESULTS.md's 'What no kernel serves yet' is stale: re-generate it"


def test_the_listing_is_the_same_with_and_without_torchao(monkeypatch, derived):
    """qat's default (symmetric INT4 groups, backend=auto) runs torchao's QAT where torchao is installed
    and the INT4 group kernels without it: the listing names both whatever this environment has, and
    the path each environment runs declares only its own calls."""
    from suite.bench.methods import instantiate, markdown_methods
    from suite.methods.quant import qat

    texts = {}
    for installed in (True, False):
        monkeypatch.setattr(qat, "_torchao_available", lambda v=installed: v)
        texts[installed] = markdown_methods()
        mk = method_kernels("qat")
        int4 = ("fake_quantize", "int4", "granularity=group", "group_size=128")
        assert mk.kernels[int4] == ("quantize_int4_group", "dequantize_int4_group")
        assert any("torchao's QAT fake quantisation" in gap and "torchao is installed" in gap for gap in mk.gaps)
        (method,) = instantiate("qat")
        assert method.uses_torchao() is installed
        runtime = {call for _, _, call in method.format_calls(4096, torchao=method.uses_torchao())}
        assert runtime == ({None} if installed else {int4})
    assert texts[True] == texts[False]
    row = [line for line in texts[True].splitlines() if line.startswith("| quantize_int4_group |")]
    assert row and "qat" in row[0]


def test_hawq_lists_every_width_it_may_choose(derived):
    """HAWQ's weights are round-to-nearest int<b> at the width each layer is given, any of its choices:
    each choice is declared, and only INT4 (groups of 128) has a kernel."""
    from suite.methods.quant.quantizers import HawqConfig

    by_kernel, found = derived
    (mk,) = [m for m in found if m.method == "hawq"]
    choices = HawqConfig().choices
    keys = {("fake_quantize", f"int{b}", "granularity=group", "group_size=128"): b for b in choices}
    assert set(mk.calls) == set(keys)
    assert {keys[c] for c, names in mk.kernels.items() if names} == {4}
    assert "hawq" in by_kernel["quantize_int4_group"] and "hawq" in by_kernel["dequantize_int4_group"]
    assert sum("no kernel takes it" in gap for gap in mk.gaps) == len(choices) - 1


def test_the_notes_name_registered_kernels():
    """Every kernel the generated notes name (a backticked name, or a pattern) is a registered one."""
    import fnmatch
    import re

    from suite.bench.methods import NOTES, OFF_DEFAULT
    from suite.registry import KERNELS

    names = set(KERNELS.names())
    named = re.findall(r"`((?:fake_quantize_|quantize_|dequantize_|hadamard\d)[\w*]*)`", " ".join(NOTES))
    assert len(named) >= 6
    for name in named:
        assert fnmatch.filter(names, name), name
    for spec, _ in OFF_DEFAULT:
        assert any(method_kernels(spec).kernels.values()), spec


def test_a_gpu_render_keeps_the_hand_written_blocks_and_generates_the_rest(tmp_path, monkeypatch):
    """kernels/render_results.py on a small synthetic store, over the committed RESULTS.md: its
    hand-written blocks come through as they are, the pre-run status goes, and the header, the table
    and the methods' sections (gaps, configurations, notes) come from the rows and the code."""
    from pathlib import Path

    import pytest

    from benchmarks import synthetic_store as synthetic
    from suite.bench.methods import NOTES, markdown_methods
    from suite.kernels import render_results as rr
    from suite.results.store import ResultStore

    frame = synthetic.kernel_rows(commits=("c1",), slow_at=None)
    frame["roof"], frame["peak_tflops_dtype"], frame["status"], frame["error"] = "memory", "bfloat16", "ok", ""
    ResultStore(str(tmp_path / "store")).write_table("kernels", frame)
    committed = (Path(__file__).resolve().parents[1] / "kernels" / "RESULTS.md").read_text()
    blocks = rr.kept_blocks(committed)
    assert blocks and "bash kernels/measure_gpu.sh" in blocks[0]
    results = tmp_path / "RESULTS.md"
    results.write_text(committed)

    rr.write(str(tmp_path / "store"), results)
    text = results.read_text()
    assert all(block in text for block in blocks)
    assert "No GPU run has been made yet" not in text
    assert "Device: **NVIDIA H100 (synthetic)**" in text and "| quantize_mxfp4 | triton | 4096x4096 |" in text
    assert " ".join(rr.COST_MODEL_NOTE.split()) in " ".join(text.split())
    assert markdown_methods(["matmul_fp8", "quantize_mxfp4"]) in text
    assert all(f"- {note}" in text for note in NOTES)
    assert text.index(blocks[0]) < text.index("| kernel | impl |") < text.index("## Which methods run each kernel")

    rr.write(str(tmp_path / "store"), results)  # a second render over the first changes nothing
    assert results.read_text() == text

    results.write_text(rr.KEEP_BEGIN + "\nprose with no end marker\n")
    with pytest.raises(SystemExit, match="has no"):
        rr.write(str(tmp_path / "store"), results)
    assert results.read_text() == rr.KEEP_BEGIN + "\nprose with no end marker\n"  # left as it was
