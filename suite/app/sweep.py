"""Specs and sweeps: ``--methods lora:r=16,alpha=32,pissa --tasks glue:sst2,rte`` -> cells.

A cell is one (method composition, task, subtask, model, seed, recipe) with a stable id:
the hash of its fully resolved configuration (method arguments with defaults filled in,
code versions of the method and task plugins, the resolved recipe, the data source).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from suite import __version__
from suite.config import build_config, config_to_dict, option_grid, parse_kv, recipe_options
from suite.errors import UnknownNameError, UserError
from suite.recipe import RECIPE_KEYS, Recipe, resolve_recipe
from suite.registry import METHODS, TASKS

INHERITED = "inherited_from"  # key of a tuned cell's record naming the baseline whose values it runs at


@dataclass(frozen=True)
class MethodPart:
    name: str
    args: tuple[tuple[str, Any], ...] = ()  # as the user gave them (strings or YAML values)

    @property
    def label(self) -> str:
        if not self.args:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_fmt(v)}" for k, v in self.args)


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class MethodSpec:
    """A composition applied left to right, e.g. ``nf4+lora:r=8``.

    A spec read from an experiment folder (``peft-experiment:<dir>``) also carries that experiment's
    training values (``recipe``: above the preset's, below the user's) and its name (``origin``),
    which labels its cells: two experiments of one method differ in their recipes, not their arguments."""

    parts: tuple[MethodPart, ...]
    recipe: tuple[tuple[str, Any], ...] = ()
    origin: str = ""

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self.parts)

    @property
    def label(self) -> str:
        return self.origin or "+".join(p.label for p in self.parts)


def split_method_list(text: str) -> list[str]:
    """Split on commas; a token whose first '+'-part is ``key=value`` (no method name) continues the
    previous method's arguments: ``nf4:bits=4,group=64+lora`` is one spec, ``lora,lora+compeft:density=0.1``
    two."""
    specs: list[str] = []
    for token in [t.strip() for t in text.split(",") if t.strip()]:
        first = token.split("+")[0]
        if "=" in first and ":" not in first and specs:
            specs[-1] += "," + token
        elif "=" in first and ":" not in first:
            raise UserError(f"malformed --methods entry '{token}': arguments follow a method name, "
                            f"e.g. lora:r=16,alpha=32")
        else:
            specs.append(token)
    return specs


EXPERIMENT_PREFIXES = ("peft-experiment:", "peft:")  # a peft experiment folder, or one peft publishes


def parse_method_spec(text: str) -> MethodSpec:
    if not str(text).strip():
        raise UserError("an empty method name; write e.g. --methods lora,full")
    text = str(text).strip()
    if text.startswith(EXPERIMENT_PREFIXES):  # the rest is a path or a name: '+' and ':' are part of it
        from suite.methods.peft.experiments import experiment_from_text

        experiment = experiment_from_text(text)
        return MethodSpec((MethodPart(experiment.method, tuple(experiment.args.items())),),
                          tuple(experiment.recipe.items()), origin=experiment.label)
    parts = []
    for piece in text.split("+"):
        piece = piece.strip()
        if not piece:
            raise UserError(f"malformed method composition '{text}': empty part around '+'")
        name, _, arg_text = piece.partition(":")
        args = parse_kv(arg_text, f"method '{name}'") if arg_text else {}
        parts.append(MethodPart(name.strip(), tuple(args.items())))
    return MethodSpec(tuple(parts))


def method_spec_from_yaml(item: Any) -> MethodSpec:
    """A YAML entry: ``"lora:r=8"`` or ``{name: lora, args: {r: 8}}`` or a list of those (composition)."""
    if isinstance(item, str):
        return parse_method_spec(item)
    if isinstance(item, dict) and item.get("name") in ("peft-experiment", "peft") and set(item) == {"name", "path"}:
        return parse_method_spec(f"{item['name']}:{item['path']}")
    if isinstance(item, dict):
        unknown = set(item) - {"name", "args"}
        if unknown or "name" not in item:
            raise UserError(f"malformed method entry {item!r}: use {{name: lora, args: {{r: 8}}}}")
        args = item.get("args") or {}
        if not isinstance(args, dict):
            raise UserError(f"method '{item['name']}': args must be a mapping, got {args!r}")
        return MethodSpec((MethodPart(str(item["name"]), tuple(args.items())),))
    if isinstance(item, list):
        if not item:
            raise UserError("an empty method composition [] in the sweep file; name its methods")
        subs = [method_spec_from_yaml(sub) for sub in item]
        if any(sub.origin for sub in subs) and len(subs) > 1:
            raise UserError(f"a peft experiment runs as its folder says, alone; it cannot be composed ({item!r})")
        return MethodSpec(tuple(p for sub in subs for p in sub.parts))
    raise UserError(f"malformed method entry {item!r}")


@dataclass
class ResolvedMethod:
    name: str
    config: Any
    cls: type
    experiment: str = ""  # the experiment folder it was read from (MethodSpec.origin), if any

    def instantiate(self) -> Any:
        return self.cls(self.config)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "args": config_to_dict(self.config), "version": self.cls.version}
        return out | ({"experiment": self.experiment} if self.experiment else {})

    def __reduce__(self) -> tuple:
        """Pickled by registered name and arguments, so a cell travels to another process (a Ray
        worker, a SLURM job) however its plugin class was made; rebuilt there through the registry."""
        return (_rebuild_method, (self.name, config_to_dict(self.config), self.experiment))


def _rebuild_method(name: str, args: dict[str, Any], experiment: str = "") -> ResolvedMethod:
    cls = METHODS.get(name).target
    return ResolvedMethod(name, build_config(cls.Config, args, f"method '{name}'"), cls, experiment)


def resolve_method_spec(spec: MethodSpec) -> list[ResolvedMethod]:
    resolved = []
    for part in spec.parts:
        entry = METHODS.get(part.name)
        cls = entry.target
        config = build_config(cls.Config, dict(part.args), f"method '{part.name}'")
        resolved.append(ResolvedMethod(part.name, config, cls, spec.origin))
    return resolved


@dataclass(frozen=True)
class RecipeRule:
    """Recipe values a preset sets for some methods on some tasks: a paper's per-task learning rates
    and epochs, or a benchmark's per-method settings. Applied above the preset's recipe and below an
    experiment's and the user's."""

    recipe: dict[str, Any]
    methods: tuple[str, ...] = ()  # method names (any part of a composition) or full labels; empty: all
    tasks: tuple[str, ...] = ()  # task families ("glue") or family:subtask ("glue:rte"); empty: all

    def applies(self, spec: MethodSpec, family: str, subtask: str | None) -> bool:
        method_ok = not self.methods or spec.label in self.methods or any(p.name in self.methods for p in spec.parts)
        task_ok = not self.tasks or family in self.tasks or f"{family}:{subtask}" in self.tasks
        return method_ok and task_ok

    @classmethod
    def parse(cls, item: Any) -> RecipeRule:
        """A rule as a preset or sweep file writes it: ``{methods: [...], tasks: [...], recipe: {...}}``."""
        if not isinstance(item, dict) or not isinstance(item.get("recipe"), dict) or \
                set(item) - {"methods", "tasks", "recipe"}:
            raise UserError(f"malformed recipe rule {item!r}: write {{methods: [lora], tasks: [glue:rte], "
                            f"recipe: {{lr: 5e-4}}}}")
        check_recipe_keys(item["recipe"], "a recipe rule")
        return cls(dict(item["recipe"]), tuple(item.get("methods") or ()), tuple(item.get("tasks") or ()))


def parse_task_list(text: str) -> list[tuple[str, str | None]]:
    """``glue:sst2,rte,smoke`` -> [("glue","sst2"), ("glue","rte"), ("smoke", None)].

    A family that overrides ``Task.resolve_subtask`` names its subtasks itself (aliases,
    variants such as ``vtab:cifar@val200``, free-form ones such as ``images:<dir>``); a token
    after it that is no task name is then its subtask too.
    """
    out: list[tuple[str, str | None]] = []
    family: str | None = None
    for token in [t.strip() for t in text.split(",") if t.strip()]:
        name, _, sub = token.partition(":")
        if name in TASKS:
            family = name
            out.extend(_expand(name, sub or None))
        elif family and name in TASKS.get(family).target.subtasks:
            out.append((family, name))
        elif family and TASKS.get(family).target.names_subtasks_itself():
            out.append((family, TASKS.get(family).target.resolve_subtask(token)))
        else:
            TASKS.get(name)  # raises UnknownNameError with suggestions
    return out


def _expand(family: str, subtask: str | None) -> list[tuple[str, str | None]]:
    cls = TASKS.get(family).target
    if subtask is None:
        return [(family, s) for s in cls.subtasks] if cls.subtasks else [(family, None)]
    return [(family, cls.resolve_subtask(subtask))]


SEED_LIMIT = 2**32  # numpy.random.seed takes seeds below this


def parse_seeds(value: Any) -> list[int]:
    """A count (``3`` -> 0, 1, 2) or an explicit list (``1,5,7`` or a YAML list) of distinct seeds >= 0."""
    count = _seed_count(value)
    if count is not None:
        return list(range(count))
    try:
        if isinstance(value, list):
            seeds = [_seed(v) for v in value]
        else:
            seeds = [_seed(v) for v in str(value).split(",") if v.strip()]
    except (TypeError, ValueError):
        raise UserError(f"--seeds takes a count (3) or a list (0,1,2), got {value!r}") from None
    if not seeds:
        raise UserError(f"--seeds {value!r} names no seed")
    if any(s < 0 for s in seeds):
        raise UserError(f"seeds must be >= 0, got {', '.join(str(s) for s in seeds if s < 0)}")
    if any(s >= SEED_LIMIT for s in seeds):  # else each such cell fails when it seeds numpy
        raise UserError(f"seeds must be below 2**32 ({SEED_LIMIT:,}), the range numpy's generator takes; got "
                        f"{', '.join(str(s) for s in seeds if s >= SEED_LIMIT)}")
    return list(dict.fromkeys(seeds))  # a seed given twice would train the same cell twice


def seed_count(value: Any) -> int:
    """How many seeds ``value`` names, without building the list: a mistyped count of billions must
    reach the cell-count guard, not allocate a list first."""
    count = _seed_count(value)
    return len(parse_seeds(value)) if count is None else count


def _seed_count(value: Any) -> int | None:
    """The count when ``value`` is one (``3``), checked; None when it is a list of seeds."""
    if isinstance(value, list) or "," in str(value):
        return None
    try:
        count = _seed(value)
    except (TypeError, ValueError):
        raise UserError(f"--seeds takes a count (3) or a list (0,1,2), got {value!r}") from None
    if count <= 0:
        raise UserError("--seeds count must be positive")
    return count


def _seed(value: Any) -> int:
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(str(value).strip()) if isinstance(value, str) else int(value)


@dataclass
class Cell:
    spec: MethodSpec
    methods: list[ResolvedMethod]
    task: str
    subtask: str | None
    model: str
    seed: int
    recipe: Recipe
    data_dir: str | None
    data_source: str
    task_version: str
    extra: dict[str, Any] = field(default_factory=dict)
    task_options: Any = None  # the task family's Options instance (None: its defaults)
    task_identity: dict[str, Any] = field(default_factory=dict)  # Task.identity(): options, scorer versions
    # Hyperparameter search (suite.app.tuning): "trial" cells train on the training split minus a held-out
    # part and score that part; "tuned" cells run the selected configuration as any cell does.
    stage: str = ""  # "" | "trial" | "tuned"
    search_id: str = ""  # the search a trial or tuned cell belongs to
    trial: int = -1  # the trial's index within its search
    tuned: dict[str, Any] = field(default_factory=dict)  # the hyperparameters the search set

    @property
    def task_name(self) -> str:
        return f"{self.task}:{self.subtask}" if self.subtask else self.task

    def make_task(self) -> Any:
        """The task instance this cell runs (its subtask, data source and options); a trial sees the
        task's selection view (never the split the leaderboard reports)."""
        task = TASKS.get(self.task).target(subtask=self.subtask, data_dir=self.data_dir, options=self.task_options)
        return task.for_selection() if self.stage == "trial" else task

    @property
    def label(self) -> str:
        """The stored variant: the composition with its arguments, marked when tuned."""
        return self.spec.label + (" (tuned)" if self.stage == "tuned" else "")

    @property
    def shown_label(self) -> str:
        """The label progress lines show: a tuned cell run at a baseline's selected values says whose,
        as the reports do, rather than "(tuned)", which would claim a search of its own."""
        heir = self.tuned.get(INHERITED) if self.stage == "tuned" else None
        return f"{self.spec.label} (at {heir}'s tuned values)" if heir else self.label

    def config(self) -> dict[str, Any]:
        return {
            "methods": [m.to_dict() for m in self.methods],
            "task": self.task,
            "subtask": self.subtask or "",
            "task_version": self.task_version,
            "model": self.model,
            "seed": self.seed,
            "recipe": self.recipe_identity(),
            "data_source": self.data_source,
            "suite_version": __version__,
            # Only where a task has options or an external scorer, so earlier cells keep their ids.
            **({"task_identity": self.task_identity} if self.task_identity else {}),
            **({"stage": self.stage, "search_id": self.search_id, "trial": self.trial} if self.stage else {}),
        }

    def recipe_identity(self) -> dict[str, Any]:
        """The recipe as it enters the id: its own fields, then the task options that moved out of it."""
        return {**self.recipe.identity(), **recipe_options(self.task_options)}

    def stored_recipe(self) -> dict[str, Any]:
        """The recipe as the store keeps it: every field, then the task options that moved out of it."""
        return {**self.recipe.to_dict(), **recipe_options(self.task_options, with_none=True)}

    @property
    def cell_id(self) -> str:
        blob = json.dumps(self.config(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


LABEL_SMOOTHING_OBJECTIVES = ("classification", "image-classification")  # one integer class per example


def build_cells(
    method_specs: list[MethodSpec],
    tasks: list[tuple[str, str | None]],
    models: list[str] | None,
    seeds: list[int],
    recipe_layers: list[dict[str, Any]],
    data_dir: str | None,
    task_options: dict[str, dict[str, Any]] | None = None,
    preset_layers: tuple[dict[str, Any], ...] = (),
    rules: tuple[RecipeRule, ...] = (),
) -> list[Cell]:
    """Expand methods x tasks x models x seeds; resolve every recipe; validate everything up front.

    ``task_options`` maps a task family to its raw options (from flags or a sweep file),
    validated against the family's ``Options`` dataclass. A cell's recipe, later wins: the task's
    recommendation for the model family, the method's learning rate, ``preset_layers``, the ``rules``
    that apply to it, its experiment's values (``MethodSpec.recipe``), then ``recipe_layers`` (the
    sweep file's, the flags').
    """
    from suite.models.loading import guess_family

    resolved_specs = [(spec, resolve_method_spec(spec)) for spec in method_specs]
    # An option given as a list of values is a grid: one set of cells per combination.
    options = {family: option_grid(TASKS.get(family).target.Options, raw, f"options of task '{family}'")
               for family, raw in (task_options or {}).items()}
    cells: list[Cell] = []
    for (family, subtask), family_options in ((t, o) for t in tasks for o in options.get(t[0], [None])):
        task_cls = TASKS.get(family).target
        task = task_cls(subtask=subtask, data_dir=data_dir, options=family_options)
        for model in models or [task_cls.default_model]:
            if not model:
                raise UserError(f"task '{family}' has no default model; pass --models")
            model_family = guess_family(model)
            for spec, methods in resolved_specs:
                method_lr = next((m.cls.default_lr for m in reversed(methods) if m.cls.default_lr), None)
                ruled = [rule.recipe for rule in rules if rule.applies(spec, family, subtask)]
                recipe = resolve_recipe(task.default_recipe(model_family), {"lr": method_lr}, *preset_layers,
                                        *ruled, dict(spec.recipe), *recipe_layers)
                if recipe.label_smoothing and task.objective not in LABEL_SMOOTHING_OBJECTIVES:
                    raise UserError(f"label_smoothing applies to classification tasks; {task.name} is "
                                    f"{task.objective}: leave it at 0 for this task")
                for seed in seeds:
                    cells.append(Cell(spec, methods, family, subtask, model, seed, recipe, data_dir,
                                      task.data_source(), task_cls.version, task_options=task.options,
                                      task_identity=task.identity()))
    # A method, task or model named twice yields the same cell twice: it runs once.
    return list({cell.cell_id: cell for cell in cells}.values())


@dataclass(frozen=True)
class Refusal:
    """A method that cannot run on a model for a task with the installed libraries, and why."""

    method: str
    model: str
    model_type: str
    task: str
    reason: str

    def describe(self) -> str:
        return (f"method '{self.method}' on model family '{self.model_type or 'unknown'}' "
                f"({self.model}, task {self.task}): {self.reason}")


def method_targets(cells: list[Cell]) -> list[tuple[Cell, Any]]:
    """Each cell with what its methods will be applied to (``MethodTarget``), known without loading weights;
    each task and model configuration read once."""
    from suite.method import MethodTarget
    from suite.models.loading import guess_family, model_config

    configs: dict[str, Any] = {}
    tasks: dict[tuple, Any] = {}
    out = []
    for cell in cells:
        task_key = (cell.task, cell.subtask)
        if task_key not in tasks:
            tasks[task_key] = cell.make_task()
        task = tasks[task_key]
        if cell.model not in configs:
            configs[cell.model] = model_config(cell.model)
        out.append((cell, MethodTarget(cell.model, guess_family(cell.model), task.objective, configs[cell.model],
                                       from_scratch=task.trains_from_scratch(cell.model))))
    return out


def unsupported_cells(cells: list[Cell]) -> tuple[list[Cell], list[Refusal]]:
    """Split cells into those every method can run and the refusals of the rest (asked once per pair)."""
    reasons: dict[tuple, str | None] = {}
    refusals: dict[tuple, Refusal] = {}
    runnable: list[Cell] = []
    for cell, target in method_targets(cells):
        refused = False
        for part, method in zip(cell.spec.parts, cell.methods, strict=True):
            key = (part.label, target)
            if key not in reasons:
                reasons[key] = method.instantiate().unsupported(target)
            if reasons[key]:
                refused = True
                refusals.setdefault((part.label, cell.model, cell.task), Refusal(
                    part.label, cell.model, target.model_type, cell.task, reasons[key]))
        if not refused:
            runnable.append(cell)
    return runnable, list(refusals.values())


def check_recipe_keys(mapping: dict[str, Any], where: str) -> None:
    from suite.recipe import MOVED_TO_TASK_OPTIONS

    unknown = [k for k in mapping if k not in RECIPE_KEYS and k not in MOVED_TO_TASK_OPTIONS]
    if unknown:
        raise UnknownNameError(f"recipe key in {where}", unknown[0], RECIPE_KEYS)
