"""A finished sweep's learning curves, read back from MLflow as a replay table (``hypersweep.replay``).

Per trial: its configuration (typed), the sweep's metric and val_loss (what patience watches) per
trained epoch, each epoch's wall time (from the epoch timestamps the runs keep), whether it
diverged, and what ended it (``stop_reason``): a curve the scheduler cut short cannot say what
later epochs would have been. Per table: the sweep's metric, mode, max_epochs, search space and
settings, the trials it ran at once, and its cost per trial beyond the epochs themselves
(start-up, scheduling, reports, checkpoints), measured from the sweep's wall time.
"""

from __future__ import annotations

import itertools
import json
import statistics
from typing import Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hypersweep.errors import ConfigError, first_line
from hypersweep.tracking import (
    ROLE,
    SWEEP_ID,
    check_tracking_uri,
    redact,
    require_existing_store,
)
from hypersweep.tracking.lookup import find_parent

MIN_TRIALS = 8  # fewer finished trials tell a replay too little to compare settings on


def read_table(ref: str, *, tracking_uri: str) -> dict[str, Any]:
    """The replay table of sweep ``ref`` (an id, or a name for its latest run); ConfigError when
    there is no such finished sweep or it holds too few trials."""
    require_existing_store(tracking_uri)
    check_tracking_uri(tracking_uri, source="")
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        parent = find_parent(client, ref)
        if parent is None:
            raise ConfigError("", "SWEEP", f"no sweep '{ref}' in {redact(tracking_uri)}")
        return sweep_table(client, parent)
    except MlflowException as exc:
        raise ConfigError("", "tracking_uri", f"{redact(tracking_uri)}: {first_line(exc)}") from None


def sweep_table(client: MlflowClient, parent: Run) -> dict[str, Any]:
    params, sweep_id = parent.data.params, parent.data.tags[SWEEP_ID]
    if params.get("scheduler.type") in ("pbt", "pb2"):
        raise ConfigError(
            "",
            "SWEEP",
            f"sweep '{sweep_id}' ran {params['scheduler.type']}: its trials changed "
            "hyperparameters while they trained, which a replay cannot simulate",
        )
    runs = [r for r in trial_runs(client, parent) if r.info.end_time]
    ended = [r for r in runs if r.data.tags.get("hypersweep.status") not in (None, "running", "failed")]
    if len(ended) < MIN_TRIALS:
        raise ConfigError(
            "", "SWEEP", f"sweep '{sweep_id}' has {len(ended)} finished trials; a replay needs {MIN_TRIALS}"
        )
    space = json.loads(params["search_space"])
    metric = params["metric"]
    rows = [_curve(client, run, metric, set(space)) for run in sorted(ended, key=lambda r: r.info.start_time)]
    return {
        "sweep": sweep_id,
        "metric": metric,
        "mode": params["mode"],
        "max_epochs": int(params["max_epochs"]),
        "num_samples": int(params["num_samples"]),
        "search": params.get("search.type", "optuna"),
        "scheduler": {
            k.removeprefix("scheduler."): param_value(v)
            for k, v in params.items()
            if k.startswith("scheduler.")
        },
        "patience": param_value(params.get("training.patience", "null")),
        "search_space": space,
        **_overhead(parent, ended, rows),
        "trials": rows,
    }


def trial_runs(client: Any, parent: Run) -> list[Run]:
    """The sweep's trial runs (its nested children). ``client``: an MlflowClient, or anything
    with its methods (the sweep's ``tracking.process.ProcessClient``)."""
    found = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", max_results=10_000
    )
    return [r for r in found if r.data.tags.get(ROLE) == "trial"]


def _curve(client: MlflowClient, run: Run, metric: str, names: set[str]) -> dict[str, Any]:
    run_id = run.info.run_id
    history = {m.step: m.value for m in client.get_metric_history(run_id, metric)}
    val_loss = {m.step: m.value for m in client.get_metric_history(run_id, "val_loss")}
    losses = sorted(client.get_metric_history(run_id, "train_loss"), key=lambda m: m.step)
    stamps = [run.info.start_time] + [m.timestamp for m in losses]
    times = [max(0.0, (b - a) / 1000) for a, b in itertools.pairwise(stamps)]
    if len(times) > 1:
        times[0] = statistics.median(times[1:])  # the first epoch's own time, start-up apart
    diverged = run.data.tags.get("hypersweep.status") == "diverged"
    trained = range(1, len(losses) - diverged + 1)  # the diverged epoch has no result (scoring)
    return {
        "config": {k: param_value(v) for k, v in run.data.params.items() if k in names},
        "curve": [history.get(step) for step in trained],
        "val_loss": [val_loss.get(step) for step in trained],
        "times": [round(t, 4) for t in times],
        "diverged": diverged,
        "stop_reason": run.data.tags.get("hypersweep.stop_reason", ""),
    }


def _overhead(parent: Run, runs: list[Run], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The trials the sweep ran at once, and its wall time times that, less the epochs' own
    times, per trial."""
    edges = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs])
    workers = max(itertools.accumulate(step for _, step in edges))
    wall = (max(r.info.end_time for r in runs) - parent.info.start_time) / 1000
    trained = sum(sum(row["times"]) for row in rows)
    return {"workers": workers, "overhead_s": round(max(0.0, (wall * workers - trained) / len(rows)), 4)}


def param_value(text: str) -> Any:
    """A param as MLflow holds it (strings as they are, other values as JSON) -> its value."""
    try:
        return json.loads(text)
    except ValueError:
        return text
