"""The contract every shipped training function keeps (``FUNCTION_SWEEPS``: sweep files whose
``experiment`` names a function), as ``test_experiments`` holds every ``Experiment`` class to its."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from hypersweep import Trial
from hypersweep.config import SweepSpec, import_roots, load_sweep
from hypersweep.handle import TRIAL_FILE
from hypersweep.registry import check_experiment, resolve_target
from tests.conftest import ROOT, hypersweep
from tests.experiments_index import FUNCTION_SWEEPS, sweep_id

pytestmark = pytest.mark.timeout(120)
SWEEPS = pytest.mark.parametrize("path", FUNCTION_SWEEPS, ids=sweep_id)


def _function(path: Path) -> tuple[SweepSpec, Callable[..., Any]]:
    spec = load_sweep(path)
    fn = resolve_target(spec.experiment, import_roots(spec.source), source=str(path))
    assert callable(fn) and not isinstance(fn, type)
    return spec, fn


def _config(spec: SweepSpec) -> dict[str, Any]:
    """A configuration from the sweep's own space (its first corner), over its fixed values."""
    return {**spec.fixed, **spec.search_space.corners()[0]}


class _KeepsEpoch:
    """A sink that keeps the checkpoint sent with epoch ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.kept = epoch, None

    def saved(self) -> Mapping[str, Any] | None:
        return None

    def report(
        self, metrics: dict[str, Any], state: Callable[[], Mapping[str, Any]], artifacts: Any = None
    ) -> None:
        if metrics["epoch"] == self.epoch:
            self.kept = state()[TRIAL_FILE]


class _Restores(_KeepsEpoch):
    def __init__(self, saved: Mapping[str, Any]) -> None:
        super().__init__(0)
        self._saved = saved

    def saved(self) -> Mapping[str, Any] | None:
        return self._saved


def test_the_example_is_found() -> None:
    assert "own_loop" in {p.stem for p in FUNCTION_SWEEPS}


@SWEEPS
def test_one_epoch_reports_the_sweep_metric_and_the_losses(path: Path) -> None:
    spec, fn = _function(path)
    check_experiment(spec)  # its declared metrics hold the sweep's metric
    [epoch] = Trial(max_epochs=1, quiet=True).run(fn, _config(spec))
    assert {"train_loss", "val_loss", spec.metric} <= set(epoch)
    assert epoch["stop_reason"] == "completed"
    assert all(math.isfinite(v) for v in epoch.values() if isinstance(v, float)), epoch


@SWEEPS
def test_search_space_sweeps_the_basics(path: Path) -> None:
    spec, _ = _function(path)
    assert {"lr", "optimizer", "dropout", "batch_size"} <= set(spec.search_space.names)


@SWEEPS
def test_a_checkpoint_restores_and_the_trial_goes_on_identically(path: Path) -> None:
    """Stopped after epoch 2 and run again from its checkpoint (through torch.save, as a retry
    reads it), epochs 3 and 4 are those of the run that never stopped: dropout included."""
    spec, fn = _function(path)
    config = {**_config(spec), "dropout": 0.3}
    straight = Trial(max_epochs=4, quiet=True).run(fn, config)
    keeper = _KeepsEpoch(2)
    Trial(max_epochs=4, quiet=True, sink=keeper).run(fn, config)
    assert keeper.kept is not None
    saved_file = path.parent / ".checkpoint-probe.pt"  # through a file, as a retry reads it
    try:
        torch.save(keeper.kept, saved_file)
        saved = torch.load(saved_file, weights_only=False)
    finally:
        saved_file.unlink(missing_ok=True)
    torch.manual_seed(12345)  # a retry's process: another global random state
    resumed = Trial(max_epochs=4, quiet=True, sink=_Restores(saved)).run(fn, config)
    assert [e["epoch"] for e in resumed] == [3, 4]
    assert resumed == straight[2:]


_IMPORT_PROBE = """
import json, sys
sys.path[:0] = {paths!r}
before = set(sys.modules)
import {module}
print(json.dumps(sorted(m for m in set(sys.modules) - before if m.split(".")[0] in ("ray", "mlflow"))))
"""


@SWEEPS
def test_the_function_never_imports_ray_or_mlflow(path: Path) -> None:
    spec, _ = _function(path)
    paths = [str(ROOT / "platform"), *import_roots(spec.source)]
    code = _IMPORT_PROBE.format(paths=paths, module=spec.experiment.partition(":")[0])
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_the_own_loop_example_runs_alone_and_validates_from_any_folder(tmp_path: Path) -> None:
    [example] = [p for p in FUNCTION_SWEEPS if p.stem == "own_loop"]
    alone = subprocess.run(
        [sys.executable, str(example.parent / "train.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT / "platform"), "PATH": "/usr/bin:/bin"},
    )
    assert alone.returncode == 0, alone.stderr
    assert "epoch 10: " in alone.stderr and "(completed)" in alone.stderr
    result = hypersweep("validate", str(example), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "own-loop-digits" in result.stdout + result.stderr
