"""The worker side of a trial: what runs inside a Ray worker process for each trial.

Kept apart from ``tuning`` (the driver side) so that a worker imports only torch, Ray Tune's
reporting API and the trainer: no MLflow, Optuna or terminal code, which would add seconds to
every worker's start-up.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from ray.tune.result import DONE

from hypersweep import pbt, scoring
from hypersweep.experiment import Data, Experiment
from hypersweep.handle import TRIAL_FILE
from hypersweep.registry import SweepData, resolve_experiment
from hypersweep.trainer import MODEL_FILE, TrainerState, TrainSettings, fit

ARTIFACTS_DIR = "artifacts"  # inside a trial's last checkpoint: the experiment's files
TRAINER_FILE = "trainer.pt"  # and its state (its best weights: trainer.MODEL_FILE)
FALLBACK_DEVICE = "cpu-fallback"  # a trial that asked for a GPU and found no CUDA device
HISTORY = "history"  # in a Tune result: every epoch since the previous report, oldest first
EPOCH_TIME = "epoch_time_ms"  # in each epoch of HISTORY: when it ended (tracking.EPOCH_TIME)
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialJob:
    """What every trial of a sweep shares; shipped once to the workers through the object store."""

    experiment: str
    roots: tuple[str, ...]
    settings: TrainSettings
    threads: int
    gpus: float
    allow_cpu_fallback: bool
    metric: str
    mode: str
    data: Any = None  # ObjectRef of the sweep's registry.SweepData on the CPU: made once, by the driver
    # Epochs at which the scheduler decides (ASHA's rungs): always reported, with a checkpoint.
    decision_epochs: frozenset[int] = frozenset()
    report_every_s: float = 0.0  # other epochs wait in the worker up to this long (0: every epoch)
    checkpoint_every_s: float = 0.0  # at most this long between checkpoints (0: every report)
    # On resume: trials the driver's records show finished -> their final result (see trainable).
    finished: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # A function trial (``experiment`` names a function, see ``handle``): the sweep's fixed values
    # for its handle, and where its own MLflow calls go (``function_trial``).
    function: bool = False
    fixed: Mapping[str, Any] = field(default_factory=dict)
    tracking_uri: str = ""
    run_board: str = ""  # the name of the sweep's ``run_board`` actor ("" if none)


# Per worker process (trials reuse it): the experiment and its data on each device used.
_DATA_CACHE: dict[tuple[str, str], tuple[Experiment, Data]] = {}


def trainable(config: dict[str, Any], job: TrialJob) -> None:
    done = job.finished.get(tune.get_context().get_trial_id())
    if done is not None:
        # It finished before the driver crashed, after Tune's last snapshot of the sweep (taken
        # every few checkpoints, not on every one): restored, it must not train again.
        tune.report({**done, DONE: True})
        return
    torch.set_num_threads(job.threads)
    device, label = _device(job.gpus, allow_cpu_fallback=job.allow_cpu_fallback)
    # Where the trial ran, on every result: the driver records it as tags of the trial's run.
    where = {"device": label, "node_id": ray.get_runtime_context().get_node_id()}
    settings = replace(job.settings, device=str(device))
    config = pbt.sampled(config)  # a PBT member's config without the keys it did not sample
    if job.function:
        from hypersweep.function_trial import run_function  # not imported for Experiment trials

        run_function(config, job, settings, _TuneReporter(job, where))
        return
    experiment, data = _experiment_and_data(job, device)
    fit(experiment, data, config, settings, _TuneReporter(job, where))


def _trainer_files(state: TrainerState) -> dict[str, Any]:
    """An Experiment trial's checkpoint: its whole state, and its best weights as model.pt."""
    return {TRAINER_FILE: state.to_dict(), MODEL_FILE: state.best_model or state.model}


def _device(gpus: float, *, allow_cpu_fallback: bool) -> tuple[torch.device, str]:
    """The device Ray assigned (Ray sets CUDA_VISIBLE_DEVICES to the trial's GPU) and its label."""
    if gpus <= 0:
        return torch.device("cpu"), "cpu"
    if torch.cuda.is_available():
        return torch.device("cuda"), f"cuda:{','.join(map(str, ray.get_gpu_ids()))}"
    node = ray.util.get_node_ip_address()
    if not allow_cpu_fallback:
        raise RuntimeError(
            f"the trial asked for {gpus:g} GPU but PyTorch sees no CUDA device on node {node};"
            " set resources.allow_cpu_fallback: true to train on the CPU instead"
        )
    _log.warning("trial asked for %g GPU, no CUDA device on node %s: training on the CPU", gpus, node)
    return torch.device("cpu"), FALLBACK_DEVICE


def _experiment_and_data(job: TrialJob, device: torch.device) -> tuple[Experiment, Data]:
    """The driver's experiment (configured, its data loaded: the state ``load_data`` set on it
    included) and its data, from the object store, so no worker imports the data's loaders or
    reads its files; fetched, and the data moved to ``device``, once per process."""
    key = (job.data.hex(), str(device))
    if key not in _DATA_CACHE:
        resolve_experiment(job.experiment, list(job.roots))  # its module importable: unpickling needs it
        shipped: SweepData = ray.get(job.data)
        _DATA_CACHE[key] = (shipped.experiment, shipped.data.to(device))
    return _DATA_CACHE[key]


class _TuneReporter:
    """Sends a trial's epochs to Tune in batches, some of them with a checkpoint.

    Every report is a round trip through Tune's driver, and every checkpoint a save and a copy to
    storage: per epoch, both cost more than a small model's epoch. So epochs wait in the worker
    and go together (under ``HISTORY``) at the scheduler's decision epochs, at the trial's end, and
    otherwise at most ``report_every_s`` apart. A checkpoint (trainer.pt: the full state,
    model.pt: the best weights so far) goes with the decision and final reports, and with others
    at most ``checkpoint_every_s`` apart: the trial a retry resumes or ASHA stops has exact weights.
    """

    def __init__(self, job: TrialJob, where: Mapping[str, str] | None = None) -> None:
        self.job = job
        self.where = dict(where or {})
        self._pending: list[dict[str, Any]] = []
        self._last_report = self._last_checkpoint = time.monotonic()
        self._result = scoring.NONE_YET  # the trial's result so far (see scoring)

    def restore(self) -> TrainerState | None:
        saved = self.load(TRAINER_FILE)
        if saved is None:
            return None
        state = TrainerState.from_dict(saved)
        self._result = state.best_score  # the epochs before the checkpoint count too
        return state

    def load(self, name: str, *, weights_only: bool = True) -> Any:
        """File ``name`` of the trial's checkpoint (None without one). ``weights_only=False`` only
        for a file this trial wrote itself: a function trial's state may hold any object."""
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            # map_location: checkpoints written before they were kept on the CPU may hold CUDA
            # tensors, and a retry may run where there is no CUDA device.
            return torch.load(Path(directory) / name, weights_only=weights_only, map_location="cpu")

    def saved(self) -> Mapping[str, Any] | None:
        """A function trial's checkpoint (``handle.Sink``): what its handle restores."""
        saved: Mapping[str, Any] | None = self.load(TRIAL_FILE, weights_only=False)  # its own file
        if saved is not None:
            self._result = float(saved.get("guard", {}).get("best_score", math.nan))
        return saved

    def report(
        self,
        metrics: dict[str, Any],
        state: Callable[[], TrainerState | Mapping[str, Any]],
        artifacts: Mapping[str, bytes] | None = None,
    ) -> None:
        """``state()``: the trainer's state, or the files of a function trial's checkpoint."""
        self._pending.append({**metrics, EPOCH_TIME: int(time.time() * 1000)})  # as measured
        if metrics.get("stop_reason") != "diverged":
            self._result = scoring.better(self._result, metrics.get(self.job.metric), self.job.mode)
        now = time.monotonic()
        decisive = "stop_reason" in metrics or metrics["epoch"] in self.job.decision_epochs
        if not decisive and now - self._last_report < self.job.report_every_s:
            return
        result = {**self._scored(self._pending[-1]), **self.where, HISTORY: self._pending}
        if "stop_reason" in metrics:
            # The trial's last report. Marked done, Tune stops the trial on it; otherwise it
            # would ask the worker for one more result, only to learn that the function returned:
            # a round trip per trial through Tune's loop.
            result[DONE] = True
        self._pending, self._last_report = [], now
        if not decisive and now - self._last_checkpoint < self.job.checkpoint_every_s:
            tune.report(result)
            return
        self._last_checkpoint = now
        snapshot = state()
        files = snapshot if isinstance(snapshot, Mapping) else _trainer_files(snapshot)
        with tempfile.TemporaryDirectory(prefix="hypersweep-ckpt-") as directory:
            for name, content in files.items():
                torch.save(content, Path(directory) / name)
            for name, content in (artifacts or {}).items():
                target = Path(directory) / ARTIFACTS_DIR / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(directory))

    def _scored(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """What Tune (ASHA, the searcher) reads as the metric is the trial's result so far, and the
        worst value for a diverged trial (see ``scoring``); the history keeps each epoch's
        measured values, for MLflow."""
        mode = self.job.mode
        result = scoring.worst(mode) if metrics.get("stop_reason") == "diverged" else self._result
        return {**metrics, self.job.metric: scoring.or_worst(result, mode)}
