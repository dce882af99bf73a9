"""Worker side of a function trial: the user's ``train(config, trial)`` inside a Ray worker.

The function gets a ``handle.Trial`` whose sink is the trial's ``trial._TuneReporter``: its epochs go to
Tune batched as an ``Experiment`` trial's do, with checkpoints at the scheduler's decision epochs.
Its own MLflow calls (``mlflow.log_metric``, an autologger) land in the trial's child run: the
run's id is set as ``MLFLOW_RUN_ID`` before the function starts, which MLflow's fluent API
resumes on its first call (the driver's recorder creates the run; ``run_board`` hands its id over).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ray import tune

from hypersweep.handle import Trial
from hypersweep.registry import resolve_target
from hypersweep.run_board import run_id_of
from hypersweep.trainer import TrainSettings

_log = logging.getLogger(__name__)
_RUN_ID_WAIT_S = 30.0  # the run is made within a second or two, unless the server is down


def run_function(config: dict[str, Any], job: Any, settings: TrainSettings, reporter: Any) -> None:
    """Run the sweep's function on ``config`` (``job``: the sweep's ``trial.TrialJob``)."""
    fn = resolve_target(job.experiment, list(job.roots))
    assert callable(fn) and not isinstance(fn, type)  # checked before the sweep started
    trial_id = tune.get_context().get_trial_id()
    handle = Trial(settings=settings, fixed=job.fixed, trial_id=trial_id, sink=reporter)
    with _in_trial_run(job, trial_id):
        handle.run(fn, config)


@contextlib.contextmanager
def _in_trial_run(job: Any, trial_id: str) -> Iterator[None]:
    """MLflow's fluent API, if the function's module uses it, pointed at the trial's run.

    Only when MLflow is loaded (the user's module imported it): the run id is waited for, and
    other trials never pay for it. ``MLFLOW_RUN_ID`` is read (and removed) by MLflow when the
    function first logs; the run is active in that thread alone, and Ray Tune gives every trial
    a new thread, so no run stays active into the next trial a reused worker runs.
    """
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")
    before = {name: os.environ.get(name) for name in names}
    run_id = None
    if "mlflow" in sys.modules and job.run_board:
        run_id = run_id_of(job.run_board, trial_id, timeout_s=_RUN_ID_WAIT_S)
        if run_id is None:
            _log.warning("trial %s: its MLflow run was not made in time; mlflow calls go elsewhere", trial_id)
    if run_id is not None and not _reachable_here(job.tracking_uri):
        _log.warning(
            "trial %s: its MLflow store is a file on another node; mlflow calls go elsewhere"
            " (a tracking server serves every node)",
            trial_id,
        )
        run_id = None
    try:
        if run_id is not None:
            os.environ.update(MLFLOW_TRACKING_URI=job.tracking_uri, MLFLOW_RUN_ID=run_id)
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _reachable_here(uri: str) -> bool:
    """A SQLite store is a file on the driver's machine: on another node, not there at all."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///").partition("?")[0]).is_file()
    return True
