"""The only module that talks to MLflow: one parent run per sweep, one nested child run per trial.

Run conventions (a contract, see README):
* parent run: tags ``hypersweep.role=sweep``, ``hypersweep.sweep_id``; params = sweep settings;
  artifact ``sweep.yaml`` (the resolved sweep); at the end metric ``best_<metric>``, tags
  ``hypersweep.best_trial`` / ``hypersweep.best_run_id`` and the best trial's weights.
* child run per trial (``mlflow.parentRunId``): tags ``hypersweep.role=trial``,
  ``hypersweep.trial_id``, ``hypersweep.status`` and ``hypersweep.stop_reason``; params = the
  trial's config; metrics per epoch with ``step=epoch``.

Metrics are buffered and sent with ``log_batch`` (one request per run per flush, never one per
value); a step already logged for a trial is never logged again (retries replay epochs).
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from hypersweep.errors import ConfigError

ROLE, SWEEP_ID, TRIAL_ID = "hypersweep.role", "hypersweep.sweep_id", "hypersweep.trial_id"
STATUS, STOP_REASON = "hypersweep.status", "hypersweep.stop_reason"
BEST_TRIAL, BEST_RUN = "hypersweep.best_trial", "hypersweep.best_run_id"
# Result keys recorded as tags of the trial's run: where it ran (worker node, device).
_WHERE_TAGS = {
    "device": "hypersweep.device",
    "node_id": "hypersweep.node_id",
    "node_ip": "hypersweep.node_ip",
}
_HEALTH_TIMEOUT_S = 5.0  # MLflow's own retries would take minutes to give up on a dead server
# Marks the experiment as model training so the MLflow UI opens its runs table, not GenAI views.
_EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
_MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
_MAX_PARAMS_PER_BATCH = 100
_FLUSH_SECONDS = 2.0
# Result keys that are bookkeeping (ours and Ray Tune's), not metrics worth a chart.
_NOT_METRICS = {
    "epoch",
    "stop_reason",
    "artifacts",
    "timestamp",
    "training_iteration",
    "time_this_iter_s",
    "time_total_s",
    "pid",
    "time_since_restore",
    "iterations_since_restore",
    "done",
    "trial_id",
    "date",
    "hostname",
    "node_ip",
    "checkpoint_dir_name",
    "should_checkpoint",
}


def check_tracking_uri(uri: str, *, source: str) -> None:
    """An MLflow server must answer now, within seconds, before any run is created."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=_HEALTH_TIMEOUT_S) as response:
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return  # an authenticating server is up; MLflow's client sends the credentials
        problem = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        problem = str(getattr(reason, "strerror", None) or reason)
    raise ConfigError(
        source,
        "tracking_uri",
        f"no MLflow server answers at {uri} ({problem} within {_HEALTH_TIMEOUT_S:g} s)",
    )


def resolve_tracking_uri(uri: str | None) -> str:
    """The URI in force: the given one, else MLFLOW_TRACKING_URI, else MLflow's default (SQLite)."""
    if uri:
        mlflow.set_tracking_uri(uri)
    return str(mlflow.get_tracking_uri())


@dataclass
class _TrialRun:
    run_id: str
    last_step: int = 0
    pending: list[Metric] = field(default_factory=list)
    pending_tags: list[RunTag] = field(default_factory=list)
    where: dict[str, str] = field(default_factory=dict)
    best: float = math.nan


@dataclass(frozen=True)
class BestTrial:
    trial_id: str
    run_id: str
    value: float
    config: dict[str, Any]


class SweepRecorder:
    """Driver-side recorder of one sweep. Not thread-safe: call it from the tuning loop only."""

    def __init__(self, *, tracking_uri: str, metric: str, mode: str) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.metric, self.mode = metric, mode
        self.parent_run_id = ""
        self.experiment_id = ""
        self._trials: dict[str, _TrialRun] = {}
        self._configs: dict[str, dict[str, Any]] = {}
        self._last_flush = time.monotonic()

    # -- the sweep -------------------------------------------------------------------------
    def start_sweep(self, *, name: str, sweep_id: str, settings: Mapping[str, Any]) -> str:
        """Create (or reuse) the experiment and the parent run; returns the parent run id."""
        self.experiment_id = self._experiment(name)
        run = self.client.create_run(
            self.experiment_id,
            run_name=sweep_id,
            tags={ROLE: "sweep", SWEEP_ID: sweep_id},
        )
        self.parent_run_id = run.info.run_id
        params = [Param(k, _param_text(v)) for k, v in _flatten(settings).items()]
        self._log_params(self.parent_run_id, params)
        self.client.log_text(
            self.parent_run_id, yaml.safe_dump(dict(settings), sort_keys=False), "sweep.yaml"
        )
        return self.parent_run_id

    def _experiment(self, name: str) -> str:
        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            return str(existing.experiment_id)
        return str(self.client.create_experiment(name, tags=dict([_EXPERIMENT_KIND])))

    def finish_sweep(self, *, best_weights: Path | None, failed: bool) -> BestTrial | None:
        """Flush, record the best trial on the parent run and end it."""
        self.flush(force=True)
        best = self.best_trial()
        if best is not None:
            self.client.log_batch(
                self.parent_run_id,
                metrics=[Metric(f"best_{self.metric}", best.value, _now_ms(), 0)],
                tags=[RunTag(BEST_TRIAL, best.trial_id), RunTag(BEST_RUN, best.run_id)],
            )
            self.client.log_dict(self.parent_run_id, best.config, "best_config.json")
            if best_weights is not None and best_weights.is_file():
                self.client.log_artifact(self.parent_run_id, str(best_weights), "best_model")
        status = RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)
        self.client.set_terminated(self.parent_run_id, status=status)
        return best

    def best_trial(self) -> BestTrial | None:
        sign = 1.0 if self.mode == "min" else -1.0
        scored = [(sign * t.best, tid) for tid, t in self._trials.items() if math.isfinite(t.best)]
        if not scored:
            return None
        _, tid = min(scored)
        run = self._trials[tid]
        return BestTrial(tid, run.run_id, run.best, self._configs[tid])

    # -- trials ----------------------------------------------------------------------------
    def trial_started(self, trial_id: str, config: Mapping[str, Any]) -> None:
        if trial_id in self._trials:  # a retry or restore reattaches to the same run
            return
        run = self.client.create_run(
            self.experiment_id,
            run_name=trial_id,
            tags={
                MLFLOW_PARENT_RUN_ID: self.parent_run_id,
                MLFLOW_RUN_NAME: trial_id,
                ROLE: "trial",
                TRIAL_ID: trial_id,
                STATUS: "running",
            },
        )
        self._trials[trial_id] = _TrialRun(run.info.run_id)
        self._configs[trial_id] = dict(config)
        params = [Param(k, _param_text(v)) for k, v in sorted(config.items())]
        self._log_params(run.info.run_id, params)

    def trial_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        run = self._trials[trial_id]
        step = int(result["epoch"])
        if step <= run.last_step:
            return  # replayed after a rollback: already logged
        run.last_step = step
        self._note_where(run, result)
        stamp = _now_ms()
        for key, value in result.items():
            if key not in _NOT_METRICS and _is_number(value):
                run.pending.append(Metric(key, float(value), stamp, step))
        value = result.get(self.metric)
        if result.get("stop_reason") != "diverged" and isinstance(value, int | float):
            run.best = _better(run.best, float(value), self.mode)
        self.flush()

    def _note_where(self, run: _TrialRun, result: Mapping[str, Any]) -> None:
        """Tag the node and device a trial runs on, once (again only if a retry moves it)."""
        for key, tag in _WHERE_TAGS.items():
            value = result.get(key)
            if isinstance(value, str) and value and run.where.get(key) != value:
                run.where[key] = value
                run.pending_tags.append(RunTag(tag, value))

    def trial_finished(self, trial_id: str, *, status: str, stop_reason: str, error: str = "") -> None:
        run = self._trials[trial_id]
        if status in ("diverged", "failed"):
            run.best = math.nan  # never the best trial
        self._flush_run(run)
        tags = [RunTag(STATUS, status), RunTag(STOP_REASON, stop_reason)]
        if error:
            tags.append(RunTag("hypersweep.error", error[:5000]))
        self.client.log_batch(run.run_id, tags=tags)
        final = RunStatus.FAILED if status == "failed" else RunStatus.FINISHED
        self.client.set_terminated(run.run_id, status=RunStatus.to_string(final))

    def log_trial_artifacts(self, trial_id: str, directory: Path) -> None:
        self.client.log_artifacts(self._trials[trial_id].run_id, str(directory))

    def flush(self, *, force: bool = False) -> None:
        """Send buffered metrics at most every few seconds unless forced: batched, never per value."""
        if not force and time.monotonic() - self._last_flush < _FLUSH_SECONDS:
            return
        for run in self._trials.values():
            self._flush_run(run)
        self._last_flush = time.monotonic()

    def _flush_run(self, run: _TrialRun) -> None:
        if run.pending_tags:
            tags, run.pending_tags = run.pending_tags, []
            self.client.log_batch(run.run_id, tags=tags)
        while run.pending:
            batch, run.pending = (
                run.pending[:_MAX_METRICS_PER_BATCH],
                run.pending[_MAX_METRICS_PER_BATCH:],
            )
            self.client.log_batch(run.run_id, metrics=batch)

    def _log_params(self, run_id: str, params: list[Param]) -> None:
        for i in range(0, len(params), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=params[i : i + _MAX_PARAMS_PER_BATCH])


def _better(best: float, value: float, mode: str) -> float:
    """The better of the best so far (NaN: none yet) and a new value; non-finite values never win."""
    if not math.isfinite(value):
        return best
    if math.isnan(best):
        return value
    return min(best, value) if mode == "min" else max(best, value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:6000]  # MLflow's param value limit


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and key != "search_space":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@dataclass(frozen=True)
class SweepSummary:
    sweep_id: str
    parent_run_id: str
    trial_id: str
    run_id: str
    metric: str
    value: float
    config: dict[str, str]


def find_best(ref: str, *, tracking_uri: str) -> SweepSummary:
    """The best trial of a sweep, by sweep id or (latest sweep of) sweep name."""
    _require_existing_store(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    parent = _find_parent(client, ref)
    if parent is None:
        raise ConfigError("", "SWEEP", f"no sweep '{ref}' in {tracking_uri}")
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
    )


def _find_parent(client: MlflowClient, ref: str) -> Any:
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


def _require_existing_store(uri: str) -> None:
    """Reading from a SQLite store that does not exist would silently create an empty one."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise ConfigError("", "--tracking-uri", f"no MLflow store at {path}")
