"""The benchmark command keeps working: its quick mode runs every contender on tiny sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.run import median_run
from benchmarks.workloads import configs, is_close_config

from tests.conftest import ROOT


def test_benchmark_configs_are_reproducible_and_flat() -> None:
    first, again = configs(5), configs(5)
    assert all(is_close_config(a, b) for a, b in zip(first, again, strict=True))
    assert all(set(c) == {"lr", "optimizer", "dropout", "batch_size"} for c in first)
    assert not is_close_config(first[0], first[1])


def test_rounds_are_reported_by_their_medians_and_worst_checks() -> None:
    rounds = [
        {"wall_s": 20.0, "sweep_s": 12.0, "finished": 32, "same_configs": True, "peak_rss_mb": 500.0},
        {"wall_s": 30.0, "sweep_s": 11.0, "finished": 31, "same_configs": False, "peak_rss_mb": 520.0},
        {"wall_s": 22.0, "sweep_s": 19.0, "finished": 32, "same_configs": True, "peak_rss_mb": 510.0},
    ]
    result = median_run(rounds)
    # Each time is its own median: a slow sweep part in one round and a slow start in another
    # do not add up to a round that never happened.
    assert (result["wall_s"], result["sweep_s"], result["peak_rss_mb"]) == (22.0, 12.0, 510.0)
    assert result["finished"] == 31 and result["same_configs"] is False
    assert result["rounds_wall_s"] == [20.0, 30.0, 22.0]
    assert result["rounds_sweep_s"] == [12.0, 11.0, 19.0]
    assert median_run(rounds[:1])["wall_s"] == 20.0


@pytest.mark.slow
def test_quick_benchmark_measures_every_contender(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "quick.json").read_text())
    runs = data["runs"]
    for name in ("ideal", "hypersweep", "hypersweep_untracked", "ray_tune_defaults", "optuna_threads"):
        assert runs[name]["wall_s"] > 0
    assert runs["hypersweep"]["finished"] == 2 and runs["ray_tune_defaults"]["finished"] == 2
    assert data["summary"]["same configurations as ideal"] is True
    assert "| hypersweep |" in (tmp_path / "quick.md").read_text()
