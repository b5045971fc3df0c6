"""One exception type for every user-facing error.

A ``TrainpodError`` carries a message that names the file / table / key at fault and, where we
can tell, a hint saying how to fix it. The CLI prints both and exits with status 2; nothing else
in the code base prints tracebacks for bad input.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TrainpodError(Exception):
    """A problem the user can fix (bad config, missing table, unsupported combination...)."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(TrainpodError):
    """Invalid training.toml / env profile / settings."""


class UnsupportedError(TrainpodError):
    """A backend or hardware profile cannot do what was asked; raised before money is spent."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" — did you mean 'x'?"`` for the closest choice, or ``""``."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" — did you mean '{match[0]}'?" if match else ""


def available(choices: Iterable[str]) -> str:
    names = sorted(choices)
    return ", ".join(names) if names else "(none)"
