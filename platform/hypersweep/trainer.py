"""The generic epoch loop every experiment uses. PyTorch only: no Ray, no MLflow.

Per epoch it trains on shuffled mini-batches of the trial's ``batch_size``, evaluates the
validation split, and reports ``train_loss``, ``val_loss`` and the experiment's metrics through a
``Reporter``. Built in for every experiment: the optimizer factory, within-trial early stopping
(patience on ``val_loss``), a divergence guard, optional gradient clipping, checkpoints that
resume exactly, and determinism given a seed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from hypersweep import pbt
from hypersweep.errors import not_one_of
from hypersweep.experiment import Data, Experiment, Output, Split

StopReason = Literal["completed", "patience", "diverged"]

# Keys the trainer reads from a trial's config (the rest is the experiment's).
TRAINER_DEFAULTS: Mapping[str, Any] = {"optimizer": "adam", "lr": 1e-3, "batch_size": 32}
MODEL_FILE = "model.pt"  # in a trial's checkpoint: its best weights (the sweep's best_model)
_EVAL_CHUNK = 4096  # rows per forward pass when evaluating (bounds eval memory)


def _sgd(params: Any, c: Mapping[str, Any], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, weight_decay=wd)


def _momentum(params: Any, c: Mapping[str, Any], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=float(c.get("momentum", 0.9)), weight_decay=wd)


def _nesterov(params: Any, c: Mapping[str, Any], lr: float, wd: float) -> torch.optim.Optimizer:
    m = float(c.get("momentum", 0.9))
    return torch.optim.SGD(params, lr=lr, momentum=m, nesterov=True, weight_decay=wd)


def _betas(c: Mapping[str, Any]) -> tuple[float, float]:
    return float(c.get("beta1", 0.9)), float(c.get("beta2", 0.999))


def _adam(params: Any, c: Mapping[str, Any], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=_betas(c), weight_decay=wd)


def _adamw(params: Any, c: Mapping[str, Any], lr: float, wd: float) -> torch.optim.Optimizer:
    # AdamW decouples weight decay; 0.01 is PyTorch's own default.
    return torch.optim.AdamW(params, lr=lr, betas=_betas(c), weight_decay=float(c.get("weight_decay", 0.01)))


def _rmsprop(params: Any, c: Mapping[str, Any], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(params, lr=lr, alpha=float(c.get("alpha", 0.99)), weight_decay=wd)


def _adagrad(params: Any, c: Mapping[str, Any], lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)


_OptimizerFactory = Callable[[Any, Mapping[str, Any], float, float], torch.optim.Optimizer]
OPTIMIZERS: Mapping[str, _OptimizerFactory] = {
    "sgd": _sgd,
    "momentum": _momentum,
    "nesterov": _nesterov,
    "adam": _adam,
    "adamw": _adamw,
    "rmsprop": _rmsprop,
    "adagrad": _adagrad,
}


def make_optimizer(model: nn.Module, config: Mapping[str, Any]) -> torch.optim.Optimizer:
    """The optimizer named by ``config['optimizer']`` with the config's lr and its own options.

    ``momentum`` is SGD with momentum (``config['momentum']``, default 0.9); Adam/AdamW read
    ``beta1``/``beta2``; ``weight_decay`` applies to all (AdamW's is decoupled).
    """
    name = str(config.get("optimizer", TRAINER_DEFAULTS["optimizer"])).lower()
    factory = OPTIMIZERS.get(name)
    if factory is None:
        raise ValueError(f"optimizer: {not_one_of(name, OPTIMIZERS)}")
    lr = float(config.get("lr", TRAINER_DEFAULTS["lr"]))
    return factory(model.parameters(), config, lr, float(config.get("weight_decay", 0.0)))


@dataclass(frozen=True)
class TrainSettings:
    max_epochs: int
    seed: int = 0
    patience: int | None = 5
    min_delta: float = 0.0
    divergence_factor: float = 10.0
    grad_clip_norm: float | None = None
    device: str = "cpu"
    amp: bool = False  # mixed precision, see ``_Precision``
    # What "best" means for the weights a trial keeps: the sweep's metric. Early stopping
    # (patience) watches val_loss whatever the metric.
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    # Keys population-based training changes: each epoch's values go into the trial's schedule
    # and its metrics (hp/<key>).
    mutable: tuple[str, ...] = ()


@dataclass
class TrainerState:
    """Everything needed to continue a trial exactly where it stopped (a checkpoint)."""

    epoch: int = 0  # epochs completed
    initial_loss: float = math.nan  # untrained model's val_loss: the divergence reference
    best_val_loss: float = math.inf
    bad_epochs: int = 0
    best_score: float = math.nan  # best value of the sweep's metric so far; best_model's
    best_model: dict[str, Tensor] = field(default_factory=dict)
    model: dict[str, Tensor] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Tensor] = field(default_factory=dict)
    scaler: dict[str, Any] = field(default_factory=dict)  # GradScaler state (AMP on CUDA)
    # Per epoch: {"epoch": e, key: value} of the mutable keys. A PBT exploit copies the donor's,
    # so it is the schedule that trained these weights from scratch.
    schedule: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainerState:
        return cls(**dict(data))


class Reporter(Protocol):
    """Where the loop sends each epoch's results (Ray Tune, a test, a plain script)."""

    def restore(self) -> TrainerState | None:
        """Called once before training: the state to resume from, or None to start fresh."""

    def report(
        self,
        metrics: dict[str, Any],
        state: Callable[[], TrainerState],
        artifacts: Mapping[str, bytes] | None = None,
    ) -> None:
        """Called after every epoch; ``state()`` builds a checkpoint if the reporter wants one.

        On the last epoch of a trial that did not diverge, ``artifacts`` holds the experiment's
        files (made with the best weights) and ``metrics['artifacts']`` counts them.
        """


@dataclass
class FitResult:
    model: nn.Module
    epochs: int
    stop_reason: StopReason
    best_val_loss: float
    history: list[dict[str, Any]]


def fit(
    experiment: Experiment,
    data: Data,
    config: Mapping[str, Any],
    settings: TrainSettings,
    reporter: Reporter,
) -> FitResult:
    """Train one trial to ``max_epochs`` or until early stopping or divergence ends it."""
    cfg = {**TRAINER_DEFAULTS, **experiment.default_config, **config}
    device = torch.device(settings.device)
    torch.manual_seed(settings.seed)
    model = experiment.build_model(cfg, data).to(device)
    optimizer = make_optimizer(model, cfg)
    shuffle = torch.Generator().manual_seed(settings.seed)
    state = reporter.restore()
    if state is not None:
        wanted = pbt.settings_of(optimizer)  # this config's; a PBT donor's state carries its own
        _load_state(state, model, optimizer, shuffle, device)
        pbt.restore_settings(optimizer, wanted)
    else:
        state = TrainerState(initial_loss=_evaluate(experiment, model, data.val)[0])
    precision = _Precision(device, enabled=settings.amp)
    if state.scaler:
        precision.scaler.load_state_dict(state.scaler)
    loop = _Loop(experiment, data, cfg, settings, model, optimizer, shuffle, state, precision)
    return loop.run(reporter)


class _Precision:
    """Mixed precision for the training forward pass (evaluation stays in float32).

    CUDA: float16 autocast with a GradScaler, so small gradients do not underflow. CPU: bfloat16
    autocast (same exponent range as float32, so no scaling); it saves memory but is rarely faster
    on CPUs without bfloat16 instructions. Disabled: both are no-ops.
    """

    def __init__(self, device: torch.device, *, enabled: bool) -> None:
        self.enabled = enabled
        self.device_type = device.type
        self.dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler(device.type, enabled=enabled and device.type == "cuda")

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)


@dataclass
class _Loop:
    experiment: Experiment
    data: Data
    cfg: Mapping[str, Any]
    settings: TrainSettings
    model: nn.Module
    optimizer: torch.optim.Optimizer
    shuffle: torch.Generator
    state: TrainerState
    precision: _Precision
    history: list[dict[str, Any]] = field(default_factory=list)

    def run(self, reporter: Reporter) -> FitResult:
        reason: StopReason | None = None
        while reason is None and self.state.epoch < self.settings.max_epochs:
            metrics = self._epoch()
            reason = self._stop_reason(metrics)
            if reason is None and self.state.epoch >= self.settings.max_epochs:
                reason = "completed"
            artifacts: dict[str, bytes] = {}
            if reason is not None:
                metrics["stop_reason"] = reason
                artifacts = self._finish(reason)
                metrics["artifacts"] = len(artifacts)
            self.history.append(metrics)
            reporter.report(metrics, self._snapshot, artifacts)
        return FitResult(
            self.model,
            self.state.epoch,
            reason or "completed",
            self.state.best_val_loss,
            self.history,
        )

    def _finish(self, reason: StopReason) -> dict[str, bytes]:
        """Restore the best weights (unless diverged) and make the experiment's artifacts with them."""
        if reason == "diverged" or not self.state.best_model:
            return {}
        self.model.load_state_dict(self.state.best_model)
        self.model.eval()
        with torch.no_grad():
            return dict(self.experiment.artifacts(self.model, self.data))

    def _epoch(self) -> dict[str, Any]:
        train_loss = self._train_epoch()
        self.state.epoch += 1
        metrics: dict[str, Any] = {"epoch": self.state.epoch, "train_loss": train_loss}
        if self.settings.mutable:
            values = pbt.hp_values(self.cfg, self.settings.mutable)
            self.state.schedule.append({"epoch": float(self.state.epoch), **values})
            metrics.update(pbt.hp_metrics(values))
        if not math.isfinite(train_loss):
            metrics["val_loss"] = math.inf
            return metrics
        val_loss, extra = _evaluate(self.experiment, self.model, self.data.val)
        metrics["val_loss"] = val_loss
        metrics.update(extra)
        return metrics

    def _train_epoch(self) -> float:
        """Mean training loss over the epoch; inf as soon as a batch loss is not finite.

        Each batch loss is read before its step, which on CUDA waits for the GPU. Summing the
        losses on the device and reading them once per epoch was measured on an H100 (digits CNN,
        1 to 8 trials per GPU) and made trials slower (0.94 s -> 1.17 s a trial alone): small
        models are bound by kernel launches, and the sum adds two per batch.
        """
        self.model.train()
        train = self.data.train
        batch_size = max(1, int(self.cfg["batch_size"]))
        order = torch.randperm(len(train), generator=self.shuffle).to(train.inputs.device)
        total, seen = 0.0, 0
        for start in range(0, len(train), batch_size):
            idx = order[start : start + batch_size]
            with self.precision.autocast():
                loss = self.experiment.loss(self.model(train.inputs[idx]), train.targets[idx])
            value = float(loss.detach())
            if not math.isfinite(value):
                return math.inf  # diverged: stop within this epoch, don't step on NaN grads
            self.optimizer.zero_grad(set_to_none=True)
            self._step(loss)
            total += value * len(idx)
            seen += len(idx)
        return total / max(seen, 1)

    def _step(self, loss: Tensor) -> None:
        scaler = self.precision.scaler  # a pass-through unless AMP runs on CUDA
        scaler.scale(loss).backward()
        if self.settings.grad_clip_norm is not None:
            scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip_norm)
        scaler.step(self.optimizer)
        scaler.update()

    def _stop_reason(self, metrics: Mapping[str, Any]) -> StopReason | None:
        reason, best = judge(self.state, self.settings, metrics)
        if best:  # the weights saved as the trial's model.pt and given to the experiment's artifacts
            self.state.best_model = _cpu_copy(self.model.state_dict())
        return reason

    def _snapshot(self) -> TrainerState:
        snap = copy.copy(self.state)
        snap.schedule = list(self.state.schedule)  # later epochs append to the live one
        snap.model = _cpu_copy(self.model.state_dict())
        # On the CPU, whatever device trained: a checkpoint resumes on any node (a retry may land
        # on one without CUDA), and saving it takes no GPU memory. load_state_dict moves it back.
        snap.optimizer = cpu_tree(self.optimizer.state_dict())
        snap.rng = {"torch": torch.get_rng_state(), "shuffle": self.shuffle.get_state()}
        device = next(self.model.parameters(), torch.empty(0)).device
        if device.type == "cuda":
            # Dropout on CUDA draws from the device's generator, not the CPU's: without it a
            # resumed trial would drop other units than the uninterrupted one.
            snap.rng["cuda"] = torch.cuda.get_rng_state(device)
        snap.scaler = self.precision.scaler.state_dict() if self.precision.scaler.is_enabled() else {}
        return snap


def judge(
    state: TrainerState, settings: TrainSettings, metrics: Mapping[str, Any]
) -> tuple[StopReason | None, bool]:
    """One epoch's verdict: (why the trial must stop now, or None; whether this epoch scores best
    so far on the sweep's metric). Updates the state's counters. Shared by the generic loop and
    function trials (``handle``), so both stop alike.

    Diverged: a loss that is not finite, or above ``divergence_factor`` times the reference
    (``state.initial_loss``). Patience: ``val_loss`` has not improved by ``min_delta`` for
    ``patience`` epochs. A loss the epoch does not report is not judged.
    """
    losses = [float(metrics[k]) for k in ("train_loss", "val_loss") if _is_number(metrics.get(k))]
    limit = settings.divergence_factor * max(abs(state.initial_loss), 1e-8)
    if not all(math.isfinite(v) for v in losses) or any(v > limit for v in losses):
        return "diverged", False
    best = _improves(state, settings, metrics.get(settings.metric))
    if not _is_number(metrics.get("val_loss")):
        return None, best
    val = float(metrics["val_loss"])
    if val < state.best_val_loss - settings.min_delta:
        state.best_val_loss = val
        state.bad_epochs = 0
        return None, best
    state.bad_epochs += 1
    patience = settings.patience
    return ("patience" if patience is not None and state.bad_epochs >= patience else None), best


def _improves(state: TrainerState, settings: TrainSettings, value: Any) -> bool:
    """Whether ``value`` of the sweep's metric is the best so far (then kept as best_score)."""
    if not _is_number(value) or not math.isfinite(value):
        return False
    best = state.best_score
    if math.isnan(best) or (value < best if settings.mode == "min" else value > best):
        state.best_score = float(value)
        return True
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _evaluate(experiment: Experiment, model: nn.Module, split: Split) -> tuple[float, dict[str, float]]:
    """(val_loss, metrics) on a whole split, in eval mode without gradients."""
    model.eval()
    with torch.no_grad():
        chunks = [model(split.inputs[i : i + _EVAL_CHUNK]) for i in range(0, len(split), _EVAL_CHUNK)]
        output = _concat(chunks)
        loss = float(experiment.loss(output, split.targets))
        extra = experiment.metrics(output, split.targets) if math.isfinite(loss) else {}
    return loss, {k: float(v) for k, v in extra.items()}


def _concat(chunks: list[Output]) -> Output:
    if len(chunks) == 1:
        return chunks[0]
    first = chunks[0]
    if isinstance(first, Tensor):
        return torch.cat([c for c in chunks if isinstance(c, Tensor)])
    return tuple(torch.cat([c[i] for c in chunks]) for i in range(len(first)))


def _cpu_copy(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def cpu_tree(value: Any) -> Any:
    """A deep copy of an optimizer's state dict (nested dicts and lists) with tensors on the CPU."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: cpu_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(cpu_tree(v) for v in value)
    return copy.deepcopy(value)


def _load_state(
    state: TrainerState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    shuffle: torch.Generator,
    device: torch.device,
) -> None:
    model.load_state_dict(state.model)
    optimizer.load_state_dict(state.optimizer)  # moves the state to the parameters' device
    if state.rng:
        torch.set_rng_state(state.rng["torch"])
        shuffle.set_state(state.rng["shuffle"])
        if "cuda" in state.rng and device.type == "cuda":
            torch.cuda.set_rng_state(state.rng["cuda"], device)
