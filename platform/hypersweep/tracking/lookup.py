"""A sweep read back from MLflow by its id or name: its parent run and its best trial."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hypersweep.errors import ConfigError, first_line
from hypersweep.redaction import redact
from hypersweep.tracking.conventions import BEST_RUN, BEST_TRIAL, ROLE, SWEEP_ID
from hypersweep.tracking.store import check_tracking_uri, require_existing_store


@dataclass(frozen=True)
class SweepSummary:
    sweep_id: str
    parent_run_id: str
    trial_id: str
    run_id: str
    metric: str
    value: float
    config: dict[str, str]
    # PBT or PB2: the trial's hyperparameters changed while it trained; ``config`` is its first.
    population_based: bool = False


def find_best(ref: str, *, tracking_uri: str) -> SweepSummary:
    """The best trial of a sweep, by sweep id or (latest sweep of) sweep name."""
    require_existing_store(tracking_uri)
    check_tracking_uri(tracking_uri, source="")
    try:
        return _best_of(ref, MlflowClient(tracking_uri=tracking_uri), tracking_uri)
    except MlflowException as exc:  # an unknown scheme, a store MLflow cannot read
        raise ConfigError("", "tracking_uri", f"{redact(tracking_uri)}: {first_line(exc)}") from None


def _best_of(ref: str, client: MlflowClient, tracking_uri: str) -> SweepSummary:
    parent = find_parent(client, ref)
    if parent is None:
        raise ConfigError("", "SWEEP", f"no sweep '{ref}' in {redact(tracking_uri)}")
    tags, metrics = parent.data.tags, parent.data.metrics
    best_run = tags.get(BEST_RUN)
    best_metric = next((k for k in metrics if k.startswith("best_")), None)
    if best_run is None or best_metric is None:
        raise ConfigError(
            "", "SWEEP", f"sweep '{tags[SWEEP_ID]}' has no best trial (unfinished or all failed)"
        )
    child = client.get_run(best_run)
    return SweepSummary(
        sweep_id=tags[SWEEP_ID],
        parent_run_id=parent.info.run_id,
        trial_id=tags[BEST_TRIAL],
        run_id=best_run,
        metric=best_metric.removeprefix("best_"),
        value=metrics[best_metric],
        config=dict(child.data.params),
        population_based=parent.data.params.get("scheduler.type") in ("pbt", "pb2"),
    )


def find_parent(client: MlflowClient, ref: str) -> Any:
    if "'" in ref or "`" in ref:
        return None
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return None
    by_id = client.search_runs(
        experiment_ids, f"tags.`{SWEEP_ID}` = '{ref}' and tags.`{ROLE}` = 'sweep'", max_results=1
    )
    if by_id:
        return by_id[0]
    experiment = client.get_experiment_by_name(ref)
    if experiment is None:
        return None
    latest = client.search_runs(
        [experiment.experiment_id],
        f"tags.`{ROLE}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return latest[0] if latest else None
