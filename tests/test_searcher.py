"""What the searcher tells Optuna: every epoch, PRUNED for the scheduler's stops, one result."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hypersweep import scoring
from hypersweep.searcher import STUDY_FILE, StudySearcher, study_of
from hypersweep.study_journal import BatchedJournalFile
from hypersweep.trial import HISTORY
from tests.conftest import DEFAULT_SWEEP, hypersweep
from tests.mlflow_store import read_sweep


def _space(trial: Any) -> None:
    trial.suggest_float("lr", 1e-4, 1.0, log=True)


def _searcher(
    folder: Path, mode: str = "min", metric: str = "val_loss", num_samples: int | None = None
) -> StudySearcher:
    return StudySearcher(
        space=_space,
        metric=metric,
        mode=mode,
        sampler=optuna.samplers.RandomSampler(seed=0),
        study_file=folder / STUDY_FILE,
        study_name="s",
        num_samples=num_samples,
    )


def _report(values: list[float], *, first: int = 1, metric: str = "val_loss", **last: Any) -> dict[str, Any]:
    """A batched Tune report: its epochs under HISTORY, the last one's values on top (as flattened
    by Tune; the top-level metric is the worker's result so far, which the searcher ignores)."""
    epochs = [{"epoch": first + i, metric: v} for i, v in enumerate(values)]
    epochs[-1].update(last)
    return {**epochs[-1], metric: min(values), HISTORY: epochs}


def _trial(folder: Path, trial_id: str) -> optuna.trial.FrozenTrial:
    (found,) = [t for t in study_of(folder, "s").trials if t.user_attrs.get("trial_id") == trial_id]
    return found


def test_a_trial_the_scheduler_stopped_is_pruned_with_every_epoch_as_its_result_so_far(tmp_path):
    searcher = _searcher(tmp_path)
    searcher.suggest("a")
    searcher.on_trial_result("a", _report([0.9, 0.5]))  # epochs 1-2 in one report
    # ASHA's STOP: Tune skips on_trial_result and gives the stopped report to on_trial_complete.
    searcher.on_trial_complete("a", _report([0.7, 0.6], first=3))
    trial = _trial(tmp_path, "a")
    assert trial.state == TrialState.PRUNED
    assert trial.intermediate_values == {1: 0.9, 2: 0.5, 3: 0.5, 4: 0.5}  # best so far, per epoch
    assert trial.value == 0.5 and trial.user_attrs["stop_reason"] == "scheduler"


def test_completed_and_patience_stopped_trials_are_complete_with_their_best_epoch(tmp_path):
    searcher = _searcher(tmp_path, mode="max", metric="val_accuracy")
    for tid, reason in [("c", "completed"), ("p", "patience")]:
        searcher.suggest(tid)
        searcher.on_trial_result(tid, _report([0.6, 0.8], metric="val_accuracy"))
        searcher.on_trial_complete(tid, _report([0.7], first=3, metric="val_accuracy", stop_reason=reason))
        trial = _trial(tmp_path, tid)
        assert trial.state == TrialState.COMPLETE and trial.value == 0.8
        assert trial.intermediate_values == {1: 0.6, 2: 0.8, 3: 0.8}
        assert trial.user_attrs["stop_reason"] == reason


def test_a_diverged_trial_is_complete_and_worst_and_a_failed_one_is_fail(tmp_path):
    searcher = _searcher(tmp_path)
    searcher.suggest("d")
    searcher.on_trial_result("d", _report([0.4]))
    searcher.on_trial_complete("d", _report([math.inf], first=2, stop_reason="diverged"))
    diverged = _trial(tmp_path, "d")
    assert diverged.state == TrialState.COMPLETE and diverged.value == math.inf  # TPE learns from it
    assert diverged.intermediate_values == {1: 0.4}  # the diverged epoch is no result
    searcher.suggest("f")
    searcher.on_trial_result("f", _report([0.3]))
    searcher.on_trial_complete("f", error=True)
    assert _trial(tmp_path, "f").state == TrialState.FAIL


def test_epochs_replayed_after_a_retry_are_not_told_twice(tmp_path):
    searcher = _searcher(tmp_path)
    searcher.suggest("r")
    searcher.on_trial_result("r", _report([0.9, 0.8, 0.7]))
    searcher.on_trial_result("r", _report([0.85, 0.6], first=2))  # rolled back to epoch 1's checkpoint
    searcher.flush()
    assert _trial(tmp_path, "r").intermediate_values == {1: 0.9, 2: 0.8, 3: 0.7}


def test_a_restored_searcher_continues_from_what_the_study_holds(tmp_path):
    """Tune snapshots the searcher now and then; epochs told after the snapshot are in the study's
    journal, and a restored searcher neither tells them again nor loses their best."""
    searcher = _searcher(tmp_path)
    searcher.suggest("x")
    searcher.on_trial_result("x", _report([0.9]))
    snapshot = tmp_path / "searcher.pkl"
    searcher.save(str(snapshot))
    searcher.on_trial_result("x", _report([0.3], first=2))  # after the snapshot, then a crash
    searcher.suggest("lost")  # asked for after the snapshot: the restored Tune never knew it
    searcher.flush()  # and written down before the crash
    restored = _searcher(tmp_path)
    restored.restore(str(snapshot))
    # The lost trial is FAIL, and its configuration waits to be proposed again.
    states = [t.state for t in study_of(tmp_path, "s").trials]
    assert states == [TrialState.RUNNING, TrialState.FAIL, TrialState.WAITING]
    restored.on_trial_complete("x", _report([0.5, 0.4], first=2, stop_reason="completed"))
    trial = _trial(tmp_path, "x")
    assert trial.intermediate_values == {1: 0.9, 2: 0.3, 3: 0.3} and trial.value == 0.3
    assert pickle.loads(snapshot.read_bytes())  # what Tune keeps pickles whole


def test_after_a_crash_a_lost_trial_runs_again_and_an_ended_one_counts(tmp_path):
    """Trials asked for after Tune's last snapshot: the one that ended is part of the sweep (not
    trained again), the one that did not is proposed again, and the sweep keeps num_samples."""
    searcher = _searcher(tmp_path, num_samples=4)
    searcher.suggest("a")
    snapshot = tmp_path / "searcher.pkl"
    searcher.save(str(snapshot))
    ended = searcher.suggest("ended")
    searcher.on_trial_complete("ended", _report([0.5, 0.4], stop_reason="completed"))
    lost = searcher.suggest("lost")
    searcher.on_trial_result("lost", _report([0.7]))
    searcher.flush()  # then the driver dies
    restored = _searcher(tmp_path, num_samples=4)
    restored.restore(str(snapshot))
    assert restored.suggest("again") == lost  # the lost configuration, as a new trial
    assert restored.suggest("new") not in (None, lost, ended)
    # "a", "again", "new" and the ended trial make 4: nothing more is proposed.
    fifth: Any = restored.suggest("fifth")
    assert fifth == "FINISHED"  # Searcher.FINISHED
    told = {t.user_attrs.get("trial_id"): t.state for t in study_of(tmp_path, "s").trials}
    assert told["ended"] == TrialState.COMPLETE and told["lost"] == TrialState.FAIL


@pytest.mark.parametrize(
    ("values", "mode", "expected"),
    [
        ([3.0, math.nan, 1.0, math.inf], "min", 1.0),
        ([0.2, 0.9, -math.inf], "max", 0.9),
        ([math.nan], "min", None),
    ],
)
def test_a_trials_result_is_its_best_finite_epoch(values, mode, expected):
    result = scoring.NONE_YET
    for value in values:
        result = scoring.better(result, value, mode)
    assert (math.isnan(result) and expected is None) or result == expected
    assert scoring.or_worst(result, mode) == (expected if expected is not None else scoring.worst(mode))


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("scheduler", ["asha", "hyperband", "median"])
def test_the_study_of_a_real_sweep_tells_what_mlflow_holds(tmp_path, scheduler):
    """Read back from a real sweep: each MLflow child's Optuna trial, by its trial id."""
    result, uri = stopping_sweep(tmp_path, scheduler)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    stored = read_sweep(uri, "breast-cancer-mlp")
    sweep_id = stored.parent.data.tags["hypersweep.sweep_id"]
    study = study_of(tmp_path / "runs" / sweep_id, sweep_id)
    told = {t.user_attrs["trial_id"]: t for t in study.trials}
    assert set(told) == {stored.tag(c, "trial_id") for c in stored.children}
    reasons = set()
    for child in stored.children:
        trial, reason = told[stored.tag(child, "trial_id")], stored.tag(child, "stop_reason")
        reasons.add(reason)
        epochs = [s for s, _ in stored.history(child, "train_loss")]
        assert trial.user_attrs["stop_reason"] == reason  # the study and MLflow name one reason
        if reason == scheduler:
            assert trial.state == TrialState.PRUNED
            assert sorted(trial.intermediate_values) == epochs  # one value per epoch it trained
            assert trial.value == min(v for _, v in stored.history(child))
        elif reason in ("completed", "patience"):
            assert trial.state == TrialState.COMPLETE
            assert (
                trial.value == child.data.metrics["best_val_loss"] == min(v for _, v in stored.history(child))
            )
        else:
            assert reason == "diverged" and trial.state == TrialState.COMPLETE and trial.value == math.inf
    assert {scheduler, "diverged"} <= reasons and reasons & {"completed", "patience"}, reasons
    assert stored.parent.data.metrics["best_val_loss"] == min(
        t.value for t in study.trials if t.state == TrialState.COMPLETE and t.value is not None
    )


def stopping_sweep(folder: Path, scheduler: str) -> tuple[Any, str]:
    """9 trials, rungs at epochs 1, 3 and 9 (Hyperband: also 3 and 9), one learning rate in three
    diverges; the median rule judges from epoch 1 once two others got there."""
    uri = f"sqlite:///{folder}/x.db"
    result = hypersweep(
        *("run", str(DEFAULT_SWEEP), "--num-samples", "9", "--max-epochs", "9", "--scheduler", scheduler),
        *("--search", "random", "--seed", "1", "--tracking-uri", uri, "--storage", str(folder / "runs")),
        *("--set", "search_space.lr={type: choice, values: [1.0e+5, 3.0e-3, 3.0e-2]}"),
        *("--set", "scheduler.grace_period=1", "--set", "scheduler.reduction_factor=3"),
        *("--set", "scheduler.brackets=2", "--set", "scheduler.min_samples_required=2"),
        cwd=folder,
    )
    return result, uri


def test_the_batched_journal_is_optunas_own_format_and_survives_a_torn_line(tmp_path):
    path = tmp_path / "j.jsonl"
    storage = JournalStorage(BatchedJournalFile(path))
    study = optuna.create_study(storage=storage, study_name="j")
    study.enqueue_trial({"x": 1.0})
    study.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=3)
    journal = storage._backend
    assert isinstance(journal, BatchedJournalFile)
    journal.flush()
    reread = optuna.load_study(study_name="j", storage=JournalStorage(JournalFileBackend(str(path))))
    assert [t.value for t in reread.trials] == [t.value for t in study.trials]
    with path.open("ab") as f:
        f.write(b'{"op_code": 4, "wor')  # a crash in the middle of a write
    again = pickle.loads(pickle.dumps(journal))  # as Tune restores a snapshot: read from the file
    assert len(list(again.read_logs(0))) == len(list(journal.read_logs(0)))
    assert path.read_bytes().endswith(b"\n")  # the torn line is gone; appends start a line of their own
