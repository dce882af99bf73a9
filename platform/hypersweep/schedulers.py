"""Driver side: Ray Tune's schedulers as a sweep's ``scheduler:`` section asks for them, the
epochs at which they decide (where a trial always reports, with a checkpoint), and their state
kept across a driver crash.

Tune pickles the scheduler once, when the sweep starts, and ``Tuner.restore`` brings back that
empty object (ray-project/ray#30838): after a resume ASHA's rungs would start empty, and trials
would pass rungs that the sweep's earlier trials had set higher. So a sweep's scheduler writes
every event that changes its state (a trial added to a bracket, a result, an end) to a journal in
the sweep's folder, and a restored one replays the journal before its first decision. The
journal is one JSON line per event, each flushed to the OS as written: a killed driver loses none.

Trials the restored sweep never sees again (started after Tune's last snapshot and not finished:
the searcher runs their configuration again as a new trial, see ``searcher``) are taken out of the
replayed state once Tune has re-added the trials it restored, so they do not count twice.
"""

from __future__ import annotations

import abc
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)

from hypersweep.config import SchedulerSpec, SweepSpec

SCHEDULER_FILE = "scheduler.jsonl"  # in the sweep's folder
_TIME = "epoch"


def make_scheduler(
    scheduler: SchedulerSpec, *, max_epochs: int, journal: Path | None = None
) -> TrialScheduler:
    """The scheduler; metric and mode come from Tune's config (``set_search_properties``).
    ``journal``: where its state is kept for a resume (None: in memory only, as in replays)."""
    if scheduler.type == "fifo":
        return FIFOScheduler()
    if scheduler.population_based:
        raise ValueError("pbt needs the search space and the sweep: pbt_scheduler.make_population_based")
    if scheduler.type == "median":
        return DurableMedianRule(
            journal,
            time_attr=_TIME,
            grace_period=scheduler.grace_period,
            min_samples_required=scheduler.min_samples_required,
        )
    return DurableASHA(  # ASHA is its one-bracket case
        journal,
        time_attr=_TIME,
        max_t=max_epochs,
        grace_period=scheduler.grace_period,
        reduction_factor=scheduler.reduction_factor,
        brackets=scheduler.brackets if scheduler.type == "hyperband" else 1,
    )


def decision_epochs(spec: SweepSpec) -> frozenset[int]:
    """The epochs at which the scheduler decides, where a trial always reports (with a
    checkpoint): every rung of every ASHA / Hyperband bracket (see ``SchedulerSpec.rungs``), and
    for the median rule every epoch from its grace period on (it judges a trial at any result,
    and a batched report would let a fast trial finish before it was ever judged). PBT (and PB2) decide
    at every multiple of its perturbation interval, and a trial it copies needs its checkpoint
    from exactly then. FIFO decides nothing."""
    scheduler = spec.scheduler
    if scheduler.population_based:
        return frozenset(
            range(scheduler.perturbation_interval, spec.max_epochs + 1, scheduler.perturbation_interval)
        )
    if scheduler.type == "median":
        return frozenset(range(scheduler.grace_period, spec.max_epochs + 1))
    brackets = {"asha": 1, "hyperband": scheduler.brackets}.get(scheduler.type, 0)
    return frozenset(e for s in range(brackets) for e in scheduler.rungs(spec.max_epochs, s))


@dataclass(frozen=True)
class _Seen:
    """A trial known from the journal only: what Ray's schedulers read of a ``Trial``."""

    trial_id: str

    def __str__(self) -> str:
        return self.trial_id


class _NoController:
    """The controller a replayed event is given: no trial is live while the journal replays."""

    def get_live_trials(self) -> list[Any]:
        return []


class _Journal:
    """The scheduler's events on disk; ``applied``: how many of them its state holds."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.applied = 0
        self._file: IO[str] | None = None

    def append(self, event: dict[str, Any]) -> None:
        self.applied += 1
        if self.path is None:
            return
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps(event, allow_nan=True) + "\n")
        self._file.flush()  # in the OS's hands: it outlives a killed driver

    def unapplied(self) -> list[dict[str, Any]]:
        """The events written after the state was pickled (all of them for the pickle of a start)."""
        if self.path is None or not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        events = []
        for line in lines[self.applied :]:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by the crash: the event it began never took effect
        self.applied += len(events)
        return events

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "applied": self.applied, "_file": None}


class _Durable(TrialScheduler, metaclass=abc.ABCMeta):
    """What both durable schedulers share: the journal, the replay and the clean-up after it."""

    _metric: str | None  # Ray's, set from Tune's config
    _journal: _Journal
    _restored: bool  # unpickled: the journal's later events are not in the state yet
    _readded: set[str]  # trials Tune added again since the restore
    _finished: set[str]  # trials whose end is in the journal

    def _init_journal(self, path: Path | None) -> None:
        self._journal = _Journal(path)
        self._restored = False
        self._readded, self._finished = set(), set()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._restored = True

    def _note(self, kind: str, trial: Any, **data: Any) -> None:
        if kind == "complete":
            self._finished.add(trial.trial_id)
        self._journal.append({"event": kind, "trial": trial.trial_id, **data})

    def _catch_up(self) -> None:
        """Replay what the journal holds beyond the pickled state (on the first event after a
        restore: Tune re-adds the trials it restored first)."""
        if not self._restored:
            return
        self._restored = False
        for event in self._journal.unapplied():
            self._apply(event)
        self._readded = set()
        self._pending_cleanup = True

    def _ready(self) -> None:
        """Before any decision: the journal replayed, then the trials Tune lost forgotten."""
        self._catch_up()
        self._clean_up()

    def _judge(self, trial: Any, result: dict[str, Any], decide: Callable[[dict[str, Any]], str]) -> str:
        """Ray's decision (``decide``) on what it reads of ``result``, which is journaled."""
        self._ready()
        seen = _result(result, self._metric or "")
        action = str(decide(seen or result))
        if seen is not None:
            self._note("result", trial, result=seen)
        return action

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        self._ready()
        return super().choose_trial_to_run(tune_controller)

    def _clean_up(self) -> None:
        """After Tune re-added its trials: forget the journal's trials it will never run again."""
        if not getattr(self, "_pending_cleanup", False):
            return
        self._pending_cleanup = False
        lost = self._known_trials() - self._readded - self._finished
        if lost:
            self._forget(lost)

    @abc.abstractmethod
    def _apply(self, event: dict[str, Any]) -> None:
        """One journaled event, applied to the state as Ray's scheduler would have."""

    @abc.abstractmethod
    def _known_trials(self) -> set[str]:
        """Every trial the state holds anything of."""

    @abc.abstractmethod
    def _forget(self, trial_ids: set[str]) -> None:
        """Take these trials out of the state."""


def _result(result: dict[str, Any], metric: str) -> dict[str, Any] | None:
    """What a scheduler reads of a result (None: it holds neither, and nothing is decided)."""
    if _TIME not in result or metric not in result:
        return None
    value = result[metric]
    return {_TIME: result[_TIME], metric: float(value) if value is not None else math.nan}


class DurableASHA(_Durable, AsyncHyperBandScheduler):
    """Ray's ASHA / async Hyperband whose brackets and rungs survive a resume (see module)."""

    def __init__(self, journal: Path | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_journal(journal)
        # Trials stopped before the crash whose end did not reach the journal: a restored one that
        # reports again is stopped again (it is recorded at the rung, which ASHA would not judge).
        self._stopped: set[str] = set()

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._catch_up()
        tid = trial.trial_id
        self._readded.add(tid)
        if tid in self._trial_info or tid in self._finished:
            return  # restored: its bracket is the one it had
        super().on_trial_add(tune_controller, trial)
        self._note("add", trial, bracket=self._brackets.index(self._trial_info[tid]))

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        self._ready()
        if trial.trial_id in self._stopped:
            return TrialScheduler.STOP
        rule = super().on_trial_result
        return self._judge(trial, result, lambda seen: rule(tune_controller, trial, seen))

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._ready()
        if trial.trial_id not in self._trial_info:
            return  # restored finished, its end replayed already
        seen = _result(result, self._metric or "")
        super().on_trial_complete(tune_controller, trial, seen or result)
        self._trial_info.pop(trial.trial_id, None)
        self._note("complete", trial, result=seen or {})

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._ready()
        self._trial_info.pop(trial.trial_id, None)
        self._note("complete", trial)

    def _apply(self, event: dict[str, Any]) -> None:
        tid, kind = str(event["trial"]), event["event"]
        seen: Any = _Seen(tid)  # what Ray's code reads of a Trial
        controller: Any = _NoController()
        if kind == "add":
            self._trial_info[tid] = self._brackets[int(event["bracket"])]
        elif tid not in self._trial_info:
            return  # an event of a trial whose add was lost with the crash
        elif kind == "result":
            action = AsyncHyperBandScheduler.on_trial_result(self, controller, seen, event["result"])
            if action == TrialScheduler.STOP:
                self._stopped.add(tid)
        elif kind == "complete":
            if event.get("result"):
                AsyncHyperBandScheduler.on_trial_complete(self, controller, seen, event["result"])
            self._trial_info.pop(tid, None)
            self._finished.add(tid)

    def _known_trials(self) -> set[str]:
        return set(self._trial_info) | {tid for _, rung in _rungs(self) for tid in rung}

    def _forget(self, trial_ids: set[str]) -> None:
        self._stopped -= trial_ids
        for tid in trial_ids:
            self._trial_info.pop(tid, None)
        for _, recorded in _rungs(self):
            for tid in trial_ids:
                recorded.pop(tid, None)


def _rungs(asha: AsyncHyperBandScheduler) -> Iterable[tuple[float, dict[str, float]]]:
    """Every (milestone, {trial: value}) of every bracket."""
    for bracket in asha._brackets:
        yield from bracket._rungs


class DurableMedianRule(_Durable, MedianStoppingRule):
    """Ray's median stopping rule whose results survive a resume (see module). Ray keys its state
    by ``Trial`` object, and a restored sweep has new ones: here one object per trial id stands
    for a trial throughout."""

    def __init__(self, journal: Path | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_journal(journal)
        self._same: dict[str, Any] = {}

    def _one(self, trial: Any) -> Any:
        return self._same.setdefault(trial.trial_id, trial)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._catch_up()
        self._readded.add(trial.trial_id)
        super().on_trial_add(tune_controller, self._one(trial))

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        rule = super().on_trial_result
        return self._judge(trial, result, lambda seen: rule(tune_controller, self._one(trial), seen))

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._ready()
        if trial.trial_id in self._finished:
            return  # restored finished, its end replayed already
        seen = _result(result, self._metric or "")
        if seen is not None:
            super().on_trial_complete(tune_controller, self._one(trial), seen)
        self._note("complete", trial, result=seen or {})

    def _apply(self, event: dict[str, Any]) -> None:
        trial = self._one(_Seen(str(event["trial"])))
        controller: Any = _NoController()
        if event["event"] == "result":
            MedianStoppingRule.on_trial_result(self, controller, trial, event["result"])
        elif event["event"] == "complete":
            if event.get("result"):
                MedianStoppingRule.on_trial_complete(self, controller, trial, event["result"])
            self._finished.add(trial.trial_id)

    def _known_trials(self) -> set[str]:
        return {trial.trial_id for trial in self._results}

    def _forget(self, trial_ids: set[str]) -> None:
        for tid in trial_ids:
            trial = self._same.get(tid)
            if trial is not None:
                self._results.pop(trial, None)
                self._stopped_trials.discard(trial)
