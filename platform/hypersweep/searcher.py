"""Driver side: the searcher, Ray's ``OptunaSearch`` told the truth about every trial.

Ray's ``OptunaSearch`` tells Optuna every trial that ended with a metric as COMPLETE, valued at its
last report. Under ASHA that ranks a trial stopped at a 2-epoch rung against fully trained ones as
equals, and the epochs a batched report carries never reach the study. ``StudySearcher`` changes
only what the study is told (see ``on_trial_complete``); proposing stays Ray's:

* every epoch's result so far (``scoring``: the best value up to that epoch) is an intermediate
  value of the Optuna trial, at ``step = epoch``, including the epochs a batched report carries
  and the last report of a trial the scheduler stopped (Tune gives that one to
  ``on_trial_complete`` only);
* a trial the scheduler stopped (ASHA, Hyperband, the median rule) is PRUNED: TPE ranks it by how
  far it got, then by its value (``optuna/samplers/_tpe/sampler.py``, ``_split_trials``);
* a trial that completed or stopped itself (patience) is COMPLETE with the trial's result;
* a diverged trial is COMPLETE with the worst value (+inf for min): TPE puts it among the bad
  trials, so it learns to avoid the region (a FAIL would be ignored);
* a trial that raised is FAIL.

Each Optuna trial carries the user attributes ``trial_id`` (Tune's, as MLflow's
``hypersweep.trial_id`` tag) and ``stop_reason``; a trial of an earlier sweep that a warm start
put in the study carries ``warm_start`` instead (``warm_start``), and is never one of Tune's.
The study lives in the sweep's folder as an Optuna journal file, named by the sweep id and
written in batches (``study_journal``): ``optuna-dashboard <folder>/optuna-study.jsonl`` opens
it, ``hypersweep resume`` continues it, and tests read what the searcher was told.

After a driver crash, Tune restores this searcher as its last snapshot left it, while the study
goes on to the crash. Trials asked for after that snapshot are unknown to the restored sweep:
one that had finished counts toward ``num_samples`` (it is not trained again: its run stays as
it is); one that had not is FAIL with no stop reason, and its configuration is the
next one proposed, so the sweep trains it again as a new trial (which takes over its run, see
``tracking.SweepRecorder.adopt_lost``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from hypersweep import scoring
from hypersweep.study_journal import BatchedJournalFile
from hypersweep.trial import HISTORY

STUDY_FILE = "optuna-study.jsonl"  # in the sweep's folder
# The trial's own stop reasons (the trainer's); any other end is the scheduler's decision.
SELF_STOPPED = {"completed", "patience"}
LOST = "lost"  # a trial a driver crash took before its end (see above)
# User attribute of a trial an earlier sweep's seeded the study with (``warm_start``): the sweep.
WARM_START = "warm_start"


class StudySearcher(OptunaSearch):
    """``OptunaSearch`` over a persisted study, told PRUNED / COMPLETE / FAIL as described above."""

    def __init__(
        self,
        *,
        space: Callable[[optuna.Trial], Any],
        metric: str,
        mode: str,
        sampler: optuna.samplers.BaseSampler,
        study_file: Path | None,
        study_name: str,
        scheduler: str = "scheduler",
        num_samples: int | None = None,
        seeded: Sequence[optuna.trial.FrozenTrial] = (),
    ) -> None:
        """``study_file``: the journal the study lives in; None keeps it in memory (replays).
        ``scheduler``: the stop reason of a trial the scheduler stopped (its type, as MLflow's).
        ``num_samples``: the sweep's trials in all, counting those a restored Tune never saw.
        ``seeded``: finished trials of earlier sweeps (``warm_start``), added to a new study."""
        self._journal = BatchedJournalFile(study_file) if study_file else None
        storage = JournalStorage(self._journal) if self._journal is not None else None
        super().__init__(
            space=space, metric=metric, mode=mode, sampler=sampler, storage=storage, study_name=study_name
        )
        # Per trial: (last epoch reported, its result so far). Rebuilt from the study after a
        # restore, which may hold epochs reported after Tune's last snapshot of this object.
        self._progress: dict[str, tuple[int, float]] = {}
        self._goal_metric, self._goal_mode = metric, mode  # typed copies of Ray's _metric/_mode
        self._scheduler = scheduler
        self._num_samples = num_samples
        self._ended_unseen = 0  # trials that ended after Tune's last snapshot (see module)
        if seeded:
            self.study.add_trials(seeded)
            self.flush()

    @property
    def study(self) -> optuna.Study:
        assert self._ot_study is not None  # made in __init__: the space is given
        return self._ot_study

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        limit = getattr(self, "_num_samples", None)
        unseen = getattr(self, "_ended_unseen", 0)
        if limit is not None and trial_id not in self._ot_trials and len(self._ot_trials) + unseen >= limit:
            # The trials that ended unseen complete the sweep. (Ray's annotation omits FINISHED,
            # which its docs and SearchGenerator take.)
            return Searcher.FINISHED  # type: ignore[return-value]
        config: dict[str, Any] | None = super().suggest(trial_id)
        if trial_id in self._ot_trials:  # the study names Tune's trial: MLflow's trial_id tag
            self._ot_trials[trial_id].set_user_attr("trial_id", trial_id)
        # On disk before Tune can start the trial: after a crash, a trial the study lacks could be
        # neither counted nor run again (see the module).
        self.flush()
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self._completed_trials:
            self._report(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if trial_id in self._completed_trials or ot_trial is None:
            return
        if result and not error:
            self._report(trial_id, result)
        state, value, reason = self._outcome(trial_id, result, error)
        try:
            ot_trial.set_user_attr("stop_reason", reason)
            self.study.tell(ot_trial, value, state=state, skip_if_finished=True)
        except UpdateFinishedTrialError:
            pass  # told before the driver crashed; the study kept it
        self._completed_trials.add(trial_id)
        self._progress.pop(trial_id, None)
        self.flush()  # a trial's end is on disk when it is told

    def flush(self) -> None:
        """Write what the study's file lacks (it is written in batches)."""
        if self._journal is not None:
            self._journal.flush()

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._progress = self._progress_in_study()
        self._fail_lost_trials()
        self.flush()

    def _fail_lost_trials(self) -> None:
        """Trials asked for after Tune's last snapshot of this searcher (see the module): an ended
        one is counted; an unfinished one is FAIL (left RUNNING it would stay so for good, and TPE
        would count it as running forever) and its configuration is proposed next."""
        known = {ot_trial.number for ot_trial in self._ot_trials.values()}
        self._ended_unseen = 0
        unseen = [
            t
            for t in self.study.get_trials(deepcopy=False)
            if t.number not in known and WARM_START not in t.user_attrs  # seeded: never Tune's
        ]
        if unseen:
            # The sampler's random state is the snapshot's: it would propose the unseen trials'
            # configurations again, each trained twice. (Proposals after a resume are therefore
            # not reproducible from the seed.)
            self.study.sampler.reseed_rng()
        for frozen in unseen:
            if frozen.state == TrialState.RUNNING:  # FAIL without a stop reason: lost
                self.study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
                self.study.enqueue_trial(frozen.params, skip_if_exists=False)
            elif frozen.user_attrs.get("stop_reason", LOST) != LOST and frozen.state.is_finished():
                self._ended_unseen += 1

    def _outcome(
        self, trial_id: str, result: Mapping[str, Any] | None, error: bool
    ) -> tuple[TrialState, float | None, str]:
        """(state, value, stop reason) for the trial's end; see the module's docstring."""
        if error:
            return TrialState.FAIL, None, "error"
        reason = str((result or {}).get("stop_reason") or "")
        if reason == "diverged":
            return TrialState.COMPLETE, scoring.worst(self._goal_mode), reason
        if reason in SELF_STOPPED:
            _, so_far = self._progress.get(trial_id, (0, scoring.NONE_YET))
            if not isinstance(result, Mapping) or HISTORY not in result:
                # A trial that finished before a crash reports only its final result.
                so_far = scoring.better(
                    so_far, result.get(self._goal_metric) if result else None, self._goal_mode
                )
            return TrialState.COMPLETE, scoring.or_worst(so_far, self._goal_mode), reason
        # Stopped by the scheduler (or removed before it ran): the value is its last step's.
        return TrialState.PRUNED, None, reason or getattr(self, "_scheduler", "scheduler")

    def _report(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """Each new epoch of a report, as the trial's result so far at ``step = epoch``."""
        ot_trial = self._ot_trials[trial_id]
        last, so_far = self._progress.get(trial_id, (0, scoring.NONE_YET))
        for epoch in result.get(HISTORY) or [result]:
            step = int(epoch.get("epoch") or 0)
            if step <= last or epoch.get("stop_reason") == "diverged":
                continue  # replayed after a rollback (told already), or an epoch with no result
            last, so_far = step, scoring.better(so_far, epoch.get(self._goal_metric), self._goal_mode)
            if math.isnan(so_far):
                continue  # no finite value yet: nothing to tell
            try:
                ot_trial.report(so_far, step)
            except UpdateFinishedTrialError:
                break  # told before the driver crashed; the study kept it
        self._progress[trial_id] = (last, so_far)

    def _progress_in_study(self) -> dict[str, tuple[int, float]]:
        """What the study holds of each trial's epochs: its last step and value (a running best,
        so the last value is the result so far)."""
        by_number = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        progress = {}
        for trial_id, ot_trial in self._ot_trials.items():
            frozen = by_number.get(ot_trial.number)
            if frozen is not None and frozen.intermediate_values:
                step = max(frozen.intermediate_values)
                progress[trial_id] = (step, float(frozen.intermediate_values[step]))
        return progress


def make_searcher(
    search: str,
    *,
    seed: int,
    space: Callable[[optuna.Trial], Any],
    metric: str,
    mode: str,
    study_file: Path | None,
    study_name: str,
    told: str = "truth",
    startup_trials: int = 10,
    group: bool = False,
    scheduler: str = "scheduler",
    num_samples: int | None = None,
    seeded: Sequence[optuna.trial.FrozenTrial] = (),
) -> OptunaSearch:
    """A seeded searcher: ``search`` optuna (TPE: ``startup_trials`` random ones first; ``group``
    models the branches of a conditional space apart) or random. ``told`` truth:
    ``StudySearcher``, its study holding the ``seeded`` trials first (a warm start); ray: Ray's
    ``OptunaSearch`` as it ships (replays compare the two; its study stays in memory)."""
    sampler: optuna.samplers.BaseSampler = (
        optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, group=group)
        if search == "optuna"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    if told == "ray":
        return OptunaSearch(space=space, metric=metric, mode=mode, sampler=sampler)
    return StudySearcher(
        space=space,
        metric=metric,
        mode=mode,
        sampler=sampler,
        study_file=study_file,
        study_name=study_name,
        scheduler=scheduler,
        num_samples=num_samples,
        seeded=seeded,
    )


def study_of(folder: Path, sweep_id: str) -> optuna.Study:
    """The persisted study of a sweep, read back (tests, reports, ``optuna-dashboard``'s view)."""
    storage = JournalStorage(JournalFileBackend(str(folder / STUDY_FILE)))
    return optuna.load_study(study_name=sweep_id, storage=storage)
