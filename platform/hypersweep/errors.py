"""The one error type users see: bad input, reported as ``error: <file>: <key.path>: <what>``;
and the report of anything else raised, a crash of the platform itself."""

from __future__ import annotations

import difflib
import os
import sys
import tempfile
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypersweep.redaction import redact

_FOLDER_NOTE = "hypersweep sweep folder: "  # a note on an exception raised during a sweep


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


def not_one_of(value: object, options: Iterable[str]) -> str:
    """The answer for every closed set of names (a scheduler, a search, a mode, a distribution, an
    optimizer, an activation): what was written, what is allowed, the closest allowed name."""
    names = list(options)
    return f"'{value}' is not one of {', '.join(names)}{did_you_mean(str(value), names)}"


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be made or written in by this process, or None if it can: its
    nearest existing ancestor must be a folder, and a writable one."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line for an error message: its first non-empty line, shortened."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_error(errors: list[Any]) -> Any:
    """The pydantic error to report: an unknown key first, since it often causes a 'missing' one."""
    return sorted(errors, key=lambda e: e["type"] != "extra_forbidden")[0]


def note_sweep_folder(exc: BaseException, folder: Path) -> None:
    """Mark ``exc`` as raised during the sweep in ``folder``: its crash report is written there."""
    if not any(n.startswith(_FOLDER_NOTE) for n in getattr(exc, "__notes__", ())):
        exc.add_note(f"{_FOLDER_NOTE}{folder}")


def write_crash_report(exc: BaseException) -> str:
    """Write ``exc``'s traceback to a file and return its path: in the sweep's folder when it was
    raised during a sweep (``note_sweep_folder``), else in the temporary folder. A URI's
    credentials in it are hidden. If no file can be written: the traceback goes to stderr and
    'stderr' is returned."""
    text = redact("".join(traceback.format_exception(exc)))
    folders = [
        n.removeprefix(_FOLDER_NOTE) for n in getattr(exc, "__notes__", ()) if n.startswith(_FOLDER_NOTE)
    ]
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")  # a resume that crashes again: a new file
    places = [Path(folder) / f"crash-{stamp}.txt" for folder in folders]
    places.append(Path(tempfile.gettempdir()) / f"hypersweep-crash-{stamp}.txt")
    for path in places:
        try:
            path.write_text(text, encoding="utf-8")
            return str(path)
        except OSError:
            continue
    sys.stderr.write(text)
    return "stderr"
