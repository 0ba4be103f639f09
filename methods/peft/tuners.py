"""The peft tuner table: one declarative row per tuner, and the one factory that makes its method class.

A row says which peft config class a tuner builds, which typed ``Config`` users set, and how
that Config maps onto peft's arguments: fields pass through under their own name unless
``renames`` gives peft's name; ``fixed`` adds constant arguments; ``seed_arg`` names the peft
argument that takes the cell seed (random projections, sparse masks), so every seed of a sweep
draws its own. Target modules are resolved per model family by ``PeftMethod``
(``suite.methods.common.targets``). What no mapping expresses (CorDA's, EVA's and LoRA-GA's nested
configs, AdaLoRA's step schedule, ...) is a named ``extra`` function on that row only.

The family modules (``lora_family``, ``weight_tuners``, ``prompts``) hold the rows and pass
the registry's decorator to ``define_tuners``, so the registry discovers them (their source
names it) and this helper module registers nothing itself.
Nothing here imports torch, transformers or peft at import time, so ``suite list`` stays fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from suite.method import MethodContext
from suite.methods.common.targets import DEFAULT_ADAPTER_TARGETS
from suite.methods.peft.library import PeftMethod

Targets = tuple[str, ...] | None  # module-name keys; None: the model family's default

# A row's escape hatch: (method, model, ctx) -> peft arguments added to (and overriding) the mapped ones.
ExtraArgs = Callable[[PeftMethod, Any, MethodContext], dict[str, Any]]

TARGET_FIELD = "target_modules"  # PeftMethod.build_peft_config resolves it per family, never passed through


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one row, one class
class TunerRow:
    """One peft tuner: its registration, its Config and how the Config becomes peft's arguments."""

    name: str  # the registered method name
    peft_config: str  # peft's config class name, looked up on the installed peft when a cell runs
    config: type  # our typed Config dataclass (what users set: ``vera:r=64``)
    summary: str
    paper: str
    renames: Mapping[str, str] = field(default_factory=dict)  # our field -> peft argument
    fixed: Mapping[str, Any] = field(default_factory=dict)  # peft arguments with a constant value
    seed_arg: str | None = None  # peft argument that receives the cell seed
    # Config fields not passed through: ``extra`` uses them, a hook uses them (calibration batch
    # counts), or peft has no such argument (kept so existing specs and cell ids stay valid).
    skip: tuple[str, ...] = ()
    # peft argument -> cap: a value of 0 becomes the largest power of two <= cap that divides the
    # in and out sizes of every targeted linear layer (block and vector sizes must divide them).
    pow2_when_zero: Mapping[str, int] = field(default_factory=dict)
    omit_when_zero: tuple[str, ...] = ()  # peft arguments left to peft's own default when 0
    # peft argument -> (targets-table kind, Config field with the user's explicit names): for
    # tuners with more than one module list (IA3's feed-forward modules).
    target_args: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    extra: ExtraArgs | None = None  # code for what the mapping cannot say (special rows only)
    # Config fields peft has no argument for: a value other than the default is refused before any
    # cell runs rather than silently ignored.
    inert: tuple[str, ...] = ()
    target_kind: str | None = DEFAULT_ADAPTER_TARGETS  # key of the targets tables; None: no family default (the row, or peft, decides)
    mergeable: bool = True
    default_lr: float | None = None
    families: tuple[str, ...] = ()  # model families the tuner supports; empty: any
    base: type = PeftMethod  # hooks beyond argument mapping (calibration, rank schedule, KV prefix)
    version: str = "1"  # bump when results would change: it enters the cell id
    rank_bounded: bool = False  # SVD-initialised adapters: r above a layer's rank is refused up front

    def __post_init__(self) -> None:
        # Read-only copies: rows are shared by every instance of their class.
        for name in ("renames", "fixed", "pow2_when_zero", "target_args"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        # Catch a misspelt name when the module loads, not when a cell runs.
        names = {f.name for f in dataclasses.fields(self.config)}
        named = set(self.renames) | set(self.skip) | {source for _, source in self.target_args.values()}
        unknown = sorted(named - names)
        if unknown:
            raise ValueError(f"tuner row '{self.name}': {self.config.__name__} has no field {', '.join(unknown)}")
        mapped = {self.renames.get(n, n) for n in names - self._consumed()} | set(self.fixed)
        unmapped = sorted((set(self.pow2_when_zero) | set(self.omit_when_zero)) - mapped)
        if unmapped:
            raise ValueError(f"tuner row '{self.name}': no peft argument {', '.join(unmapped)} is mapped")

    def _consumed(self) -> set[str]:
        """Config fields that do not pass through: targets, skipped fields, target_args sources."""
        return {TARGET_FIELD, *self.skip, *(source for _, source in self.target_args.values())}

    @property
    def class_name(self) -> str:
        """``lora-ga`` -> ``PeftLoraGa``: the generated class's name."""
        return "Peft" + "".join(p.capitalize() for p in self.name.replace("-", "_").split("_"))

    def peft_kwargs(self, method: PeftMethod, model: Any, ctx: MethodContext) -> dict[str, Any]:
        """peft's arguments for ``method.config`` on ``model`` (targets are added by ``PeftMethod``)."""
        config = method.config
        consumed = self._consumed()
        # Iterate over the row's Config, not the instance's class: a subclass's extra fields are its own.
        kwargs = {self.renames.get(f.name, f.name): getattr(config, f.name)
                  for f in dataclasses.fields(self.config) if f.name not in consumed}
        kwargs.update(self.fixed)
        if self.seed_arg is not None:
            kwargs[self.seed_arg] = ctx.seed
        for arg, (kind, source) in self.target_args.items():
            kwargs[arg] = method.targets(model, kind, getattr(config, source))
        for arg, cap in self.pow2_when_zero.items():
            if not kwargs[arg]:
                kwargs[arg] = pow2_divisor(model, method.targets(model), cap)
        for arg in self.omit_when_zero:
            if not kwargs[arg]:
                del kwargs[arg]
        if self.extra is not None:
            kwargs.update(self.extra(method, model, ctx))
        return kwargs


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


def _row_peft_kwargs(self: PeftMethod, model: Any, ctx: MethodContext) -> dict[str, Any]:
    """``peft_kwargs`` of every class made from a row: the row builds them."""
    return self.row.peft_kwargs(self, model, ctx)


def _row_unsupported(self: PeftMethod, target: Any) -> str | None:
    """A value set on an inert field (the tuner has no such argument), then the base class's checks."""
    defaults = {f.name: f.default for f in dataclasses.fields(self.row.config)}
    for name in self.row.inert:
        if getattr(self.config, name) != defaults[name]:
            return (f"peft's {self.row.peft_config} has no '{name}' argument, so {name}={getattr(self.config, name)} "
                    f"would have no effect; leave it at {defaults[name]}")
    return self.row.base.unsupported(self, target)


def tuner_class(row: TunerRow, module: str) -> type:
    """The method class of ``row``, named for ``module`` (where ``define_tuners`` makes it findable)."""
    attrs = {"Config": row.config, "peft_config_class": row.peft_config, "mergeable": row.mergeable,
             "target_kind": row.target_kind, "default_lr": row.default_lr, "families": row.families,
             "version": row.version, "row": row, "peft_kwargs": _row_peft_kwargs,
             "unsupported": _row_unsupported, "rank_bounded": row.rank_bounded,
             "__module__": module, "__qualname__": row.class_name,
             "__doc__": f"{row.summary} (peft {row.peft_config}). Paper: {row.paper}."}
    return type(row.class_name, (row.base,), attrs)


def define_tuners(rows: tuple[TunerRow, ...], module: str, register: Callable[..., Any]) -> dict[str, type]:
    """Make one class per row and register it with ``register`` (the registry's method decorator).

    Returns class name -> class; the family module serves it through ``tuner_lookup``, so
    ``suite.methods.peft.weight_tuners.PeftVera`` imports and pickle finds each class by its name.
    """
    classes = {}
    for row in rows:
        cls = tuner_class(row, module)
        register(row.name, kind="peft", summary=row.summary, source="peft", paper=row.paper)(cls)
        classes[row.class_name] = cls
    return classes


def tuner_lookup(classes: Mapping[str, type], module: str) -> Callable[[str], type]:
    """A module ``__getattr__`` (PEP 562) that answers the table's class names."""
    frozen = MappingProxyType(dict(classes))

    def __getattr__(name: str) -> type:
        try:
            return frozen[name]
        except KeyError:
            raise AttributeError(f"module '{module}' has no attribute '{name}'") from None

    return __getattr__
