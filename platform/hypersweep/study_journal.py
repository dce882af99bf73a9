"""The searcher's study on disk: Optuna's journal file format, written in batches.

Optuna's ``JournalFileBackend`` takes a lock, writes and fsyncs the file for every entry: the
searcher writes ~24 entries per trial of 20 epochs (ask, its attributes, one intermediate value
per epoch, tell), ~9 ms of Tune's event loop per trial here, and more on slower disks. This
backend keeps the study's log in memory (Optuna replays it from there) and appends what is new
to the file in one write and one fsync: when a trial is proposed and when it ends (the
searcher's ``flush``), before the searcher is snapshotted, and otherwise at most a second after an
entry. A driver crash can lose at most the
last second of intermediate values of trials still running; resume rebuilds from what the file
holds. The file is Optuna's own format, so ``JournalFileBackend`` and ``optuna-dashboard`` read it.

One process writes a sweep's file (the sweep's driver); it is not for several writers.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from optuna.storages.journal import BaseJournalBackend

_FLUSH_SECONDS = 1.0


class BatchedJournalFile(BaseJournalBackend):
    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._logs: list[dict[str, Any]] = _read(self._path)
        self._pending: list[dict[str, Any]] = []
        self._flushed_at = time.monotonic()

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        with self._lock:
            return list(self._logs[log_number_from:])

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        with self._lock:
            self._logs.extend(logs)
            self._pending.extend(logs)
            due = time.monotonic() - self._flushed_at >= _FLUSH_SECONDS
        if due:
            self.flush()

    def flush(self) -> None:
        """Write what the file lacks, in one write and one fsync."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._flushed_at = time.monotonic()
            if not pending:
                return
            text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in pending)
            with self._path.open("ab") as f:
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())

    def __getstate__(self) -> dict[str, Any]:
        self.flush()  # a snapshot (Tune's) is read back from the file, which must hold it all
        return {"_path": self._path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["_path"])  # type: ignore[misc]


def _read(path: Path) -> list[dict[str, Any]]:
    """The file's entries; a last line cut short by a crash is dropped from the file as well,
    so that what is appended next starts on a line of its own."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with path.open("r+b") as f:
            f.truncate(len(whole))
    return [json.loads(line) for line in whole.decode("utf-8").splitlines() if line.strip()]
