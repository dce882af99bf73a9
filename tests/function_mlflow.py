"""A loop that already logs with MLflow's fluent API: its values belong in the trial's own run.

It logs before training (a param, a tag, ``own_metric`` at step 0) and after it (``own_metric``
for every epoch trained): what runs after the loop runs before the trial ends.
"""

from __future__ import annotations

from typing import Any

import mlflow

import hypersweep
from tests.function_toy import toy_train


@hypersweep.reports("val_mae")
def logs_itself(config: dict[str, Any], trial: hypersweep.Trial) -> None:
    mlflow.log_param("own_param", "set by the loop")
    mlflow.set_tag("own_tag", trial.trial_id)
    mlflow.log_metric("own_metric", 0.0, step=0)
    trial.log_artifact("notes/lr.txt", str(config["lr"]).encode())  # through the platform
    toy_train(config, trial)
    for epoch in range(1, trial.epoch + 1):
        mlflow.log_metric("own_metric", epoch * 0.5, step=epoch)
