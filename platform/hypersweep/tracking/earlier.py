"""Earlier sweeps' trials, read back from MLflow for a new sweep's warm start (``warm_start``).

Per trial: its params as MLflow holds them (text), its status and stop reason (tags), and the
sweep's metric per trained epoch (its history, ``step=epoch``). That is all the searcher was told
of the trial (``searcher``), so its study entry can be rebuilt from it anywhere the tracking store
is reachable. A sweep is named by id or by name (its latest run), as ``hypersweep best`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hypersweep.errors import ConfigError, first_line
from hypersweep.tracking import ROLE, STATUS, STOP_REASON, SWEEP_ID, TRIAL_ID, redact
from hypersweep.tracking.lookup import find_parent
from hypersweep.tracking.template import sqlite_path

KEY = "search.warm_start"  # what an error about a warm start names
_WITH_RESULT = {"completed", "early_stopped", "diverged"}  # statuses whose epochs were told


@dataclass(frozen=True)
class RecordedTrial:
    trial_id: str
    params: dict[str, str]  # as MLflow holds them: text (``tracking._param_text``)
    status: str  # hypersweep.status
    stop_reason: str
    # The sweep's metric per trained epoch, from epoch 1; a diverged trial's last epoch, which
    # has no result (``scoring``), left out. Empty for a trial without a result.
    curve: tuple[float | None, ...]


@dataclass(frozen=True)
class RecordedSweep:
    sweep_id: str
    metric: str
    mode: str
    trials: tuple[RecordedTrial, ...]


def read_sweeps(
    refs: Sequence[str], *, client: Any, tracking_uri: str, metric: str, mode: str, source: str
) -> list[RecordedSweep]:
    """The sweeps ``refs`` names (each once), with their trials in the order they started.
    ``client``: MlflowClient's methods. A sweep that does not exist, or that optimised another
    metric or mode, is bad input (ConfigError naming ``search.warm_start``)."""
    sweeps: dict[str, RecordedSweep] = {}
    try:
        for ref in refs:
            parent = find_parent(client, ref)
            if parent is None:
                raise ConfigError(source, KEY, f"no sweep '{ref}' in {redact(tracking_uri)}")
            sweep_id = parent.data.tags[SWEEP_ID]
            if sweep_id not in sweeps:
                _check_goal(parent, sweep_id, metric, mode, source)
                sweeps[sweep_id] = RecordedSweep(sweep_id, metric, mode, _trials(client, parent, metric))
    except MlflowException as exc:  # a store MLflow cannot read
        raise ConfigError(source, KEY, f"{redact(tracking_uri)}: {first_line(exc)}") from None
    return list(sweeps.values())


def reader(tracking_uri: str, refs: Sequence[str], *, source: str) -> MlflowClient:
    """A client of the tracking store, which must exist already (``validate`` makes none; reading
    a SQLite file that is not there would make it)."""
    path = sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        raise ConfigError(source, KEY, f"no sweep '{refs[0]}' in {redact(tracking_uri)} (no store there)")
    return MlflowClient(tracking_uri=tracking_uri)


def _check_goal(parent: Any, sweep_id: str, metric: str, mode: str, source: str) -> None:
    """Values of another metric, or ranked the other way, would teach the sampler the wrong thing."""
    theirs = (parent.data.params.get("metric"), parent.data.params.get("mode"))
    if theirs != (metric, mode):
        raise ConfigError(
            source,
            KEY,
            f"sweep '{sweep_id}' optimised {theirs[0]} ({theirs[1]}); this sweep optimises "
            f"{metric} ({mode}): its trials cannot seed this one",
        )


def _trials(client: Any, parent: Any, metric: str) -> tuple[RecordedTrial, ...]:
    found = client.search_runs(
        [parent.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
        max_results=10_000,
    )
    runs = sorted((r for r in found if r.data.tags.get(ROLE) == "trial"), key=lambda r: r.info.start_time)
    return tuple(_trial(client, run, metric) for run in runs)


def _trial(client: Any, run: Any, metric: str) -> RecordedTrial:
    tags = run.data.tags
    status = tags.get(STATUS, "running")
    curve: tuple[float | None, ...] = ()
    if status in _WITH_RESULT:  # only those: a request per trial
        curve = _curve(client, run.info.run_id, metric, diverged=status == "diverged")
    return RecordedTrial(
        trial_id=tags.get(TRIAL_ID, run.info.run_id),
        params=dict(run.data.params),
        status=status,
        stop_reason=tags.get(STOP_REASON, ""),
        curve=curve,
    )


def _curve(client: Any, run_id: str, metric: str, *, diverged: bool) -> tuple[float | None, ...]:
    values = {m.step: m.value for m in client.get_metric_history(run_id, metric)}
    trained = max(values, default=0)
    if diverged:  # its last epoch (the last train_loss logged) is the one that diverged
        losses = client.get_metric_history(run_id, "train_loss")
        trained = max((m.step for m in losses), default=trained) - 1
    return tuple(values.get(step) for step in range(1, trained + 1))
