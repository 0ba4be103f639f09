"""peft's tuners are plain module-level classes: their declarations are checked when the class is
made, and they pickle by name (cells travel to other processes by registered name)."""

from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass

import pytest

from suite.methods.peft.tuners import PeftTuner, Targets
from suite.registry import METHODS

FAMILY_MODULES = ("suite.methods.peft.lora_family", "suite.methods.peft.weight_tuners",
                  "suite.methods.peft.prompts")


@dataclass
class _Args:
    r: int = 8
    block_size: int = 0
    target_modules: Targets = None


def test_a_misspelt_field_fails_when_the_class_is_made():
    with pytest.raises(ValueError, match="has no field dropuot"):
        class Misspelt(PeftTuner):
            Config = _Args
            renames = {"dropuot": "lora_dropout"}
    with pytest.raises(ValueError, match="has no field feedforward"):
        class MisspeltTargets(PeftTuner):
            Config = _Args
            target_args = {"feedforward_modules": ("ia3-ff", "feedforward")}


def test_a_size_rule_on_an_argument_that_is_not_passed_fails_when_the_class_is_made():
    with pytest.raises(ValueError, match="no peft argument block_size is mapped"):
        class Unmapped(PeftTuner):
            Config = _Args
            skip = ("block_size",)
            pow2_when_zero = {"block_size": 64}


def test_declared_mappings_are_read_only():
    class Declared(PeftTuner):
        Config = _Args
        renames = {"block_size": "group_size"}

    with pytest.raises(TypeError):
        Declared.renames["r"] = "rank"


def test_every_tuner_is_a_module_level_class_that_pickles_by_name():
    from suite.app.sweep import MethodPart, MethodSpec, resolve_method_spec

    tuners = [e for e in METHODS.entries() if e.target.__module__ in FAMILY_MODULES]
    assert len(tuners) > 40
    for entry in tuners:
        cls = entry.target
        assert getattr(importlib.import_module(cls.__module__), cls.__qualname__) is cls
        assert pickle.loads(pickle.dumps(cls)) is cls
        (resolved,) = resolve_method_spec(MethodSpec((MethodPart(entry.name, ()),)))
        again = pickle.loads(pickle.dumps(resolved))
        assert again.cls is cls and again.config == resolved.config
    assert METHODS.get("dora").target.__name__ == "PeftDora"
    assert METHODS.get("lora-ga").target.__name__ == "PeftLoraGa"
