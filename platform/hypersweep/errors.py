"""The one error type users see: bad input, reported as ``error: <file>: <key.path>: <what>``."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class ConfigError(Exception):
    """Bad input: a file, key, flag, address or resource request that cannot work.

    The CLI prints it as one line and exits 2; it is raised before anything starts.
    """

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        super().__init__(self.line())

    def line(self) -> str:
        parts = [p for p in (self.source, self.key, self.message) if p]
        return "error: " + ": ".join(parts)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix naming the closest candidate, or ''."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def first_error(errors: list[Any]) -> Any:
    """The pydantic error to report: an unknown key first, since it often causes a 'missing' one."""
    return sorted(errors, key=lambda e: e["type"] != "extra_forbidden")[0]
