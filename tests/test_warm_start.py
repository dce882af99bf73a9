"""Warm start: which earlier trials fit a new space, how they enter its study, and that the
searcher never takes them for Tune's trials (the real sweeps: test_warm_start_sweep.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from hypersweep.search_space import parse_search_space
from hypersweep.searcher import STUDY_FILE, WARM_START, StudySearcher, study_of
from hypersweep.warm_start import (
    EARLIER_TRIAL,
    Earlier,
    WarmStart,
    distribution,
    fit,
    from_recorded,
    from_study,
    outcome,
    seeds,
)

SPACE = parse_search_space(
    {
        "lr": {"type": "loguniform", "low": 1e-3, "high": 0.1},
        "optimizer": {"type": "choice", "values": ["sgd", "momentum", "adam"]},
        "momentum": {"type": "uniform", "low": 0.5, "high": 0.99, "when": {"optimizer": "momentum"}},
        "layers": {"type": "int", "low": 1, "high": 7, "step": 2},
        "batch_size": {"type": "choice", "values": [16, 32]},
        "hidden": {"type": "choice", "values": [[64, 32], [128]]},
        "activation": "relu",  # a constant
    },
    "space.yaml",
)
FIXED = {"dropout": 0.1, "api_token": "s3cr3t"}
# A trial as MLflow holds it: every param as text (``tracking.conventions._param_text``), fixed ones too.
RECORDED = {
    "lr": "0.01",
    "optimizer": "momentum",
    "momentum": "0.9",
    "layers": "3",
    "batch_size": "16",
    "hidden": "[64, 32]",
    "activation": "relu",
    "dropout": "0.1",
    "api_token": "***",  # redacted by the recorder: the same constant
}


def test_a_trial_inside_the_new_space_keeps_its_values_as_the_study_stores_them() -> None:
    taken = fit(RECORDED, SPACE, FIXED)
    assert taken == {
        "lr": 0.01,
        "optimizer": "momentum",
        "momentum": 0.9,
        "layers": 3,
        "batch_size": 16,
        "hidden": "[64, 32]",  # a choice Optuna cannot store: its label
    }


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lr", "0.5"),  # above the range
        ("lr", "adam"),  # another kind of value
        ("optimizer", "rmsprop"),  # not among the choices
        ("layers", "4"),  # off the step (1, 3, 5, 7)
        ("layers", "3.5"),  # not an integer
        ("batch_size", "true"),  # True is not 1, nor 16
        ("hidden", "[256]"),
        ("activation", "tanh"),  # the new space holds it constant at relu
        ("dropout", "0.2"),  # the new sweep fixes it at 0.1
        ("api_token", "other"),
    ],
)
def test_a_trial_with_any_value_outside_is_skipped(key: str, value: str) -> None:
    assert fit({**RECORDED, key: value}, SPACE, FIXED) is None


def test_parameters_the_new_space_does_not_sample_are_left_out() -> None:
    # Not in the new space at all: dropped, the trial kept.
    assert "beta1" not in (fit({**RECORDED, "beta1": "0.9"}, SPACE, FIXED) or {})
    # Conditional, and its condition not met under the trial's choices: dropped too.
    adam = fit({**RECORDED, "optimizer": "adam"}, SPACE, FIXED)
    assert adam is not None and "momentum" not in adam and adam["optimizer"] == "adam"
    # A parameter the earlier sweep did not have is left to the sampler.
    assert fit({"lr": "0.01"}, SPACE, FIXED) == {"lr": 0.01}
    # Nothing in common: nothing to learn from.
    assert fit({"width": "3"}, SPACE, FIXED) == {}


def test_values_from_a_study_are_taken_as_they_are() -> None:
    params = {"lr": 0.01, "optimizer": "sgd", "layers": 5, "batch_size": 32, "hidden": "[128]"}
    assert fit(params, SPACE, {}) == params
    assert fit({**params, "batch_size": True}, SPACE, {}) is None


def test_seeded_trials_have_the_distributions_the_sampler_draws_from() -> None:
    """Else TPE would model the seeded trials and the sweep's own apart."""
    study = optuna.create_study()
    for _ in range(20):
        trial = study.ask()
        SPACE.define_by_run(trial)
        for name, drawn in trial.distributions.items():
            assert drawn == distribution(dict(SPACE.entries)[name]), name


def test_an_earlier_trial_is_told_as_the_searcher_told_it() -> None:
    curve = [0.9, None, 0.5, 0.7]
    steps = {1: 0.9, 2: 0.9, 3: 0.5, 4: 0.5}  # the result so far, per epoch
    assert outcome(curve, "asha", "min") == (TrialState.PRUNED, 0.5, steps)
    assert outcome(curve, "completed", "min") == (TrialState.COMPLETE, 0.5, steps)
    assert outcome(curve, "patience", "max") == (TrialState.COMPLETE, 0.9, {1: 0.9, 2: 0.9, 3: 0.9, 4: 0.9})
    assert outcome(curve, "diverged", "min") == (TrialState.COMPLETE, math.inf, steps)
    assert outcome([None], "asha", "min") == (TrialState.PRUNED, None, {})


class _Recorded:
    def __init__(self, status: str, reason: str, curve: tuple[float | None, ...]) -> None:
        self.trial_id, self.params, self.status, self.stop_reason, self.curve = (
            "t",
            RECORDED,
            status,
            reason,
            curve,
        )


def test_trials_without_a_result_are_counted_apart() -> None:
    class Sweep:
        sweep_id = "a"
        trials = (
            _Recorded("completed", "completed", (0.5,)),
            _Recorded("early_stopped", "asha", (0.7,)),
            _Recorded("diverged", "diverged", ()),  # diverged in its first epoch: a result
            _Recorded("failed", "error", ()),
            _Recorded("interrupted", "lost", ()),
        )

    earlier, none = from_recorded(Sweep(), "min")
    assert [e.state for e in earlier] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    assert none == 2


def _earlier(value: float, lr: str = "0.01", state: TrialState = TrialState.COMPLETE) -> Earlier:
    return Earlier("sweep-a", f"t{value}", {**RECORDED, "lr": lr}, state, value, {1: value + 0.1, 2: value})


def test_seeds_carry_values_states_steps_and_where_they_came_from() -> None:
    earlier = [_earlier(0.3), _earlier(0.2, state=TrialState.PRUNED), _earlier(0.1, lr="0.5")]
    taken, outside = seeds(earlier, SPACE, FIXED)
    assert outside == 1
    assert [(t.state, t.value, t.intermediate_values) for t in taken] == [
        (TrialState.COMPLETE, 0.3, {1: 0.4, 2: 0.3}),
        (TrialState.PRUNED, 0.2, {1: 0.30000000000000004, 2: 0.2}),
    ]
    assert [t.user_attrs for t in taken] == [
        {WARM_START: "sweep-a", EARLIER_TRIAL: "t0.3"},
        {WARM_START: "sweep-a", EARLIER_TRIAL: "t0.2"},
    ]
    line = WarmStart(("sweep-a",), tuple(taken), outside=1, no_result=2).line()
    skipped = "3 skipped (1 outside the search space, 2 without a result)"
    assert line == f"warm start from sweep-a: 2 trials taken, {skipped}"


def _searcher(folder: Path, seeded: Any = (), num_samples: int = 2) -> StudySearcher:
    return StudySearcher(
        space=SPACE.define_by_run,
        metric="val_loss",
        mode="min",
        sampler=optuna.samplers.TPESampler(seed=0),
        study_file=folder / STUDY_FILE,
        study_name="s",
        num_samples=num_samples,
        seeded=seeded,
    )


def test_seeded_trials_are_never_tunes_nor_lost_on_resume(tmp_path: Path, monkeypatch) -> None:
    taken, _ = seeds([_earlier(0.3), _earlier(0.2, state=TrialState.PRUNED)], SPACE, FIXED)
    searcher = _searcher(tmp_path, taken)
    assert searcher.suggest("a") is not None
    snapshot = tmp_path / "searcher.pkl"
    searcher.save(str(snapshot))
    reseeded: list[object] = []
    monkeypatch.setattr(optuna.samplers.TPESampler, "reseed_rng", lambda self: reseeded.append(self))
    restored = _searcher(tmp_path)  # resume: the study is read back, nothing seeded again
    restored.restore(str(snapshot))
    # Not taken for trials asked for after the snapshot: those make the sampler draw anew.
    assert reseeded == [] and restored._ended_unseen == 0
    trials = study_of(tmp_path, "s").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING]
    assert restored.suggest("b") is not None  # the seeded trials do not count toward num_samples
    finished: Any = restored.suggest("c")
    assert finished == "FINISHED"
    assert from_study(study_of(tmp_path, "s"), "s") == []  # a study's own trials only
