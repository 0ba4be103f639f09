"""The Executor contract: where cells run. The driver writes the store; executors never do.

An executor takes the cells still to run and the run settings, and yields one
``CellResult`` per cell as each finishes (in any order). Local runs them one after the
other in this process; cluster executors (Ray, SLURM) register under their own names in
``suite.app.executors`` (or through the ``suite.executors`` entry-point group) and plug into
``suite run --executor NAME`` without touching the core: a new executor is one new file.

Options are declared once, as a typed dataclass (``Options``, like a method's ``Config``)
whose fields carry their help (``option(default, help)``). ``suite run``'s flags are
generated from the registered executors' options (``max_concurrent`` -> ``--max-concurrent``;
a field several executors declare is one flag), validated before any cell runs, and an
option of an executor other than the chosen one is refused, naming the executors that have it.

Semantics every executor keeps, so resume and failure mean the same whichever ran a cell:

- a cell that fails is yielded as a ``failed`` result, not raised, and is not retried
  (``status == "failed"`` is a result, not a lost worker);
- a worker lost mid-cell (process killed, node gone, preempted) is retried up to the
  executor's ``retries`` and then yielded as failed with the reason (``lost_cell``);
- a UserError (the user's input is wrong) propagates and stops the sweep;
- cancellation: ``run`` is a generator whose cleanup (a ``finally``) cancels the cells still
  outstanding; the driver closes it on Ctrl-C or on an error, and results already yielded
  were written;
- a result whose ``rows`` are empty was already written where the cell ran (SLURM jobs,
  see ``suite.app.executors.slurm``): the driver reports it and writes nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
import pickle
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from suite.config import NoOptions, OptionFlag, option_flags
from suite.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from suite.app.runner import CellResult, RunSettings
    from suite.app.sweep import Cell


class Executor:
    """Base class of executor plugins. Subclasses set ``Options`` and implement ``run``."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "executor"
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None, store: str | None = None):
        self.options = options if options is not None else self.Options()
        self.store = store  # the store's URI, for executors whose workers must reach it
        # Cells the last ``run`` handed to workers, where it left some out (a job still running
        # from an earlier submission); None: every cell it was given.
        self.submitted: int | None = None

    def check(self) -> None:
        """Raise UserError when this executor cannot run here (engine missing, bad option)."""

    @property
    def waits(self) -> bool:
        """False when ``run`` submits the cells and returns without their results (``--no-wait``)."""
        return True

    def describe(self) -> dict[str, Any]:
        """What the sweep's manifest records about where its cells went (job ids, log folders)."""
        return {}

    def run(self, cells: Sequence[Cell], settings: RunSettings) -> Iterator[CellResult]:
        raise NotImplementedError


# -- options as flags ---------------------------------------------------------------------------------
def executor_flags() -> list[OptionFlag]:
    """One flag per option field of the registered executors (``max_concurrent`` -> ``--max-concurrent``),
    naming the executors that take it."""
    from suite.registry import EXECUTORS

    owned = [(entry.name, getattr(entry.target, "Options", NoOptions)) for entry in EXECUTORS.entries()]
    flags = option_flags(owned)
    for flag in flags:
        for owner, options_cls in owned:
            default = next((f.default for f in dataclasses.fields(options_cls) if f.name == flag.key), False)
            if flag.is_bool and default is not False:
                raise ValueError(f"executor '{owner}': a bool option ({flag.key}) must default to False; "
                                 f"its flag switches it on")
    return sorted(flags, key=lambda flag: flag.key)


def build_options(name: str, given: dict[str, Any]) -> Any:
    """The options of executor ``name`` from the flags the user gave (name -> raw value).

    Raises UserError naming the flag: an option of another executor, a value of the wrong
    type, or one its dataclass refuses.
    """
    from suite.config import coerce
    from suite.registry import EXECUTORS

    options_cls = getattr(EXECUTORS.get(name).target, "Options", NoOptions)
    own = {f.name for f in dataclasses.fields(options_cls)}
    flags = {flag.key: flag for flag in executor_flags()}
    for key in given:
        if key not in own:
            flag = flags[key]
            others = " or ".join(f"--executor {o}" for o in flag.owners)
            raise UserError(f"{flag.flag} is an option of the {', '.join(flag.owners)} executor"
                            f"{'s' if len(flag.owners) > 1 else ''}, not of '{name}': add {others}, "
                            f"or drop {flag.flag}")
    hints = typing.get_type_hints(options_cls)
    values = {key: coerce(value, hints[key], flags[key].flag) for key, value in given.items()}
    try:
        return options_cls(**values)
    except (TypeError, ValueError) as exc:
        raise UserError(f"executor '{name}': {exc}") from None


def make_executor(name: str, given: dict[str, Any], store: str | None = None) -> Executor:
    """The executor ``name`` with its options, checked: everything wrong is a UserError before any cell runs."""
    from suite.registry import EXECUTORS

    executor = EXECUTORS.get(name).target(build_options(name, given), store=store)
    executor.check()
    return executor


# -- what cluster executors share ----------------------------------------------------------------------
@dataclass(frozen=True)
class CellPayload:
    """A cell on its way to another process: its pickle, and the modules that register its plugins.

    Cells pickle their methods by registered name; a plugin registered outside the built-in
    packages and entry points (a test module, a user's own module) is registered on the
    worker by importing its module before the cell is unpickled.
    """

    cell_id: str
    data: bytes
    modules: tuple[str, ...]


def pack_cell(cell: Cell) -> CellPayload:
    from suite.registry import TASKS

    modules = {m.cls.__module__ for m in cell.methods} | {TASKS.get(cell.task).target.__module__}
    return CellPayload(cell.cell_id, pickle.dumps(cell), tuple(sorted(m for m in modules if m != "__main__")))


def unpack_cell(payload: CellPayload) -> Cell:
    for module in payload.modules:
        try:
            importlib.import_module(module)
        except ImportError:  # the unpickling below names the plugin that is missing
            pass
    return pickle.loads(payload.data)


def run_packed(payload: CellPayload, settings: RunSettings, where: str) -> CellResult:
    """Run a packed cell in a worker process (a Ray worker, a SLURM job) and return its record."""
    from suite.app.library_noise import quiet_library_noise
    from suite.app.runner import run_cell

    quiet_library_noise(settings.device)
    try:
        cell = unpack_cell(payload)
    except UserError as exc:
        raise UserError(f"{exc} (on {where}: a plugin must be importable there, installed or registered "
                        f"through an entry point)") from None
    return run_cell(cell, settings)


def lost_cell(cell: Cell, settings: RunSettings, reason: str) -> CellResult:
    """The failed record of a cell whose worker was lost for good (retries used up)."""
    from suite import __version__
    from suite.app.runner import CellResult, identity_columns, now
    from suite.results.schema import STATUS_FAILED

    stamp = now()
    row = identity_columns(cell, settings.run_id, stamp) | {
        "status": STATUS_FAILED, "error": reason[:4000], "finished_at": stamp, "metric": None,
        "value": float("nan"), "suite_version": __version__}
    return CellResult(cell.cell_id, STATUS_FAILED, [row], error=reason.splitlines()[0] if reason else reason)


def remote_settings(settings: RunSettings, gpus: float) -> RunSettings:
    """Settings for a cell on a worker: its device follows the GPUs it was given, no per-cell bars."""
    return dataclasses.replace(settings, device="cuda" if gpus > 0 else "cpu", progress=False)
