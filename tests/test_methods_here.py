"""The methods written here match their papers' definitions, and training with them learns.

Tiny models from configs, synthetic data, one torch thread.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from suite.config import build_config
from suite.method import MethodContext
from suite.recipe import Recipe
from suite.registry import METHODS
from suite.train import Trainer, TrainState
from tests.conftest import tiny_setup

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(model_name: str = "tiny-bert", n_items: int = 256):
    return tiny_setup(model_name, n_items)


def make(name: str, **args):
    cls = METHODS.get(name).target
    return cls(build_config(cls.Config, args, f"method '{name}'"))


def train(bundle, task, items, methods, steps: int, lr: float, batch_size: int = 16) -> list[float]:
    recipe = Recipe(lr=lr, max_steps=steps, batch_size=batch_size, warmup_ratio=0.0, schedule="constant")
    trainer = Trainer(bundle.model, items, lambda c: task.collate(c, bundle), recipe, methods, "cpu", 0,
                      progress=False)
    return trainer.train().losses


def logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def block_linear_weights(model) -> dict:
    """The weights the adapters target by default: every linear layer of the blocks."""
    return {n: m.weight.detach().clone() for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and ".encoder.layer." in n}


# -- initialisations that reproduce W ------------------------------------------------------------------
def test_pissa_adapter_plus_residual_reproduces_w():
    model, ctx, *_ = tiny(n_items=16)
    original = block_linear_weights(model)
    adapted = make("pissa").apply(model, ctx)
    checked = 0
    for name, module in adapted.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            key = name.replace("base_model.model.", "")
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            rebuilt = module.base_layer.weight + module.scaling["default"] * b @ a
            torch.testing.assert_close(rebuilt, original[key], atol=1e-5, rtol=1e-5)
            assert (module.base_layer.weight - original[key]).abs().max() > 1e-3  # the residual differs from W
            checked += 1
    assert checked == len(original) == 2 * 6  # every linear layer of both blocks


def _lora_modules(adapted) -> dict:
    return {n.replace("base_model.model.", ""): m for n, m in adapted.named_modules()
            if hasattr(m, "lora_A") and "default" in m.lora_A}


def test_loftq_starts_closer_to_w_than_qlora_on_a_quantised_base():
    """Algorithm 1 at T = 1 (Eckart-Young): ||W - Q - sBA|| < ||W - q(W)|| for every adapted
    layer, the base holds values on the format's grid, and the measurements report both."""
    from suite.methods.quant.layers import QuantLinear
    from suite.numerics import formats as F

    model, ctx, *_ = tiny(n_items=16)
    original = block_linear_weights(model)
    method = make("loftq", format="int4", block=32)
    adapted = method.apply(model, ctx)
    modules = _lora_modules(adapted)
    assert set(modules) == set(original)
    for name, module in modules.items():
        base = module.get_base_layer()
        assert isinstance(base, QuantLinear) and not base.weight.requires_grad
        opts = {"granularity": "group", "group_size": 32, "symmetric": True}
        torch.testing.assert_close(F.fake_quantize(base.weight, "int4", **opts), base.weight, atol=0, rtol=0)
        a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
        start = base.weight + module.scaling["default"] * b @ a
        w = original[name]
        qlora = (w - F.fake_quantize(w, "int4", **opts)).norm()
        assert (w - start).norm() < 0.95 * qlora, name
    measured = method.measurements(adapted)
    assert measured["loftq_init_error_mean"] < measured["qlora_init_error_mean"]
    assert measured["bits_per_weight"] == pytest.approx(4 + 32 / 32)  # int4 codes + a float32 scale per 32


def test_loftq_alternates_as_in_algorithm_1():
    """T = 2 rebuilt by hand from the formats module and a plain SVD: Q_2 = q(W - s B_1 A_1),
    s B_2 A_2 = SVD_r(W - Q_2)."""
    from suite.numerics import formats as F

    model, ctx, *_ = tiny(n_items=16)
    name = "bert.encoder.layer.0.intermediate.dense"
    w = block_linear_weights(model)[name].float()
    adapted = make("loftq", iters=2, r=4).apply(model, ctx)
    module = _lora_modules(adapted)[name]
    opts = {"block_size": 64, "double_quant": True}

    def svd_r(m):
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
        return u[:, :4] @ torch.diag(s[:4]) @ vh[:4]

    q1 = F.fake_quantize(w, "nf4", **opts)
    q2 = F.fake_quantize(w - svd_r(w - q1), "nf4", **opts)
    torch.testing.assert_close(module.get_base_layer().weight, q2, atol=1e-6, rtol=0)
    a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
    torch.testing.assert_close(module.scaling["default"] * b @ a, svd_r(w - q2), atol=1e-5, rtol=1e-4)


def test_loftq_costs_the_same_bits_as_qlora():
    model, ctx, *_ = tiny(n_items=16)
    nf4 = make("nf4")
    nf4_bits = nf4.measurements(nf4.apply(model, ctx))["bits_per_weight"]
    model, ctx, *_ = tiny(n_items=16)
    loftq = make("loftq")
    assert loftq.measurements(loftq.apply(model, ctx))["bits_per_weight"] == pytest.approx(nf4_bits)


@pytest.mark.parametrize("name", ["svfit", "sorsa", "lora-xs"])
def test_svd_methods_reproduce_w_at_init(name):
    from suite.methods.peft.svd_linear import SVDAdapted

    model, ctx, batch, *_ = tiny(n_items=16)
    before = logits(model, batch)
    original = block_linear_weights(model)
    adapted = make(name, **({"init_std": 0.0} if name == "lora-xs" else {})).apply(model, ctx)
    wrapped = {n: m for n, m in adapted.named_modules() if isinstance(m, SVDAdapted)}
    assert set(wrapped) == set(original)
    for n, m in wrapped.items():
        torch.testing.assert_close(m.merged_weight(), original[n], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits(adapted, batch), before, atol=1e-5, rtol=1e-5)


def test_svfit_trains_only_singular_values_and_sorsa_regulariser_is_zero_at_init():
    from suite.methods.peft.sorsa import orthonormality

    model, ctx, *_ = tiny(n_items=16)
    adapted = make("svfit", r=4).apply(model, ctx)
    names = {n.rsplit(".", 1)[-1] for n, p in adapted.named_parameters() if p.requires_grad}
    assert names == {"sv", "weight", "bias"}  # sv + the classifier head
    model, ctx, *_ = tiny(n_items=16)
    sorsa = make("sorsa")
    adapted = sorsa.apply(model, ctx)
    assert float(orthonormality(adapted)) < 1e-4  # U, V^T start orthonormal
    with torch.no_grad():
        for m in adapted.modules():
            if hasattr(m, "U") and isinstance(m.U, torch.nn.Parameter):
                m.U.mul_(1.1)
    assert float(sorsa.regularizer(adapted)) > 0.01


# -- S2FT ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["tiny-bert", "tiny-llama"])
def test_s2ft_co_permutation_preserves_the_function(model_name):
    model, ctx, batch, *_ = tiny(model_name, n_items=16)
    before = logits(model, batch)
    adapted = make("s2ft", heads=2, channels=16).apply(model, ctx)
    torch.testing.assert_close(logits(adapted, batch), before, atol=1e-5, rtol=1e-5)


def test_s2ft_backward_matches_a_dense_linear():
    from suite.methods.peft.s2ft import s2ft_classes

    _, s2ft_linear = s2ft_classes()
    torch.manual_seed(0)
    dense = torch.nn.Linear(12, 5)
    perm = torch.arange(12)
    sparse = s2ft_linear(dense, 4, perm)
    x = torch.randn(3, 7, 12, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    dense.weight.requires_grad_(True)
    (sparse(x) ** 2).sum().backward()
    (dense(x2) ** 2).sum().backward()
    torch.testing.assert_close(sparse.weight_train.grad, dense.weight.grad[:, :4])
    torch.testing.assert_close(x.grad, x2.grad)


@pytest.mark.parametrize("model_name", ["tiny-bert", "tiny-llama"])
def test_s2ft_changes_only_the_selected_columns(model_name):
    model, ctx, _, items, task, bundle = tiny(model_name, n_items=128)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = make("s2ft", heads=1, channels=8)
    bundle.model = method.apply(model, ctx)
    train(bundle, task, items, [method], steps=4, lr=1e-2)
    merged = method.merge(bundle.model)
    cfg = merged.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    o_name, down_name = ("attention.output.dense", "output.dense") if model_name == "tiny-bert" \
        else ("self_attn.o_proj", "mlp.down_proj")
    after = dict(merged.named_parameters())
    assert set(after) == set(original)  # the original architecture and names
    changed_cols: dict[str, set[int]] = {}
    for name, value in after.items():
        diff = (value.detach() - original[name]).abs()
        if "classifier" in name or "score" in name:
            continue
        if diff.max() == 0:
            continue
        assert name.endswith(".weight") and (o_name in name or down_name in name), name
        changed_cols[name] = set(torch.nonzero(diff.max(dim=0).values).flatten().tolist())
    layers = merged.config.num_hidden_layers
    assert len(changed_cols) == 2 * layers
    for i, chosen in enumerate(method.selection):
        prefix = [n for n in changed_cols if f".{i}." in n]
        o_cols = next(changed_cols[n] for n in prefix if o_name in n)
        d_cols = next(changed_cols[n] for n in prefix if down_name in n and o_name not in n)
        allowed_o = {h * head_dim + j for h in chosen["heads"] for j in range(head_dim)}
        assert o_cols and o_cols <= allowed_o
        assert d_cols and d_cols <= set(chosen["channels"])


def test_s2ft_trains_far_fewer_bytes_than_full():
    """Gradients + AdamW states after one step: S2FT's are a small fraction of full fine-tuning's."""

    def state_bytes(name: str) -> int:
        model, ctx, _, items, task, bundle = tiny(n_items=64)
        method = make(name)
        bundle.model = method.apply(model, ctx)
        recipe = Recipe(lr=1e-3, max_steps=1, batch_size=8, warmup_ratio=0.0)
        trainer = Trainer(bundle.model, items, lambda c: task.collate(c, bundle), recipe, [method], "cpu", 0,
                          progress=False)
        trainer.train()
        opt = sum(t.numel() * t.element_size() for s in trainer.state.optimizer.state.values() for t in s.values()
                  if torch.is_tensor(t) and t.ndim > 0)
        return opt

    assert state_bytes("s2ft") < 0.2 * state_bytes("full")


# -- MeZO ----------------------------------------------------------------------------------------------
def test_mezo_two_point_estimate_matches_the_directional_derivative():
    from suite.methods.memory_efficient.mezo import perturb, projected_gradient

    model, _, batch, *_ = tiny(n_items=16)
    model = model.double()
    model.train()
    params = [p for p in model.parameters()]
    before = [p.detach().clone() for p in params]

    def loss() -> torch.Tensor:
        return model(**batch).loss

    g, plus, minus = projected_gradient(loss, params, seed=123, eps=1e-5)
    for p, b in zip(params, before, strict=True):
        torch.testing.assert_close(p.detach(), b, atol=1e-12, rtol=0)  # restored exactly enough
    loss().backward()
    zs = [torch.zeros_like(p) for p in params]
    perturb(zs, 123, 1.0)  # the same z, regenerated from the seed
    directional = sum(float((p.grad * z).sum()) for p, z in zip(params, zs, strict=True))
    assert g == pytest.approx(directional, rel=1e-4, abs=1e-8)
    assert plus != minus


def test_mezo_step_follows_algorithm_1_and_reduces_a_loss():
    torch.manual_seed(0)
    w_true = torch.randn(8)
    x = torch.randn(256, 8)
    y = x @ w_true
    model = torch.nn.Linear(8, 1, bias=False)
    method = make("mezo", eps=1e-3)
    method.apply(model, MethodContext(seed=0))
    state = TrainState(model, SimpleNamespace(lr=0.05), "cpu", total_steps=300,
                       loss=lambda b: ((model(b["x"]).squeeze(-1) - b["y"]) ** 2).mean())
    method.on_train_begin(model, state)
    batch = {"x": x, "y": y}
    start = float(state.loss(batch))
    losses = [method.train_step(model, batch, state) for _ in range(300)]
    assert losses[-1] < 0.2 * start


# -- SpIEL, LISA, BitFit -------------------------------------------------------------------------------
def test_spiel_keeps_density_while_dropping_and_regrowing():
    from suite.methods.peft.spiel import spiel_linear_class

    model, ctx, _, items, task, bundle = tiny(n_items=128)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = make("spiel", density=0.05, interval=2, drop_fraction=0.5)
    bundle.model = method.apply(model, ctx)
    modules = [m for m in bundle.model.modules() if isinstance(m, spiel_linear_class())]
    start = [m.indices.clone() for m in modules]
    train(bundle, task, items, [method], steps=6, lr=1e-2)
    assert method.updates == 2  # after steps 2 and 4 (not at the last step)
    for m, s in zip(modules, start, strict=True):
        assert m.indices.unique().numel() == m.indices.numel() == s.numel()  # fixed density
        assert (m.indices != s).any()  # regrowth moved some indices
    active = {id(m.base.weight): set(m.indices.tolist()) for m in modules}
    merged = method.merge(bundle.model)
    for name, p in merged.named_parameters():
        if "classifier" in name:
            continue
        changed = set(torch.nonzero((p.detach() - original[name]).flatten()).flatten().tolist())
        assert changed <= active.get(id(p), set()), name


def test_lisa_trains_only_the_sampled_blocks_in_a_window():
    model, ctx, _, items, task, bundle = tiny(n_items=128)
    method = make("lisa", layers=1, interval=3)
    bundle.model = method.apply(model, ctx)
    first = method.active[0]
    blocks = method.blocks
    before = [[p.detach().clone() for p in b.parameters()] for b in blocks]
    train(bundle, task, items, [method], steps=3, lr=1e-2)
    for i, block in enumerate(blocks):
        moved = any((p.detach() != b).any() for p, b in zip(block.parameters(), before[i], strict=True))
        assert moved == (i == first), i
    assert len(method.history) == 1  # resampling happens at the window's end, not before


def test_bitfit_changes_only_biases_and_the_head():
    model, ctx, _, items, task, bundle = tiny(n_items=128)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = make("bitfit")
    bundle.model = method.apply(model, ctx)
    train(bundle, task, items, [method], steps=3, lr=1e-2)
    for name, p in bundle.model.named_parameters():
        if (p.detach() != original[name]).any():
            assert name.endswith("bias") or "classifier" in name, name


# -- training learns -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pretrained_state():
    """A tiny BERT fully fine-tuned on the smoke task: a base whose features carry the cues.

    A random-weight tiny BERT has near-constant pooled features, so only methods that
    retrain attention broadly can learn from it in a few steps; a pretrained base is the
    situation PEFT methods are made for.
    """
    model, ctx, _, items, task, bundle = tiny(n_items=2000)
    lora = make("lora", target_modules=("query", "key", "value", "output.dense", "intermediate.dense"))
    bundle.model = lora.apply(model, ctx)
    losses = train(bundle, task, items, [lora], steps=100, lr=3e-3, batch_size=32)
    assert sum(losses[-10:]) / 10 < 0.6, losses  # the base learned the cues
    merged = lora.merge(bundle.model)
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


@pytest.mark.parametrize("name,lr", [("lora", 3e-3), ("dora", 3e-3), ("vera", 1e-2), ("ia3", 1e-2),
                                     ("adalora", 3e-3), ("bitfit", 1e-2), ("ssf", 1e-2), ("s2ft", 3e-3),
                                     ("lora-xs", 1e-2), ("svfit", 1e-2), ("sorsa", 3e-3), ("spiel", 1e-2),
                                     ("lisa", 1e-3), ("prefix", 1e-2)])
def test_training_reduces_the_loss(name, lr, pretrained_state):
    """A small learnable task: from the pretrained base with a fresh head, fit 64 examples."""
    model, ctx, _, items, task, bundle = tiny(n_items=64)
    model.load_state_dict(pretrained_state)
    torch.manual_seed(1)
    model.classifier.reset_parameters()
    ctx.recipe = SimpleNamespace(max_steps=30)
    method = make(name)
    bundle.model = method.apply(model, ctx)
    losses = train(bundle, task, items, [method], steps=30, lr=lr, batch_size=32)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.05, losses


@pytest.mark.parametrize("name", ["loftq", "rtn"])
def test_an_unknown_format_name_fails_at_configuration(name):
    from suite.errors import UserError

    with pytest.raises(UserError, match=f"method '{name}': unknown number format 'nope'.*nf4"):
        make(name, format="nope")
