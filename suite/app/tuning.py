"""Hyperparameter search inside a sweep, at an equal budget for every method, never on reported data.

``--tune "lr=1e-4,3e-4,1e-3;r=8,16"`` searches a grid, the same one for every method;
``--tune-trials N`` draws N trials per method from each method's declared search space
(``Method.search_space``, plus the learning rate around the cell's own), with a seeded random
sampler or Optuna's TPE (``--tune-sampler tpe``). Every trial is a cell of its own (stage
``trial``): it trains on the task's training split minus a held-out part and is scored on
that part (``Task.for_selection``), one seed, so selection never reads the split the
leaderboard reports. Per method x task x model the best trial's configuration is then run
with every requested seed as ``tuned`` cells, next to the default configuration's cells.

``--tune-baseline bf16-train`` (with either search) is the low-precision papers' protocol: only
the baseline is searched, and every method, the baseline included, runs at the baseline's
selected values with every seed, as tuned cells whose ``tuned`` record names the values and
``inherited_from`` the baseline (their search id is the baseline's). No default-configuration
cells run: every comparison is at the baseline's optimum. ``--tune-each-too`` adds each other
method's own search and tuned cells, exactly as ``--tune`` alone makes them, as a second view.

A search has an id (a hash of the group and the search definition), so trials resume like
any cell and a tuned cell says which search chose it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from suite.app.sweep import INHERITED, Cell, MethodPart, MethodSpec, resolve_method_spec
from suite.errors import UserError
from suite.recipe import RECIPE_KEYS, resolve_recipe

SAMPLERS = ("random", "tpe")


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: a log- or linear-uniform range, an integer range, or choices."""

    name: str
    kind: str  # "log" | "uniform" | "int" | "choice"
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def sample(self, rng: random.Random) -> Any:
        if self.kind == "choice":
            return rng.choice(self.choices)
        if self.kind == "int":
            return rng.randint(int(self.low), int(self.high))
        if self.kind == "log":
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class Search:
    """What to search: a grid (``--tune``) or ``trials`` draws from declared spaces (``--tune-trials``)."""

    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    trials: int = 0
    sampler: str = "random"
    seed: int = 0
    baseline: str = ""  # --tune-baseline: the only method searched; every method runs at its choice
    each_too: bool = False  # --tune-each-too: with a baseline, each other method's own search as well

    def describe(self) -> dict[str, Any]:
        # The baseline is left out: its trials are those a plain search of it runs, and resume alike.
        return {"grid": [[k, list(v)] for k, v in self.grid], "trials": self.trials, "sampler": self.sampler,
                "seed": self.seed}


def parse_tune(text: str | None, trials: int | None, sampler: str, seed: int, baseline: str | None = None,
               each_too: bool = False) -> Search | None:
    """``lr=1e-4,3e-4;r=8,16`` (a grid) or a trial count, and the baseline that alone is searched;
    None when no search was asked for."""
    search = _parse_search(text, trials, sampler, seed)
    if baseline is not None:
        if not baseline.strip():
            raise UserError("--tune-baseline '' names no method; give the method whose search the others "
                            "inherit, e.g. --tune-baseline bf16-train")
        if search is None:
            raise UserError(f"--tune-baseline {baseline} names the method whose search every other method "
                            f"inherits, but no search was asked for; add one, e.g. --tune \"lr=3e-4,1e-3,3e-3\"")
        from suite.app.sweep import parse_method_spec

        resolve_method_spec(parse_method_spec(baseline.strip()))  # an unknown name is refused with the known ones
        return replace(search, baseline=baseline.strip(), each_too=each_too)
    if each_too:
        raise UserError("--tune-each-too adds each method's own search to --tune-baseline's protocol; give "
                        "--tune-baseline too, or drop --tune-each-too (--tune alone tunes each method)")
    return search


def _parse_search(text: str | None, trials: int | None, sampler: str, seed: int) -> Search | None:
    if sampler not in SAMPLERS:
        raise UserError(f"--tune-sampler '{sampler}' is not one of: {', '.join(SAMPLERS)}")
    if text and trials:
        raise UserError("--tune (a grid) and --tune-trials (draws from declared spaces) exclude each other")
    if trials is not None and trials < 1:
        raise UserError("--tune-trials must be at least 1")
    if trials:
        if sampler == "tpe":
            require_optuna()
        return Search(trials=trials, sampler=sampler, seed=seed)
    if not text:
        return None
    grid = []
    for part in [p for p in text.split(";") if p.strip()]:
        name, _, values = part.partition("=")
        items = tuple(v.strip() for v in values.split(",") if v.strip())
        if not name.strip() or not items:
            raise UserError(f"--tune: '{part}' names no values; write name=v1,v2 and separate names with ';', "
                            f"e.g. --tune \"lr=1e-4,3e-4;r=8,16\"")
        grid.append((name.strip().replace("-", "_"), items))
    if not grid:
        raise UserError("--tune holds no hyperparameter: write e.g. --tune \"lr=1e-4,3e-4,1e-3\"")
    names = [n for n, _ in grid]
    if len(set(names)) != len(names):
        raise UserError(f"--tune names a hyperparameter twice: {', '.join(names)}")
    return Search(grid=tuple(grid), sampler=sampler, seed=seed)


def require_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UserError("--tune-sampler tpe uses Optuna's TPE sampler: pip install optuna "
                        "(or --tune-sampler random)") from None
    return optuna


# -- where a hyperparameter goes --------------------------------------------------------------------
def place(spec: MethodSpec, name: str) -> int | None:
    """Index of the method part that takes argument ``name`` (the last such), or None for a recipe key."""
    if name in RECIPE_KEYS:
        return None
    import dataclasses

    for index in reversed(range(len(spec.parts))):
        config = resolve_method_spec(MethodSpec((spec.parts[index],)))[0].cls.Config
        if name in {f.name for f in dataclasses.fields(config)}:
            return index
    arguments = sorted({f.name for part in spec.parts
                        for f in dataclasses.fields(resolve_method_spec(MethodSpec((part,)))[0].cls.Config)})
    raise UserError(f"--tune: method '{spec.label}' has no argument '{name}' and it is no recipe key. Its "
                    f"arguments: {', '.join(arguments) or '(none)'}; recipe keys: {', '.join(RECIPE_KEYS)}")


def space(cell: Cell) -> list[Dimension]:
    """A cell's search space: its methods' declared dimensions, and the learning rate around its own."""
    dimensions: dict[str, Dimension] = {"lr": Dimension("lr", "log", cell.recipe.lr / 10, cell.recipe.lr * 10)}
    for method in cell.methods:
        for name, spec in method.cls.search_space(method.config).items():
            dimensions[name] = dimension(name, spec)
    return list(dimensions.values())


def dimension(name: str, spec: tuple) -> Dimension:
    kind, *rest = spec
    if kind == "choice":
        return Dimension(name, "choice", choices=tuple(rest[0]))
    return Dimension(name, kind, float(rest[0]), float(rest[1]))


# -- building trial and tuned cells ------------------------------------------------------------------
def with_values(cell: Cell, values: dict[str, Any], stage: str, search_id: str, trial: int,
                seed: int | None = None) -> Cell:
    """``cell`` with hyperparameters set (method arguments on the part that takes them, recipe keys
    on the recipe), as a trial or tuned cell of search ``search_id``."""
    parts = list(cell.spec.parts)
    recipe_values = {}
    for name, value in values.items():
        index = place(cell.spec, name)
        if index is None:
            recipe_values[name] = value
            continue
        args = dict(parts[index].args)
        args[name] = value
        parts[index] = MethodPart(parts[index].name, tuple(args.items()))
    spec = MethodSpec(tuple(parts))
    recipe = resolve_recipe(cell.recipe.to_dict(), recipe_values)
    return replace(cell, spec=spec, methods=resolve_method_spec(spec), recipe=recipe,
                   seed=cell.seed if seed is None else seed, stage=stage, search_id=search_id, trial=trial,
                   tuned=dict(values))


def prepare(cells: Sequence[Cell], search: Search) -> list[Group]:
    """Every group with the trials it will run, built before any cell runs: a value the method's
    Config or the Recipe refuses would otherwise surface only after the default cells trained.
    Also checks that every task can hold out data for tuning."""
    found = groups(cells, search)
    seen_tasks: set[tuple] = set()
    for cell in cells:
        key = (cell.task, cell.subtask, cell.data_dir)
        if key not in seen_tasks:
            seen_tasks.add(key)
            view = cell.make_task().for_selection()  # a family that cannot hold out data says so here
            view.examples("train", 1)  # and one with too little training data to hold out, too
    return found


def search_cells(found: Iterable[Group]) -> list[Cell]:
    """The cells a search builds up front (trials, or TPE's probes at the ends of its space), for the
    checks every cell passes before the sweep starts."""
    return [cell for group in found for cell in (group.trials or group.probes)]


def group_key(cell: Cell) -> tuple:
    """What a search's id is made of (with the recipe and the task's identity)."""
    return (cell.spec.label, cell.task, cell.subtask or "", cell.model, cell.data_source)


def _options_key(cell: Cell) -> str:
    """The task's options (a scaling grid's budget): cells that differ here are searched apart."""
    from suite.config import config_to_dict

    return json.dumps(config_to_dict(cell.task_options), sort_keys=True, default=str)


def search_id(cell: Cell, search: Search) -> str:
    from suite.config import recipe_options

    blob = {"group": list(group_key(cell)), "recipe": cell.recipe.identity(), "task_identity": cell.task_identity,
            "search": search.describe()}
    budget = recipe_options(cell.task_options)
    if budget:  # a pretraining budget is searched apart (a scaling grid's budgets); other tasks' ids stay
        blob["task_options"] = budget
    text = json.dumps(blob, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Group:
    """One method x task x model under search: its default cell (first seed), its trials, its choice."""

    base: Cell
    seeds: list[int]
    search_id: str
    trials: list[Cell] = field(default_factory=list)
    chosen: dict[str, Any] | None = None
    probes: list[Cell] = field(default_factory=list)  # TPE: cells at the ends of its space, checked up front
    # --tune-baseline: the baseline's group (same task and model) whose choice this one runs at; no trials
    source: Group | None = None


def groups(cells: Sequence[Cell], search: Search) -> list[Group]:
    """The default cells grouped per method x task x model, each with the trials of an equal budget
    (with a baseline: only the baseline's, the others inheriting its choice).

    Every value is resolved here (the method's Config, the Recipe's checks), so a refused value
    stops the sweep with its name before any cell runs."""
    by_key: dict[tuple, Group] = {}
    for cell in cells:
        key = (*group_key(cell), _options_key(cell))
        if key not in by_key:
            by_key[key] = Group(cell, [], search_id(cell, search))
        by_key[key].seeds.append(cell.seed)
    out = list(by_key.values())
    if search.baseline:
        return inherit(out, search)
    for g in out:
        plan_trials(g, search)
    return out


def plan_trials(g: Group, search: Search) -> None:
    """The group's trials (a grid's, or seeded draws), or TPE's probes at the ends of its space."""
    for name, _ in search.grid:  # every tuned name must be the method's or the recipe's, up front
        place(g.base.spec, name)
    if search.grid:
        names = [n for n, _ in search.grid]
        combos = itertools.product(*(values for _, values in search.grid))
        g.trials = [_trial(g, dict(zip(names, combo, strict=True)), i, "--tune")
                    for i, combo in enumerate(combos)]
    elif search.sampler == "random":
        rng = random.Random(f"{search.seed}:{g.search_id}")
        dims = space(g.base)
        g.trials = [_trial(g, {d.name: d.sample(rng) for d in dims}, i, "--tune-trials")
                    for i in range(search.trials)]
    else:  # TPE proposes its trials one by one: its space is checked at its ends
        g.probes = [_trial(g, values, 0, "--tune-trials") for values in _ends(space(g.base))]


def place_key(cell: Cell) -> tuple:
    """The task (with its options) and model a group runs on: where a baseline's choice applies."""
    return (cell.task, cell.subtask or "", cell.model, cell.data_source, _options_key(cell))


def inherit(found: list[Group], search: Search) -> list[Group]:
    """The baseline's groups with their trials, then per other method a group that runs at the
    baseline's choice (and its own search too with ``each_too``). Every value set a method may
    inherit is built now, so a method that cannot take one stops the sweep before any cell runs."""
    label = baseline_label([g.base for g in found], search.baseline)
    sources = {}
    for g in found:
        if g.base.spec.label == label:
            plan_trials(g, search)
            sources[place_key(g.base)] = g
    out = list(sources.values())
    for g in found:
        if g.base.spec.label == label:
            continue
        source = sources.get(place_key(g.base))
        if source is None:  # every method runs on every task and model, so only a lost cell gets here
            raise UserError(f"--tune-baseline {label} has no cell on {g.base.task_name} ({g.base.model}), so "
                            f"'{g.base.spec.label}' there has nothing to inherit; run the baseline there too")
        out.append(_heir(g, source, search))
        if search.each_too:
            plan_trials(g, search)
            out.append(g)
    return out


def baseline_label(cells: Sequence[Cell], text: str) -> str:
    """The sweep's method that ``--tune-baseline`` names: written alike, resolving alike
    (``lora`` for ``lora:r=8``), or the only one of that name."""
    from suite.app.sweep import parse_method_spec

    specs = {cell.spec.label: cell for cell in cells}
    wanted = parse_method_spec(text)
    if wanted.label in specs:
        return wanted.label
    key = _identity(resolve_method_spec(wanted))
    same = [label for label, cell in specs.items() if _identity(cell.methods) == key]
    named = same or [label for label, cell in specs.items() if cell.spec.name == wanted.name]
    if len(named) == 1:
        return named[0]
    if named:
        raise UserError(f"--tune-baseline {text} matches {len(named)} of this sweep's methods ({', '.join(named)}); "
                        f"write the one meant as it is written in --methods")
    raise UserError(f"--tune-baseline {text} is not one of this sweep's methods ({', '.join(specs)}); add it to "
                    f"--methods, or name one of those")


def _identity(methods: Sequence[Any]) -> str:
    return json.dumps([m.to_dict() for m in methods], sort_keys=True, default=str)


def _heir(g: Group, source: Group, search: Search) -> Group:
    """``g``'s method at ``source``'s choice: its tuned cells join the baseline's search. Each value set
    the baseline may choose is built for it now (as probes, which the checks before the sweep see)."""
    heir = Group(g.base, g.seeds, source.search_id, source=source)
    baseline, method = source.base.spec.label, g.base.spec.label
    candidates = list({json.dumps(t.tuned, sort_keys=True, default=str): dict(t.tuned)
                       for t in (source.trials or source.probes)}.values())
    for name in dict.fromkeys(name for values in candidates for name in values):
        try:
            place(g.base.spec, name)
        except UserError:
            fix = ("search only what every method takes (e.g. lr)" if search.grid else
                   f"'{name}' is drawn from {baseline}'s declared space, so search a grid of what every method "
                   f"takes instead (--tune \"lr=...\")")
            raise UserError(f"--tune-baseline: '{method}' cannot inherit '{name}' from '{baseline}': it has no "
                            f"argument '{name}' and '{name}' is no recipe key; {fix}, or drop --tune-baseline "
                            f"to tune each method on its own") from None
    for values in candidates:
        try:
            heir.probes.append(with_values(g.base, values, "tuned", heir.search_id, -1, seed=g.seeds[0]))
        except UserError as exc:
            setting = ", ".join(f"{k}={_short(v)}" for k, v in values.items())
            fix = "drop that value from --tune" if search.grid else "search the learning rate alone (--tune \"lr=...\")"
            raise UserError(f"--tune-baseline: '{method}' refuses {setting}, which it would inherit from "
                            f"'{baseline}' ({exc}); {fix}") from None
    return heir


def trial_count(found: Iterable[Group], search: Search) -> int:
    """Trials the search will run (TPE's are proposed one by one, so counted from the request)."""
    return sum(search.trials if search.sampler == "tpe" and search.trials else len(g.trials)
               for g in found if g.source is None)


def _ends(dims: Sequence[Dimension]) -> list[dict[str, Any]]:
    """Value sets reaching every end of a space: all lows, then each dimension's high and choices."""
    low = {d.name: d.choices[0] if d.kind == "choice" else _bound(d, d.low) for d in dims}
    out = [low]
    for d in dims:
        for value in d.choices[1:] if d.kind == "choice" else (_bound(d, d.high),):
            out.append({**low, d.name: value})
    return out


def _bound(d: Dimension, value: float) -> Any:
    return int(value) if d.kind == "int" else value


def _trial(group: Group, values: dict[str, Any], index: int, flag: str) -> Cell:
    """A trial cell of ``group``; a value its method or the recipe refuses is a UserError naming it."""
    try:
        return with_values(group.base, values, "trial", group.search_id, index, seed=group.seeds[0])
    except UserError as exc:
        setting = ", ".join(f"{k}={_short(v)}" for k, v in values.items())
        fix = "correct or drop that value" if flag == "--tune" else "change the arguments its space is drawn around"
        raise UserError(f"{flag} sets {setting} for '{group.base.spec.label}', which is refused ({exc}); "
                        f"{fix}") from None


def select(group: Group, results: Callable[[Cell], tuple[float, bool] | None]) -> dict[str, Any]:
    """The best trial's hyperparameters by its held-out primary score (ties: the earlier trial)."""
    scored = [(trial, results(trial)) for trial in group.trials]
    scored = [(t, r) for t, r in scored if r is not None and math.isfinite(r[0])]
    if not scored:
        raise UserError(f"every trial of '{group.base.label}' on {group.base.task_name} failed; nothing to "
                        f"select (see the failed trial cells in the store)")
    higher = scored[0][1][1]
    best = max(scored, key=lambda item: (item[1][0] if higher else -item[1][0], -item[0].trial))
    return dict(best[0].tuned)


def tuned_cells(group: Group) -> list[Cell]:
    """The chosen configuration with every requested seed; one inherited from a baseline says so in
    its record, so reports can name whose values it ran at."""
    cells = [with_values(group.base, group.chosen or {}, "tuned", group.search_id, -1, seed=seed)
             for seed in group.seeds]
    if group.source is None:
        return cells
    return [replace(c, tuned={**(group.chosen or {}), INHERITED: group.source.base.spec.label}) for c in cells]


def primary_of(store: Any) -> Callable[[Cell], tuple[float, bool] | None]:
    """Reads a finished cell's primary score (value, higher is better) from the store."""
    frame = store.load(warn=False)
    if frame.empty:
        return lambda cell: None
    primary = frame[(frame["status"] == "ok") & frame["is_primary"].fillna(False).astype(bool)]
    scores = {row.cell_id: (float(row.value), bool(row.higher_is_better)) for row in primary.itertuples()}
    return lambda cell: scores.get(cell.cell_id)


def tpe_trials(group: Group, search: Search, run: Callable[[list[Cell]], None],
               results: Callable[[], Callable[[Cell], tuple[float, bool] | None]]) -> None:
    """Optuna's TPE, one trial after the other (each proposal depends on the results so far)."""
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dims = space(group.base)
    sampler = optuna.samplers.TPESampler(seed=search.seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for index in range(search.trials):
        trial = study.ask()
        values = {}
        for d in dims:
            if d.kind == "choice":
                values[d.name] = trial.suggest_categorical(d.name, list(d.choices))
            elif d.kind == "int":
                values[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high))
            else:
                values[d.name] = trial.suggest_float(d.name, d.low, d.high, log=d.kind == "log")
        cell = with_values(group.base, values, "trial", group.search_id, index, seed=group.seeds[0])
        group.trials.append(cell)
        run([cell])
        score = results()(cell)
        if score is None or not math.isfinite(score[0]):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, score[0] if score[1] else -score[0])


def budget(trials: Iterable[Cell], store: Any) -> dict[str, float]:
    """Trials run and their training time, for the report of what tuning cost."""
    ids = {t.cell_id for t in trials}
    frame = store.load(warn=False)
    if frame.empty:
        return {"trials": 0, "train_time_s": 0.0}
    mine = frame[frame["cell_id"].isin(ids)]
    time_rows = mine[mine["metric"] == "train_time_s"]
    return {"trials": mine["cell_id"].nunique(), "train_time_s": float(time_rows["value"].sum())}



def run_search(cells: Sequence[Cell], search: Search, store: Any, run: Callable[[list[Cell]], None],
               say: Callable[[str], None], found: list[Group] | None = None) -> list[Group]:
    """Trials for every searched group (skipping finished ones), the selection, and the tuned cells run;
    ``found``: the groups ``prepare`` built and checked before the sweep started."""
    found = groups(cells, search) if found is None else found
    searched = [g for g in found if g.source is None]
    if search.sampler == "tpe" and search.trials:
        for group in searched:
            tpe_trials(group, search, run, lambda: primary_of(store))
    else:
        run([t for g in searched for t in g.trials])
    scores = primary_of(store)
    for group in searched:
        group.chosen = select(group, scores)
        spent = budget(group.trials, store)
        say(f"tuned {group.base.label} on {group.base.task_name} ({group.base.model}): "
            f"{_setting(group.chosen)} after {spent['trials']} trial(s), {spent['train_time_s']:.0f} s of training")
    heirs: dict[int, list[Group]] = {}
    for group in found:
        if group.source is not None:
            group.chosen = dict(group.source.chosen or {})
            heirs.setdefault(id(group.source), []).append(group)
    for group in searched:
        if id(group) in heirs:
            say(f"at {group.base.spec.label}'s {_setting(group.chosen)} on {group.base.task_name} "
                f"({group.base.model}): {', '.join(h.base.spec.label for h in heirs[id(group)])}")
    # A method's tuned cells once (the baseline's own are the protocol's baseline cells).
    run(list({c.cell_id: c for group in found for c in tuned_cells(group)}.values()))
    return found


def _setting(values: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in (values or {}).items())


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
