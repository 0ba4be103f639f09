"""A cell page's structured fields: the method's arguments and the recipe as rows, not JSON text.

The stored JSON (``method_args``, ``recipe``) repeats across thousands of cells, so each distinct
string is parsed once per process. Values are shown as stored, with local paths removed
(``scrub_paths``); the page keeps the raw JSON in a collapsed block for anyone who wants it.
"""

from __future__ import annotations

import functools
import json

from suite.reports.format import scrub_paths


def _shown(value: object) -> str:
    """A JSON value as one short line: strings bare, the rest as compact JSON."""
    if isinstance(value, str):
        return scrub_paths(value)
    return scrub_paths(json.dumps(value, sort_keys=True, ensure_ascii=False))


@functools.lru_cache(maxsize=4096)
def _method_fields(text: str) -> tuple:
    try:
        parsed = json.loads(text)
    except (TypeError, ValueError):
        return ()
    if not isinstance(parsed, list):
        return ()
    out = []
    for m in parsed:
        if not isinstance(m, dict):
            continue
        args = m.get("args") if isinstance(m.get("args"), dict) else {}
        out.append((_shown(m.get("name", "")), _shown(m.get("version", "")),
                    tuple((_shown(k), _shown(v)) for k, v in sorted(args.items()))))
    return tuple(out)


def method_fields(text: object) -> list[dict]:
    """Each composed method (in order) with its version and its resolved arguments as (name, value)."""
    if not isinstance(text, str):
        return []
    return [{"name": n, "version": v, "args": list(a)} for n, v, a in _method_fields(text)]


@functools.lru_cache(maxsize=4096)
def _recipe_fields(text: str) -> tuple:
    try:
        parsed = json.loads(text)
    except (TypeError, ValueError):
        return ()
    if not isinstance(parsed, dict):
        return ()
    return tuple((_shown(k), _shown(v)) for k, v in sorted(parsed.items()))


def recipe_fields(text: object) -> list[tuple[str, str]]:
    """The resolved recipe as (field, value) rows, sorted by field."""
    return list(_recipe_fields(text)) if isinstance(text, str) else []
