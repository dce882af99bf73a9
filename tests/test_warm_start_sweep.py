"""Warm start through the real CLI: a sweep B with ``search.warm_start: [A]`` after a real sweep A
starts with A's trials that fit its narrower space; a warm start from a sweep that does not exist,
or that optimised another metric or mode, is bad input."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from hypersweep.errors import ConfigError
from hypersweep.searcher import WARM_START, study_of
from hypersweep.tracking.earlier import read_sweeps, reader
from hypersweep.warm_start import EARLIER_TRIAL, from_recorded
from tests.conftest import DEFAULT_SWEEP, hypersweep

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
# B's space: A's learning rates 3e-3 and 3e-2 (not 1e5), and no adagrad.
NARROWED = (
    *("--set", "search_space.lr={type: loguniform, low: 1.0e-3, high: 5.0e-2}"),
    *("--set", "search_space.optimizer.values=[sgd, momentum, adam, adamw, rmsprop]"),
)


def _run(folder: Path, *args: str) -> Any:
    return hypersweep(
        *("run", str(DEFAULT_SWEEP), "--search", "random", "--tracking-uri", _uri(folder)),
        *("--storage", str(folder / "runs"), *args),
        cwd=folder,
    )


def _uri(folder: Path) -> str:
    return f"sqlite:///{folder}/x.db"


def _parents(folder: Path) -> dict[str, Run]:
    """The sweeps in the store, by sweep id."""
    client = MlflowClient(tracking_uri=_uri(folder))
    experiment = client.get_experiment_by_name("breast-cancer-mlp")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`hypersweep.role` = 'sweep'")
    return {run.data.tags["hypersweep.sweep_id"]: run for run in runs}


@pytest.fixture(scope="module")
def sweep_a(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """9 trials on ASHA (rungs at epochs 1 and 3), one learning rate in three diverging."""
    folder = tmp_path_factory.mktemp("warm")
    result = _run(
        folder,
        *("--num-samples", "9", "--max-epochs", "6", "--seed", "1"),
        *("--set", "search_space.lr={type: choice, values: [1.0e+5, 3.0e-3, 3.0e-2]}"),
        *("--set", "scheduler.grace_period=1", "--set", "scheduler.reduction_factor=3"),
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    (a_id,) = _parents(folder)
    return folder, a_id


def test_sweep_b_starts_with_the_trials_of_a_that_fit_its_space(sweep_a) -> None:
    folder, a_id = sweep_a
    warm = ("--set", f"search.warm_start=[{a_id}]")
    result = _run(folder, "--num-samples", "3", "--max-epochs", "2", *warm, *NARROWED)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    a_study = study_of(folder / "runs" / a_id, a_id)
    fits = [t for t in a_study.trials if t.params["lr"] < 1 and t.params["optimizer"] != "adagrad"]
    assert {t.state for t in fits} == {TrialState.PRUNED, TrialState.COMPLETE}  # both kinds carried
    (b_id,) = set(_parents(folder)) - {a_id}
    b_parent = _parents(folder)[b_id]
    assert b_parent.data.tags["hypersweep.warm_start"] == a_id
    skipped = len(a_study.trials) - len(fits)
    line = f"warm start from {a_id}: {len(fits)} trials taken, {skipped} skipped"
    line += f" ({skipped} outside the search space)"
    assert line in result.stderr.splitlines(), result.stderr[-3000:]
    b_study = study_of(folder / "runs" / b_id, b_id)
    seeded = {t.user_attrs[EARLIER_TRIAL]: t for t in b_study.trials if WARM_START in t.user_attrs}
    assert set(seeded) == {t.user_attrs["trial_id"] for t in fits}
    for a_trial in fits:  # what A's searcher told its study, rebuilt from MLflow
        b_trial = seeded[a_trial.user_attrs["trial_id"]]
        assert b_trial.user_attrs[WARM_START] == a_id
        assert (b_trial.state, b_trial.value) == (a_trial.state, a_trial.value)
        assert b_trial.intermediate_values == a_trial.intermediate_values
        assert b_trial.params == a_trial.params
    own = [t for t in b_study.trials if WARM_START not in t.user_attrs]
    assert len(own) == 3 and all(1e-3 <= t.params["lr"] <= 5e-2 for t in own)  # num_samples: B's own
    children = read_children(folder, b_parent)
    assert len(children) == 3


def read_children(folder: Path, parent: Run) -> list[Run]:
    client = MlflowClient(tracking_uri=_uri(folder))
    query = f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    return list(client.search_runs([parent.info.experiment_id], query))


def test_the_trials_read_from_mlflow_are_what_the_study_of_a_was_told(sweep_a) -> None:
    """Every trial of A, diverged ones too; a sweep named twice is read once, and a name is the
    latest sweep of that name."""
    folder, a_id = sweep_a
    uri = _uri(folder)
    client = reader(uri, [a_id], source="b.yaml")
    goal: dict[str, Any] = {"client": client, "tracking_uri": uri, "metric": "val_loss", "source": "b.yaml"}
    (sweep,) = read_sweeps([a_id, a_id], mode="min", **goal)
    (latest,) = read_sweeps(["breast-cancer-mlp"], mode="min", **goal)
    started = {i: r.info.start_time for i, r in _parents(folder).items()}
    assert latest.sweep_id == max(started, key=lambda i: started[i])
    earlier, no_result = from_recorded(sweep, "min")
    told = {t.user_attrs["trial_id"]: t for t in study_of(folder / "runs" / a_id, a_id).trials}
    assert no_result == 0 and {e.trial_id for e in earlier} == set(told)
    for trial in earlier:
        a_trial = told[trial.trial_id]
        assert (trial.state, trial.value, dict(trial.steps)) == (
            a_trial.state,
            a_trial.value,
            a_trial.intermediate_values,
        )
    assert math.inf in {e.value for e in earlier}  # the diverged ones, worst, as told
    with pytest.raises(
        ConfigError, match=r"optimised val_loss \(min\); this sweep optimises val_loss \(max\)"
    ):
        read_sweeps([a_id], mode="max", **goal)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["search.warm_start=[no-such-sweep]"], "search.warm_start: no sweep 'no-such-sweep' in sqlite:///"),
        (
            ["search.warm_start=[{a}]", "metric=val_accuracy", "mode=max"],
            "search.warm_start: sweep '{a}' optimised val_loss (min); this sweep optimises val_accuracy",
        ),
    ],
)
def test_a_warm_start_from_no_sweep_or_another_goal_is_bad_input(sweep_a, settings, message) -> None:
    folder, a_id = sweep_a
    before = sorted(p.name for p in (folder / "runs").iterdir())
    parents = set(_parents(folder))
    args = [arg for setting in settings for arg in ("--set", setting.format(a=a_id))]
    for command in ("validate", "run"):
        result = hypersweep(command, str(DEFAULT_SWEEP), "--tracking-uri", _uri(folder), *args, cwd=folder)
        assert result.returncode == 2, result.stdout + result.stderr[-3000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message.format(a=a_id) in lines[0], (
            lines
        )
    assert sorted(p.name for p in (folder / "runs").iterdir()) == before  # nothing started
    assert set(_parents(folder)) == parents


def test_validate_makes_no_store_to_look_for_a_sweep(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/none.db"
    result = hypersweep(
        "validate",
        str(DEFAULT_SWEEP),
        "--tracking-uri",
        uri,
        "--set",
        "search.warm_start=a-sweep",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout + result.stderr[-3000:]
    assert "search.warm_start: no sweep 'a-sweep' in" in result.stderr and not (tmp_path / "none.db").exists()
