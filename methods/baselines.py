"""Baselines every comparison needs: full fine-tuning and the linear probe (head only)."""

from __future__ import annotations

from typing import Any

from suite.errors import CellFailure
from suite.method import Method, MethodContext, MethodTarget
from suite.registry import register_method


@register_method("full", kind="peft", summary="full fine-tuning: every parameter trains", source="suite")
class FullFineTuning(Method):
    mergeable = True

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def merge(self, model: Any) -> Any:
        return model


@register_method("linear-probe", kind="peft", summary="train the task head only, backbone frozen",
                 source="suite")
class LinearProbe(Method):
    mergeable = True
    default_lr = 1e-3

    def unsupported(self, target: MethodTarget) -> str | None:
        if target.task_kind == "causal-lm":
            return "a causal-LM task adds no new head (lm_head is pretrained), so a linear probe has nothing to train"
        return None

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        head = ctx.new_parameters()
        if not head:
            raise CellFailure("linear-probe: the task added no module to train (no new head); "
                              "a linear probe needs one")
        for p in model.parameters():
            p.requires_grad_(False)
        for p in head:
            p.requires_grad_(True)
        return model

    def merge(self, model: Any) -> Any:
        return model
