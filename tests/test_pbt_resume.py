"""A PBT sweep's driver killed after members have copied each other, then ``hypersweep resume``:
every member keeps its one run, the exploits made before the kill stay in the sweep's lineage,
and the sweep finishes with its best schedule."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from hypersweep.tracking.state import read_state
from hypersweep.tuning import TRACKING_STATE
from tests.chaos_tools import NAME, cli, counts, kill_driver
from tests.mlflow_store import read_sweep

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(420)]

SAMPLES, EPOCHS = 4, 16


def _sweep(folder: Path) -> Path:
    """The chaos experiment (a slow toy) as a PBT population: learning rates from useless to good."""
    path = folder / "pbt.yaml"
    path.write_text(
        f"name: {NAME}\nexperiment: tests.chaos:ChaosToy\n"
        "search_space:\n  lr: {type: loguniform, low: 1.0e-4, high: 0.5}\n"
        "  dropout: {type: uniform, low: 0.0, high: 0.3}\n"
        f"fixed: {{fault_dir: {folder}, epoch_sleep: 0.15}}\n"
        f"max_epochs: {EPOCHS}\nnum_samples: {SAMPLES}\n"
        "scheduler: {type: pbt, perturbation_interval: 2, quantile_fraction: 0.5}\n"
        "search: {seed: 3}\n"
        "training: {patience: null}\n"
    )
    return path


def _exploits_recorded(folder: Path, proc: Any) -> tuple[Path, list[dict[str, Any]]]:
    """The sweep's folder and the exploits its recorder has journaled, once there are some."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for state in folder.glob(f"runs/{NAME}-*/{TRACKING_STATE}"):
            trials = read_state(state)["trials"].values()
            exploits = [e for t in trials for e in t.get("exploits", [])]
            if exploits and all(t["last_step"] < EPOCHS for t in trials):
                return state.parent, exploits
        time.sleep(0.2)
    raise AssertionError("no member copied another before the sweep ended")


def test_a_killed_pbt_sweep_resumes_with_its_lineage(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/x.db"
    proc = cli("run", str(_sweep(tmp_path)), "--tracking-uri", uri, "--storage", str(tmp_path / "runs"))
    folder, before = _exploits_recorded(tmp_path, proc)
    kill_driver(proc)
    resumed = cli("resume", str(folder))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out + err

    ledger = counts(uri)
    assert (ledger.trials, ledger.trial_ids, ledger.running) == (SAMPLES, SAMPLES, 0)
    stored = read_sweep(uri, NAME)
    parent = stored.parent.info.run_id
    lineage = json.loads(Path(stored.client.download_artifacts(parent, "pbt_lineage.json")).read_text())
    kept = {(e["trial_id"], e["at_ms"]) for e in lineage["exploits"]}
    assert {(e["trial_id"], e["at_ms"]) for e in before} <= kept
    for child in stored.children:
        assert [step for step, _ in stored.history(child, "hp/lr")][-1] == EPOCHS
    schedule = json.loads(Path(stored.client.download_artifacts(parent, "best_schedule.json")).read_text())
    assert [e["epoch"] for e in schedule["epochs"]] == list(range(1, EPOCHS + 1))
