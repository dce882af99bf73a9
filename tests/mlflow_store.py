"""Reading a sweep back from a real MLflow store, the way a user's script or the UI would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient


@dataclass
class StoredSweep:
    client: MlflowClient
    parent: Run
    children: list[Run]

    def history(self, run: Run, key: str = "val_loss") -> list[tuple[int, float]]:
        metrics = self.client.get_metric_history(run.info.run_id, key)
        return sorted((m.step, m.value) for m in metrics)

    def tag(self, run: Run, name: str) -> str | None:
        return run.data.tags.get(f"hypersweep.{name}")


def read_sweep(uri: str, experiment: str) -> StoredSweep:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment} in {uri}"
    runs = client.search_runs([exp.experiment_id], max_results=10_000)
    parents = [r for r in runs if r.data.tags.get("hypersweep.role") == "sweep"]
    assert len(parents) == 1, f"{len(parents)} parent runs"
    children = [r for r in runs if r.data.tags.get("hypersweep.role") == "trial"]
    return StoredSweep(client, parents[0], children)


def params_of(run: Run) -> dict[str, Any]:
    return dict(run.data.params)
