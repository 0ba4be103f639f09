"""How a board names its rows and chooses its baseline: one configuration is one row whatever its
spelling (arguments at their defaults dropped), and each task family gets its baseline (``--baseline``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from suite.errors import UserError
from suite.reports.board import INHERITED, Row


@dataclass(frozen=True)
class Baselines:
    """Which row each board is tested against (``--baseline``).

    ``glue=lora,lm=bf16-train`` names one per task family, a bare name (``lora``) one for the
    families not named; a family with neither gets its default: the baseline its task declares
    (``Task.baseline``: ``bf16-train`` for language-model loss), else ``bf16-train`` where the
    board ranks training recipes, else ``lora``, the first of these the board has.
    """

    default: str | None = None
    per_family: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str | Baselines | None) -> Baselines:
        """``lora``, ``glue=lora,lm=bf16-train``, ``lora:r=16,alpha=32,lm=bf16-train``: a token
        ``name=value`` whose name is a task family starts a family's pair, any other continues the
        previous method's arguments. Each method is written as the boards write it (defaults dropped)."""
        from suite.registry import TASKS

        if isinstance(text, Baselines):
            return text
        specs: list[list[str]] = []  # [family or "", method spec]
        for token in (t.strip() for t in str(text or "").split(",")):
            if not token:
                continue
            name, sep, value = token.partition("=")
            if sep and name.strip() in TASKS:
                if not value.strip():
                    raise UserError(f"--baseline '{token}': write family=method, e.g. glue=lora,lm=bf16-train")
                specs.append([name.strip(), value.strip()])
            elif sep and ":" not in name and specs:
                specs[-1][1] += "," + token  # an argument of the method before it
            elif sep and ":" not in name:
                raise UserError(f"--baseline '{token}': '{name}' is no task family; write family=method "
                                f"(e.g. glue=lora) or a method (lora:r=16)")
            else:
                specs.append(["", token])
        defaults = [canonical_spec(m) for f, m in specs if not f]
        if len(defaults) > 1:
            raise UserError(f"--baseline names two methods for every family ({', '.join(defaults)}); give one, "
                            f"or one per family: glue={defaults[0]},lm={defaults[1]}")
        per_family = {f: canonical_spec(m) for f, m in specs if f}
        return cls(defaults[0] if defaults else None, tuple(sorted(per_family.items())))

    @property
    def explicit(self) -> bool:
        return self.default is not None or bool(self.per_family)

    def named(self, family: str) -> str | None:
        """The baseline the user named for ``family`` (None: the family's default applies)."""
        return dict(self.per_family).get(family, self.default)

    def choose(self, family: str, rows: dict[str, Row]) -> str | None:
        """The baseline of a board of ``family`` with these rows; None when it has no such row."""
        named = self.named(family)
        if named is not None:  # as named, else its tuned row (--tune-baseline runs no default cells)
            return next((v for v in (named, f"{named} (tuned)") if v in rows), None)
        for candidate in _default_baselines(family, rows):
            if candidate in rows:
                return candidate
        for candidate in _default_baselines(family, rows):  # --tune-baseline runs no default cells
            if f"{candidate} (tuned)" in rows:
                return f"{candidate} (tuned)"
        return None


def _default_baselines(family: str, rows: dict[str, Row]) -> list[str]:
    from suite.registry import TASKS

    declared = getattr(TASKS.get(family).target, "baseline", "") if family in TASKS else ""
    trains = any(r.kind == "train" for r in rows.values())
    return [b for b in (declared, "bf16-train" if trains else "", "lora") if b]



def canonical_variants(frame: pd.DataFrame) -> pd.DataFrame:
    """One configuration, one row: each cell's variant rewritten from its resolved arguments, without
    those at the method's defaults, in a fixed order (``lora`` and ``lora:r=8`` are one row). Cells
    whose arguments cannot be read, or whose method is not registered here, keep their label."""
    if frame.empty or "method_args" not in frame or "variant" not in frame:
        return frame
    stage = frame["stage"].fillna("").astype(str) if "stage" in frame else pd.Series("", index=frame.index)
    keys = frame["variant"].astype(str) + "\x00" + frame["method_args"].astype(str) + "\x00" + stage
    tuned = stage == "tuned"
    if "tuned" in frame and tuned.any():
        # A method run at a baseline's selected values is not the same row as its own tuned one.
        record = frame.loc[tuned, "tuned"].fillna("").astype(str)
        heir = record[record.str.contains(INHERITED, regex=False)]
        if not heir.empty:
            keys = keys + "\x00" + heir.reindex(frame.index, fill_value="")
    codes, uniques = pd.factorize(keys)
    labels = np.array([canonical_label(*key.split("\x00")) for key in uniques], dtype=object)
    return _split_by_budget(frame.assign(variant=labels[codes]))


def _split_by_budget(frame: pd.DataFrame) -> pd.DataFrame:
    """A row per training budget: cells of one configuration trained on different token budgets
    (a scaling grid's ``tokens_per_param``) are different experiments, so where a variant has
    several on one task and model each gets its budget in its label ("bf16-train [tokens_per_param=5]")
    rather than one mean over them."""
    from suite.recipe import MOVED_TO_TASK_OPTIONS
    from suite.reports.loading import parsed_recipes

    if "recipe" not in frame or frame.empty:
        return frame
    parsed = {text: {k: recipe.get(k) for k in MOVED_TO_TASK_OPTIONS}
              for text, recipe in parsed_recipes(frame["recipe"].dropna().unique()).items()}
    varying = [k for k in MOVED_TO_TASK_OPTIONS if len({repr(r.get(k)) for r in parsed.values()}) > 1]
    budget_of = {text: ", ".join(f"{k}={r[k]:g}" if isinstance(r.get(k), float) else f"{k}={r.get(k)}"
                                 for k in varying if r.get(k) is not None) for text, r in parsed.items()}
    budget = frame["recipe"].map(budget_of).fillna("")
    if budget.nunique() < 2:
        return frame
    group = [frame[c].astype(str) for c in ("task", "model") if c in frame] + [frame["variant"].astype(str)]
    several = budget.groupby(group).transform("nunique") > 1
    if not several.any():
        return frame
    labelled = frame["variant"].astype(str) + " [" + budget + "]"
    return frame.assign(variant=frame["variant"].where(~several, labelled))


def canonical_label(variant: str, method_args: str, stage: str = "", tuned: str = "") -> str:
    """The label of a composition from its stored, resolved arguments (see ``canonical_variants``); a
    tuned cell that ran at a baseline's selected values says whose ("lora (at bf16-train's tuned lr)")."""
    import json

    values = tuned_values(tuned) if stage == "tuned" else {}
    heir = str(values.pop(INHERITED, "") or "")
    suffix = f" (at {heir}'s tuned {', '.join(sorted(values)) or 'values'})" if heir else " (tuned)"
    try:
        parts = json.loads(method_args)
        experiment = next((p["experiment"] for p in parts if p.get("experiment")), "")
        label = experiment or "+".join(_canonical_part(p["name"], p.get("args") or {}) for p in parts)
    except (TypeError, ValueError, KeyError, AttributeError):
        label = ""
    if not label:
        return variant.removesuffix(" (tuned)") + suffix if heir else variant
    return label + (suffix if stage == "tuned" else "")


@functools.lru_cache(maxsize=512)
def canonical_spec(text: str) -> str:
    """A method spec as the boards label it (``lora:r=8`` -> ``lora``); as written where it does not parse."""
    import json

    from suite.config import build_config, config_to_dict, parse_kv
    from suite.registry import METHODS

    parts = []
    try:
        for piece in text.split("+"):
            name, _, args = piece.strip().partition(":")
            cls = METHODS.get(name).target
            resolved = build_config(cls.Config, parse_kv(args, name) if args else {}, name)
            parts.append({"name": name, "args": config_to_dict(resolved)})
    except UserError:
        return text
    return canonical_label(text, json.dumps(parts))


@functools.lru_cache(maxsize=512)
def _defaults(name: str) -> tuple[tuple[str, object], ...] | None:
    from suite.config import build_config, config_to_dict
    from suite.registry import METHODS

    if name not in METHODS:
        return None
    cls = METHODS.get(name).target
    return tuple(config_to_dict(build_config(cls.Config, {}, name)).items())


def _canonical_part(name: str, args: dict) -> str:
    defaults = _defaults(name)
    if defaults is None:
        raise KeyError(name)  # an unregistered method: its defaults are unknown here
    default = dict(defaults)
    changed = [(k, v) for k, v in sorted(args.items()) if k not in default or default[k] != v]
    return name + (":" + ",".join(f"{k}={arg_text(v)}" for k, v in changed) if changed else "")


def arg_text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ";".join(arg_text(v) for v in value)
    return "none" if value is None else str(value)


def tuned_values(text: object) -> dict:
    """The stored ``tuned`` JSON of a cell (the values its search set); {} where absent or unreadable."""
    import json

    if not isinstance(text, str) or not text:
        return {}
    try:
        values = json.loads(text)
    except ValueError:
        return {}
    return values if isinstance(values, dict) else {}


