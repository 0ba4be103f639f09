"""Specs and sweeps: method and task lists, arguments, seeds, recipes and stable cell ids."""

from __future__ import annotations

import pytest

from suite.app.sweep import (
    build_cells,
    parse_method_spec,
    parse_seeds,
    parse_task_list,
    resolve_method_spec,
    split_method_list,
)
from suite.config import build_config
from suite.errors import UnknownNameError, UserError
from suite.recipe import resolve_recipe


def test_method_list_with_arguments_and_compositions():
    assert split_method_list("lora:r=16,alpha=32,pissa") == ["lora:r=16,alpha=32", "pissa"]
    assert split_method_list("nf4+lora:r=8,alpha=16,full") == ["nf4+lora:r=8,alpha=16", "full"]
    spec = parse_method_spec("full+lora:r=4,target_modules=query;value")
    assert spec.name == "full+lora"
    assert [p.name for p in spec.parts] == ["full", "lora"]
    resolved = resolve_method_spec(spec)
    assert resolved[1].config.r == 4
    assert resolved[1].config.target_modules == ("query", "value")


def test_method_argument_errors_name_method_argument_and_choices():
    with pytest.raises(UserError, match=r"method 'lora' has no argument 'rank'.*Valid arguments: r, alpha"):
        resolve_method_spec(parse_method_spec("lora:rank=4"))
    with pytest.raises(UserError, match="expected an integer"):
        resolve_method_spec(parse_method_spec("lora:r=four"))
    with pytest.raises(UserError, match="r must be a positive integer"):
        resolve_method_spec(parse_method_spec("lora:r=0"))
    with pytest.raises(UserError, match="malformed"):
        split_method_list("r=4,lora")
    with pytest.raises(UserError, match="key=value"):
        parse_method_spec("lora:r4")


def test_task_lists_expand_families_and_subsets():
    assert len(parse_task_list("glue")) == 8
    assert parse_task_list("glue:sst2,rte") == [("glue", "sst2"), ("glue", "rte")]
    assert parse_task_list("glue:sst2,smoke") == [("glue", "sst2"), ("smoke", None)]
    with pytest.raises(UnknownNameError, match="sst2"):
        parse_task_list("glue:sst-2")
    with pytest.raises(UnknownNameError, match="Did you mean: glue"):
        parse_task_list("gleu")


def test_seeds_count_or_list():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("1,5,7") == [1, 5, 7]
    assert parse_seeds([4]) == [4]
    with pytest.raises(UserError):
        parse_seeds("x")


def test_recipe_validation_and_unknown_keys():
    recipe = resolve_recipe({"lr": 1e-3}, {"max_steps": "50", "schedule": "cosine"})
    assert recipe.lr == 1e-3 and recipe.max_steps == 50 and recipe.schedule == "cosine"
    with pytest.raises(UserError, match="not one of the valid choices"):
        resolve_recipe({"schedule": "zigzag"})
    with pytest.raises(UserError, match="recipe has no argument 'learning_rate'"):
        resolve_recipe({"learning_rate": 1})


def test_cell_ids_are_stable_and_sensitive_to_the_config():
    def ids(method: str, seeds=(0,), extra=None):
        cells = build_cells([parse_method_spec(method)], [("smoke", None)], ["tiny-bert"], list(seeds),
                            [extra or {}], None)
        return [c.cell_id for c in cells]

    assert ids("lora") == ids("lora")
    assert ids("lora") == ids("lora:r=8")  # explicit default == implicit default
    assert ids("lora") != ids("lora:r=16")
    assert ids("lora") != ids("lora", extra={"max_steps": 7})
    assert len(set(ids("lora", seeds=(0, 1, 2)))) == 3


def test_method_default_lr_applies_unless_user_overrides():
    cells = build_cells([parse_method_spec("lora"), parse_method_spec("full")], [("glue", "sst2")],
                        ["tiny-bert"], [0], [{}], None)
    assert cells[0].recipe.lr == 1e-3 and cells[1].recipe.lr == 5e-5
    cells = build_cells([parse_method_spec("lora")], [("glue", "sst2")], ["tiny-bert"], [0],
                        [{"lr": 1e-4}], None)
    assert cells[0].recipe.lr == 1e-4


def test_build_config_types():
    from suite.methods.peft.lora_family import LoraConfig

    config = build_config(LoraConfig, {"r": "4", "alpha": "8", "rslora": "true"}, "method 'lora'")
    assert (config.r, config.alpha, config.rslora) == (4, 8.0, True)


def test_a_composition_after_another_method_is_its_own_spec():
    from suite.app.sweep import split_method_list

    assert split_method_list("lora,lora+compeft:density=0.1") == ["lora", "lora+compeft:density=0.1"]
    assert split_method_list("nf4:bits=4,group=64+lora,full") == ["nf4:bits=4,group=64+lora", "full"]
    assert split_method_list("lora:r=16,alpha=32,pissa") == ["lora:r=16,alpha=32", "pissa"]
