"""The base of peft's tuners: a tuner is a class whose attributes declare how its Config becomes peft's arguments.

A tuner names the peft config class it builds and the typed ``Config`` users set; its fields
pass through under their own name unless ``renames`` gives peft's name; ``fixed`` adds constant
arguments; ``seed_arg`` names the peft argument that takes the cell seed (random projections,
sparse masks), so every seed of a sweep draws its own. Target modules are resolved per model
family by ``PeftMethod`` (``suite.methods.common.targets``). What no declaration expresses
(CorDA's, EVA's and LoRA-GA's nested configs, AdaLoRA's step schedule, ...) is code on that
tuner's own class: it overrides ``peft_kwargs`` and adds to ``super().peft_kwargs(...)``.

The tuners themselves live in the family modules (``lora_family``, ``weight_tuners``,
``prompts``), each registered there with ``@register_method``; this module registers nothing.
Nothing here imports torch, transformers or peft at import time, so ``suite list`` stays fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from suite.method import MethodContext, MethodTarget
from suite.methods.peft.library import PeftMethod

Targets = tuple[str, ...] | None  # module-name keys; None: the model family's default

TARGET_FIELD = "target_modules"  # PeftMethod.build_peft_config resolves it per family, never passed through

# The mapping declarations, made read-only per class: a class attribute is shared by every instance.
_MAPPINGS = ("renames", "fixed", "pow2_when_zero", "target_args")


class PeftTuner(PeftMethod):
    """One peft tuner, declared: its peft config class, its Config, and how the one becomes the other.

    Besides the attributes below, a tuner sets what every peft method declares:
    ``peft_config_class``, ``Config``, ``target_kind``, ``mergeable``, ``default_lr``,
    ``families``, ``version`` and ``rank_bounded``. The names it declares are checked when its
    class is made, so a misspelt field fails when the module loads, not when a cell runs.
    """

    renames: ClassVar[Mapping[str, str]] = MappingProxyType({})  # our field -> peft argument
    fixed: ClassVar[Mapping[str, Any]] = MappingProxyType({})  # peft arguments with a constant value
    seed_arg: ClassVar[str | None] = None  # peft argument that receives the cell seed
    # Config fields not passed through because code on the class reads them (nested configs,
    # calibration batch counts) or peft has no such argument (kept so specs and cell ids stay valid).
    skip: ClassVar[tuple[str, ...]] = ()
    # Config fields peft has no argument for: never passed, and a value other than the default is
    # refused before any cell runs rather than silently ignored.
    inert: ClassVar[tuple[str, ...]] = ()
    # peft argument -> cap: a value of 0 becomes the largest power of two <= cap that divides the
    # in and out sizes of every targeted linear layer (block and vector sizes must divide them).
    pow2_when_zero: ClassVar[Mapping[str, int]] = MappingProxyType({})
    omit_when_zero: ClassVar[tuple[str, ...]] = ()  # peft arguments left to peft's own default when 0
    # peft argument -> (targets-table kind, Config field with the user's explicit names): for
    # tuners with more than one module list (IA3's feed-forward modules).
    target_args: ClassVar[Mapping[str, tuple[str, str]]] = MappingProxyType({})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _MAPPINGS:
            setattr(cls, name, MappingProxyType(dict(getattr(cls, name))))
        cls._check_declarations()

    @classmethod
    def _check_declarations(cls) -> None:
        """Every field it names exists in its Config, and every pow2/omit argument is one it passes."""
        names = {f.name for f in dataclasses.fields(cls.Config)}
        named = set(cls.renames) | set(cls.skip) | set(cls.inert) | {source for _, source in cls.target_args.values()}
        unknown = sorted(named - names)
        if unknown:
            raise ValueError(f"tuner {cls.__qualname__}: {cls.Config.__name__} has no field {', '.join(unknown)}")
        mapped = {cls.renames.get(n, n) for n in names - cls._consumed()} | set(cls.fixed)
        unmapped = sorted((set(cls.pow2_when_zero) | set(cls.omit_when_zero)) - mapped)
        if unmapped:
            raise ValueError(f"tuner {cls.__qualname__}: no peft argument {', '.join(unmapped)} is mapped")

    @classmethod
    def _consumed(cls) -> set[str]:
        """Config fields that do not pass through: targets, skipped and inert fields, target_args sources."""
        return {TARGET_FIELD, *cls.skip, *cls.inert, *(source for _, source in cls.target_args.values())}

    @classmethod
    def peft_argument_map(cls) -> tuple[dict[str, str], dict[str, Any]]:
        """The declarations read backwards: each passed-through field under its peft name, the target
        fields under theirs, and ``fixed``."""
        consumed = cls._consumed()
        fields = {f.name: cls.renames.get(f.name, f.name) for f in dataclasses.fields(cls.Config)
                  if f.name not in consumed}
        if cls.target_kind is not None and TARGET_FIELD in {f.name for f in dataclasses.fields(cls.Config)}:
            fields[TARGET_FIELD] = TARGET_FIELD
        fields.update({source: arg for arg, (_, source) in cls.target_args.items()})
        return fields, dict(cls.fixed)

    def peft_kwargs(self, model: Any, ctx: MethodContext) -> dict[str, Any]:
        """peft's arguments for ``self.config`` on ``model`` (targets are added by ``PeftMethod``)."""
        config = self.config
        consumed = self._consumed()
        # The class's Config, not the instance's type: fields a subclass of it adds do not pass through.
        kwargs = {self.renames.get(f.name, f.name): getattr(config, f.name)
                  for f in dataclasses.fields(self.Config) if f.name not in consumed}
        kwargs.update(self.fixed)
        if self.seed_arg is not None:
            kwargs[self.seed_arg] = ctx.seed
        for arg, (kind, source) in self.target_args.items():
            kwargs[arg] = self.targets(model, kind, getattr(config, source))
        for arg, cap in self.pow2_when_zero.items():
            if not kwargs[arg]:
                kwargs[arg] = pow2_divisor(model, self.targets(model), cap)
        for arg in self.omit_when_zero:
            if not kwargs[arg]:
                del kwargs[arg]
        return kwargs

    def unsupported(self, target: MethodTarget) -> str | None:
        """A value set on an inert field (the tuner has no such argument), then PeftMethod's checks."""
        defaults = {f.name: f.default for f in dataclasses.fields(self.Config)}
        for name in self.inert:
            value = getattr(self.config, name)
            if value != defaults[name]:
                return (f"peft's {self.peft_config_class} has no '{name}' argument, so {name}={value} "
                        f"would have no effect; leave it at {defaults[name]}")
        return super().unsupported(target)


def pow2_divisor(model: Any, keys: list[str] | None, cap: int) -> int:
    """Largest power of two <= cap dividing the in and out sizes of every targeted linear layer."""
    import math

    import torch

    from suite.methods.common.targets import matching_modules

    dims = [d for _, m in matching_modules(model, keys or [], torch.nn.Linear)
            for d in (m.in_features, m.out_features)]
    g = 0
    for d in dims:
        g = math.gcd(g, d)
    size = cap
    while size > 1 and (g == 0 or g % size):
        size //= 2
    return size
