"""Driver side: Ray Tune's trial events -> the sweep's MLflow recorder and live view, and the
settling of trials Tune finished while no driver listened (a crash between the two)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from ray import tune

from hypersweep.console import Progress
from hypersweep.pbt import sampled
from hypersweep.pbt_scheduler import take_exploits
from hypersweep.run_board import RunBoard
from hypersweep.tracking import (
    BestTrial,
    SweepRecorder,
    redact,
)
from hypersweep.trial import ARTIFACTS_DIR, HISTORY

STATUS_BY_REASON = {"completed": "completed", "patience": "early_stopped", "diverged": "diverged"}

# Live driver-side objects of the sweeps in this process. Tune pickles its callbacks with the
# experiment state, so a callback holds only the sweep id and finds these through it.
LIVE: dict[str, tuple[SweepRecorder, Progress | None]] = {}
# A sweep of function trials: where its trials' run ids are published (see ``run_board``).
BOARDS: dict[str, RunBoard] = {}


def settle(recorder: SweepRecorder, grid: tune.ResultGrid, scheduler: str) -> None:
    """Trials Tune finished while no driver was listening (a crash between the two) get their end;
    runs of trials that Tune itself lost in the crash, and did not run again, end ``interrupted``.
    ``scheduler``: the stop reason of a trial that did not stop itself."""
    known = {str((r.metrics or {}).get("trial_id", "")) for r in results(grid)}
    if "" not in known:  # a trial that never reported cannot be told apart: leave every run then
        recorder.end_lost_trials(known)
    for result in results(grid):
        metrics = result.metrics or {}
        trial_id = str(metrics.get("trial_id", ""))
        if not trial_id or recorder.is_finished(trial_id) or not recorder.knows(trial_id):
            continue
        if result.error is not None:
            recorder.trial_finished(
                trial_id, status="failed", stop_reason="error", error=error_line(result.error)
            )
        elif metrics.get("done") or metrics.get("stop_reason"):
            reason = str(metrics.get("stop_reason") or scheduler)
            recorder.trial_finished(
                trial_id, status=STATUS_BY_REASON.get(reason, "early_stopped"), stop_reason=reason
            )


# -- driver side: Tune events -> MLflow and the live view -------------------------------------
class TrackingCallback(tune.Callback):
    """Tune's trial events -> the sweep's recorder and live view (found by sweep id, see LIVE)."""

    def __init__(self, sweep_id: str, scheduler: str = "asha") -> None:
        self.sweep_id = sweep_id
        self.scheduler = scheduler  # the stop reason of a trial the scheduler stopped

    def _live(self) -> tuple[SweepRecorder, Progress | None]:
        return LIVE[self.sweep_id]

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        recorder, progress = self._live()
        config = sampled(trial.config)  # a PBT trial's config names keys it did not sample
        recorder.adopt_lost(trial.trial_id, config, {t.trial_id for t in trials})
        recorder.trial_started(trial.trial_id, config)
        if progress and not recorder.is_finished(trial.trial_id):
            progress.trial_started(trial.trial_id)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        recorder, progress = self._live()
        epochs = result.get(HISTORY) or ()
        recorder.trial_result(trial.trial_id, result, epochs=epochs)
        if progress:
            progress.trial_result(trial.trial_id, result, epochs=epochs)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        _, progress = self._live()
        if progress:
            # The staged error file, which Tune appends to on each failure: storage's copy (what
            # ``trial.get_error()`` reads) is synced later and would name the failure before.
            cause = error_line(error_text(trial))
            progress.trial_retried(
                trial.trial_id,
                f"failure {trial.num_failures}" + (f" ({cause})" if cause else ""),
                checkpointed=trial.checkpoint is not None,
            )

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        recorder, _ = self._live()
        last = trial.last_result or {}
        # A trial that did not stop itself was stopped by the scheduler (its type is the reason;
        # a callback pickled by an earlier version knew only ASHA).
        reason = str(last.get("stop_reason") or getattr(self, "scheduler", "asha"))
        if last.get("artifacts") and trial.checkpoint is not None:
            with trial.checkpoint.as_directory() as directory:
                recorder.log_trial_artifacts(trial.trial_id, Path(directory) / ARTIFACTS_DIR)
        self._finish(trial, STATUS_BY_REASON.get(reason, "early_stopped"), reason)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._finish(trial, "failed", "error", error=error_text(trial))

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        recorder, _ = self._live()
        for exploit in take_exploits(self.sweep_id):  # PBT's, made in this step
            recorder.trial_exploited(exploit)
        recorder.poll()
        board = BOARDS.get(self.sweep_id)
        if board is not None:
            board.publish(recorder.open_run_ids())

    def _finish(self, trial: Any, status: str, reason: str, error: str = "") -> None:
        recorder, progress = self._live()
        if recorder.is_finished(trial.trial_id):
            return  # finished before a crash; resumed, it only reported its end again
        recorder.trial_finished(trial.trial_id, status=status, stop_reason=reason, error=error)
        if progress:
            epochs = int((trial.last_result or {}).get("epoch", 0))
            progress.trial_finished(trial.trial_id, status=status, epochs=epochs)


def error_text(trial: Any) -> str:
    """The trial's error trace. Tune writes it to the driver's staging folder first and syncs it
    to storage later, so ``trial.get_error()`` (which reads storage) is often still None here."""
    staged = trial.error_file
    if staged and Path(staged).is_file():
        return Path(staged).read_text(errors="replace")
    return str(trial.get_error() or "")


def error_line(error: object) -> str:
    """The root cause of a trial's error in one line: the last line of Ray's error text
    (``trial.get_error()`` is the text of the trial's error file, a traceback)."""
    lines = [line.strip() for line in str(error or "").splitlines() if line.strip()]
    return redact(lines[-1]) if lines else ""  # shown on the terminal: a URL it names keeps no token


def results(grid: tune.ResultGrid | None) -> list[tune.Result]:
    return [grid[i] for i in range(len(grid))] if grid is not None else []


def trial_seconds(grid: tune.ResultGrid | None) -> float:
    return sum(float(r.metrics.get("time_total_s", 0.0)) for r in results(grid) if r.metrics)


def checkpoint_of(grid: tune.ResultGrid | None, best: BestTrial | None) -> Any:
    """The best trial's last checkpoint as a local directory context; its model.pt = best weights."""
    if best is None:
        return None
    for result in results(grid):
        if (result.metrics or {}).get("trial_id") == best.trial_id and result.checkpoint is not None:
            return result.checkpoint.as_directory()
    return None


def schedule_in(checkpoint: Path) -> list[dict[str, float]]:
    """The per-epoch values of PBT's mutated keys that trained a checkpoint's weights from
    scratch (``TrainerState.schedule``: a donor's epochs, then the trial's own)."""
    state = torch.load(checkpoint / "trainer.pt", weights_only=True, map_location="cpu")
    return [dict(epoch) for epoch in state.get("schedule", [])]
