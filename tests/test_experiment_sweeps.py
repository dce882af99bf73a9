"""Each experiment as a tiny real sweep through the CLI; the lessons every trial has built in."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from hypersweep.config import load_sweep
from hypersweep.trainer import TRAINER_DEFAULTS, _evaluate
from tests.conftest import ROOT, fifo_sweep, hypersweep
from tests.experiments_index import ALL_SWEEPS, load, sweep_id
from tests.mlflow_store import StoredSweep, read_sweep

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
DIABETES = ROOT / "experiments" / "diabetes_mlp.yaml"
FINISHED = {"completed", "early_stopped"}


def run_tiny(path: Path, tmp_path: Path, *extra: str) -> tuple[StoredSweep, str, str]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = hypersweep(
        "run",
        str(path),
        "--tracking-uri",
        uri,
        "--storage",
        str(tmp_path / "runs"),
        *extra,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return read_sweep(uri, load_sweep(path).name), result.stdout, result.stderr


@pytest.mark.parametrize("path", ALL_SWEEPS, ids=sweep_id)
def test_each_sweep_file_runs_as_a_smoke_test(path: Path, tmp_path: Path) -> None:
    """`hypersweep run FILE --num-samples 2 --max-epochs 2` just runs, for every shipped file and
    the example: a grace period longer than the shortened sweep is brought within it, with a note."""
    spec = load_sweep(path)
    stored, _, err = run_tiny(path, tmp_path, "--num-samples", "2", "--max-epochs", "2")
    check_nested_runs(stored, spec.metric, trials=2)
    clamped = spec.scheduler.grace_period > 2
    assert (f"note: scheduler.grace_period {spec.scheduler.grace_period} -> 2" in err) == clamped, err
    if path.stem == "digits_vae":
        check_vae_samples(stored, tmp_path)


def check_nested_runs(stored: StoredSweep, metric: str, *, trials: int) -> None:
    assert len(stored.children) == trials
    parent_id = stored.parent.info.run_id
    assert all(c.data.tags["mlflow.parentRunId"] == parent_id for c in stored.children)
    for child in stored.children:
        assert stored.tag(child, "status") in {*FINISHED, "diverged"}
        steps = [s for s, _ in stored.history(child, "train_loss")]
        assert steps and steps == list(range(1, len(steps) + 1))
        if stored.tag(child, "status") != "diverged":
            assert [s for s, _ in stored.history(child, metric)] == steps
        assert {"lr", "optimizer", "dropout", "batch_size"} <= set(child.data.params)
    assert math.isfinite(stored.parent.data.metrics[f"best_{metric}"])


def check_vae_samples(stored: StoredSweep, tmp_path: Path) -> None:
    finished = [c for c in stored.children if stored.tag(c, "status") in FINISHED]
    assert finished
    for child in finished:
        names = [a.path for a in stored.client.list_artifacts(child.info.run_id)]
        assert "samples.png" in names, names
        local = stored.client.download_artifacts(child.info.run_id, "samples.png", str(tmp_path))
        image = Image.open(io.BytesIO(Path(local).read_bytes()))
        image.load()
        assert image.format == "PNG" and image.mode == "L"
        assert image.size == (8 * (8 * 4 + 1) + 1,) * 2  # 8 x 8 samples of 8x8 pixels, x4, 1px gaps
        assert len(set(image.getdata())) > 2  # drawn digits, not a blank page


def test_huge_learning_rates_diverge_at_once_and_patience_stops_the_rest(tmp_path: Path) -> None:
    # Any optimizer at lr 1e5 explodes in its first batches; at 1e-2 it learns. A min_delta no
    # epoch can beat makes every learning trial stop by patience after its second epoch.
    # Seed 2: the seeded random sampler draws 1e5, 1e-2, 1e-2, 1e5 (seed 0 draws 1e-2 only).
    stored, stdout, _ = run_tiny(
        DIABETES,
        tmp_path,
        *("--num-samples", "4", "--max-epochs", "5", "--scheduler", "fifo", "--search", "random"),
        *("--seed", "2", "--set", "search_space.lr={type: choice, values: [1.0e+5, 1.0e-2]}"),
        *("--set", "training.patience=1", "--set", "training.min_delta=1.0e9"),
    )
    check_nested_runs(stored, "val_rmse", trials=4)
    by_lr: dict[float, list[Any]] = {}
    for child in stored.children:
        by_lr.setdefault(float(child.data.params["lr"]), []).append(child)
    assert set(by_lr) == {1e5, 1e-2}, "the seeded sampler should draw both rates"
    for child in by_lr[1e5]:
        assert stored.tag(child, "status") == "diverged"
        assert stored.tag(child, "stop_reason") == "diverged"
        assert [s for s, _ in stored.history(child, "train_loss")] == [1]
    for child in by_lr[1e-2]:
        assert stored.tag(child, "status") == "early_stopped"
        assert stored.tag(child, "stop_reason") == "patience"
        assert [s for s, _ in stored.history(child)] == [1, 2]
    best_run = stored.parent.data.tags["hypersweep.best_run_id"]
    assert best_run in {c.info.run_id for c in by_lr[1e-2]}
    assert math.isfinite(stored.parent.data.metrics["best_val_rmse"])
    assert "diverged" in stdout


@pytest.mark.parametrize("path", ALL_SWEEPS, ids=sweep_id)
def test_a_workers_metrics_are_what_its_weights_give_in_process(path: Path, tmp_path: Path) -> None:
    """What a real trial logs to MLflow for its best epoch equals what that epoch's weights (the
    sweep's best_model artifact) give on the validation split in this process, from data loaded
    here: the units of every metric included (state an experiment derives in load_data)."""
    result, uri = fifo_sweep(path, tmp_path, 1, 2, "search_space.lr={type: choice, values: [0.003]}")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    spec, experiment = load(path)
    stored = read_sweep(uri, spec.name)
    (child,) = stored.children
    assert stored.tag(child, "status") in FINISHED
    logged = {k: dict(stored.history(child, k)) for k in ("val_loss", *experiment.metric_names)}
    sign = 1 if spec.mode == "min" else -1
    best_epoch = min(logged[spec.metric], key=lambda step: (sign * logged[spec.metric][step], step))
    parent = stored.parent.info.run_id
    weights = stored.client.download_artifacts(parent, "best_model/model.pt", str(tmp_path))
    config = json.loads(
        Path(stored.client.download_artifacts(parent, "best_config.json", str(tmp_path))).read_text()
    )
    data = experiment.load_data(seed=spec.data_seed)
    model = experiment.build_model({**TRAINER_DEFAULTS, **experiment.default_config, **config}, data)
    model.load_state_dict(torch.load(weights, weights_only=True))
    val_loss, metrics = _evaluate(experiment, model, data.val)
    here = {"val_loss": val_loss, **metrics}
    assert set(here) == set(logged)
    for key, value in here.items():
        assert logged[key][best_epoch] == pytest.approx(value, rel=1e-5, abs=1e-7), (key, best_epoch)
