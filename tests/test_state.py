"""The recorder's state journal: what a crashed sweep resumes from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.contenders import NullClient

from hypersweep.tracking import SweepRecorder, state
from hypersweep.tracking.state import StateJournal, read_state

HEAD = {"parent_run_id": "p1", "experiment_id": "7"}


def _trial(step: int) -> str:
    return json.dumps({"run_id": "r", "last_step": step})


def test_a_save_appends_only_what_changed(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    journal = StateJournal(path)
    journal.save(HEAD, [("a", _trial(1)), ("b", _trial(1))])
    size = path.stat().st_size
    journal.save(HEAD, [("a", _trial(1)), ("b", _trial(1))])
    assert path.stat().st_size == size  # nothing changed, nothing written
    journal.save(HEAD, [("a", _trial(2))])
    added = path.read_text()[size:]
    assert added.count("\n") == 1 and '"a"' in added
    assert read_state(path) == {**HEAD, "trials": {"a": json.loads(_trial(2)), "b": json.loads(_trial(1))}}


def test_a_line_cut_short_by_a_crash_is_ignored_then_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    StateJournal(path).save(HEAD, [("a", _trial(1))])
    with path.open("a") as f:
        f.write('{"trial": "a", "state": {"run_id": "r", "last_')  # killed mid-write
    assert read_state(path)["trials"]["a"]["last_step"] == 1  # a reader leaves the file alone
    assert not path.read_text().endswith("\n")
    journal = StateJournal(path)  # resume
    assert journal.state()["trials"]["a"]["last_step"] == 1
    journal.save(HEAD, [("a", _trial(3))])
    assert read_state(path)["trials"]["a"]["last_step"] == 3
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_a_grown_journal_is_rewritten_with_one_line_per_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state, "_COMPACT_SLACK_BYTES", 0)
    path = tmp_path / "s.jsonl"
    journal = StateJournal(path)
    journal.save(HEAD, [("a", _trial(1)), ("b", _trial(1)), ("c", _trial(1))])
    for step in range(2, 12):
        journal.save(HEAD, [("a", _trial(step))], forget=["c"] if step == 5 else ())
    lines = path.read_text().splitlines()
    assert len(lines) < 10  # rewritten at least once on the way
    expected = {**HEAD, "trials": {"a": json.loads(_trial(11)), "b": json.loads(_trial(1))}}
    assert read_state(path) == expected
    assert StateJournal(path).state() == expected  # what resume starts from
    assert not path.with_suffix(".tmp").exists()


def test_the_state_earlier_versions_saved_is_read_and_continued(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({**HEAD, "trials": {"a": json.loads(_trial(4))}}))  # one object
    journal = StateJournal(path)
    assert journal.state() == {**HEAD, "trials": {"a": json.loads(_trial(4))}}
    journal.save(HEAD, [("b", _trial(1))])
    assert set(read_state(path)["trials"]) == {"a", "b"}


def test_the_cost_of_a_save_does_not_grow_with_the_finished_trials(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    recorder = SweepRecorder(
        tracking_uri="sqlite:///x.db", metric="val_loss", mode="min", state_file=path, client=NullClient()
    )
    recorder.start_sweep(name="x", sweep_id="x-1", settings={})

    def one_trial(tid: str) -> tuple[int, int]:
        """Lines and bytes the journal grew by while one trial ran and ended."""
        before = path.read_text()
        recorder.trial_started(tid, {"lr": 0.1})
        recorder.trial_result(tid, {"epoch": 1, "val_loss": 0.5})
        recorder.trial_finished(tid, status="completed", stop_reason="completed")
        added = path.read_text()[len(before) :]
        return added.count("\n"), len(added)

    lines, size = one_trial("t0")
    for i in range(1, 300):
        one_trial(f"t{i}")
    assert recorder.unsent == 0
    later_lines, later_size = one_trial("t300")
    # Only the trial's own lines, each longer by the digits its id and its number gained (2 + 2).
    assert later_lines == lines and later_size <= size + 4 * lines
    saved = read_state(path)["trials"]
    assert len(saved) == 301 and all(t["ended"] for t in saved.values())
