"""The plugin registry: methods, tasks, kernels and executors register by decorator or entry point.

The core never imports a plugin by name. Built-in plugins are discovered: every module
of a plugin package (``suite.methods``, ...) whose source calls a ``register_*``
function is imported on first lookup, so a new plugin is one new file and no list to
keep. Third-party distributions add theirs through the entry-point groups
``suite.methods``, ``suite.tasks``, ``suite.kernels`` and ``suite.executors`` (the entry
point names a module, whose import registers its plugins, or an object to register).

Plugin modules keep torch, transformers and peft imports inside functions, so that
``suite list`` and ``suite --help`` answer without loading them (a test holds them to it).
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from suite.errors import UnknownNameError, UserError


@dataclass(frozen=True)
class Entry:
    """One registered plugin: what ``suite list`` shows and what the runner instantiates."""

    name: str
    group: str
    kind: str
    summary: str
    target: Any
    source: str = "suite"
    paper: str = ""
    extra: dict = field(default_factory=dict)


class Registry:
    """Name -> Entry for one plugin group, loaded lazily on first lookup."""

    def __init__(self, group: str, builtin_package: str):
        self.group = group
        self.builtin_package = builtin_package
        self._entries: dict[str, Entry] = {}
        self._loaded = False
        self._loading = False
        self.load_errors: dict[str, str] = {}
        self.revision = 0  # counts registrations, so caches of what plugins declare know when to refresh

    def register(
        self,
        name: str,
        *,
        kind: str,
        summary: str,
        source: str = "suite",
        paper: str = "",
        **extra: Any,
    ) -> Callable[[Any], Any]:
        """Decorator: ``@METHODS.register("lora", kind="peft", summary="...")``."""

        def decorate(target: Any) -> Any:
            existing = self._entries.get(name)
            if existing is not None and existing.target is not target:
                raise ValueError(
                    f"{self.group}: '{name}' is registered twice "
                    f"({_where(existing.target)} and {_where(target)})"
                )
            self._entries[name] = Entry(name, self.group, kind, summary, target, source, paper, extra)
            self.revision += 1
            if isinstance(target, type):  # a plugin class knows its registered name and kind
                target.name = name
                target.kind = kind
            return target

        return decorate

    def _load(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            for module in discover_plugin_modules(self.builtin_package):
                importlib.import_module(module)
            for ep in _entry_points(self.group):
                try:
                    obj = ep.load()
                except Exception as exc:  # a broken third-party plugin must not break the CLI
                    self.load_errors[ep.name] = f"{type(exc).__name__}: {exc}"
                    print(
                        f"warning: plugin '{ep.name}' ({ep.value}) failed to load: {exc}",
                        file=sys.stderr,
                    )
                    continue
                register_hook = getattr(obj, "suite_register", None)
                if callable(register_hook):
                    register_hook(self)
            self._loaded = True
        finally:
            self._loading = False

    def get(self, name: str) -> Entry:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                self.group.removeprefix("suite.").rstrip("s"), name, self._entries,
                hint="Run 'suite list' to see them all.",
            ) from None

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        self._load()
        for name in sorted(self._entries):
            yield self._entries[name]


# A module registers plugins when its source calls one of the registration functions.
_REGISTERS = re.compile(r"\bregister_(method|task|kernel|executor)\b")


def discover_plugin_modules(package_name: str) -> list[str]:
    """Modules of ``package_name`` (recursively, private ``_*`` ones skipped) that register plugins.

    Found by reading their source, not importing them, so that helper modules which import
    torch at the top are only imported when a plugin needs them.
    """
    from pathlib import Path

    package = importlib.import_module(package_name)
    found = []
    for folder in getattr(package, "__path__", []):
        root = Path(folder)
        for path in sorted(root.rglob("*.py")):
            relative = path.relative_to(root).with_suffix("")
            if any(part.startswith("_") for part in relative.parts):
                continue
            try:
                source = path.read_text(encoding="utf-8")
            except OSError:
                continue
            if _REGISTERS.search(source):
                found.append(".".join((package_name, *relative.parts)))
    return found


def _where(target: Any) -> str:
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', target)}"


def _entry_points(group: str) -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=group))


METHODS = Registry("suite.methods", "suite.methods")
TASKS = Registry("suite.tasks", "suite.tasks")
KERNELS = Registry("suite.kernels", "suite.kernels")
EXECUTORS = Registry("suite.executors", "suite.app.executors")

register_method = METHODS.register
register_task = TASKS.register
register_kernel = KERNELS.register
register_executor = EXECUTORS.register

REGISTRIES = {"methods": METHODS, "tasks": TASKS, "kernels": KERNELS, "executors": EXECUTORS}


def registry_for(group: str) -> Registry:
    try:
        return REGISTRIES[group]
    except KeyError:
        raise UserError(f"unknown plugin group '{group}'; choose one of: {', '.join(REGISTRIES)}") from None
