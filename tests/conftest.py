from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SWEEP = ROOT / "experiments" / "breast_cancer_mlp.yaml"


def hypersweep(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a user would."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [sys.executable, "-m", "hypersweep", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` need a CUDA device. Where there is none they are deselected, and the
    summary says so, unless ``-m`` names them (``make test-gpu``): then they run and fail."""
    import torch

    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu or torch.cuda.is_available() or "gpu" in (config.option.markexpr or ""):
        return
    config.hook.pytest_deselected(items=gpu)
    items[:] = [item for item in items if not item.get_closest_marker("gpu")]
    config.stash[_GPU_DESELECTED] = len(gpu)


_GPU_DESELECTED = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if deselected := config.stash.get(_GPU_DESELECTED, 0):
        terminalreporter.write_line(
            f"{deselected} GPU tests deselected: no CUDA device here (make test-gpu on a GPU host)"
        )


def fifo_sweep(
    sweep: Path, cwd: Path, trials: int, epochs: int, *settings: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    """``hypersweep run`` with FIFO and random search (every trial every epoch, no early stop by
    the scheduler), ``--set`` each of ``settings``, into a SQLite store in cwd: (result, URI)."""
    uri = f"sqlite:///{cwd}/x.db"
    result = hypersweep(
        "run",
        str(sweep),
        *("--num-samples", str(trials), "--max-epochs", str(epochs)),
        *("--scheduler", "fifo", "--search", "random"),
        *("--tracking-uri", uri, "--storage", str(cwd / "runs")),
        *(arg for setting in settings for arg in ("--set", setting)),
        cwd=cwd,
    )
    return result, uri


@pytest.fixture(autouse=True)
def _tracking_uri_stays_in_its_test():
    """The CLI run in-process (``main([...])``) sets MLflow's tracking URI, and MLflow sets it
    as MLFLOW_TRACKING_URI for every later subprocess: a later test's ``hypersweep ui`` then
    shows this test's store. Put both back."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if os.environ.get("MLFLOW_TRACKING_URI") != before:
        import mlflow

        mlflow.set_tracking_uri(before)  # type: ignore[arg-type]  # None unsets it, as before


@pytest.fixture
def write_sweep(tmp_path: Path):
    """Write a sweep file (YAML text) into tmp_path and return its path."""

    def write(text: str, name: str = "sweep.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
