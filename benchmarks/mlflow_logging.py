"""One MLflow request per metric value vs hypersweep's batched recorder, on the same SQLite store."""

from __future__ import annotations

import tempfile
import time
from typing import Any

from mlflow.tracking import MlflowClient

from hypersweep.tracking import SweepRecorder

_METRICS = ("train_loss", "val_loss", "val_accuracy", "val_auc")
_EPOCHS = 20


def compare_logging(values: int) -> dict[str, Any]:
    trials = max(1, values // (_EPOCHS * len(_METRICS)))
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/log.db"
        per_value = _per_value(uri, trials)
        batched = _batched(uri, trials)
    total = trials * _EPOCHS * len(_METRICS)
    return {"values": total, "per_value_s": per_value, "batched_s": batched, "ratio": per_value / batched}


def _per_value(uri: str, trials: int) -> float:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("per-value")
    started = time.perf_counter()
    for _ in range(trials):
        run_id = client.create_run(experiment).info.run_id
        for epoch in range(1, _EPOCHS + 1):
            for key in _METRICS:
                client.log_metric(run_id, key, 1.0 / epoch, step=epoch)
        client.set_terminated(run_id)
    return time.perf_counter() - started


def _batched(uri: str, trials: int) -> float:
    recorder = SweepRecorder(tracking_uri=uri, metric="val_loss", mode="min")
    recorder.start_sweep(name="batched", sweep_id="batched-0", settings={"name": "batched"})
    started = time.perf_counter()
    for t in range(trials):
        trial_id = f"t{t}"
        recorder.trial_started(trial_id, {"lr": 0.01})
        for epoch in range(1, _EPOCHS + 1):
            recorder.trial_result(trial_id, {"epoch": epoch, **{k: 1.0 / epoch for k in _METRICS}})
        recorder.trial_finished(trial_id, status="completed", stop_reason="completed")
    return time.perf_counter() - started
