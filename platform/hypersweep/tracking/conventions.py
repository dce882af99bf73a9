"""The run conventions: the tags, params and metrics that make a sweep's runs readable, in the
MLflow UI and by ``hypersweep best``/``report``/``replay`` (a contract, see docs/mlflow.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from mlflow.entities import Param, RunStatus

from hypersweep.redaction import redact_settings

ROLE, SWEEP_ID, TRIAL_ID = "hypersweep.role", "hypersweep.sweep_id", "hypersweep.trial_id"
STATUS, STOP_REASON = "hypersweep.status", "hypersweep.stop_reason"
BEST_TRIAL, BEST_RUN = "hypersweep.best_trial", "hypersweep.best_run_id"
WARM_START_TAG = "hypersweep.warm_start"  # on a parent run: the sweeps whose trials seeded it
DROPPED = "hypersweep.dropped"  # on a run: the writes MLflow refused, one per line
# On a run a new trial took over from one lost in a driver crash: the lost trial's id.
EARLIER_TRIAL_ID = "hypersweep.earlier_trial_id"
# Population-based training: on a trial's run, the trial it last copied and how often it did;
# its exploits as a JSON file on that run, the sweep's on the parent run, and the best trial's
# per-epoch hyperparameters (what to train with from scratch) on the parent run.
PBT_DONOR, PBT_EXPLOITS = "hypersweep.pbt.donor", "hypersweep.pbt.exploits"
LINEAGE_FILE, SWEEP_LINEAGE_FILE, BEST_SCHEDULE_FILE = (
    "lineage.json",
    "pbt_lineage.json",
    "best_schedule.json",
)
HP_PREFIX = "hp/"  # a trial's metric hp/<key>: a key PBT changes, per epoch (pbt.hp_metrics)
LOST_REASON = "lost"  # the stop reason of a lost trial whose configuration did not run again
_RUN_STATUS = {"failed": RunStatus.FAILED, "interrupted": RunStatus.KILLED}  # by hypersweep.status
# Result keys recorded as tags of the trial's run: where it ran (worker node, device).
_WHERE_TAGS = {
    "device": "hypersweep.device",
    "node_id": "hypersweep.node_id",
    "node_ip": "hypersweep.node_ip",
}
# Marks the experiment as model training so the MLflow UI opens its runs table, not GenAI views.
_EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# Result keys that are bookkeeping (ours and Ray Tune's), not metrics worth a chart.
EPOCH_TIME = "epoch_time_ms"  # in an epoch's metrics: when it ended (Unix ms): its timestamp
_NOT_METRICS = {
    EPOCH_TIME,
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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _trial_params(config: Mapping[str, Any]) -> list[Param]:
    """A trial's params: its config, which holds the sweep's fixed values too (a data URL, an
    API token), shown as everyone may see it."""
    return [Param(k, _param_text(v)) for k, v in sorted(redact_settings(config).items())]


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
