"""A sweep's driver: preflight, the sweep's folder and manifest, the fit, its end.

The Tuner is built in ``tuner``; Tune's trial events reach MLflow and the live view through
``tune_events``. ``run_sweep`` is the whole sweep: connect to Ray, open the MLflow parent run, run the trials
(OptunaSearch proposes, ASHA stops, several trials at once), record the best trial, end the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from ray import tune

from hypersweep import tune_log
from hypersweep.config import SweepSpec, import_roots
from hypersweep.console import Progress
from hypersweep.errors import ConfigError, note_sweep_folder
from hypersweep.manifest import (
    FORMAT,
    MANIFEST,
    check_storage_path,
    mark_finished,
    read_manifest,
    spec_of,
    storage_path,
    sweep_folder,
    trials_location,
    trials_of,
)
from hypersweep.pbt_scheduler import take_exploits
from hypersweep.ray_node import LocalNode
from hypersweep.ray_private import actors_inherit_env
from hypersweep.registry import is_function, resolve_target
from hypersweep.report import at_sweep_end
from hypersweep.run_board import RunBoard
from hypersweep.run_names import RunNames
from hypersweep.sweep_start import Ready, started
from hypersweep.tracking import (
    WARM_START_TAG,
    BestTrial,
    SweepRecorder,
    absolute_uri,
    check_tracking_uri,
    redact,
    redact_settings,
    resolve_tracking_uri,
)
from hypersweep.trainer import MODEL_FILE
from hypersweep.trial import FALLBACK_DEVICE
from hypersweep.tune_events import BOARDS, TrackingCallback, checkpoint_of, schedule_in, trial_seconds
from hypersweep.tune_events import LIVE as _LIVE
from hypersweep.tune_events import STATUS_BY_REASON as STATUS_BY_REASON
from hypersweep.tune_events import error_line as _error_line
from hypersweep.tune_events import settle as _settle
from hypersweep.tuner import build_tuner as build_tuner
from hypersweep.tuner import trainable_of as _trainable_of
from hypersweep.warm_start import WarmStart

# Tune's CSV/JSON/TensorBoard loggers duplicate what MLflow records and cost I/O per result.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# Tune's own console output (tables per result) would drown the CLI's compact progress line.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Tune warns whenever two of its snapshots fall within 5 s: short trials checkpointing at every
# rung make that routine, at a cost build_tuner bounds. Its warning of a slow snapshot stays.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
optuna.logging.set_verbosity(optuna.logging.WARNING)


TRACKING_STATE = "hypersweep-tracking.jsonl"  # in the sweep's folder
_EARLIER_TRACKING_STATE = "hypersweep-tracking.json"  # one JSON object, as earlier versions saved it


@dataclass(frozen=True)
class SweepOutcome:
    sweep_id: str
    parent_run_id: str
    tracking_uri: str
    storage_path: str  # Tune's trial state and checkpoints: a folder or a URI
    folder: str  # the sweep's folder on this machine: manifest and tracking journal
    best: BestTrial | None
    statuses: dict[str, int]
    wall_seconds: float
    trial_seconds: float  # sum of the trials' own running times
    interrupted: bool = False  # Ctrl-C: resumable with `hypersweep resume folder`
    unsent: int = 0  # tracking writes kept in folder because the server never came back
    tracking_error: str = ""
    cpu_fallbacks: int = 0  # trials that asked for a GPU and trained on the CPU
    first_error: str = ""  # the first failed trial's error, for the summary
    dropped: int = 0  # writes MLflow refused (named in their runs' hypersweep.dropped tag)
    first_dropped: str = ""
    tune_log: str = ""  # "Tune logged 3 warnings, 1 error: <its file>"; "" when it logged none
    report: Any = None  # report.ReportSummary of the report logged to the parent run
    report_error: str = ""  # why no report was made ("" when one was, or none was due)

    @property
    def failed(self) -> bool:
        return self.best is None


def new_sweep_id(name: str) -> str:
    """``<name>-<UTC time>-<4 hex>``. Sweeps of one name are often started together (a script,
    a job array): the random part keeps their ids apart, also in a tracking store they share
    while their storage differs (``hypersweep best`` finds a sweep by its id there)."""
    return f"{name}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def run_sweep(
    spec: SweepSpec,
    *,
    address: str | None = None,
    progress: Progress | None = None,
    tracking_client: Any = None,
    node: LocalNode | None = None,
) -> SweepOutcome:
    """Preflight (experiment, tracking server, cluster, resources, storage, data), then the sweep.

    Every check that can fail on bad input runs before the MLflow parent run is created.
    ``tracking_client`` replaces MlflowClient (benchmarks measure without tracking). ``node``:
    the local Ray node, started earlier by the caller (``ray_node.sweep_node``); the sweep stops it.
    """
    roots = import_roots(spec.source)
    try:
        resolve_target(spec.experiment, roots, source=str(spec.source))
        uri = resolve_tracking_uri(spec.tracking_uri)
        check_tracking_uri(uri, source=str(spec.source))
        check_storage_path(spec.storage, source=str(spec.source))
    except BaseException:
        if node is not None:
            node.stop()
        raise
    with started(spec, roots, address, uri, tracking_client, node, warm=True) as ready:
        return _Sweep.new(spec, roots, ready.concurrent, address).use(ready).run(progress)


def resume_sweep(
    folder: Path,
    manifest: Mapping[str, Any],
    *,
    tracking_uri: str | None = None,
    address: str | None = None,
    progress: Progress | None = None,
    node: LocalNode | None = None,
    storage: str | None = None,
) -> SweepOutcome:
    """Finish an interrupted sweep (``find_sweep`` gives folder and manifest): the same parent run,
    finished trials kept, the searcher's and scheduler's state restored, running trials reattached
    to their runs and continued from their last checkpoint. ``node`` as for ``run_sweep``."""
    spec = spec_of(manifest)
    uri = tracking_uri or str(manifest["tracking_uri"])
    roots = list(manifest["roots"])
    address = address or manifest.get("address")
    try:
        trials = trials_of(folder, manifest, storage)
        if "***" in uri:
            raise ConfigError(
                str(folder), "tracking_uri", "its credentials were not stored: pass --tracking-uri"
            )
        uri = resolve_tracking_uri(uri)
        # A server still down: one line (exit 2), the sweep's backlog kept for the next resume.
        check_tracking_uri(uri, source=str(folder))
    except BaseException:
        if node is not None:
            node.stop()
        raise
    with started(spec, roots, address, uri, None, node) as ready:
        sweep = _Sweep(spec, roots, ready.concurrent, str(manifest["sweep_id"]), folder, address, trials)
        return sweep.use(ready).resume(uri, progress)


def find_sweep(ref: str, *, storage: str | None) -> tuple[Path, dict[str, Any]]:
    """The folder and manifest of a sweep given its folder or its id, with Tune's state to resume
    from; ConfigError for anything else."""
    folder, manifest = read_manifest(ref, storage=storage)
    check_resumable(trials_of(folder, manifest, storage))
    return folder, manifest


def check_resumable(trials: str) -> None:
    """``trials``: where the sweep's Tune state is (``manifest.trials_of``)."""
    if not tune.Tuner.can_restore(trials):
        raise ConfigError(trials, "", "Ray Tune saved no state for this sweep yet: nothing to resume")


class _Sweep:
    """One sweep's driver: the Tuner, its recorder, its folder (manifest + tracking state) and
    where Tune keeps its trials (``trials``: the same folder, or a storage URI)."""

    def __init__(
        self,
        spec: SweepSpec,
        roots: list[str],
        concurrent: int,
        sweep_id: str,
        folder: Path,
        address: str | None = None,
        trials: str | None = None,
    ) -> None:
        self.spec, self.roots, self.concurrent = spec, roots, concurrent
        self.sweep_id, self.folder, self.address = sweep_id, folder, address
        self.trials = trials or str(folder)
        self.tracking_client: Any = None  # None: a real MlflowClient for the tracking URI
        self.data: Any = None  # ObjectRef of the sweep's SweepData (experiment + data), for every trial
        self.function = is_function(resolve_target(spec.experiment, roots, source=str(spec.source)))
        self.warm: WarmStart | None = None

    @classmethod
    def new(cls, spec: SweepSpec, roots: list[str], concurrent: int, address: str | None) -> _Sweep:
        sweep_id = new_sweep_id(spec.name)
        folder, trials = sweep_folder(spec.storage, sweep_id), trials_location(spec.storage, sweep_id)
        return cls(spec, roots, concurrent, sweep_id, folder, address, trials)

    def use(self, ready: Ready) -> _Sweep:
        """Take what ``_started`` made ready: the tracking client and the data."""
        self.tracking_client, self.data, self.warm = ready.client, ready.data, ready.warm
        return self

    def _recorder(self, uri: str) -> SweepRecorder:
        state = self.folder / TRACKING_STATE
        earlier = self.folder / _EARLIER_TRACKING_STATE
        if earlier.is_file() and not state.exists():
            earlier.rename(state)  # the journal reads the earlier format and appends to it
        return SweepRecorder(
            tracking_uri=uri,
            metric=self.spec.metric,
            mode=self.spec.mode,
            state_file=state,
            client=self.tracking_client,
            names=RunNames.of_sweep(self.spec.search_space.swept, self.spec.num_samples),
        )

    def run(self, progress: Progress | None) -> SweepOutcome:
        self._claim_folder()
        with self._crash_noted():
            recorder = self._recorder(resolve_tracking_uri(self.spec.tracking_uri))
            parent = recorder.start_sweep(
                name=self.spec.name,
                sweep_id=self.sweep_id,
                settings=self.spec.resolved(),
                tags={WARM_START_TAG: ",".join(self.warm.sources)} if self.warm else {},
            )
            self._write_manifest(recorder.tracking_uri)
            if progress is not None and self.warm is not None:
                progress.note(self.warm.line())
        with self._crash_noted(), tune_log.kept_in(self.folder) as logged:
            tuner = build_tuner(
                self.spec,
                roots=self.roots,
                data=self.data,
                sweep_id=self.sweep_id,
                concurrent=self.concurrent,
                callbacks=[TrackingCallback(self.sweep_id, self.spec.scheduler.type)],
                folder=self.folder,
                seeded=self.warm.trials if self.warm else (),
                tracking_uri=absolute_uri(recorder.tracking_uri),
            )
            return self._fit(tuner, recorder, parent, progress, logged)

    @contextlib.contextmanager
    def _crash_noted(self) -> Iterator[None]:
        """Anything unexpected raised from here on is a crash of this sweep: its report (the
        traceback) belongs in the sweep's folder, beside what `resume` reads."""
        try:
            yield
        except Exception as exc:
            note_sweep_folder(exc, self.folder)
            raise

    def _claim_folder(self) -> None:
        """Make the sweep's folder, which must be new: two sweeps sharing one would write one
        manifest, one tracking journal and one Tune state. Taken, the sweep draws another id."""
        for _ in range(100):
            try:
                self.folder.mkdir(parents=True)
                return
            except FileExistsError:
                self.sweep_id = new_sweep_id(self.spec.name)
                self.folder = sweep_folder(self.spec.storage, self.sweep_id)
                self.trials = trials_location(self.spec.storage, self.sweep_id)
        raise RuntimeError(f"no new sweep folder could be made next to {self.folder}")

    def resume(self, uri: str, progress: Progress | None) -> SweepOutcome:
        with self._crash_noted():
            recorder = self._recorder(uri)
            recorder.resume()
            if progress is not None:
                progress.finished.update(recorder.statuses())
            trainable = _trainable_of(
                self.spec,
                self.roots,
                self.data,
                recorder.finished_results(),
                sweep_id=self.sweep_id,
                tracking_uri=absolute_uri(uri),
            )
            with tune_log.kept_in(self.folder) as logged:
                tuner = tune.Tuner.restore(self.trials, trainable=trainable)
                return self._fit(tuner, recorder, recorder.parent_run_id, progress, logged)

    def _write_manifest(self, tracking_uri: str) -> None:
        data = self.spec.resolved()
        data["storage"] = storage_path(self.spec.storage)
        manifest = {
            "format": FORMAT,
            "sweep_id": self.sweep_id,
            "source": str(self.spec.source.resolve()),
            "roots": self.roots,
            "address": self.address,
            "trials": redact(self.trials),
            "tracking_uri": redact(tracking_uri),
            # URIs only: `resume` rebuilds the sweep's data from these fixed values, which Tune's
            # own state in this folder holds verbatim anyway (a key-named secret stays usable).
            "spec": redact_settings(data, by_key=False),
        }
        (self.folder / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")

    def _fit(
        self,
        tuner: tune.Tuner,
        recorder: SweepRecorder,
        parent: str,
        progress: Progress | None,
        logged: tune_log.TuneLog,
    ) -> SweepOutcome:
        """Run the trials and end the sweep; Tune logs into ``logged`` meanwhile (``tune_log``):
        a failed trial is reported in one line by the live view and recorded in MLflow
        (hypersweep.error), its whole worker traceback is in Tune's log file."""
        started = time.monotonic()
        _LIVE[self.sweep_id] = (recorder, progress)
        if self.function:  # its trials' own MLflow calls need their run ids (``run_board``)
            BOARDS[self.sweep_id] = RunBoard(self.sweep_id)
        results: tune.ResultGrid | None = None
        interrupted = True  # until fit() returns with every trial accounted for
        recorder.start_writer()
        try:
            with actors_inherit_env() if self.address is None else contextlib.nullcontext():
                results = tuner.fit()
            recorder.stop_writer()  # from here on, this thread writes (settle, best, end)
            for exploit in take_exploits(self.sweep_id):  # PBT's of the last step
                recorder.trial_exploited(exploit)
            _settle(recorder, results, self.spec.scheduler.type)
            interrupted = sum(recorder.statuses().values()) < self.spec.num_samples
        finally:
            recorder.stop_writer()
            _LIVE.pop(self.sweep_id, None)
            board = BOARDS.pop(self.sweep_id, None)
            if board is not None:
                board.close()
            best = recorder.best_trial() if not interrupted else None
            if interrupted:
                recorder.suspend()
            else:
                with checkpoint_of(results, best) or contextlib.nullcontext() as best_dir:
                    best = recorder.finish_sweep(
                        best_weights=Path(best_dir) / MODEL_FILE if best_dir else None,
                        failed=best is None,
                        best_schedule=schedule_in(Path(best_dir)) if best_dir and self.spec.mutations else (),
                    )
                if not recorder.unsent and (self.folder / MANIFEST).is_file():
                    mark_finished(self.folder)
        wall = time.monotonic() - started
        # The report needs every write in MLflow: a server that did not take them all is down.
        due = not interrupted and not recorder.unsent
        report, report_error = (
            at_sweep_end(recorder.client, parent, recorder.tracking_uri) if due else (None, "")
        )
        return SweepOutcome(
            sweep_id=self.sweep_id,
            parent_run_id=parent,
            tracking_uri=redact(recorder.tracking_uri),
            storage_path=redact(self.trials),
            folder=str(self.folder),
            best=best,
            statuses=recorder.statuses(),
            wall_seconds=wall,
            trial_seconds=trial_seconds(results),
            cpu_fallbacks=recorder.count_tagged("hypersweep.device", FALLBACK_DEVICE),
            first_error=_error_line(recorder.first_error()),
            interrupted=interrupted,
            unsent=recorder.unsent,
            tracking_error=recorder.last_error if recorder.unsent else "",
            dropped=recorder.dropped,
            first_dropped=recorder.first_dropped(),
            tune_log=logged.note(),
            report=report,
            report_error=report_error,
        )


# Tune pickles a sweep's callbacks with its state: sweeps started before the callback moved to
# ``tune_events`` name it here.
_TrackingCallback = TrackingCallback
