"""Typed configs from strings or YAML: ``lora:r=16,alpha=32`` -> a validated dataclass.

One coercion routine serves method arguments, recipe overrides and sweep files, so
every user-supplied value is checked the same way and every error names the owner,
the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, get_args, get_origin

from suite.errors import UserError

MAX_INT = 2**31 - 1  # beyond this an integer argument (a rank, a count) is a typo, not a setting
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def option(default: Any, help: str, added: bool = False) -> Any:  # noqa: A002 - argparse's word
    """A config field with its ``--help`` text; ``added``: a field added later, left out of the
    cell id while at its default so earlier results keep their ids."""
    return dataclasses.field(default=default, metadata={"help": help, "added": added})


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
