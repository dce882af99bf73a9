"""The contract every experiment keeps, checked for each one found from the sweep files."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from hypersweep.config import import_roots
from hypersweep.experiment import Data, Experiment
from hypersweep.registry import check_experiment
from hypersweep.trainer import TrainerState, TrainSettings, fit
from tests.conftest import hypersweep
from tests.experiments_index import ALL_SWEEPS, EXPERIMENT_SWEEPS, load, split_digests, sweep_id

pytestmark = pytest.mark.timeout(120)
SWEEPS = pytest.mark.parametrize("path", ALL_SWEEPS, ids=sweep_id)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, as a trial on one CPU gets: small models run faster, and never contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Recorder:
    """Keeps every epoch's report and, optionally, the checkpoint of one epoch."""

    def __init__(self, resume_from: TrainerState | None = None, keep_epoch: int = 0) -> None:
        self.results: list[dict[str, Any]] = []
        self.resume_from, self.keep_epoch = resume_from, keep_epoch
        self.kept: TrainerState | None = None

    def restore(self) -> TrainerState | None:
        return self.resume_from

    def report(self, metrics: dict[str, Any], state: Callable[[], TrainerState], artifacts=None) -> None:
        self.results.append(metrics)
        if metrics["epoch"] == self.keep_epoch:
            self.kept = state()


def sensible(path: Path, **extra: Any) -> dict[str, Any]:
    """A configuration any of the experiments should learn with: Adam at a moderate rate."""
    spec, _ = load(path)
    return {**spec.fixed, "optimizer": "adam", "lr": 3e-3, "batch_size": 32, **extra}


def small(data: Data, n_train: int = 96, n_val: int = 48) -> Data:
    return Data(data.train.head(n_train), data.val.head(n_val))


def train(
    experiment: Experiment, data: Data, config: dict[str, Any], epochs: int, reporter: Recorder
) -> None:
    fit(experiment, data, config, TrainSettings(max_epochs=epochs, patience=None), reporter)


def finite_numbers(result: dict[str, Any]) -> bool:
    values = [v for k, v in result.items() if isinstance(v, float)]
    return bool(values) and all(math.isfinite(v) for v in values)


def test_every_experiment_is_found() -> None:
    names = {p.stem for p in EXPERIMENT_SWEEPS}
    assert {"breast_cancer_mlp", "diabetes_mlp", "sunspots_rnn", "digits_cnn", "digits_vae"} <= names
    assert "wine" in {p.stem for p in ALL_SWEEPS}


@SWEEPS
def test_builds_and_reports_the_sweep_metric(path: Path) -> None:
    spec, experiment = load(path)
    check_experiment(spec)  # the metric is one it reports; optimizers exist; fixed values accepted
    data = experiment.load_data(seed=0)
    assert len(data.train) > len(data.val) > 0
    model = experiment.build_model({**experiment.default_config, **spec.fixed}, data)
    assert isinstance(model, nn.Module) and sum(p.numel() for p in model.parameters()) > 0


@SWEEPS
def test_search_space_sweeps_the_basics(path: Path) -> None:
    spec, _ = load(path)
    assert {"lr", "optimizer", "dropout", "batch_size"} <= set(spec.search_space.names)
    assert dict(spec.search_space.as_dict())["lr"]["type"] == "loguniform"


@SWEEPS
def test_one_epoch_on_a_small_slice_reports_finite_metrics(path: Path) -> None:
    _, experiment = load(path)
    reporter = Recorder()
    train(experiment, small(experiment.load_data(seed=0)), sensible(path), 1, reporter)
    [result] = reporter.results
    assert {"train_loss", "val_loss", *experiment.metric_names} <= set(result)
    assert result["stop_reason"] == "completed"
    assert finite_numbers(result), result


@SWEEPS
def test_loss_falls_at_a_sensible_config(path: Path) -> None:
    _, experiment = load(path)
    data = experiment.load_data(seed=0)
    reporter = Recorder()
    train(experiment, data, sensible(path, dropout=0.0), 5, reporter)
    train_losses = [r["train_loss"] for r in reporter.results]
    val_losses = [r["val_loss"] for r in reporter.results]
    assert train_losses[-1] < train_losses[0], train_losses
    assert min(val_losses[1:]) < val_losses[0], val_losses
    assert all(finite_numbers(r) for r in reporter.results)


@SWEEPS
def test_a_checkpoint_round_trips_and_resumes_identically(path: Path) -> None:
    _, experiment = load(path)
    data = small(experiment.load_data(seed=0))
    config = sensible(path, dropout=0.2)  # dropout (and a VAE's sampling) use the saved RNG state
    straight = Recorder()
    train(experiment, data, config, 4, straight)
    interrupted = Recorder(keep_epoch=2)
    train(experiment, data, config, 4, interrupted)
    assert interrupted.kept is not None
    buffer = io.BytesIO()
    torch.save(interrupted.kept.to_dict(), buffer)
    buffer.seek(0)
    state = TrainerState.from_dict(torch.load(buffer, weights_only=True))
    resumed = Recorder(resume_from=state)
    train(experiment, data, config, 4, resumed)
    assert [r["epoch"] for r in resumed.results] == [3, 4]
    assert resumed.results == straight.results[2:]


# Experiments whose split is fixed by the data itself (chronological): no seed changes it.
SEED_FREE_SPLITS = {"sunspots_rnn"}

_SPLIT_PROBE = """
import json, random, sys
from pathlib import Path
import numpy as np, torch
from tests.experiments_index import load, split_digests
out = {}
for name, path in json.loads(sys.argv[1]):
    random.seed(987); np.random.seed(987); torch.manual_seed(987)
    _, experiment = load(Path(path))
    out[name] = split_digests(experiment.load_data(seed=3))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def splits_in_another_process() -> dict[str, dict[str, str | None]]:
    """Every experiment's split with seed 3, loaded in a fresh interpreter (a hash seed of its own,
    its global generators seeded otherwise than in any test here)."""
    jobs = [[sweep_id(path), str(path)] for path in ALL_SWEEPS]
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    env["PYTHONPATH"] = os.pathsep.join([str(root / "platform"), str(root)])
    result = subprocess.run(
        [sys.executable, "-c", _SPLIT_PROBE, json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=root,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


@contextlib.contextmanager
def global_rngs(seed: int) -> Iterator[None]:
    """Python's, NumPy's and torch's global generators seeded with ``seed``, then put back."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def split_with(path: Path, *, seed: int, global_seed: int) -> dict[str, str | None]:
    """Digests of the split a fresh instance of the experiment loads with ``seed`` while the
    global generators are seeded with ``global_seed``."""
    with global_rngs(global_seed):
        _, experiment = load(path)
        return split_digests(experiment.load_data(seed=seed))


@SWEEPS
def test_the_split_depends_on_the_seed_only(path: Path, splits_in_another_process) -> None:
    split = split_with(path, seed=3, global_seed=1)
    assert split_with(path, seed=3, global_seed=2) == split  # not on the global generators
    assert splits_in_another_process[sweep_id(path)] == split  # nor on the process
    other = split_with(path, seed=4, global_seed=1)
    if sweep_id(path) in SEED_FREE_SPLITS:
        assert other == split
    else:  # another seed draws other rows for training and for validation
        assert other["train"] != split["train"] and other["val"] != split["val"]


_IMPORT_PROBE = """
import importlib, json, sys
out = {}
for name, module, cls, roots, fixed in json.loads(sys.argv[1]):
    sys.path[:0] = [r for r in roots if r not in sys.path]
    before = set(sys.modules)
    experiment = getattr(importlib.import_module(module), cls)()
    experiment.configure(fixed)
    experiment.load_data(seed=0)  # imports made lazily, when data loads, count too
    new = set(sys.modules) - before
    out[name] = sorted(m for m in new if m.split(".")[0] in ("ray", "mlflow"))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def imported_by_experiment() -> dict[str, list[str]]:
    """Ray/MLflow modules each experiment pulls in, measured in a fresh interpreter."""
    jobs = []
    for path in ALL_SWEEPS:
        spec, _ = load(path)
        module, _, cls = spec.experiment.partition(":")
        jobs.append([sweep_id(path), module, cls, import_roots(spec.source), dict(spec.fixed)])
    root = str(Path(__file__).resolve().parents[1])
    env_path = [str(Path(root) / "platform"), root]
    code = f"import sys; sys.path[:0] = {env_path!r}\n" + _IMPORT_PROBE
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


@SWEEPS
def test_experiment_never_imports_ray_or_mlflow(path: Path, imported_by_experiment) -> None:
    assert sweep_id(path) in imported_by_experiment
    assert imported_by_experiment[sweep_id(path)] == []


def test_the_example_validates_from_any_folder(tmp_path: Path) -> None:
    # `wine:WineMLP` resolves because the sweep file's folder is on the import path, wherever the
    # command runs from (its fit is covered by the contract tests above).
    [example] = [p for p in ALL_SWEEPS if p.stem == "wine"]
    result = hypersweep("validate", str(example), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wine-mlp" in result.stdout + result.stderr
