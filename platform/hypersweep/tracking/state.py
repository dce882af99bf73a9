"""The recorder's state on disk: a journal of JSON lines, so saving costs what changed.

The recorder saves after every result so that a crash loses nothing; rewriting the whole state
each time would cost O(trials) per save, a sweep's tracking cost growing with its length. Each
save appends one line per trial whose state changed (``{"trial": id, "state": {...}}``), a
``{"head": {...}}`` line when the sweep's ids change, and ``{"forget": id}`` for a dropped trial.
Reading replays the lines: the last one per trial wins.

Appends are not atomic: a crash mid-write can leave the last line cut short (no line end);
reading ignores it, and the next writer cuts it off before appending. When the journal has grown
well past what it describes, it is rewritten (into a temporary file, then renamed over it) with
one line per trial.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Rewrite when the journal is this many times its compacted size (plus the slack below): the
# rewrite costs O(trials), so doing it only after the journal doubled keeps saves flat on average.
_COMPACT_FACTOR = 2
_COMPACT_SLACK_BYTES = 1 << 20


class StateJournal:
    """One sweep's state file. Not thread-safe: the recorder writes it under its lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._head: dict[str, Any] = {}
        self._trials: dict[str, str] = {}  # trial id -> its line, as last written
        self._size = 0
        if path.exists():
            self._reopen()
        self._compacted = self._size

    def _reopen(self) -> None:
        """Continue a journal (``resume``): know what it holds, and cut a last line a crash left
        unfinished, so that appends start on a line of their own."""
        text = self.path.read_text(encoding="utf-8")
        whole = _whole_lines(text)
        if whole != text:
            self._write(whole)
        self._head, self._trials = _replay(whole)
        self._size = len(whole)

    def state(self) -> dict[str, Any]:
        """The saved state: the head's keys and ``trials`` (trial id -> its state)."""
        return _state(self._head, self._trials)

    def save(
        self, head: dict[str, Any], trials: Iterable[tuple[str, str]], forget: Iterable[str] = ()
    ) -> None:
        """Append what differs from the journal: ``trials`` are (id, state as JSON text)."""
        lines = []
        if head != self._head:
            self._head = dict(head)
            lines.append(json.dumps({"head": self._head}))
        for trial_id in forget:
            if self._trials.pop(trial_id, None) is not None:
                lines.append(json.dumps({"forget": trial_id}))
        for trial_id, state in trials:
            line = _trial_line(trial_id, state)
            if self._trials.get(trial_id) != line:
                self._trials[trial_id] = line
                lines.append(line)
        if not lines:
            return
        text = "\n".join(lines) + "\n"
        if self._size + len(text) > _COMPACT_FACTOR * self._compacted + _COMPACT_SLACK_BYTES:
            self._rewrite()
            return
        with self.path.open("a", encoding="utf-8") as journal:
            journal.write(text)
        self._size += len(text)

    def _rewrite(self) -> None:
        lines = [json.dumps({"head": self._head}), *self._trials.values()]
        text = "\n".join(lines) + "\n"
        self._write(text)
        self._size = self._compacted = len(text)

    def _write(self, text: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)


def read_state(path: Path) -> dict[str, Any]:
    """The state saved in ``path``, read without changing it (a sweep may be writing it)."""
    return _state(*_replay(_whole_lines(path.read_text(encoding="utf-8"))))


def _whole_lines(text: str) -> str:
    """``text`` up to its last complete line. A last line without its end was cut short by a
    crash or is still being written, unless it parses (earlier versions wrote no line end)."""
    cut = text.rfind("\n") + 1
    try:
        json.loads(text[cut:])
    except ValueError:
        return text[:cut]
    return text + "\n"


def _trial_line(trial_id: str, state: str) -> str:
    return f'{{"trial": {json.dumps(trial_id)}, "state": {state}}}'


def _replay(text: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The head and the last line of each trial, from a journal's whole lines."""
    head: dict[str, Any] = {}
    trials: dict[str, str] = {}
    for line in text.splitlines():
        entry = json.loads(line)
        if "head" in entry:
            head = entry["head"]
        elif "forget" in entry:
            trials.pop(entry["forget"], None)
        elif "trial" in entry:
            trials[entry["trial"]] = line
        else:  # the whole state in one object, as earlier versions saved it
            head = {k: v for k, v in entry.items() if k != "trials"}
            trials = {tid: _trial_line(tid, json.dumps(t)) for tid, t in entry["trials"].items()}
    return head, trials


def _state(head: dict[str, Any], trials: dict[str, str]) -> dict[str, Any]:
    return {**head, "trials": {tid: json.loads(line)["state"] for tid, line in trials.items()}}
