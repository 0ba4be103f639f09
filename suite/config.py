"""Typed configs from strings or YAML: ``lora:r=16,alpha=32`` -> a validated dataclass.

One coercion routine serves method arguments, recipe overrides and sweep files, so
every user-supplied value is checked the same way and every error names the owner,
the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import types
import typing
from typing import Any, Literal, get_args, get_origin

from suite.errors import UserError

MAX_INT = 2**31 - 1  # beyond this an integer argument (a rank, a count) is a typo, not a setting
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def option(default: Any, help: str, added: bool = False, recipe: bool = False) -> Any:  # noqa: A002
    """A field of a typed config (a recipe, a task's or an executor's options) with its ``--help``.

    ``added``: a field added later, left out of the cell id while at its default, so earlier
    results keep their ids. ``recipe``: a task option that was a recipe field before it moved to
    its task; it is stored and hashed with the recipe (unless None), so results stored before the
    move keep their ids and pair with new ones.
    """
    return dataclasses.field(default=default, metadata={"help": help, "added": added, "recipe": recipe})


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of a plugin (a task, an executor) that takes none."""


@dataclasses.dataclass(frozen=True)
class OptionFlag:
    """How one typed option appears on the command line; its key is the sweep file's key too."""

    key: str  # the field name: a sweep file's key
    flag: str  # ``--max-steps``
    type: Any  # the value type, None unwrapped
    choices: tuple[str, ...] | None  # a Literal's values
    help: str
    owners: tuple[str, ...] = ()  # the plugins whose options declare it (one flag for all of them)

    @property
    def is_bool(self) -> bool:
        return self.type is bool


def option_flags(owned: list[tuple[str, type]]) -> list[OptionFlag]:
    """One flag per field of the given config dataclasses (``max_steps`` -> ``--max-steps``), typed
    from the field, in declaration order; a field several owners declare is one flag, and they must
    agree on its type. ``owned`` pairs an owner's name ("" for none) with its dataclass."""
    found: dict[str, OptionFlag] = {}
    for owner, config_cls in owned:
        hints = typing.get_type_hints(config_cls)
        for f in dataclasses.fields(config_cls):
            if f.name.startswith("_"):
                continue
            kind = hints[f.name]
            args = [a for a in get_args(kind) if a is not type(None)]
            if get_origin(kind) is Literal:
                value_type, choices = str, tuple(str(a) for a in get_args(kind))
            elif args and get_origin(kind) in (typing.Union, types.UnionType):
                value_type, choices = args[0], None
            else:
                value_type, choices = kind, None
            known = found.get(f.name)
            if known is None:
                found[f.name] = OptionFlag(f.name, "--" + f.name.replace("_", "-"), value_type, choices,
                                           f.metadata.get("help", ""), (owner,) if owner else ())
            elif known.type != value_type:
                raise ValueError(f"{', '.join(known.owners)} and {owner} declare option '{f.name}' with "
                                 f"different types")
            elif owner:
                found[f.name] = dataclasses.replace(known, owners=(*known.owners, owner))
    return list(found.values())


def recipe_options(options: Any, with_none: bool = False) -> dict[str, Any]:
    """The task options marked ``recipe=True`` (see ``option``): stored and hashed with the recipe.
    ``with_none``: keep those set to None too (the stored recipe lists every field)."""
    if options is None or not dataclasses.is_dataclass(options):
        return {}
    values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.metadata.get("recipe")}
    return values if with_none else {k: v for k, v in values.items() if v is not None}


def field_names(config_cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(config_cls) if not f.name.startswith("_")]


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a CLI string or YAML value to ``annotation``; raise UserError naming ``where``."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in {"none", "null"}):
            if type(None) in args:
                return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return coerce(value, option, where)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"{where}: cannot parse {value!r}")
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        choices = ", ".join(str(c) for c in args)
        raise UserError(f"{where}: {value!r} is not one of the valid choices: {choices}")
    if origin in (list, tuple):
        items = value
        if isinstance(value, str):
            items = [v for v in value.replace("|", ";").split(";") if v != ""]
        if not isinstance(items, (list, tuple)):
            items = [items]
        inner = args[0] if args else Any
        out = [coerce(v, inner, where) for v in items]
        return tuple(out) if origin is tuple else out
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise UserError(f"{where}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            if abs(value) > MAX_INT:
                raise UserError(f"{where}: {value!r} is out of range (at most {MAX_INT:,} in magnitude)")
            return value
        try:
            as_float = float(str(value).strip())
        except ValueError:
            raise UserError(f"{where}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise UserError(f"{where}: expected an integer, got {value!r}")
        if abs(as_float) > MAX_INT:
            raise UserError(f"{where}: {value!r} is out of range (at most {MAX_INT:,} in magnitude)")
        return int(as_float)
    if annotation is float:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(str(value).strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise UserError(f"{where}: expected a finite number, got {value!r}")
        return number
    if annotation is str:
        return str(value)
    if annotation is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise UserError(f"{where}: expected a mapping, got {value!r}")
    return value


def build_config(config_cls: type, raw: dict[str, Any], owner: str) -> Any:
    """Instantiate ``config_cls`` from raw values; unknown keys and bad values are UserErrors."""
    hints = typing.get_type_hints(config_cls)
    valid = field_names(config_cls)
    kwargs = {}
    for key, value in raw.items():
        norm = key.replace("-", "_")
        if norm not in valid:
            choices = ", ".join(valid) if valid else "(it takes no arguments)"
            raise UserError(f"{owner} has no argument '{key}'. Valid arguments: {choices}")
        kwargs[norm] = coerce(value, hints[norm], f"{owner}: argument '{norm}'")
    try:
        return config_cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{owner}: {exc}") from None


def option_grid(config_cls: type, raw: dict[str, Any], owner: str) -> list[Any]:
    """One ``config_cls`` per combination of the values given as a grid: a list of values (a sweep
    file's ``tokens_per_param: [5, 20, 80]``) or, for a numeric option, a comma-separated string
    (``--tokens-per-param 5,20,80``). Other values are one setting, as ``build_config`` takes them."""
    hints = typing.get_type_hints(config_cls)
    axes: list[list[tuple[str, Any]]] = []
    for key, value in raw.items():
        kind = hints.get(key.replace("-", "_"))
        numeric = {a for a in (*get_args(kind), kind) if a in (int, float)}
        if isinstance(value, str) and "," in value and numeric:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple) and not (get_origin(kind) in (tuple, list) and not numeric):
            if not value:
                raise UserError(f"{owner}: option '{key}' is an empty list")
            axes.append([(key, v) for v in dict.fromkeys(value)])
        else:
            axes.append([(key, value)])
    return [build_config(config_cls, dict(combo), owner) for combo in itertools.product(*axes)]


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    if config is None:
        return {}
    out = {}
    for f in dataclasses.fields(config):
        if f.name.startswith("_"):
            continue
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def parse_kv(text: str, owner: str) -> dict[str, str]:
    """``"r=16,alpha=32"`` -> ``{"r": "16", "alpha": "32"}``; malformed pairs are UserErrors."""
    out: dict[str, str] = {}
    for part in [p for p in text.split(",") if p.strip()]:
        if "=" not in part:
            raise UserError(
                f"{owner}: malformed argument '{part}'; write key=value pairs, "
                f"e.g. lora:r=16,alpha=32"
            )
        key, value = part.split("=", 1)
        key = key.strip()
        if not key:
            raise UserError(f"{owner}: malformed argument '{part}' (empty key)")
        out[key] = value.strip()
    return out
