"""Errors a user can cause. The CLI prints their message and exits 2, never a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem with the user's input (name, argument, data, file): message names cause and fix."""

    exit_code = 2


class UnknownNameError(UserError):
    """An unknown method, task, kernel, subtask or option; the message suggests the nearest names."""

    def __init__(self, what: str, name: str, known: Iterable[str], hint: str = ""):
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        msg = f"unknown {what} '{name}'."
        if close:
            msg += f" Did you mean: {', '.join(close)}?"
        if known:
            shown = ", ".join(known[:40]) + (" ..." if len(known) > 40 else "")
            msg += f" Known: {shown}."
        if hint:
            msg += f" {hint}"
        super().__init__(msg)
        self.name = name
        self.suggestions = close


class CellFailure(Exception):
    """A cell failed in a way worth recording (diverged loss, method not applicable)."""
