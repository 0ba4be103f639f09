"""``suite scaling``: the low-precision scaling-law fit, checked against laws it must recover.

The reference is the closed form itself: losses generated from a known law
E + A/(N eff_N)^alpha + B/(D eff_D)^beta (Quartet's form) must give back its parameters; the
compute-optimal size is checked against a numeric minimisation over sizes.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from suite.errors import UserError
from suite.reports import scaling
from suite.reports.scaling import Law, Point

TRUE = Law(E=1.8, A=400.0, alpha=0.34, B=2000.0, beta=0.28)
EFF = {"fp8-train": (0.9, 0.95), "mxfp4-train": (0.6, 0.8)}
SIZES = (2.5e5, 1e6, 4e6, 1.6e7)
TOKENS_PER_PARAM = (5, 20, 80)


def grid(seeds: int = 3, noise: float = 0.0, recipes: dict | None = None, sizes=SIZES, budgets=TOKENS_PER_PARAM,
         rng_seed: int = 0) -> list[Point]:
    rng = np.random.default_rng(rng_seed)
    recipes = {"bf16-train": (1.0, 1.0), **(EFF if recipes is None else recipes)}
    return [Point(name, n, n * tpp, s, float(TRUE.loss(n, n * tpp, *eff)) + noise * rng.standard_normal())
            for n in sizes for tpp in budgets for s in range(seeds) for name, eff in recipes.items()]


def test_a_noise_free_grid_gives_back_the_law_and_the_efficiencies():
    fit = scaling.fit_scaling(grid(seeds=1), "bf16-train", bootstrap=0)
    for name in scaling.LAW_PARAMETERS:
        assert getattr(fit.law, name) == pytest.approx(getattr(TRUE, name), rel=1e-4)
    for r in fit.recipes:
        assert (r.eff_n, r.eff_d) == pytest.approx(EFF[r.recipe], rel=1e-4) and not r.refused
    assert max(abs(x.residual) for x in fit.residuals) < 1e-6
    assert {x.recipe for x in fit.residuals} == {"bf16-train", *EFF} and len(fit.residuals) == 3 * 12


def test_noisy_seeds_give_intervals_around_the_estimates():
    fit = scaling.fit_scaling(grid(seeds=4, noise=0.01, rng_seed=3), "bf16-train", bootstrap=40)
    assert fit.bootstrap >= 30 and fit.seeds == 4 and any("understates the spread" in n for n in fit.notes)
    for r in fit.recipes:
        low, high = r.eff_n_interval
        assert low <= r.eff_n <= high and high > low
        assert r.eff_n == pytest.approx(EFF[r.recipe][0], rel=0.05)
        assert r.eff_d == pytest.approx(EFF[r.recipe][1], rel=0.05)
    low, high = fit.law_intervals["alpha"]
    assert low <= fit.law.alpha <= high


def test_one_seed_fits_without_intervals_and_says_so():
    fit = scaling.fit_scaling(grid(seeds=1), "bf16-train", bootstrap=50)
    assert fit.bootstrap == 0 and all(math.isnan(v) for v in fit.recipes[0].eff_n_interval)
    assert any("one seed" in n for n in fit.notes)


def _fixed_budgets(sizes, tokens) -> list[Point]:
    return [Point("bf16-train", n, d, 0, float(TRUE.loss(n, d))) for n in sizes for d in tokens]


@pytest.mark.parametrize("points,said", [
    (_fixed_budgets((1e6, 4e6), (1e7, 1e8, 1e9)), "2 model size(s) and 3 token budget(s)"),
    (_fixed_budgets(SIZES, (1e8, 1e9)), "4 model size(s) and 2 token budget(s)"),
])
def test_a_grid_that_cannot_identify_the_law_is_refused(points, said):
    """With two levels of N, E + A/N^alpha takes two values for three unknowns (and so for D)."""
    with pytest.raises(UserError, match=re.escape(said)):
        scaling.fit_scaling(points, "bf16-train", bootstrap=0)


def test_a_recipe_on_one_grid_point_is_refused_with_the_reason_and_the_others_fit():
    points = grid(seeds=1) + [Point("halo-train", 1e6, 2e7, 0, 3.0)]
    fit = scaling.fit_scaling(points, "bf16-train", bootstrap=0)
    halo = next(r for r in fit.recipes if r.recipe == "halo-train")
    assert "1 grid point" in halo.refused and math.isnan(halo.eff_n)
    assert all(not r.refused for r in fit.recipes if r.recipe != "halo-train")
    with pytest.raises(UserError, match="no efficiencies were fitted for 'halo-train'"):
        fit.efficiency("halo-train")


def test_a_missing_baseline_is_named():
    with pytest.raises(UserError, match="no cells of the baseline 'bf16' .* recipes here: bf16-train"):
        scaling.fit_scaling(grid(seeds=1, recipes={}), "bf16", bootstrap=0)


def test_the_compute_optimal_size_is_the_numeric_minimum():
    from scipy.optimize import minimize_scalar

    for flops, eff, speedup in ((1e17, (1.0, 1.0), 1.0), (1e19, (0.6, 0.8), 3.0), (1e15, (0.9, 0.95), 1.6)):
        best = scaling.compute_optimal(TRUE, flops, *eff, speedup=speedup)
        k = speedup * flops / 6

        def loss_at(log_n, k=k, eff=eff):
            return float(TRUE.loss(math.exp(log_n), k / math.exp(log_n), *eff))

        numeric = minimize_scalar(loss_at, bounds=(0, 60), method="bounded", options={"xatol": 1e-10})
        assert math.log(best.n) == pytest.approx(numeric.x, abs=1e-4)
        assert best.loss == pytest.approx(numeric.fun, rel=1e-9) and best.n * best.d == pytest.approx(k)


def test_break_even_speedup():
    assert scaling.break_even_speedup(TRUE, 1e18, 1.0, 1.0) == pytest.approx(1.0, rel=1e-9)
    s = scaling.break_even_speedup(TRUE, 1e18, 0.6, 0.8)
    assert s > 1
    at = scaling.compute_optimal(TRUE, 1e18, 0.6, 0.8, s).loss
    assert at == pytest.approx(scaling.compute_optimal(TRUE, 1e18).loss, abs=1e-9)
    assert scaling.break_even_speedup(TRUE, 1e18, 1.5, 1.2) < 1  # better per token: wins even when slower


# -- the command on a store ------------------------------------------------------------------------------
def _write_grid(store, recipes: dict) -> None:
    from benchmarks.synthetic_store import cell_id_for
    from suite.models.catalog import LLAMA_SIZES

    sizes = ("llama-tiny", "llama-10m", "llama-30m", "llama-125m")
    for model in sizes:
        n = LLAMA_SIZES[model].non_embedding_params()
        for steps in (50, 200, 800):
            recipe = {"batch_size": 8, "grad_accum": 2, "max_length": 128, "lr": 1e-3}
            d = steps * 8 * 2 * 128
            for seed in range(3):
                for name, eff in recipes.items():
                    cid = cell_id_for(f"{name}-{model}-{steps}", seed, "r")
                    base = {"cell_id": cid, "run_id": "t", "method": name, "variant": name, "method_args": "[]",
                            "method_kind": "train", "task": "lm", "subtask": "", "model": model, "seed": seed,
                            "recipe": json.dumps(recipe), "config": "{}", "data_source": "dir:/data",
                            "synthetic_data": False, "started_at": "2025-01-01T00:00:00",
                            "finished_at": "2025-01-01T00:01:00", "status": "ok", "error": ""}
                    loss = float(TRUE.loss(n, d, *eff)) + 0.002 * (seed - 1)
                    store.write_cell([
                        dict(base, metric="val_loss", value=loss, split="valid", is_primary=True,
                             higher_is_better=False),
                        dict(base, metric="train_steps", value=float(steps), split="cost", is_primary=False,
                             higher_is_better=True)])


def test_suite_scaling_reads_sizes_and_tokens_from_the_store(tmp_path, capsys):
    from suite.app.cli import main
    from suite.models.catalog import LLAMA_SIZES
    from suite.reports import loading
    from suite.results.store import ResultStore

    store = ResultStore(tmp_path / "store")
    _write_grid(store, {"bf16-train": (1.0, 1.0), "mxfp4-train": (0.6, 0.8)})
    points, left_out = scaling.points_from_cells(loading.load_store(tmp_path / "store")[1])
    assert not left_out and len(points) == 4 * 3 * 3 * 2
    tiny = {p.n for p in points if p.n < 2e6}
    assert tiny == {float(LLAMA_SIZES["llama-tiny"].non_embedding_params())}
    assert {p.d for p in points} == {50 * 2048.0, 200 * 2048.0, 800 * 2048.0}

    code = main(["scaling", str(tmp_path / "store"), "--bootstrap", "20", "--speedup", "mxfp4-train=3",
                 "--flops", "1e17"])
    out = capsys.readouterr().out
    assert code == 0
    line = next(x for x in out.splitlines() if x.strip().startswith("mxfp4-train") and "[" in x)
    fields = re.sub(r"\[[^\]]*\]", "", line).split()  # name, eff_N, eff_D, points, rms (intervals removed)
    eff_n, eff_d = float(fields[1]), float(fields[2])
    assert eff_n == pytest.approx(0.6, rel=0.02) and eff_d == pytest.approx(0.8, rel=0.02)
    assert "break-even speed-up" in out and "residuals" in out


@pytest.mark.parametrize("argv,message", [
    (["--speedup", "mxfp4-train"], "--speedup: 'mxfp4-train' is not recipe=factor"),
    (["--speedup", "nosuch=2"], "--speedup names nosuch, which has no cells here"),
    (["--flops", "-1"], "--flops: '-1' is not a comma-separated list of positive numbers"),
    (["--baseline", "fp32"], "no cells of the baseline 'fp32'"),
])
def test_bad_arguments_are_refused_with_the_reason(tmp_path, capsys, argv, message):
    from suite.app.cli import main
    from suite.results.store import ResultStore

    _write_grid(ResultStore(tmp_path / "store"), {"bf16-train": (1.0, 1.0), "mxfp4-train": (0.6, 0.8)})
    assert main(["scaling", str(tmp_path / "store"), "--bootstrap", "0", *argv]) == 2
    assert message in capsys.readouterr().err



# -- the grid a scaling sweep runs -------------------------------------------------------------------------
def test_a_task_option_given_as_a_list_is_a_grid_of_cells():
    from suite.app.sweep import build_cells, parse_method_spec

    specs = [parse_method_spec("bf16-train")]
    for given in ("0.05,0.1,0.2", [0.05, 0.1, 0.2, 0.1]):  # a flag's comma list, a sweep file's list
        cells = build_cells(specs, [("lm", None)], ["llama-250k"], [0, 1], [{}], None,
                            {"lm": {"tokens_per_param": given}})
        budgets = sorted(c.task_options.tokens_per_param for c in cells)
        assert budgets == [0.05, 0.05, 0.1, 0.1, 0.2, 0.2]
        assert len({c.cell_id for c in cells}) == 6
    with pytest.raises(UserError, match="option 'tokens_per_param' is an empty list"):
        build_cells(specs, [("lm", None)], ["llama-250k"], [0], [{}], None, {"lm": {"tokens_per_param": []}})


def test_the_cell_count_guard_counts_the_grid_before_any_work(tmp_path, capsys):
    from suite.app.cli import main

    budgets = ",".join(str(0.01 * (i + 1)) for i in range(11))
    code = main(["run", "--methods", "bf16-train", "--tasks", "lm", "--models", "llama-250k", "--seeds", "100",
                 "--tokens-per-param", budgets, "--store", str(tmp_path / "s")])
    assert code == 2 and "this sweep has 1,100 cells" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_the_catalog_sizes_for_a_cpu_grid_count_their_parameters():
    """Each size's N (non-embedding parameters, Kaplan et al.'s count) equals the built model's
    parameters outside its (tied) embedding, counted here from the model itself."""
    import transformers

    from suite.models.catalog import CATALOG, LLAMA_SIZES

    for name in ("llama-250k", "llama-500k", "llama-2m", "llama-4m"):
        model = transformers.LlamaForCausalLM(CATALOG[name].make_config())
        counted = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)
        assert counted == LLAMA_SIZES[name].non_embedding_params()
    sizes = [LLAMA_SIZES[n].non_embedding_params() for n in ("llama-250k", "llama-500k", "llama-tiny", "llama-2m",
                                                             "llama-4m")]
    assert sizes == sorted(sizes) and 2.5e5 < sizes[0] and sizes[-1] < 4.5e6  # a CPU grid of 0.25M-4M


def test_on_a_budget_grid_the_baseline_is_tuned_per_budget_and_each_recipe_inherits_its_budgets_choice():
    """The protocol's learning rate where it matters: a search per size and budget, and a recipe at
    budget 0.1 runs at bf16-train's choice at 0.1, never at another budget's."""
    from suite.app.sweep import build_cells, parse_method_spec
    from suite.app.tuning import groups, parse_tune

    specs = [parse_method_spec("bf16-train"), parse_method_spec("fp8-train")]
    cells = build_cells(specs, [("lm", None)], ["llama-250k", "llama-500k"], [0, 1], [{}], None,
                        {"lm": {"tokens_per_param": "0.05,0.1"}})
    found = groups(cells, parse_tune("lr=1e-3,2e-3", None, "random", 0, baseline="bf16-train"))
    searched = [g for g in found if g.trials]
    heirs = [g for g in found if g.source is not None]
    assert len(searched) == 4 and all(g.base.spec.label == "bf16-train" for g in searched)  # 2 sizes x 2 budgets
    assert len({g.search_id for g in searched}) == 4 and all(len(g.trials) == 2 for g in searched)
    assert len(heirs) == 4
    for g in heirs:
        assert g.source.base.model == g.base.model
        assert g.source.base.task_options.tokens_per_param == g.base.task_options.tokens_per_param


def test_the_site_has_a_scaling_page_with_the_fit_its_figure_and_its_csv(tmp_path):
    import pandas as pd

    from suite.reports.site import render_site
    from suite.results.store import ResultStore

    _write_grid(ResultStore(tmp_path / "store"), {"bf16-train": (1.0, 1.0), "mxfp4-train": (0.6, 0.8)})
    render_site(tmp_path / "store", tmp_path / "site", workers=1)
    page = (tmp_path / "site" / "scaling.html").read_text(encoding="utf-8")
    assert "mxfp4-train" in page and "0.600" in page and "0.800" in page and "Residuals" in page
    assert (tmp_path / "site" / "figures" / "scaling.svg").stat().st_size > 0
    table = pd.read_csv(tmp_path / "site" / "data" / "scaling.csv")
    eff = table[(table["kind"] == "efficiency") & (table["recipe"] == "mxfp4-train")].set_index("name")["value"]
    assert eff["eff_N"] == pytest.approx(0.6, rel=1e-3) and eff["eff_D"] == pytest.approx(0.8, rel=1e-3)
    points = table[table["kind"] == "point"]
    assert len(points) == 2 * 12 and (points["residual"].abs() < 0.01).all()
    assert 'href="scaling.html"' in (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    latex = (tmp_path / "site" / "data" / "scaling.tex").read_text(encoding="utf-8")
    row = next(x for x in latex.splitlines() if x.startswith("mxfp4-train"))
    assert row.count("&") == 5 and row.split("&")[1].strip() == "0.600"
    assert "| mxfp4-train | 0.600 |" in (tmp_path / "site" / "data" / "scaling.md").read_text(encoding="utf-8")


def test_a_grid_without_enough_sizes_gets_a_page_that_says_why(tmp_path):
    from suite.reports.site import render_site
    from suite.results.store import ResultStore

    store = ResultStore(tmp_path / "store")
    _write_grid(store, {"bf16-train": (1.0, 1.0)})
    frame = store.load()
    small = frame[frame["model"].isin(["llama-tiny", "llama-10m"])]
    other = ResultStore(tmp_path / "small")
    for _, cell in small.groupby("cell_id"):
        other.write_cell(cell.to_dict("records"))
    render_site(tmp_path / "small", tmp_path / "site", workers=1)
    page = (tmp_path / "site" / "scaling.html").read_text(encoding="utf-8")
    assert "No law fitted." in page and "2 model size(s)" in page


def test_a_store_without_a_grid_has_no_scaling_page(tmp_path):
    from benchmarks import synthetic_store as synthetic
    from suite.reports.site import render_site

    store = synthetic.write_store(tmp_path / "store", subtasks=("sst2",), n_examples=50)
    render_site(store.root, tmp_path / "site", workers=1)
    assert not (tmp_path / "site" / "scaling.html").exists()
    assert "scaling.html" not in (tmp_path / "site" / "index.html").read_text(encoding="utf-8")


def test_a_law_the_grid_cannot_determine_is_refused_not_fitted_to_a_bound():
    """Losses with no size term at all: the least-squares optimum runs an exponent or coefficient to
    the edge of its range, which the data did not choose; the fit says so instead of reporting it."""
    flat = Law(E=1.8, A=1e-12, alpha=0.34, B=2000.0, beta=0.28)
    points = [Point("bf16-train", n, n * tpp, 0, float(flat.loss(n, n * tpp)))
              for n in SIZES for tpp in TOKENS_PER_PARAM]
    with pytest.raises(UserError, match="not identified|cannot be identified"):
        scaling.fit_scaling(points, "bf16-train", bootstrap=0)


def test_a_dry_run_prints_each_cells_resolved_configuration_and_runs_nothing(tmp_path, capsys):
    """See before you run: every cell with its method arguments (defaults filled), task options and
    recipe, one JSON object a line, the same ids a run would store; no store is made."""
    from suite.app.cli import main

    argv = ["run", "--methods", "full,fp8-train:scaling=row", "--tasks", "lm", "--models", "llama-250k", "--seeds",
            "2", "--tokens-per-param", "0.1,0.2", "--lr", "2e-3", "--store", str(tmp_path / "s"), "--dry-run"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    assert len(rows) == 2 * 2 * 2 and len({r["cell_id"] for r in rows}) == 8
    assert {r["task_options"]["tokens_per_param"] for r in rows} == {0.1, 0.2}
    assert all(r["recipe"]["lr"] == 2e-3 for r in rows)
    fp8 = next(m["args"] for r in rows for m in r["methods"] if m["name"] == "fp8-train")
    assert fp8["scaling"] == "row" and "real" in fp8  # the given argument and the defaults beside it
    assert "nothing runs" in captured.err and not (tmp_path / "s").exists()
