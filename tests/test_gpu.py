"""The GPU paths on a real CUDA device: device placement, AMP, checkpoints, fractional GPUs.

Run with ``make test-gpu`` on a host with an NVIDIA GPU and a CUDA build of torch. Elsewhere
these tests are deselected (tests/conftest.py says so in the summary): they need the device.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from hypersweep.trainer import TrainerState, TrainSettings, fit
from tests.conftest import ROOT, fifo_sweep
from tests.mlflow_store import read_sweep
from tests.test_trainer import ListReporter
from tests.toy import ToyRegression

pytestmark = pytest.mark.gpu
CONFIG = {"optimizer": "adam", "lr": 0.01, "batch_size": 32, "dropout": 0.3}


@pytest.fixture(autouse=True)
def _needs_cuda() -> None:
    assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA device"


def _train(reporter: ListReporter, *, amp: bool, device: str = "cuda", **config: Any) -> Any:
    experiment = ToyRegression()
    data = experiment.load_data(seed=0).to(torch.device(device))
    settings = TrainSettings(max_epochs=5, patience=None, device=device, amp=amp)
    return fit(experiment, data, {**CONFIG, **config}, settings, reporter)


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)


def test_a_trial_on_the_gpu_learns_what_it_learns_on_the_cpu() -> None:
    on_gpu, on_cpu = ListReporter(), ListReporter()
    result = _train(on_gpu, amp=False, dropout=0.0)  # dropout draws differ between devices
    _train(on_cpu, amp=False, device="cpu", dropout=0.0)
    assert all(p.is_cuda for p in result.model.parameters())
    assert result.stop_reason == "completed"
    for key in ("train_loss", "val_loss", "val_mae"):
        gpu = [r[key] for r in on_gpu.results]
        assert gpu == pytest.approx([r[key] for r in on_cpu.results], rel=1e-3), key


def test_a_trial_learns_with_mixed_precision_on_the_gpu() -> None:
    reporter = ListReporter()
    result = _train(reporter, amp=True)
    assert result.stop_reason == "completed"
    losses = [r["val_loss"] for r in reporter.results]
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.8 * losses[0], losses


def test_a_diverging_gpu_trial_stops_at_the_end_of_its_first_epoch() -> None:
    """A huge learning rate ends a GPU trial within its first epoch, as diverged, with the loss
    recorded as infinite (each batch loss is read before the step that would use it)."""
    reporter = ListReporter()
    result = _train(reporter, amp=False, optimizer="sgd", lr=1e6)
    assert result.stop_reason == "diverged"
    assert [r["train_loss"] for r in reporter.results] == [math.inf]


def test_a_gpu_checkpoint_is_portable_and_resumes_exactly() -> None:
    """A checkpoint taken on the GPU holds only CPU tensors (a retry may land on a node without
    CUDA), carries the GradScaler and the CUDA generator, and resumes to the same losses."""
    whole = ListReporter(keep_epoch=2)
    _train(whole, amp=True)
    assert whole.kept is not None
    saved = whole.kept.to_dict()
    assert all(t.device.type == "cpu" for t in _tensors(saved))
    assert saved["scaler"]["scale"] > 0
    assert "cuda" in saved["rng"]  # dropout on CUDA draws from the device's generator

    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    state = TrainerState.from_dict(torch.load(buffer, weights_only=True))
    resumed = ListReporter(resume_from=state)
    _train(resumed, amp=True)
    expected = [r["val_loss"] for r in whole.results[2:]]
    assert [r["val_loss"] for r in resumed.results] == pytest.approx(expected, rel=1e-5)


def test_four_trials_share_one_gpu(tmp_path: Path) -> None:
    """A real sweep of the CNN with a quarter of a GPU per trial and AMP: every trial on CUDA,
    never more than four at once, several at once."""
    sweep = ROOT / "experiments" / "digits_cnn.yaml"
    settings = ("resources.gpus_per_trial=0.25", "training.amp=true", "training.patience=null")
    result, uri = fifo_sweep(sweep, tmp_path, 8, 3, *settings)
    assert result.returncode == 0, result.stdout + result.stderr
    stored = read_sweep(uri, "digits-cnn")
    assert len(stored.children) == 8
    assert {stored.tag(c, "device") for c in stored.children} == {"cuda:0"}
    spans = [(c.info.start_time, c.info.end_time) for c in stored.children]
    at_once = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert 2 <= at_once <= 4, spans
