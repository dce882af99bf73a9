"""``hypersweep.Trial``: all a user's own training loop sees of the platform (a function trial).

A sweep file's ``experiment:`` may name a plain function ``train(config, trial)`` instead of an
``Experiment`` class. The function trains as it likes and tells the platform each epoch's
results through ``trial.report``; it saves what it needs to continue with ``trial.checkpoint``
and gets it back from ``trial.restore`` when a retry or a resumed sweep runs it again. The
platform keeps for it what it keeps for an ``Experiment``: patience and the divergence guard
(judged here, on the reported losses, as the generic loop judges them), the scheduler's stops,
retries, resume, the MLflow run conventions.

Plain Python and torch: no Ray, no MLflow. In a sweep the worker gives the handle a ``Sink`` that
talks to Ray Tune (``function_trial``); ``Trial()`` made directly keeps everything in memory, so
the function runs and tests on its own (``python -m my_package.train`` with a local handle).
"""

from __future__ import annotations

import contextlib
import math
import posixpath
import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal, Protocol, TypeVar

import torch

from hypersweep.trainer import MODEL_FILE, StopReason, TrainerState, TrainSettings, cpu_tree, judge

# Result keys the platform itself uses (its own and Ray Tune's): not names for a user's metric.
RESERVED = frozenset(
    {"epoch", "stop_reason", "artifacts", "done", "history", "device", "node_id", "node_ip", "trial_id"}
    | {"epoch_time_ms", "timestamp", "training_iteration", "time_this_iter_s", "time_total_s"}
)
METRICS_ATTRIBUTE = "hypersweep_metrics"  # set by ``reports``: the metrics a function declares

_F = TypeVar("_F", bound=Callable[..., Any])


def reports(*names: str) -> Callable[[_F], _F]:
    """Declare the metrics a function trial reports besides ``train_loss`` and ``val_loss``:

    ``@hypersweep.reports("val_accuracy")`` above ``def train(config, trial)``. A sweep whose
    ``metric`` the function declares it does not report is then bad input, refused at the start.
    """

    def declare(fn: _F) -> _F:
        setattr(fn, METRICS_ATTRIBUTE, tuple(names))
        return fn

    return declare


class TrialStopped(BaseException):
    """Raised by ``Trial.report`` when patience or the divergence guard ends the trial.

    A ``BaseException``, as ``SystemExit`` (which is how Ray Tune ends a function trial its
    scheduler stops): a loop's ``except Exception`` does not swallow it, its ``finally`` runs.
    """

    def __init__(self, reason: StopReason) -> None:
        super().__init__(f"the trial ended: {reason}")
        self.reason = reason


class Sink(Protocol):
    """Where a handle sends its epochs: Ray Tune in a sweep (``function_trial``), memory alone."""

    def saved(self) -> Mapping[str, Any] | None:
        """What the last ``report`` with a checkpoint saved (``Trial._saved``), or None."""

    def report(
        self,
        metrics: dict[str, Any],
        state: Callable[[], Mapping[str, Any]],
        artifacts: Mapping[str, bytes] | None = None,
    ) -> None:
        """One epoch; ``state()`` gives the files of a checkpoint if the sink wants one."""


class _Memory:
    """The sink of a handle made outside a sweep: keeps the last checkpoint."""

    def __init__(self) -> None:
        self._last: Mapping[str, Any] | None = None

    def saved(self) -> Mapping[str, Any] | None:
        return self._last

    def report(
        self,
        metrics: dict[str, Any],
        state: Callable[[], Mapping[str, Any]],
        artifacts: Mapping[str, bytes] | None = None,
    ) -> None:
        self._last = state()


# When a checkpoint is taken relative to the report of its epoch: learnt from the function's
# first calls (see ``Trial.checkpoint``) and kept with its checkpoints.
_Order = Literal["unknown", "after", "before"]
TRIAL_FILE = "trial.pt"  # a function trial's checkpoint: what it restores (and MODEL_FILE)


class Trial:
    """The handle a function trial gets: ``def train(config: dict, trial: hypersweep.Trial)``.

    ``max_epochs``, ``seed``, ``device`` (the GPU Ray assigned the trial, or the CPU) and
    ``fixed`` (the sweep's fixed values) are the sweep's; each report holds the sweep's
    ``metric``. Made directly, ``Trial(max_epochs=5)`` runs a function outside any sweep, with
    the platform's default patience and divergence guard (``metric``/``mode``: what its best
    checkpoint is judged by).
    """

    def __init__(
        self,
        *,
        max_epochs: int = 10,
        seed: int = 0,
        device: str | torch.device = "cpu",
        fixed: Mapping[str, Any] | None = None,
        metric: str = "val_loss",
        mode: Literal["min", "max"] = "min",
        settings: TrainSettings | None = None,
        trial_id: str = "local",
        sink: Sink | None = None,
        quiet: bool = False,
    ) -> None:
        self.settings = settings or TrainSettings(
            max_epochs=max_epochs, seed=seed, device=str(device), metric=metric, mode=mode
        )
        self.fixed: Mapping[str, Any] = MappingProxyType(dict(fixed or {}))
        self.trial_id = trial_id
        self.history: list[dict[str, Any]] = []  # every epoch reported, as reported
        self.stop_reason: StopReason | None = None  # why the trial ended; None while it goes on
        self._sink: Sink = sink or _Memory()
        self._quiet = quiet or sink is not None  # a local handle prints each epoch
        self._guard = TrainerState()  # patience and divergence counters (no weights)
        self._order: _Order = "unknown"
        self._held: dict[str, Any] | None = None  # the last epoch, until its checkpoint comes
        self._held_best = False  # whether the held epoch scores best so far on the sweep's metric
        self._state: Any = None  # the last checkpoint (a copy, and the RNG's), not yet given an epoch
        self._saved: dict[str, Any] | None = None  # the checkpoint of an epoch: what a retry restores
        self._best: Any = None  # the state checkpointed after the best epoch (the trial's model.pt)
        self._best_epoch = 0
        self._artifacts: dict[str, bytes] = {}
        self._last_call = ""

    # -- what the sweep gives the function -------------------------------------------------
    @property
    def max_epochs(self) -> int:
        return self.settings.max_epochs

    @property
    def seed(self) -> int:
        return self.settings.seed

    @property
    def device(self) -> torch.device:
        return torch.device(self.settings.device)

    @property
    def epoch(self) -> int:
        """The last epoch reported (after ``restore``: the restored checkpoint's); 0 before any."""
        return self._guard.epoch

    # -- what the function gives the sweep -------------------------------------------------
    def restore(self) -> Any:
        """The state the trial last checkpointed, when a retry or a resumed sweep runs it again;
        None on a fresh start. Continue from the epoch after ``trial.epoch``."""
        saved = self._sink.saved()
        if saved is None or saved.get("state") is None:
            return None
        self._guard = TrainerState(**saved["guard"])
        self._order = saved.get("order", "unknown")
        self._saved = dict(saved)
        self._best, self._best_epoch = saved.get("best"), int(saved.get("best_epoch", 0))
        self._artifacts = {**saved.get("artifacts", {}), **self._artifacts}
        rng = saved.get("rng") or {}
        if "torch" in rng:  # dropout and sampling go on as they would have
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        return saved["state"]

    def report(self, epoch: int, /, **metrics: float | torch.Tensor) -> None:
        """One epoch's results: ``train_loss``, ``val_loss`` and the function's own metrics.

        Returns while the trial goes on. Raises ``TrialStopped`` when patience or the divergence
        guard ends it; when the sweep's scheduler stops it, Ray Tune ends the function its way
        (``SystemExit`` from this call, or the call does not return).
        """
        if self.stop_reason is not None:
            raise TrialStopped(self.stop_reason)
        values = self._checked(epoch, metrics)
        self._release()  # the epoch before goes now, with or without its checkpoint
        if self._guard.epoch == 0:  # the divergence guard's reference: the first loss reported
            first = values.get("val_loss", values.get("train_loss", math.nan))
            self._guard.initial_loss = first if math.isfinite(first) else math.nan
        self._guard.epoch = epoch
        reason, best = judge(self._guard, self.settings, values)
        if reason is None and epoch >= self.max_epochs:
            reason = "completed"
        values["epoch"] = epoch
        if reason is not None:
            values["stop_reason"] = reason
        self.history.append(values)
        self._held, self._held_best = values, best
        self._last_call = "report"
        self._echo(values)
        if self._order == "before":
            self._attach(self._state)
        if reason is not None:
            # The trial's last epoch waits for the function's end (``close``): reported, it would
            # end the trial in Ray Tune while the function's own last lines still run.
            self.stop_reason = reason
            if reason != "completed":
                raise TrialStopped(reason)
        elif self._order != "after":
            self._release()

    def checkpoint(self, state: Any) -> None:
        """Keep ``state`` (state dicts, counters: anything ``torch.save`` takes) for ``restore``.

        Call it each epoch, after ``report`` (or before it, each epoch alike): a checkpoint goes
        with its epoch's report, so the epoch the scheduler judges, or a retry resumes, is the
        state's. The state is copied (tensors to the CPU) at once: training on changes nothing.
        """
        copied = (cpu_tree(state), self._rng())
        if self._order == "unknown":
            self._order = "after" if self._last_call == "report" else "before"
        self._last_call = "checkpoint"
        if self._order == "after" and self._held is not None:
            self._attach(copied)
            if self.stop_reason is None:  # the last epoch waits for the function's end
                self._release()
        else:
            self._state = copied

    def log_artifact(self, name: str, content: bytes) -> None:
        """A file (``name`` relative, e.g. ``plots/curve.png``) for the trial's MLflow run."""
        normal = posixpath.normpath(name)
        if not name or normal.startswith(("..", "/")) or normal == ".":
            raise ValueError(f"artifact name '{name}' must be a relative path inside the run")
        self._artifacts[normal] = bytes(content)

    # -- the end ---------------------------------------------------------------------------
    def run(
        self, fn: Callable[[dict[str, Any], Trial], Any], config: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Call ``fn(config, self)`` as a sweep's worker does: PyTorch seeded with ``seed`` (as
        the generic loop is before it builds a model), a stop by patience or divergence ending it
        quietly, the trial ending with the function. Returns the epochs reported."""
        torch.manual_seed(self.seed)
        with contextlib.suppress(TrialStopped):  # its reason is in stop_reason and the last epoch
            fn(dict(config), self)
        self.close()
        return self.history

    def close(self) -> None:
        """The function returned: its last epoch goes, marked the trial's end. A function that
        reported nothing fails its trial."""
        if not self.history:
            raise RuntimeError(
                "the training function returned without reporting an epoch: call"
                " trial.report(epoch, val_loss=...) once per epoch"
            )
        last = self.history[-1]
        if "stop_reason" not in last:  # it chose to end before max_epochs
            last["stop_reason"] = self.stop_reason = "completed"
            if self._held is None:  # sent already: its end goes as that epoch again
                self._held, self._held_best = dict(last), False
        self._release()

    # -- inside ----------------------------------------------------------------------------
    def _checked(self, epoch: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"epoch must be a whole number from 1 on, not {epoch!r}")
        if epoch <= self._guard.epoch:
            raise ValueError(
                f"epoch {epoch} reported after epoch {self._guard.epoch}: epochs count up"
                " (after trial.restore(), continue from trial.epoch + 1)"
            )
        values: dict[str, Any] = {}
        for key, value in metrics.items():
            if key in RESERVED:
                raise ValueError(f"'{key}' is the platform's own result key: report it under another name")
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"metric '{key}' must be a number, not {type(value).__name__}")
            values[key] = float(value)
        if self.settings.metric not in values:  # the trial's result: what the sweep ranks by
            got = ", ".join(values) or "none"
            raise ValueError(f"the sweep's metric '{self.settings.metric}' is not reported (got: {got})")
        return values

    def _echo(self, values: Mapping[str, Any]) -> None:
        if not self._quiet:
            shown = " ".join(f"{k}={v:.4g}" for k, v in values.items() if isinstance(v, float))
            end = f" ({values['stop_reason']})" if "stop_reason" in values else ""
            print(f"epoch {values['epoch']}: {shown}{end}", file=sys.stderr)

    def _rng(self) -> dict[str, torch.Tensor]:
        """PyTorch's random state as the function checkpoints (the CUDA device's too): a retry
        draws the same dropout masks and samples as the trial would have."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda" and torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return rng

    def _attach(self, checkpoint: tuple[Any, dict[str, torch.Tensor]] | None) -> None:
        """``checkpoint`` (a state and the RNG's) is the held epoch's: what a retry restores,
        and the trial's best if it is."""
        if checkpoint is None or self._held is None:
            return
        self._state = None
        state, rng = checkpoint
        if self._held_best:
            self._best, self._best_epoch = state, self._held["epoch"]
        self._saved = {
            "state": state,
            "rng": rng,
            "guard": {k: v for k, v in self._guard.to_dict().items() if not isinstance(v, dict)},
            "order": self._order,
            "best": self._best,
            "best_epoch": self._best_epoch,
            "artifacts": dict(self._artifacts),  # logged so far: a retry keeps them
        }

    def _release(self) -> None:
        """Send the held epoch (with the artifacts so far, counted in its ``artifacts``)."""
        held, self._held = self._held, None
        if held is None:
            return
        if self._artifacts:
            held["artifacts"] = len(self._artifacts)
        self._sink.report(held, self._files, dict(self._artifacts))

    def _files(self) -> dict[str, Any]:
        """A checkpoint: the state to restore, and the best state as the trial's model (none
        while the function has checkpointed nothing)."""
        saved = self._saved or {"state": None}
        model = saved.get("best") if saved.get("best") is not None else saved["state"]
        return {TRIAL_FILE: saved} | ({MODEL_FILE: model} if model is not None else {})
