"""What a sweep's report is made of, read from MLflow alone; and the report, logged to the sweep.

Everything comes from the runs (``tracking`` conventions): the parent run's params hold the
resolved sweep (metric, mode, budget, scheduler, search space), each trial's run its config, its
status and its metrics per epoch with their timestamps. Nothing is read from the sweep's folder,
so a report can be rebuilt on any machine that reaches the tracking store.

``client`` is an MlflowClient or anything with its methods: at the end of a sweep, the sweep's own
``tracking.process.ProcessClient``, whose store is open already.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hypersweep import scoring
from hypersweep.errors import ConfigError, first_line
from hypersweep.tracking import (
    STATUS,
    SWEEP_ID,
    TRIAL_ID,
    check_tracking_uri,
    redact,
    require_existing_store,
)
from hypersweep.tracking.conventions import HP_PREFIX, SWEEP_LINEAGE_FILE
from hypersweep.tracking.curves import param_value, trial_runs
from hypersweep.tracking.lookup import find_parent

REPORT_DIR = "report"  # the report's artifact folder on the parent run


@dataclass(frozen=True)
class TrialRecord:
    """One trial as MLflow holds it. ``epochs``/``values``/``stamps``: each trained epoch, the
    sweep's metric there (nan where it has none: the epoch a trial diverged in) and when it
    ended (Unix ms)."""

    trial_id: str
    run_id: str
    name: str  # the run's name in the MLflow UI
    status: str  # hypersweep.status
    config: dict[str, Any]  # the swept parameters it had (a conditional one may be absent)
    epochs: list[int]
    values: list[float]
    stamps: list[int]
    result: float  # the trial's result (``scoring``); nan if it has none (diverged, failed)
    # PBT: the values of each key it changed, per epoch (the run's hp/<key> metrics).
    schedule: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def epochs_trained(self) -> int:
        return len(self.epochs)


@dataclass(frozen=True)
class SweepRecord:
    sweep_id: str
    experiment_id: str
    parent_run_id: str
    metric: str
    mode: str
    max_epochs: int
    num_samples: int
    scheduler: dict[str, Any]  # the sweep's scheduler section (type, grace_period, ...)
    search_space: dict[str, Any]  # as the sweep resolved it
    started_ms: int  # the parent run's start
    trials: list[TrialRecord]
    ui_root: str = ""  # the MLflow UI serving these runs, where known (a tracking server's URL)
    lineage: list[dict[str, Any]] = field(default_factory=list)  # PBT's exploits (pbt_lineage.json)


def open_sweep(ref: str, *, tracking_uri: str) -> tuple[MlflowClient, Run]:
    """The client and parent run of sweep ``ref`` (an id, or a name for its latest sweep);
    ConfigError for an unknown sweep or a store that cannot be read."""
    require_existing_store(tracking_uri)
    check_tracking_uri(tracking_uri, source="")
    client = MlflowClient(tracking_uri=tracking_uri)
    with refused_as_bad_input(tracking_uri):
        parent = find_parent(client, ref)
    if parent is None:
        raise ConfigError("", "SWEEP", f"no sweep '{ref}' in {redact(tracking_uri)}")
    return client, parent


@contextlib.contextmanager
def refused_as_bad_input(tracking_uri: str) -> Iterator[None]:
    """A store that refuses what ``hypersweep report`` asks (one MLflow cannot read, a server's
    error) is one line and exit 2, as for ``best`` and ``replay``."""
    try:
        yield
    except MlflowException as exc:
        raise ConfigError("", "tracking_uri", f"{redact(tracking_uri)}: {first_line(exc)}") from None


def read_record(client: Any, parent: Run, *, tracking_uri: str = "") -> SweepRecord:
    """The sweep of ``parent``, read back from MLflow."""
    params = parent.data.params
    metric, mode = params["metric"], params["mode"]
    space = json.loads(params["search_space"])
    trials = [_trial(client, run, metric, mode, set(space)) for run in trial_runs(client, parent)]
    return SweepRecord(
        sweep_id=parent.data.tags[SWEEP_ID],
        experiment_id=parent.info.experiment_id,
        parent_run_id=parent.info.run_id,
        metric=metric,
        mode=mode,
        max_epochs=int(params["max_epochs"]),
        num_samples=int(params["num_samples"]),
        scheduler={
            k.removeprefix("scheduler."): param_value(v)
            for k, v in params.items()
            if k.startswith("scheduler.")
        },
        search_space=space,
        started_ms=int(parent.info.start_time),
        trials=sorted(trials, key=lambda t: t.stamps[0] if t.stamps else math.inf),
        ui_root=ui_root(tracking_uri),
        lineage=_lineage(client, parent),
    )


def _lineage(client: Any, parent: Run) -> list[dict[str, Any]]:
    """A PBT sweep's exploits, as the parent run holds them; none for other sweeps."""
    if not parent.data.params.get("scheduler.type", "").startswith("pb"):
        return []
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    if SWEEP_LINEAGE_FILE not in names:
        return []  # no member copied another
    with tempfile.TemporaryDirectory(prefix="hypersweep-lineage-") as folder:
        path = client.download_artifacts(parent.info.run_id, SWEEP_LINEAGE_FILE, folder)
        exploits: list[dict[str, Any]] = json.loads(Path(path).read_text())["exploits"]
    return exploits


def _trial(client: Any, run: Run, metric: str, mode: str, names: set[str]) -> TrialRecord:
    """Every epoch a trial trained has a ``train_loss`` (the trainer logs it, diverged or not);
    the metric's value at an epoch is what the trial scored there."""
    run_id = run.info.run_id
    losses = sorted(client.get_metric_history(run_id, "train_loss"), key=lambda m: m.step)
    scored = {m.step: m.value for m in client.get_metric_history(run_id, metric)}
    status = run.data.tags.get(STATUS, "running")
    epochs = [int(m.step) for m in losses]
    values = [float(scored.get(step, math.nan)) for step in epochs]
    if status == "diverged" and values:
        values[-1] = math.nan  # the epoch it diverged in has no result (scoring)
    return TrialRecord(
        trial_id=run.data.tags.get(TRIAL_ID, run_id[:8]),
        run_id=run_id,
        name=run.info.run_name or run.data.tags.get(TRIAL_ID, run_id[:8]),
        status=status,
        config={k: param_value(v) for k, v in run.data.params.items() if k in names},
        epochs=epochs,
        values=values,
        stamps=[int(m.timestamp) for m in losses],
        result=_result(run, status, values, metric, mode),
        schedule={
            key.removeprefix(HP_PREFIX): sorted(
                (int(m.step), float(m.value)) for m in client.get_metric_history(run_id, key)
            )
            for key in sorted(run.data.metrics)
            if key.startswith(HP_PREFIX)
        },
    )


def _result(run: Run, status: str, values: list[float], metric: str, mode: str) -> float:
    """The run's ``best_<metric>`` as the recorder logged it; for a run without one (ended by an
    interruption) the same definition over its epochs. Diverged and failed trials have none."""
    if status in ("diverged", "failed"):
        return math.nan
    logged = run.data.metrics.get(f"best_{metric}")
    if logged is not None:
        return float(logged)
    result = scoring.NONE_YET
    for value in values:
        result = scoring.better(result, value, mode)
    return result


def ui_root(tracking_uri: str) -> str:
    """Where the MLflow UI of ``tracking_uri`` is: a tracking server serves it at its own URL
    (credentials left out: a link must not carry them). '' for a store without a server."""
    if not tracking_uri.startswith(("http://", "https://")):
        return ""
    parts = urllib.parse.urlsplit(tracking_uri)
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="")
    return urllib.parse.urlunsplit(bare).rstrip("/") + "/"


def log_report(client: Any, parent_run_id: str, folder: Path, metrics: dict[str, float]) -> None:
    """The report's files into the parent run's ``report/`` folder, its figures as the run's
    metrics (step 0; a rebuilt report logs them again, the latest value is shown)."""
    client.log_artifacts(parent_run_id, str(folder), REPORT_DIR)
    stamp = int(time.time() * 1000)
    batch = [Metric(key, float(value), stamp, 0) for key, value in metrics.items() if math.isfinite(value)]
    for start in range(0, len(batch), 1000):  # log_batch's limit
        client.log_batch(parent_run_id, metrics=batch[start : start + 1000])
