"""LoLDU, ComPEFT, GaLore and Sparse MeZO match their papers' definitions and run through the suite.

Tiny models from configs, synthetic data, one torch thread.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from suite.config import build_config
from suite.errors import UserError
from suite.models.accounting import count_parameters
from suite.recipe import Recipe
from suite.registry import METHODS
from suite.train import Trainer, TrainState
from tests.conftest import tiny_setup

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make(name: str, **args):
    cls = METHODS.get(name).target
    return cls(build_config(cls.Config, args, f"method '{name}'"))


def trainer(bundle, task, items, methods, steps: int, lr: float, weight_decay: float = 0.0) -> Trainer:
    recipe = Recipe(lr=lr, max_steps=steps, batch_size=16, warmup_ratio=0.0, schedule="constant",
                    weight_decay=weight_decay)
    return Trainer(bundle.model, items, lambda c: task.collate(c, bundle), recipe, methods, "cpu", 0,
                   progress=False)


def logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def block_linears(model) -> dict:
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder.layer." in n}


# -- LoLDU ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(7, 7), (9, 5), (5, 9)])
def test_ldu_factors_are_unit_triangular_and_multiply_back_to_w(shape):
    from suite.methods.peft.loldu import ldu

    w = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    perm, lower, d, upper = ldu(w)
    k = min(shape)
    assert lower.shape == (shape[0], k) and upper.shape == (k, shape[1]) and d.shape == (k,)
    torch.testing.assert_close(torch.diagonal(lower), torch.ones(k))
    torch.testing.assert_close(torch.diagonal(upper), torch.ones(k))
    assert torch.equal(lower.triu(1), torch.zeros_like(lower)) and torch.equal(upper.tril(-1), torch.zeros_like(upper))
    torch.testing.assert_close(((lower * d) @ upper)[perm], w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("args", [{}, {"r": 4}, {"r": 4, "alpha": 8.0}])
def test_loldu_reproduces_w_at_init(args):
    from suite.methods.peft.loldu import loldu_linear_class

    model, ctx, batch, *_ = tiny_setup(n_items=16)
    before = logits(model, batch)
    original = {n: m.weight.detach().clone() for n, m in block_linears(model).items()}
    adapted = make("loldu", **args).apply(model, ctx)
    wrapped = {n: m for n, m in adapted.named_modules() if isinstance(m, loldu_linear_class())}
    assert set(wrapped) == set(original)
    r = args.get("r")
    for name, m in wrapped.items():
        torch.testing.assert_close(m.merged_weight(), original[name], atol=1e-5, rtol=1e-5)
        k = r or min(original[name].shape)
        assert m.loldu_z.shape == (k,)
        assert float(m.loldu_sigma.detach()) == pytest.approx(args.get("alpha", 1.0) / k)
        # z starts at the pivots D_r of W's LDU decomposition
        from suite.methods.peft.loldu import ldu

        _, _, d, _ = ldu(original[name])
        torch.testing.assert_close(m.loldu_z.detach(), d[:k])
    torch.testing.assert_close(logits(adapted, batch), before, atol=1e-5, rtol=1e-5)


def test_loldu_trains_only_its_diagonal_and_scaling():
    model, ctx, _, items, task, bundle = tiny_setup(n_items=64)
    method = make("loldu")
    bundle.model = method.apply(model, ctx)
    names = {n.rsplit(".", 1)[-1] for n, p in bundle.model.named_parameters() if p.requires_grad}
    assert names == {"loldu_z", "loldu_sigma", "weight", "bias"}  # weight and bias: the classifier head
    head = {n for n, p in bundle.model.named_parameters() if p.requires_grad and n.rsplit(".", 1)[-1] in ("weight", "bias")}
    assert all(n.startswith("classifier.") for n in head)
    state = {k: v.detach().clone() for k, v in bundle.model.state_dict().items()}
    trainer(bundle, task, items, [method], steps=4, lr=1e-2).train()
    after = bundle.model.state_dict()
    changed = {k for k in state if not torch.equal(state[k], after[k])}
    assert changed and all(k.endswith(("loldu_z", "loldu_sigma")) or k.startswith("classifier.") for k in changed), changed
    assert any(k.endswith("loldu_z") for k in changed) and any(k.endswith("loldu_sigma") for k in changed)

    model, ctx, *_ = tiny_setup(n_items=16)
    frozen_scale = make("loldu", train_scaling=False).apply(model, ctx)
    names = {n.rsplit(".", 1)[-1] for n, p in frozen_scale.named_parameters() if p.requires_grad}
    assert names == {"loldu_z", "weight", "bias"}


@pytest.mark.parametrize("args,per_matrix", [({}, lambda i, o: min(i, o) + 1), ({"r": 4}, lambda i, o: 4 + 1),
                                             ({"r": 4, "train_scaling": False}, lambda i, o: 4)])
def test_loldu_parameter_count_matches_its_formula(args, per_matrix):
    """r + 1 per adapted matrix (the diagonal z and the scale sigma), plus the task's head."""
    model, ctx, *_ = tiny_setup(n_items=16)
    h, f, layers = model.config.hidden_size, model.config.intermediate_size, model.config.num_hidden_layers
    mats = layers * ([(h, h)] * 4 + [(h, f), (f, h)])
    head = sum(p.numel() for p in model.classifier.parameters())
    adapted = make("loldu", **args).apply(model, ctx)
    assert count_parameters(adapted)[0] == sum(per_matrix(i, o) for i, o in mats) + head


def test_loldu_merges_into_the_original_architecture():
    model, ctx, batch, *_ = tiny_setup(n_items=16)
    names = {n for n, _ in model.named_parameters()}
    method = make("loldu", r=8)
    adapted = method.apply(model, ctx)
    with torch.no_grad():
        for n, p in adapted.named_parameters():
            if n.endswith(("loldu_z", "loldu_sigma")):
                p.mul_(1.5)
    want = logits(adapted, batch)
    merged = method.merge(adapted)
    assert {n for n, _ in merged.named_parameters()} == names
    torch.testing.assert_close(logits(merged, batch), want, atol=1e-5, rtol=1e-4)


def test_loldu_rank_above_a_matrix_is_a_clear_error():
    model, ctx, *_ = tiny_setup(n_items=16)
    with pytest.raises(UserError, match="method 'loldu': argument 'r'=65"):
        make("loldu", r=65).apply(model, ctx)


# -- ComPEFT ---------------------------------------------------------------------------------------------
def test_compeft_keeps_the_requested_density_as_signs_times_one_scalar():
    from suite.methods.peft.compeft import compress

    tau = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    for density, alpha in [(0.05, None), (0.2, 2.5)]:
        result = compress(tau, density, alpha)
        hat = result.dense()
        assert int((hat != 0).sum()) == result.kept == round(density * tau.numel())
        kept = hat != 0
        assert torch.equal(hat[kept].abs(), torch.full_like(hat[kept], result.scale))  # one scalar
        assert torch.equal(hat[kept].sign(), tau[kept].sign())  # the kept entries keep their sign
        assert tau[kept].abs().min() >= tau[~kept].abs().max()  # the kept ones are the largest |tau|
        if alpha is None:  # the least-squares scalar: the mean magnitude of the kept entries
            assert result.scale == pytest.approx(float(tau[kept].abs().mean()), rel=1e-6)
        else:  # the paper's alpha * sigma(tau), sigma Bessel-corrected as the authors' tv.std()
            assert result.scale == pytest.approx(alpha * float(tau.std()), rel=1e-6)


def test_compeft_at_density_one_with_the_exact_scalar_returns_the_original_delta():
    from suite.methods.peft.compeft import compress

    generator = torch.Generator().manual_seed(1)
    c = 0.0123
    tau = c * torch.where(torch.rand(4096, generator=generator) < 0.5, -1.0, 1.0)
    exact_alpha = c / float(tau.std())
    torch.testing.assert_close(compress(tau, 1.0, exact_alpha).dense(), tau, atol=1e-9, rtol=1e-6)
    torch.testing.assert_close(compress(tau, 1.0).dense(), tau, atol=1e-9, rtol=1e-6)
    # Sparsification only (quantize=false) at density 1 is the identity for any update.
    tau = torch.randn(4096, generator=generator)
    assert torch.equal(compress(tau, 1.0, quantize=False).dense(), tau)


def test_compeft_scales_are_their_closed_forms_on_a_known_update():
    """tau = (4, -2, 1, -3, 0, 0) at density 1/2 keeps 4, -3, -2. Its mean is 0 and its squares sum
    to 30, so sigma(tau) = sqrt(30 / 5) = sqrt(6) (Bessel-corrected: the authors' ``tv.std()`` in
    prateeky2806/ComPEFT src/bert_eval.py). The paper's scalar is alpha * sqrt(6); the
    mean-magnitude variant's is (4 + 3 + 2) / 3 = 3."""
    from suite.methods.peft.compeft import compress

    tau = torch.tensor([4.0, -2.0, 1.0, -3.0, 0.0, 0.0])
    signs = torch.tensor([1.0, -1.0, 0.0, -1.0, 0.0, 0.0])
    paper = compress(tau, 0.5, alpha=2.0)
    assert paper.std == pytest.approx(math.sqrt(6))
    torch.testing.assert_close(paper.dense(), 2 * math.sqrt(6) * signs)
    torch.testing.assert_close(paper.with_alpha(0.5).dense(), 0.5 * math.sqrt(6) * signs)
    torch.testing.assert_close(compress(tau, 0.5, alpha=None).dense(), 3.0 * signs)


def test_compeft_alpha_is_a_grid_one_value_or_none():
    from suite.methods.peft.compeft import ALPHAS

    assert make("compeft").config.alpha == ALPHAS == tuple(sorted(ALPHAS))  # the paper's scale, alpha searched
    assert make("compeft", alpha="2.5").config.alpha == (2.5,)  # fixed
    assert make("compeft", alpha="4;1;4").config.alpha == (1.0, 4.0)  # one spelling per grid
    assert make("compeft", alpha="none").config.alpha is None  # the mean-magnitude variant


def test_compeft_cells_stored_before_version_2_keep_their_meaning_on_the_boards():
    """Version 1's default (alpha unset: the mean-magnitude scalar) reads ``compeft:alpha=none``,
    which is still that variant; the new default reads ``compeft``."""
    import json

    from suite.registry import METHODS
    from suite.reports.variants import canonical_label

    old = [{"name": "compeft", "args": {"density": 0.1, "alpha": None, "quantize": True, "loss_batches": 4},
            "version": "1"}]
    assert canonical_label("compeft", json.dumps(old)) == "compeft:alpha=none"
    fixed = [{"name": "compeft", "args": {"density": 0.1, "alpha": 2.5, "quantize": True, "loss_batches": 4},
              "version": "1"}]
    assert canonical_label("compeft", json.dumps(fixed)) == "compeft:alpha=2.5"
    new = [{"name": "compeft", "args": {"density": 0.1, "alpha": [0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0],
                                        "quantize": True, "loss_batches": 4}, "version": "2"}]
    assert canonical_label("compeft", json.dumps(new)) == "compeft"
    assert METHODS.get("compeft").target.version == "2"


def test_golomb_positions_round_trip_and_beat_a_bitmap():
    from suite.methods.peft.compeft import golomb_decode, golomb_encode, rice_parameter

    generator = torch.Generator().manual_seed(2)
    n = 20_000
    for density in (0.01, 0.1, 0.3):
        idx = torch.sort(torch.randperm(n, generator=generator)[: int(density * n)]).values
        b = rice_parameter(idx.numel(), n)
        data = golomb_encode(idx.numpy(), b)
        assert golomb_decode(data, idx.numel(), b) == idx.tolist()
        assert len(data) < n / 8  # fewer bytes than one bit per entry


def _lora_compeft_cell(density: float = 0.1, **args):
    model, ctx, batch, items, task, bundle = tiny_setup(n_items=64)
    lora, compeft = make("lora"), make("compeft", density=density, **args)
    bundle.model = lora.apply(model, ctx)
    bundle.model = compeft.apply(bundle.model, ctx)
    t = trainer(bundle, task, items, [lora, compeft], steps=4, lr=1e-2)
    t.train()
    return bundle, ctx, compeft, batch


def test_compeft_after_lora_compresses_the_lora_update_and_keeps_the_head():
    bundle, ctx, compeft, _ = _lora_compeft_cell(density=0.1)
    assert compeft.tracked and all("lora_" in n for n, _, _ in compeft.tracked)  # LoRA's A and B, not the head
    assert compeft.head and all("classifier" in n for n, _ in compeft.head)
    trained = {n: p.detach().clone() for n, p in compeft.head}
    trained_tau = compeft.task_vector()
    compeft.after_training(bundle.model, ctx)
    tau_hat = compeft.task_vector()  # theta now minus theta_init: the compressed update
    n = tau_hat.numel()
    assert int((tau_hat != 0).sum()) == round(0.1 * n)
    magnitudes = tau_hat[tau_hat != 0].abs()
    torch.testing.assert_close(magnitudes, torch.full_like(magnitudes, compeft.result.scale))
    assert torch.equal(tau_hat[tau_hat != 0].sign(), trained_tau[tau_hat != 0].sign())
    for name, p in compeft.head:  # the head is kept as trained
        assert torch.equal(p.detach(), trained[name])
    facts = compeft.measurements(bundle.model)
    assert facts["compeft_density"] == pytest.approx(0.1, abs=1 / n)
    assert facts["compeft_compressed_bytes"] < facts["compeft_original_bytes"] / 10
    assert {"compeft_loss_before", "compeft_loss_after", "compeft_rel_error"} <= set(facts)


def test_compeft_saves_what_restores_the_compressed_update(tmp_path):
    import json

    import numpy as np
    from safetensors import safe_open

    from suite.methods.peft.compeft import golomb_decode

    bundle, ctx, compeft, _ = _lora_compeft_cell(density=0.05)
    compeft.after_training(bundle.model, ctx)
    compeft.save_adapter(bundle.model, str(tmp_path))
    with safe_open(str(tmp_path / "compeft.safetensors"), "pt") as f:
        meta = f.metadata()
        positions = golomb_decode(f.get_tensor("compeft.positions").numpy().tobytes(), int(meta["kept"]),
                                  int(meta["rice_b"]))
        signs = torch.from_numpy(np.unpackbits(f.get_tensor("compeft.signs").numpy()))
        scale = float(f.get_tensor("compeft.scale")[0])
        head = {k.removeprefix("head."): f.get_tensor(k) for k in f.keys() if k.startswith("head.")}
    restored = torch.zeros(int(meta["n"]))
    restored[positions] = torch.where(signs[: len(positions)].bool(), scale, -scale)
    torch.testing.assert_close(restored, compeft.result.dense())
    assert [name for name, _ in json.loads(meta["parameters"])] == [n for n, _, _ in compeft.tracked]
    assert set(head) == {n for n, _ in compeft.head}
    assert (tmp_path / "compeft.safetensors").stat().st_size < 0.2 * compeft.measurements(None)["compeft_original_bytes"]


def test_compeft_stores_the_score_before_compression_where_the_runner_offers_an_evaluator():
    bundle, ctx, compeft, batch = _lora_compeft_cell(density=0.05)
    seen = []

    def evaluate() -> dict[str, float]:  # stands for the proposed MethodContext.evaluate hook
        seen.append(logits(bundle.model, batch))
        return {"accuracy": 0.75}

    ctx.evaluate = evaluate
    before = logits(bundle.model, batch)
    compeft.after_training(bundle.model, ctx)
    assert len(seen) == 1 and torch.equal(seen[0], before)  # evaluated before compressing
    assert compeft.measurements(bundle.model)["compeft_before/accuracy"] == 0.75


def _applied_alpha(compeft) -> float:
    """alpha of the update now in the parameters: its one magnitude over sigma(tau)."""
    tau_hat = compeft.task_vector()
    return float(tau_hat[tau_hat != 0].abs().mean()) / compeft.result.std


@pytest.mark.parametrize("metric,best", [("accuracy", 3.0), ("perplexity", 6.0)])
def test_compeft_selects_alpha_on_the_selection_split_where_the_runner_offers_it(metric, best):
    """Each alpha of the grid is applied and scored on the selection split; the best one stays
    (the metric's direction decides). ``ctx.evaluate`` (the reported split) only scores before."""
    from suite.methods.peft.compeft import ALPHAS

    bundle, ctx, compeft, _ = _lora_compeft_cell(density=0.1)
    tried, reported = [], []

    def evaluate_selection() -> dict[str, float]:  # stands for the proposed runner hook
        tried.append(_applied_alpha(compeft))
        # accuracy peaks at alpha = 3.2; perplexity is lowest at alpha = 5.5
        return {metric: -abs(tried[-1] - 3.2) if metric == "accuracy" else abs(tried[-1] - 5.5)}

    ctx.evaluate = lambda: reported.append(1) or {"accuracy": 0.5}
    ctx.evaluate_selection = evaluate_selection
    compeft.after_training(bundle.model, ctx)
    assert tried == pytest.approx(list(ALPHAS), rel=1e-5) and len(reported) == 1
    assert _applied_alpha(compeft) == pytest.approx(best, rel=1e-5)
    facts = compeft.measurements(bundle.model)
    assert facts["compeft_alpha"] == pytest.approx(best)
    assert facts[f"compeft_selection/{metric}"] == compeft.selection_scores[best]


def test_compeft_without_a_selection_split_selects_alpha_by_the_training_loss():
    bundle, ctx, compeft, _ = _lora_compeft_cell(density=0.1, alpha="1;2;4")
    compeft.after_training(bundle.model, ctx)
    losses = compeft.selection_scores
    best = min(losses, key=losses.get)
    assert set(losses) == {1.0, 2.0, 4.0} and _applied_alpha(compeft) == pytest.approx(best, rel=1e-5)
    facts = compeft.measurements(bundle.model)
    # the same training batches: the loss after compression is the chosen alpha's
    assert facts["compeft_selection_loss"] == facts["compeft_loss_after"] == pytest.approx(losses[best])


def test_compeft_ties_go_to_the_smaller_alpha_and_one_alpha_is_not_searched():
    bundle, ctx, compeft, _ = _lora_compeft_cell(density=0.1)
    ctx.evaluate_selection = lambda: {"accuracy": 0.5}
    compeft.after_training(bundle.model, ctx)
    assert _applied_alpha(compeft) == pytest.approx(0.5, rel=1e-5)

    bundle, ctx, compeft, _ = _lora_compeft_cell(density=0.1, alpha="2.5")
    ctx.evaluate_selection = lambda: pytest.fail("one alpha needs no selection")
    compeft.after_training(bundle.model, ctx)
    assert _applied_alpha(compeft) == pytest.approx(2.5, rel=1e-5) and not compeft.selection_scores


def test_compeft_alpha_none_is_the_mean_magnitude_variant():
    bundle, ctx, compeft, _ = _lora_compeft_cell(density=0.1, alpha="none")
    trained_tau = compeft.task_vector()
    compeft.after_training(bundle.model, ctx)
    tau_hat = compeft.task_vector()
    kept = tau_hat != 0
    torch.testing.assert_close(tau_hat[kept].abs(), torch.full_like(tau_hat[kept], float(trained_tau[kept].abs().mean())))
    assert "compeft_selection_loss" not in compeft.measurements(bundle.model)


def test_compeft_without_training_compresses_nothing():
    model, ctx, *_ = tiny_setup(n_items=16)
    method = make("compeft")
    model = method.apply(model, ctx)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    method.after_training(model, ctx)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert method.measurements(model) == {"compeft_compressed_params": 0.0}


@pytest.mark.parametrize("args,message", [({"density": "0"}, "density must be in"), ({"density": "1.5"}, "density"),
                                          ({"alpha": "-1"}, "alpha must be a positive")])
def test_compeft_bad_arguments_are_clear_errors(args, message):
    with pytest.raises(UserError, match=f"method 'compeft': {message}"):
        make("compeft", **args)


# -- GaLore ----------------------------------------------------------------------------------------------
def _galore_params(rank: int = 3, **group):
    from suite.methods.memory_efficient.galore import galore_optimizer_class

    generator = torch.Generator().manual_seed(0)
    wide = torch.nn.Parameter(torch.randn(6, 20, generator=generator))  # m < n: projected on the left
    tall = torch.nn.Parameter(torch.randn(20, 6, generator=generator))  # m >= n: projected on the right
    bias = torch.nn.Parameter(torch.randn(6, generator=generator))
    groups = [{"params": [wide, tall], "rank": rank, "update_gap": 2, "scale": 0.5, **group}, {"params": [bias]}]
    return galore_optimizer_class()(groups, lr=0.1), (wide, tall, bias), generator


def test_galore_state_has_the_ranks_shape_and_the_update_lies_in_the_projections_span():
    optimizer, (wide, tall, bias), generator = _galore_params(rank=3)
    for step in range(3):
        before = [p.detach().clone() for p in (wide, tall)]
        grads = [torch.randn(p.shape, generator=generator) for p in (wide, tall, bias)]
        for p, g in zip((wide, tall, bias), grads, strict=True):
            p.grad = g
        optimizer.step()
        sw, st = optimizer.state[wide], optimizer.state[tall]
        assert sw["exp_avg"].shape == sw["exp_avg_sq"].shape == (3, 20)  # r x n
        assert st["exp_avg"].shape == st["exp_avg_sq"].shape == (20, 3)  # m x r
        assert optimizer.state[bias]["exp_avg"].shape == bias.shape
        p_left, q_right = sw["projector"], st["projector"]
        if step % 2 == 0:  # refreshed from this step's gradient: its top-r singular subspace
            u, _, vh = torch.linalg.svd(grads[0], full_matrices=False)
            torch.testing.assert_close(p_left @ p_left.T, u[:, :3] @ u[:, :3].T, atol=1e-5, rtol=1e-5)
            u, _, vh = torch.linalg.svd(grads[1], full_matrices=False)
            torch.testing.assert_close(q_right.T @ q_right, vh[:3].T @ vh[:3], atol=1e-5, rtol=1e-5)
        d_wide, d_tall = wide.detach() - before[0], tall.detach() - before[1]
        assert d_wide.norm() > 0 and d_tall.norm() > 0
        # columns of the update in span(P), rows in span(Q^T)
        torch.testing.assert_close(d_wide - p_left @ (p_left.T @ d_wide), torch.zeros_like(d_wide), atol=1e-5, rtol=0)
        torch.testing.assert_close(d_tall - (d_tall @ q_right.T) @ q_right, torch.zeros_like(d_tall), atol=1e-5, rtol=0)


def test_galore_unprojected_parameters_follow_torch_adamw():
    from suite.methods.memory_efficient.galore import galore_optimizer_class

    generator = torch.Generator().manual_seed(3)
    ours = [torch.nn.Parameter(torch.randn(5, 4, generator=generator)), torch.nn.Parameter(torch.randn(4, generator=generator))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    a = galore_optimizer_class()([{"params": ours, "weight_decay": 0.1}], lr=0.05)
    b = torch.optim.AdamW([{"params": theirs, "weight_decay": 0.1}], lr=0.05)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=generator) for p in ours]
        for p, q, g in zip(ours, theirs, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), atol=1e-6, rtol=1e-6)


def test_galore_matches_galore_torch_where_installed():
    galore_torch = pytest.importorskip("galore_torch")
    optimizer, (wide, tall, bias), generator = _galore_params(rank=3, eps=1e-12)
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in (wide, tall, bias)]
    peer = galore_torch.GaLoreAdamW([{"params": theirs[:2], "rank": 3, "update_proj_gap": 2, "scale": 0.5,
                                      "proj_type": "std"}, {"params": theirs[2:]}], lr=0.1, eps=1e-12,
                                    no_deprecation_warning=True)
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=generator) for p in (wide, tall, bias)]
        for p, q, g in zip((wide, tall, bias), theirs, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        optimizer.step()
        peer.step()
    for p, q in zip((wide, tall, bias), theirs, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lerp", [True, False])  # torch's first-moment form, COAT's
@pytest.mark.parametrize("identity_projection", [False, True])
def test_the_shared_adamw_step_matches_torch_adamw(lerp, identity_projection):
    """GaLore's and COAT's optimizers share suite.optim.adamw_step: with nothing around it (no
    projection, or the identity as one; FP32 moments) it is torch's AdamW. eps is large enough
    that adding it before the bias correction (as HF's AdamW does) would show."""
    from suite.optim import adamw_step

    hyper = {"lr": 0.02, "betas": (0.9, 0.95), "eps": 1e-3, "weight_decay": 0.1}
    generator = torch.Generator().manual_seed(5)
    ours = torch.randn(6, 9, generator=generator)
    theirs = torch.nn.Parameter(ours.clone())
    reference = torch.optim.AdamW([theirs], **hyper)
    exp_avg, exp_avg_sq = torch.zeros_like(ours), torch.zeros_like(ours)
    back = (lambda n: n) if identity_projection else None
    for step in range(1, 9):
        grad = torch.randn(ours.shape, generator=generator)
        theirs.grad = grad.clone()
        reference.step()
        adamw_step(ours, grad, exp_avg, exp_avg_sq, step, project_back=back, lerp=lerp, **hyper)
    state = reference.state[theirs]
    torch.testing.assert_close(exp_avg, state["exp_avg"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(exp_avg_sq, state["exp_avg_sq"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours, theirs.detach(), atol=1e-6, rtol=1e-6)


def test_natural_galore_applies_the_inverse_empirical_fisher_by_woodbury():
    from suite.methods.memory_efficient.galore import natural_direction

    generator = torch.Generator().manual_seed(4)
    g_hist = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    g = g_hist[:, :1]
    damping = 0.3
    want = torch.linalg.solve(damping * torch.eye(40, dtype=torch.float64) + g_hist @ g_hist.T, g)
    torch.testing.assert_close(natural_direction(g, g_hist, damping), want)

    optimizer, (wide, tall, bias), generator = _galore_params(rank=3, natural=True, history=2, damping=0.3,
                                                              update_gap=3)
    for step in range(4):
        for p in (wide, tall, bias):
            p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()
        # the last s projected gradients, flattened; restarted with the projector at step 3
        assert optimizer.state[wide]["history"].shape == (3 * 20, [1, 2, 2, 1][step])


def test_natural_galore_runs_on_bf16_weights():
    """torch.linalg.solve has no bf16 kernel: the Woodbury step runs in float32 and is cast back."""
    from suite.methods.memory_efficient.galore import galore_optimizer_class, natural_direction

    generator = torch.Generator().manual_seed(6)
    g_hist = torch.randn(40, 5, generator=generator).bfloat16()
    g = g_hist[:, :1]
    got = natural_direction(g, g_hist, 0.3)
    wide = g_hist.double()
    want = torch.linalg.solve(0.3 * torch.eye(40, dtype=torch.float64) + wide @ wide.T, g.double())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), want, rtol=1e-2, atol=1e-3)  # only the result's bf16 rounding

    weight = torch.nn.Parameter(torch.randn(6, 20, generator=generator).bfloat16())
    before = weight.detach().clone()
    optimizer = galore_optimizer_class()([{"params": [weight], "rank": 3, "update_gap": 2, "scale": 0.5,
                                           "natural": True, "history": 2, "damping": 0.3}], lr=0.1)
    for _ in range(3):
        weight.grad = torch.randn(weight.shape, generator=generator).bfloat16()
        optimizer.step()
    assert weight.dtype == optimizer.state[weight]["history"].dtype == torch.bfloat16
    assert torch.isfinite(weight).all() and not torch.equal(weight.detach(), before)


def test_galore_trains_every_parameter_with_projected_states_for_the_block_linears():
    from suite.methods.memory_efficient.galore import galore_optimizer_class

    model, ctx, _, items, task, bundle = tiny_setup(n_items=64)
    method = make("galore", rank=4)
    bundle.model = method.apply(model, ctx)
    assert all(p.requires_grad for p in bundle.model.parameters())  # full-parameter training
    t = trainer(bundle, task, items, [method], steps=3, lr=1e-3, weight_decay=0.01)
    t.train()
    optimizer = t.state.optimizer
    assert isinstance(optimizer, galore_optimizer_class())
    layer = bundle.model.bert.encoder.layer[0]
    shapes = {"query": (layer.attention.self.query.weight, (64, 4)),  # 64 x 64: right side, m x r
              "up": (layer.intermediate.dense.weight, (128, 4)),  # 128 x 64: m x r
              "down": (layer.output.dense.weight, (4, 128))}  # 64 x 128: left side, r x n
    for name, (weight, shape) in shapes.items():
        assert optimizer.state[weight]["exp_avg"].shape == shape, name
    embeddings = bundle.model.bert.embeddings.word_embeddings.weight
    assert optimizer.state[embeddings]["exp_avg"].shape == embeddings.shape  # plain AdamW
    facts = method.measurements(bundle.model)
    assert facts["galore_projected_matrices"] == 12
    assert facts["optimizer_state_bytes"] < facts["galore_adamw_state_bytes"]


def test_galore_refuses_another_optimizer_by_name():
    model, ctx, *_ = tiny_setup(n_items=16)
    method = make("galore")
    method.apply(model, ctx)
    with pytest.raises(UserError, match="method 'galore' supplies its own AdamW"):
        method.make_optimizer(model, [{"params": list(model.parameters())}], Recipe(optimizer="sgd"))


@pytest.mark.parametrize("args,message", [({"rank": "0"}, "rank must be a positive"),
                                          ({"update_gap": "0"}, "update_gap"), ({"scale": "-2"}, "scale"),
                                          ({"damping": "0"}, "damping")])
def test_galore_bad_arguments_are_clear_errors(args, message):
    with pytest.raises(UserError, match=f"method 'galore': {message}"):
        make("galore", **args)


# -- Sparse MeZO -----------------------------------------------------------------------------------------
def test_sparse_mezo_perturbs_and_updates_only_the_selected_small_weights():
    model, ctx, batch, *_ = tiny_setup(n_items=16)
    method = make("sparse-mezo", sparsity=0.75, eps=1e-3)
    model = method.apply(model, ctx)
    model.train()
    state = TrainState(model, SimpleNamespace(lr=1.0), "cpu", total_steps=1, loss=lambda b: model(**b).loss)
    method.on_train_begin(model, state)
    masks = method.masks()
    head = {id(p) for p in ctx.new_parameters()}
    for p, m, h in zip(method.params, masks, method.thresholds, strict=True):
        if id(p) in head:
            assert m is None  # the task's head is perturbed densely
            continue
        assert p.detach().abs()[m].max() <= h  # m_i = 1 where |theta_i| <= h
        if p.ndim == 2:  # random weights, no ties: about the 25% smallest (a tied tensor, e.g. LayerNorm's 1s, is all in)
            assert 0.25 <= m.float().mean() < 0.25 + 2 / p.numel()
            assert h < p.detach().abs()[~m].min()
    before = [p.detach().clone() for p in method.params]
    method.train_step(model, batch, state)
    moved = 0
    for p, b, m in zip(method.params, before, masks, strict=True):
        if m is None:
            continue
        assert torch.equal(p.detach()[~m], b[~m])  # outside the mask: not even rounding
        moved += int((p.detach()[m] != b[m]).sum())
    assert moved > 0


def test_sparse_mezo_estimate_is_the_directional_derivative_along_the_masked_direction():
    from suite.methods.memory_efficient.mezo import perturb, projected_gradient

    model, _, batch, *_ = tiny_setup(n_items=16)
    model = model.double()
    model.train()
    params = list(model.parameters())
    generator = torch.Generator().manual_seed(5)
    masks = [torch.rand(p.shape, generator=generator) < 0.3 for p in params]
    g, _, _ = projected_gradient(lambda: model(**batch).loss, params, seed=7, eps=1e-5, masks=masks)
    model(**batch).loss.backward()
    zs = [torch.zeros_like(p) for p in params]
    perturb(zs, 7, 1.0, masks)
    assert all(torch.equal(z[~m], torch.zeros_like(z[~m])) for z, m in zip(zs, masks, strict=True))
    directional = sum(float((p.grad * z).sum()) for p, z in zip(params, zs, strict=True))
    assert g == pytest.approx(directional, rel=1e-4, abs=1e-8)


def test_masks_of_ones_leave_mezo_unchanged():
    from suite.methods.memory_efficient.mezo import perturb

    params = [torch.zeros(3, 4), torch.zeros(5)]
    dense = [p.clone() for p in params]
    perturb(params, 11, 0.5, [torch.ones(3, 4, dtype=torch.bool), None])
    perturb(dense, 11, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(params, dense, strict=True))


def test_sparse_mezo_bad_sparsity_is_a_clear_error():
    with pytest.raises(UserError, match="method 'sparse-mezo': sparsity must be in"):
        make("sparse-mezo", sparsity="1")
    assert make("sparse-mezo", eps="0.01").config.eps == 0.01  # MeZO's arguments still apply


# -- through the suite ------------------------------------------------------------------------------------
def test_all_four_run_the_smoke_task_to_ok_cells(tmp_path, capsys):
    from suite.app.cli import main
    from suite.results.store import ResultStore

    store = tmp_path / "store"
    # The composition goes first: suite.app.sweep.split_method_list reads "a,b+c:k=v" as b's arguments of a.
    methods = ["lora+compeft:density=0.05", "full+compeft", "loldu", "galore", "galore:natural=true", "sparse-mezo"]
    code = main(["run", "--methods", ",".join(methods), "--tasks", "smoke", "--models", "tiny-bert",
                 "--max-steps", "3", "--limit", "32", "--batch-size", "8", "--max-length", "32",
                 "--store", str(store), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    frame = ResultStore(store).load()
    assert set(frame["variant"]) == set(methods)
    assert (frame["status"] == "ok").all()
    cost = frame[frame["split"] == "cost"]
    values = {(v, m): x for v, m, x in zip(cost["variant"], cost["metric"], cost["value"], strict=True)}
    assert values[("lora+compeft:density=0.05", "compeft_density")] == pytest.approx(0.05, abs=1e-3)
    # adapter_bytes is the compressed file: far below the uncompressed LoRA update
    assert values[("lora+compeft:density=0.05", "adapter_bytes")] < \
        values[("lora+compeft:density=0.05", "compeft_original_bytes")] / 5
    assert values[("galore", "optimizer_state_bytes")] < values[("galore", "galore_adamw_state_bytes")]
    assert 0.2 < values[("sparse-mezo", "sparse_mezo_density")] < 0.5
    lower = {(v, m): h for v, m, h in zip(cost["variant"], cost["metric"], cost["higher_is_better"], strict=True)}
    assert not lower[("galore", "optimizer_state_bytes")] and not lower[("full+compeft", "compeft_compressed_bytes")]


def test_list_shows_the_four_with_their_papers(capsys):
    from suite.app.cli import main

    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    for name, arxiv in [("loldu", "2410.13618"), ("compeft", "2311.13171"), ("galore", "2403.03507"),
                        ("sparse-mezo", "2402.15751")]:
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert line.split()[1:3] == ["peft", "suite"] and arxiv in line, line



def test_compeft_stores_the_score_before_compression_beside_the_one_after(tmp_path):
    from tests.conftest import run_suite

    store = tmp_path / "store"
    result = run_suite("run", "--methods", "lora+compeft:density=0.05", "--tasks", "smoke", "--max-steps", "30",
                       "--limit", "128", "--store", str(store), "--no-progress")
    assert result.returncode == 0, result.stderr
    import suite.results

    metrics = suite.results.load(store).set_index("metric")["value"]
    assert {"accuracy", "compeft_before/accuracy"} <= set(metrics.index)
    assert 0 <= metrics["compeft_before/accuracy"] <= 1
