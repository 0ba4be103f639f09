"""A setting that a command-line flag chooses and a ``with`` block scopes: ``--kernels`` and
``--fast-emulation`` are two of them. A context variable holds it, so a thread (the backward of
an autograd function may run in one) or an executor's worker sees the value its caller set."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class ModeSwitch:
    """One of ``modes`` (the first is the default), checked against them with ``flag``'s name."""

    def __init__(self, flag: str, modes: tuple[str, ...]):
        self.flag = flag
        self.modes = modes
        self._mode: ContextVar[str] = ContextVar(flag, default=modes[0])

    def check(self, mode: str) -> str:
        from suite.errors import UserError

        if mode not in self.modes:
            raise UserError(f"{self.flag} '{mode}': choose one of {', '.join(self.modes)}")
        return mode

    @contextmanager
    def using(self, mode: str) -> Iterator[None]:
        """Run the body with ``mode``."""
        token = self._mode.set(self.check(mode))
        try:
            yield
        finally:
            self._mode.reset(token)

    def current(self) -> str:
        return self._mode.get()
