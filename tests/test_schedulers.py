"""The schedulers' state across a driver crash: a restored scheduler (the pickle Tune keeps from
the sweep's start) replays its journal and decides as the one that crashed would have."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ray import cloudpickle as pickle  # as Tune pickles its tuner
from ray.tune.schedulers import TrialScheduler

from hypersweep.config import SchedulerSpec
from hypersweep.schedulers import SCHEDULER_FILE, DurableASHA, make_scheduler


@dataclass(eq=False)  # as Ray's Trial: hashed by identity
class FakeTrial:
    trial_id: str
    status: str = "RUNNING"


class Controller:
    def get_live_trials(self) -> list[Any]:
        return []

    def get_trials(self) -> list[Any]:
        return []


def _trial(trial_id: str, status: str = "RUNNING") -> Any:
    return FakeTrial(trial_id, status)


CONTROLLER: Any = Controller()  # what the schedulers read of Tune's controller


def _scheduler(kind: str, journal: Path | None, brackets: int = 1) -> Any:
    spec = SchedulerSpec.model_validate(
        {"type": kind, "grace_period": 1, "reduction_factor": 2, "brackets": brackets}
    )
    scheduler = make_scheduler(spec, max_epochs=8, journal=journal)
    scheduler.set_search_properties("val_loss", "min")
    return scheduler


def _losses(seed: int, trials: int, epochs: int) -> dict[str, list[float]]:
    rng = random.Random(seed)
    return {f"t{i}": sorted((rng.random() for _ in range(epochs)), reverse=True) for i in range(trials)}


def _run(scheduler: TrialScheduler, losses: dict[str, list[float]], trials: dict[str, Any]) -> list[str]:
    """Trials one after another, every epoch reported; the decisions, in order."""
    decisions = []
    for tid, curve in losses.items():
        trial = trials.setdefault(tid, _trial(tid))
        scheduler.on_trial_add(CONTROLLER, trial)
        for epoch, loss in enumerate(curve, start=1):
            action = scheduler.on_trial_result(CONTROLLER, trial, {"epoch": epoch, "val_loss": loss})
            decisions.append(f"{tid}@{epoch}:{action}")
            if action == TrialScheduler.STOP:
                break
        scheduler.on_trial_complete(CONTROLLER, trial, {"epoch": epoch, "val_loss": loss})
    return decisions


@pytest.mark.parametrize(("kind", "brackets"), [("asha", 1), ("hyperband", 3), ("median", 1)])
def test_a_restored_scheduler_decides_as_the_one_that_crashed(
    tmp_path: Path, kind: str, brackets: int
) -> None:
    journal = tmp_path / SCHEDULER_FILE
    losses = _losses(seed=3, trials=14, epochs=8)
    first, rest = dict(list(losses.items())[:9]), dict(list(losses.items())[9:])

    uninterrupted = _scheduler(kind, None, brackets)
    live = _scheduler(kind, journal, brackets)
    at_start = pickle.dumps(live)  # what Tune keeps, and restores
    np.random.seed(0)  # Hyperband draws each trial's bracket
    before = _run(uninterrupted, first, {})
    np.random.seed(0)
    assert _run(live, first, {}) == before
    np.random.seed(1)
    expected = _run(uninterrupted, rest, {})

    resumed = pickle.loads(at_start)
    for tid in first:  # Tune adds the trials it restored, finished ones included
        resumed.on_trial_add(CONTROLLER, _trial(tid, status="TERMINATED"))
    np.random.seed(1)
    assert _run(resumed, rest, {}) == expected
    assert any(d.endswith(TrialScheduler.STOP) for d in expected)  # the rungs had work to do
    if kind != "median":
        assert _rung_state(resumed) == _rung_state(uninterrupted)


def _rung_state(scheduler: DurableASHA) -> list[list[tuple[float, dict[str, float]]]]:
    return [[(m, dict(r)) for m, r in b._rungs] for b in scheduler._brackets]


def test_without_its_journal_a_restored_asha_forgets_its_rungs(tmp_path: Path) -> None:
    """What Ray does alone, and why the journal exists: a later trial passes rungs it would not."""
    losses = _losses(seed=3, trials=14, epochs=8)
    first, rest = dict(list(losses.items())[:9]), dict(list(losses.items())[9:])
    uninterrupted = _scheduler("asha", None)
    _run(uninterrupted, first, {})
    forgetful = pickle.loads(pickle.dumps(_scheduler("asha", None)))
    assert _run(forgetful, rest, {}) != _run(uninterrupted, rest, {})


def test_a_trial_lost_in_the_crash_leaves_the_rungs(tmp_path: Path) -> None:
    """A trial started after Tune's last snapshot and unfinished: Tune never adds it again (its
    configuration runs again as a new trial), so its rung values must not count twice."""
    journal = tmp_path / SCHEDULER_FILE
    live = _scheduler("asha", journal)
    at_start = pickle.dumps(live)
    kept, lost = _trial("kept"), _trial("lost")
    for trial in (kept, lost):
        live.on_trial_add(CONTROLLER, trial)
        for epoch in (1, 2):
            live.on_trial_result(CONTROLLER, trial, {"epoch": epoch, "val_loss": 1.0 / epoch})
    restored = pickle.loads(at_start)
    restored.on_trial_add(CONTROLLER, _trial("kept"))
    restored.choose_trial_to_run(CONTROLLER)
    assert {tid for _, rung in restored._brackets[0]._rungs for tid in rung} == {"kept"}
    assert set(restored._trial_info) == {"kept"}


def test_a_trial_stopped_before_the_crash_is_stopped_again(tmp_path: Path) -> None:
    journal = tmp_path / SCHEDULER_FILE
    live = _scheduler("asha", journal)
    at_start = pickle.dumps(live)
    good, bad = _trial("good"), _trial("bad")
    for trial, loss in ((good, 0.1), (bad, 0.9)):
        live.on_trial_add(CONTROLLER, trial)
        action = live.on_trial_result(CONTROLLER, trial, {"epoch": 1, "val_loss": loss})
    assert action == TrialScheduler.STOP  # and the driver died before the trial's end was written
    restored = pickle.loads(at_start)
    for tid in ("good", "bad"):
        restored.on_trial_add(CONTROLLER, _trial(tid))
    again = restored.on_trial_result(CONTROLLER, _trial("bad"), {"epoch": 1, "val_loss": 0.9})
    assert again == TrialScheduler.STOP


def test_a_line_cut_short_by_the_crash_is_ignored(tmp_path: Path) -> None:
    journal = tmp_path / SCHEDULER_FILE
    live = _scheduler("asha", journal)
    at_start = pickle.dumps(live)
    trial = _trial("a")
    live.on_trial_add(CONTROLLER, trial)
    live.on_trial_result(CONTROLLER, trial, {"epoch": 1, "val_loss": 0.5})
    with journal.open("a") as f:
        f.write('{"event": "result", "trial": "a", "res')
    restored = pickle.loads(at_start)
    restored.on_trial_add(CONTROLLER, _trial("a"))
    assert restored._brackets[0]._rungs[-1][1] == {"a": -0.5}
