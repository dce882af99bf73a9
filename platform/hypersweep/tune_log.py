"""Ray Tune's own log during a sweep: kept in the sweep's folder (``tune.log``), off the terminal.

Tune logs through the standard ``logging`` module, under ``ray.tune`` (its loop, searchers and
schedulers), ``ray.train`` (storage and checkpoints) and ``ray.air`` (results). Ray passes those
records on to its ``ray`` logger, which prints them on stderr: a failed trial's whole traceback,
amid the live view, for a failure the view already reports in one line. For the fit, those
loggers write to a file in the sweep's folder instead and pass nothing on; afterwards they are as
they were, so sweeps run one after another in one process do not pile up handlers.

One warning is left out: the one Tune logs at the end of every sweep because hypersweep turned
its result files off (``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS``, see ``tuning``), one line per trial
saying it found none. It says nothing about the sweep, and would make every summary name the file.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TUNE_LOG = "tune.log"  # in the sweep's folder
LOGGERS = ("ray.tune", "ray.train", "ray.air")
# Tune logs a few INFO lines per sweep (where it keeps its state, a restore), not per trial.
_LEVEL = logging.INFO
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_NO_RESULT_FILES = "both result.json and progress.csv were not found"


@dataclass
class TuneLog:
    """What Tune logged into ``path`` during one fit, by severity."""

    path: Path
    warnings: int = 0
    errors: int = 0  # ERROR and CRITICAL: a failed trial's traceback is one

    def note(self) -> str:
        """One line for the sweep's summary, or '' while this fit logged no warning or error."""
        return note(self.warnings, self.errors, str(self.path))


def note(warnings: int, errors: int, path: str) -> str:
    """``Tune logged 3 warnings, 1 error: <path>``; '' when both counts are 0."""
    counts = [_plural(warnings, "warning"), _plural(errors, "error")]
    said = ", ".join(c for c in counts if c)
    return f"Tune logged {said}: {path}" if said else ""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}" if n else ""


class _Counter(logging.Handler):
    """Counts the warnings and errors in what the file receives."""

    def __init__(self, log: TuneLog) -> None:
        super().__init__(logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.log.errors += 1
        else:
            self.log.warnings += 1


def _no_result_files(record: logging.LogRecord) -> bool:
    """False for Tune's "Failed to fetch metrics" warning when the files it missed are only the
    result files hypersweep turned off; True (keep it) for any other record."""
    lines = record.getMessage().splitlines()
    if not lines or not lines[0].startswith("Failed to fetch metrics"):
        return True
    return not all(_NO_RESULT_FILES in line for line in lines[1:])


@contextlib.contextmanager
def kept_in(folder: Path) -> Iterator[TuneLog]:
    """Tune's log goes to ``folder/tune.log`` (appended to; made at the first record) and
    nowhere else until the block ends; the yielded ``TuneLog`` counts its warnings and errors."""
    log = TuneLog(folder / TUNE_LOG)
    file = logging.FileHandler(log.path, encoding="utf-8", delay=True)
    file.setFormatter(logging.Formatter(_FORMAT))
    ours: list[logging.Handler] = [file, _Counter(log)]
    for handler in ours:
        handler.addFilter(_no_result_files)
    loggers = [logging.getLogger(name) for name in LOGGERS]
    saved = [(logger.level, logger.handlers, logger.propagate) for logger in loggers]
    for logger in loggers:
        # Any handler someone gave these loggers may print too: set aside with the rest.
        logger.handlers = list(ours)
        logger.setLevel(_LEVEL)
        logger.propagate = False  # not on to "ray", whose handler prints on stderr
    try:
        yield log
    finally:
        for logger, (level, handlers, propagate) in zip(loggers, saved, strict=True):
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        file.close()
