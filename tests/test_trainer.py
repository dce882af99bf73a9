from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from hypersweep.trainer import OPTIMIZERS, TrainerState, TrainSettings, fit, make_optimizer
from tests.toy import ToyRegression


class ListReporter:
    """Keeps every report and, optionally, the checkpoint of a chosen epoch."""

    def __init__(self, resume_from: TrainerState | None = None, keep_epoch: int = 0) -> None:
        self.results: list[dict[str, Any]] = []
        self.resume_from = resume_from
        self.keep_epoch = keep_epoch
        self.kept: TrainerState | None = None

    def restore(self) -> TrainerState | None:
        return self.resume_from

    def report(self, metrics: dict[str, Any], state: Callable[[], TrainerState], artifacts=None) -> None:
        self.results.append(metrics)
        self.artifacts = artifacts
        if metrics["epoch"] == self.keep_epoch:
            self.kept = state()


def _fit(config: dict[str, Any], reporter: ListReporter | None = None, **settings: Any):
    experiment = ToyRegression(val_shift=settings.pop("val_shift", 0.0))
    data = experiment.load_data(seed=0)
    reporter = reporter or ListReporter()
    result = fit(experiment, data, config, TrainSettings(**{"max_epochs": 5, **settings}), reporter)
    return result, reporter


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_factory_builds_each_named_optimizer(name: str) -> None:
    model = nn.Linear(2, 1)
    opt = make_optimizer(model, {"optimizer": name, "lr": 0.05, "momentum": 0.8, "beta1": 0.85})
    expected = {
        "sgd": torch.optim.SGD,
        "momentum": torch.optim.SGD,
        "nesterov": torch.optim.SGD,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "rmsprop": torch.optim.RMSprop,
        "adagrad": torch.optim.Adagrad,
    }[name]
    assert type(opt) is expected
    group = opt.param_groups[0]
    assert group["lr"] == 0.05
    if name == "sgd":
        assert group["momentum"] == 0
    if name in ("momentum", "nesterov"):
        assert group["momentum"] == 0.8
        assert group["nesterov"] is (name == "nesterov")
    if name in ("adam", "adamw"):
        assert group["betas"] == (0.85, 0.999)


def test_unknown_optimizer_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"optimizer: 'adamm' is not one of .* \(did you mean 'adam'\?\)"):
        make_optimizer(nn.Linear(2, 1), {"optimizer": "adamm"})


def test_loss_falls_and_every_epoch_is_reported() -> None:
    result, reporter = _fit({"optimizer": "adam", "lr": 0.01, "batch_size": 16}, patience=None)
    losses = [r["val_loss"] for r in reporter.results]
    assert [r["epoch"] for r in reporter.results] == [1, 2, 3, 4, 5]
    assert losses[-1] < 0.5 * losses[0]
    assert all("train_loss" in r and "val_mae" in r for r in reporter.results)
    assert reporter.results[-1]["stop_reason"] == "completed"
    assert result.best_val_loss == min(losses)


def test_training_is_deterministic_given_a_seed() -> None:
    config = {"optimizer": "sgd", "lr": 0.05, "batch_size": 8, "dropout": 0.2}
    _, first = _fit(config, seed=3)
    _, second = _fit(config, seed=3)
    _, other = _fit(config, seed=4)
    assert first.results == second.results
    assert first.results != other.results


def test_resuming_from_a_checkpoint_continues_exactly() -> None:
    config = {"optimizer": "momentum", "lr": 0.02, "batch_size": 8, "dropout": 0.3}
    _, straight = _fit(config, patience=None)
    _, interrupted = _fit(config, ListReporter(keep_epoch=2), patience=None)
    assert interrupted.kept is not None and interrupted.kept.epoch == 2
    _, resumed = _fit(config, ListReporter(resume_from=interrupted.kept), patience=None)
    assert [r["epoch"] for r in resumed.results] == [3, 4, 5]
    assert resumed.results == straight.results[2:]


def test_huge_learning_rate_diverges_within_one_epoch() -> None:
    result, reporter = _fit({"optimizer": "sgd", "lr": 1e6, "batch_size": 16}, max_epochs=20)
    assert result.stop_reason == "diverged"
    assert len(reporter.results) == 1
    assert reporter.results[0]["stop_reason"] == "diverged"
    assert not math.isfinite(reporter.results[0]["val_loss"]) or reporter.results[0]["val_loss"] > 10


def test_early_stopping_stops_when_validation_loss_rises() -> None:
    # Validation targets are the negated training targets: the better the fit, the worse val_loss,
    # so the first epoch is the best and training stops `patience` epochs after it.
    result, reporter = _fit(
        {"optimizer": "adam", "lr": 0.01, "batch_size": 16},
        max_epochs=30,
        patience=3,
        val_shift=1.0,
        divergence_factor=1e9,
    )
    losses = [r["val_loss"] for r in reporter.results]
    assert result.stop_reason == "patience" and result.epochs == 4
    assert [r["epoch"] for r in reporter.results] == [1, 2, 3, 4]
    assert [r.get("stop_reason") for r in reporter.results] == [None, None, None, "patience"]
    assert result.best_val_loss == losses[0]
    assert all(later >= losses[0] for later in losses[1:])  # none of the last 3 improved on epoch 1


class _ScriptedValLoss(ToyRegression):
    """Trains as ToyRegression; each validation loss is the next of ``val_losses`` (the first is
    the untrained model's). Validation runs without gradients, training batches with them."""

    def __init__(self, val_losses: list[float]) -> None:
        super().__init__()
        self.val_losses = list(val_losses)

    def loss(self, output, target) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super().loss(output, target)
        return torch.tensor(self.val_losses.pop(0))


def test_patience_counts_epochs_that_miss_the_best_by_min_delta() -> None:
    """An epoch improves only if its val_loss is below the best so far minus ``min_delta``; training
    stops once ``patience`` epochs in a row did not improve."""
    patience, min_delta = 3, 0.05
    # untrained, then epochs 1..: 1, 2 and 4 improve; 3 and 5 are lower than the best, by less than
    # min_delta, so they count as bad epochs; 4 resets the count; 5, 6, 7 exhaust the patience.
    script = [1.0, 0.90, 0.80, 0.76, 0.70, 0.66, 0.72, 0.651] + [0.1] * 10
    experiment = _ScriptedValLoss(script)
    settings = TrainSettings(max_epochs=15, patience=patience, min_delta=min_delta, divergence_factor=1e9)
    reporter = ListReporter()
    result = fit(experiment, experiment.load_data(seed=0), {"lr": 0.01}, settings, reporter)
    losses = [r["val_loss"] for r in reporter.results]
    assert result.stop_reason == "patience" and result.epochs == 7
    assert losses == pytest.approx(script[1:8])
    assert [r.get("stop_reason") for r in reporter.results] == [None] * 6 + ["patience"]
    best_epoch = 4  # the last improvement; epoch 5's 0.66 is the lowest value, but not by min_delta
    assert result.best_val_loss == pytest.approx(losses[best_epoch - 1])
    assert result.epochs - best_epoch == patience
    assert all(not later < result.best_val_loss - min_delta for later in losses[best_epoch:])


class _EveryEpoch(ListReporter):
    """Keeps every epoch's state (weights and the best weights so far)."""

    def __init__(self) -> None:
        super().__init__()
        self.states: list[TrainerState] = []

    def report(self, metrics: dict[str, Any], state: Callable[[], TrainerState], artifacts=None) -> None:
        super().report(metrics, state, artifacts)
        self.states.append(state())


@pytest.mark.parametrize(
    ("metric", "mode"), [("val_loss", "min"), ("train_loss", "min"), ("val_loss", "max")]
)
def test_the_best_weights_are_those_of_the_best_epoch_by_the_sweeps_metric(metric: str, mode: str) -> None:
    # val_loss rises as the fit improves (val_shift) while train_loss falls: the best epochs differ.
    _, reporter = _fit(
        {"optimizer": "adam", "lr": 0.01, "batch_size": 16},
        _EveryEpoch(),
        max_epochs=8,
        patience=None,
        val_shift=1.0,
        divergence_factor=1e9,
        metric=metric,
        mode=mode,
    )
    values = [r[metric] for r in reporter.results]
    best = values.index(min(values) if mode == "min" else max(values))
    assert len(set(values)) == len(values)
    final = reporter.states[-1]
    assert final.best_score == values[best]
    kept = reporter.states[best].model
    assert all(torch.equal(final.best_model[k], kept[k]) for k in kept)


class _DtypeProbe(ToyRegression):
    """Records the dtype of every forward output: bfloat16 under CPU autocast, else float32."""

    def __init__(self) -> None:
        super().__init__()
        self.train_dtypes: set[torch.dtype] = set()
        self.eval_dtypes: set[torch.dtype] = set()

    def build_model(self, config, data) -> nn.Module:
        model = super().build_model(config, data)

        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            (self.train_dtypes if module.training else self.eval_dtypes).add(output.dtype)

        model.register_forward_hook(hook)
        return model


@pytest.mark.parametrize("amp", [False, True])
def test_mixed_precision_autocasts_training_only(amp: bool) -> None:
    probe = _DtypeProbe()
    settings = TrainSettings(max_epochs=4, amp=amp, grad_clip_norm=1.0)
    result = fit(probe, probe.load_data(seed=0), {"lr": 0.01}, settings, ListReporter())
    assert probe.train_dtypes == ({torch.bfloat16} if amp else {torch.float32})
    assert probe.eval_dtypes == {torch.float32}  # metrics are computed in full precision
    losses = [h["train_loss"] for h in result.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
