"""One generic wrapper around the installed peft: a method is a peft config plus defaults.

A subclass names the peft config class and maps its own typed ``Config`` onto peft's
arguments; the wrapper chooses the peft task type from the model's head, keeps the task
head trainable, and turns peft's errors about absent target modules into a clear message.
"""

from __future__ import annotations

from typing import Any, ClassVar

from suite.errors import UserError
from suite.method import Method, MethodContext


def peft_task_type(ctx: MethodContext) -> str:
    return "CAUSAL_LM" if ctx.task_kind == "causal-lm" else "SEQ_CLS"


class PeftMethod(Method):
    """Base of methods implemented by peft. Subclasses set ``peft_config_class`` and ``peft_kwargs``."""

    peft_config_class: ClassVar[str] = ""
    mergeable = True

    def peft_kwargs(self, model: Any, ctx: MethodContext) -> dict[str, Any]:
        raise NotImplementedError

    def build_peft_config(self, model: Any, ctx: MethodContext) -> Any:
        import peft

        config_class = getattr(peft, self.peft_config_class)
        kwargs = self.peft_kwargs(model, ctx)
        kwargs.setdefault("task_type", peft_task_type(ctx))
        try:
            return config_class(**kwargs)
        except (TypeError, ValueError) as exc:
            raise UserError(f"method '{self.name}': peft rejected the arguments: {exc}") from None

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from peft import get_peft_model

        config = self.build_peft_config(model, ctx)
        try:
            return get_peft_model(model, config)
        except ValueError as exc:
            text = str(exc)
            if "target" in text.lower():
                present = sorted({n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n})
                raise UserError(
                    f"method '{self.name}' cannot apply to this model: {text}. Set target_modules "
                    f"to module names it has, e.g. one of: {', '.join(present[:30])}"
                ) from None
            raise

    def save_adapter(self, model: Any, path: str) -> None:
        model.save_pretrained(path)

    def merge(self, model: Any) -> Any:
        return model.merge_and_unload()
