"""The registry: decorators, name suggestions, and a third-party plugin through entry points."""

from __future__ import annotations

import textwrap

import pytest

from suite.errors import UnknownNameError
from suite.registry import METHODS, TASKS, Registry
from tests.conftest import run_suite


def test_builtin_plugins_are_registered():
    assert {"full", "linear-probe", "lora", "pissa"} <= set(METHODS.names())
    assert {"glue", "smoke"} <= set(TASKS.names())
    assert METHODS.get("lora").source == "peft"


def test_unknown_name_suggests_nearest():
    with pytest.raises(UnknownNameError) as info:
        METHODS.get("lorra")
    assert "lora" in info.value.suggestions
    assert "Did you mean" in str(info.value)


def test_duplicate_registration_is_refused():
    reg = Registry("suite.test-only", "suite.methods")

    @reg.register("x", kind="peft", summary="one")
    class A:
        pass

    with pytest.raises(ValueError, match="registered twice"):
        @reg.register("x", kind="peft", summary="two")
        class B:
            pass


def make_plugin_distribution(root) -> None:
    """A plugin that lives outside the package: a module plus dist-info with an entry point."""
    (root / "suite_demo_plugin.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        from suite.method import Method
        from suite.registry import register_method

        @dataclass
        class HeadOnlyConfig:
            scale: float = 1.0

        @register_method("demo-head-only", kind="peft", summary="demo plugin from outside the package",
                         source="suite-demo-plugin")
        class HeadOnly(Method):
            Config = HeadOnlyConfig
            default_lr = 3e-3

            def apply(self, model, ctx):
                for name, p in model.named_parameters():
                    p.requires_grad_(name.startswith("classifier"))
                return model
    '''))
    info = root / "suite_demo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: suite-demo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[suite.methods]\ndemo = suite_demo_plugin\n")
    (info / "RECORD").write_text("")


def test_entry_point_plugin_is_listed_and_runs(tmp_path):
    plugin_root = tmp_path / "site"
    plugin_root.mkdir()
    make_plugin_distribution(plugin_root)
    env = {"PYTHONPATH": str(plugin_root)}
    listed = run_suite("list", "methods", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "demo-head-only" in listed.stdout and "suite-demo-plugin" in listed.stdout
    ran = run_suite("run", "--methods", "demo-head-only:scale=2", "--tasks", "smoke", "--max-steps", "3",
                    "--store", str(tmp_path / "store"), "--no-progress", env=env)
    assert ran.returncode == 0, ran.stderr
    import suite.results

    frame = suite.results.load(tmp_path / "store")
    assert set(frame["method"]) == {"demo-head-only"}
    assert (frame["status"] == "ok").all()
