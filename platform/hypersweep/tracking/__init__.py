"""The only module that talks to MLflow: one parent run per sweep, one nested child run per trial.

Run conventions (a contract, see docs/mlflow.md):
* parent run: tags ``hypersweep.role=sweep``, ``hypersweep.sweep_id``; params = sweep settings;
  artifact ``sweep.yaml`` (the resolved sweep); at the end metric ``best_<metric>``, tags
  ``hypersweep.best_trial`` / ``hypersweep.best_run_id`` and the best trial's weights.
* child run per trial (``mlflow.parentRunId``), named for people (``run_names``: ``07 adam
  lr=0.023 bs=16``) and found by its tags ``hypersweep.role=trial``, ``hypersweep.trial_id``;
  tags ``hypersweep.status`` and ``hypersweep.stop_reason``; params = the trial's config;
  metrics per epoch with ``step=epoch``; at its end ``best_<metric>``, the trial's result
  (``scoring``), unless it diverged or failed.

Metrics are buffered and sent with ``log_batch`` (one request per run per flush, never one per
value); a step already logged for a trial is never logged again (retries replay epochs).

Nothing is lost when the tracking server goes away: every write is first recorded in the
recorder's state (runs to create, metrics to send, runs to end), which is saved to a local file
after each change; a flush sends what is outstanding and, when the server does not answer, keeps it
and tries again later with bounded waits, so training never stalls on tracking. The same file
carries the trial -> run map across a driver crash (``SweepRecorder.resume``).

During a sweep a writer thread does the flushing: MLflow's requests (a SQLite commit each) never
hold up Ray Tune's loop, which would otherwise leave a worker idle between two trials.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from hypersweep import scoring
from hypersweep.errors import ConfigError, first_line, folder_problem
from hypersweep.redaction import redact as redact  # re-exported: shown by callers
from hypersweep.redaction import redact_settings as redact_settings
from hypersweep.run_names import RunNames, number_in
from hypersweep.tracking.state import StateJournal
from hypersweep.tracking.template import sqlite_path

# The CLI prints its own summary; MLflow would add a "View run" line per run on a tracking server.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# A new SQLite store logs its table creation at INFO: noise in the CLI's output (and in the
# one line a bad-input error must be).
for _name in ("mlflow.store.db.utils", "alembic"):
    logging.getLogger(_name).setLevel(logging.WARNING)

ROLE, SWEEP_ID, TRIAL_ID = "hypersweep.role", "hypersweep.sweep_id", "hypersweep.trial_id"
STATUS, STOP_REASON = "hypersweep.status", "hypersweep.stop_reason"
BEST_TRIAL, BEST_RUN = "hypersweep.best_trial", "hypersweep.best_run_id"
WARM_START_TAG = "hypersweep.warm_start"  # on a parent run: the sweeps whose trials seeded it
DROPPED = "hypersweep.dropped"  # on a run: the writes MLflow refused, one per line
# On a run a new trial took over from one lost in a driver crash: the lost trial's id.
EARLIER_TRIAL_ID = "hypersweep.earlier_trial_id"
LOST_REASON = "lost"  # the stop reason of a lost trial whose configuration did not run again
_RUN_STATUS = {"failed": RunStatus.FAILED, "interrupted": RunStatus.KILLED}  # by hypersweep.status
# Result keys recorded as tags of the trial's run: where it ran (worker node, device).
_WHERE_TAGS = {
    "device": "hypersweep.device",
    "node_id": "hypersweep.node_id",
    "node_ip": "hypersweep.node_ip",
}
_HEALTH_TIMEOUT_S = 5.0  # MLflow's own retries would take minutes to give up on a dead server
# Marks the experiment as model training so the MLflow UI opens its runs table, not GenAI views.
_EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
_MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
_MAX_PARAMS_PER_BATCH = 100
_FLUSH_SECONDS = 2.0  # between flushes from the tuning loop (no writer thread)
_WRITER_SECONDS = 1.0  # between the writer thread's flushes
# An unreachable server must cost seconds, not MLflow's default minutes (5 retries x 120 s).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
_RETRY_SECONDS = (2.0, 4.0, 8.0, 15.0)  # waits between flushes while the server is down
# At the end of a sweep, how long to wait for an unreachable server before keeping the backlog.
FINAL_WAIT_SECONDS = float(os.environ.get("HYPERSWEEP_TRACKING_WAIT_S", "120"))
# What a failed request raises: MLflow's own errors, connection errors (requests' are OSErrors).
_TRACKING_ERRORS = (MlflowException, OSError)
# Result keys that are bookkeeping (ours and Ray Tune's), not metrics worth a chart.
EPOCH_TIME = "epoch_time_ms"  # in an epoch's metrics: when it ended (Unix ms): its timestamp
_NOT_METRICS = {
    EPOCH_TIME,
    "epoch",
    "stop_reason",
    "artifacts",
    "timestamp",
    "training_iteration",
    "time_this_iter_s",
    "time_total_s",
    "pid",
    "time_since_restore",
    "iterations_since_restore",
    "done",
    "trial_id",
    "date",
    "hostname",
    "node_ip",
    "checkpoint_dir_name",
    "should_checkpoint",
}


def check_tracking_uri(uri: str, *, source: str) -> None:
    """A SQLite store's file can be made; an MLflow server must answer now, within seconds.
    Both before any run is created (other stores are checked when the sweep opens them)."""
    path = sqlite_path(uri)
    if path is not None and path.name != ":memory:":
        problem = f"{path} is a folder" if path.is_dir() else folder_problem(path.parent)
        if problem is not None:
            raise ConfigError(source, "tracking_uri", f"no SQLite store can be made at {path}: {problem}")
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(_health_request(uri), timeout=_HEALTH_TIMEOUT_S) as response:
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return  # an authenticating server is up; MLflow's client sends the credentials
        problem = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        problem = str(getattr(reason, "strerror", None) or reason)
    raise ConfigError(
        source,
        "tracking_uri",
        f"no MLflow server answers at {redact(uri)} ({problem} within {_HEALTH_TIMEOUT_S:g} s)",
    )


def _health_request(uri: str) -> urllib.request.Request:
    """The server's /health, asked as MLflow's client (requests) would: credentials in the URI
    (``http://user:password@host``) go as basic auth; urllib would take them for the host name."""
    parts = urllib.parse.urlsplit(uri.rstrip("/") + "/health")
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    request = urllib.request.Request(urllib.parse.urlunsplit(bare))
    if parts.username is not None:
        pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    return request


def resolve_tracking_uri(uri: str | None) -> str:
    """The URI in force: the given one, else MLFLOW_TRACKING_URI, else MLflow's default (SQLite)."""
    if uri:
        mlflow.set_tracking_uri(uri)
    return str(mlflow.get_tracking_uri())


@dataclass
class _TrialRun:
    """One trial's run, as far as it is known and as far as it was sent."""

    config: dict[str, Any]
    run_id: str = ""  # "" until MLflow has created it
    params_sent: bool = False
    last_step: int = 0
    pending: list[Metric] = field(default_factory=list)
    pending_tags: list[RunTag] = field(default_factory=list)
    where: dict[str, str] = field(default_factory=dict)
    best: float = math.nan
    final_tags: dict[str, str] = field(default_factory=dict)
    run_status: str = ""  # FINISHED / FAILED once the trial has ended
    final_tags_sent: bool = False  # the final tags went with create_run (it ended before that)
    ended: bool = False  # its end is recorded in MLflow
    reopen: bool = False  # marked KILLED by an interruption: RUNNING again when it resumes
    started_ms: int = 0  # when the trial started and ended: its run's times, not when they were sent
    ended_ms: int = 0
    dropped: list[str] = field(default_factory=list)  # writes MLflow refused: "metric name: why"
    unsent_artifacts: list[str] = field(default_factory=list)  # copies kept until MLflow has them
    # Its place in the order the sweep's trials started (1, 2, ...), in its run's name; kept here
    # so that a resumed sweep numbers on. 0: saved by an earlier version (named by trial id).
    number: int = 0

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["pending"] = [[m.key, m.value, m.timestamp, m.step] for m in self.pending]
        data["pending_tags"] = [[t.key, t.value] for t in self.pending_tags]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _TrialRun:
        fields = dict(data)
        fields["pending"] = [Metric(k, v, t, s) for k, v, t, s in fields.get("pending", [])]
        fields["pending_tags"] = [RunTag(k, v) for k, v in fields.get("pending_tags", [])]
        return cls(**fields)


@dataclass(frozen=True)
class BestTrial:
    trial_id: str
    run_id: str
    value: float
    config: dict[str, Any]


class SweepRecorder:
    """Driver-side recorder of one sweep. Not thread-safe: call it from the tuning loop only."""

    def __init__(
        self,
        *,
        tracking_uri: str,
        metric: str,
        mode: str,
        state_file: Path | None = None,
        client: Any = None,
        names: RunNames | None = None,
    ) -> None:
        # ``client``: anything with MlflowClient's methods (benchmarks pass one that sends nothing).
        # ``names``: how trial runs are named (the sweep's swept parameters; see ``run_names``).
        self.client = client if client is not None else MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.metric, self.mode = metric, mode
        self.parent_run_id = ""
        self.experiment_id = ""
        self.failed_flushes = 0  # flushes the server did not answer (an outage's length)
        self.last_error = ""
        self._trials: dict[str, _TrialRun] = {}
        self._names = names or RunNames()
        self._numbered = 0  # trials numbered so far
        self._journal = StateJournal(state_file) if state_file is not None else None
        self._open: set[str] = set()  # trials whose end is not in the journal yet
        self._forgotten: list[str] = []  # trials dropped since the last save
        self._last_flush = time.monotonic()
        self._retry_at = 0.0
        self._down = 0  # consecutive failed flushes
        # The writer thread flushes; these locks let the tuning loop record meanwhile. ``_lock``
        # guards the trials' state (held briefly, never across a request); ``_create_lock``
        # makes sure a trial's run is created once when both threads want it.
        self._lock = threading.RLock()
        self._create_lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._stop_writer = threading.Event()
        # The parent run's last writes, queued by finish_sweep: "best", "best_model", "end".
        self._parent_due: dict[str, Any] = {}
        # Copies of files MLflow has not taken yet (the artifacts of an outage).
        self._backlog = (state_file.parent if state_file else Path(tempfile.gettempdir())) / "unsent"

    # -- the writer thread -------------------------------------------------------------------
    def start_writer(self) -> None:
        """Flush from a thread every second until ``stop_writer``; the tuning loop never waits.
        (A sweep's client is a ``tracking.process.ProcessClient``: the requests run elsewhere.)"""
        self._stop_writer.clear()
        self._writer = threading.Thread(target=self._write_loop, name="hypersweep-mlflow", daemon=True)
        self._writer.start()

    def stop_writer(self) -> None:
        """Stop the writer after its current flush; what is outstanding stays for ``flush``."""
        writer, self._writer = self._writer, None
        if writer is not None:
            self._stop_writer.set()
            writer.join()

    def _write_loop(self) -> None:
        while not self._stop_writer.wait(_WRITER_SECONDS):
            self.flush(force=True)

    def poll(self) -> None:
        """The tuning loop's turn: without a writer thread, send what is due."""
        if self._writer is None:
            self.flush()

    # -- the sweep -------------------------------------------------------------------------
    def start_sweep(
        self, *, name: str, sweep_id: str, settings: Mapping[str, Any], tags: Mapping[str, str] = {}
    ) -> str:
        """Create (or reuse) the experiment and the parent run (with ``tags`` besides its own);
        returns the parent run id."""
        self.experiment_id = self._experiment(name)
        run = self.client.create_run(
            self.experiment_id,
            run_name=sweep_id,
            tags={**tags, ROLE: "sweep", SWEEP_ID: sweep_id},
        )
        self.parent_run_id = run.info.run_id
        self._save()
        shown = redact_settings(settings)
        params = [Param(k, _param_text(v)) for k, v in _flatten(shown).items()]
        self._log_params(self.parent_run_id, params)
        self.client.log_text(self.parent_run_id, yaml.safe_dump(dict(shown), sort_keys=False), "sweep.yaml")
        return self.parent_run_id

    def resume(self) -> None:
        """Continue the sweep saved in the state file: same parent run, same child runs."""
        assert self._journal is not None
        state = self._journal.state()
        self.parent_run_id, self.experiment_id = state["parent_run_id"], state["experiment_id"]
        self._trials = {tid: _TrialRun.from_json(t) for tid, t in state["trials"].items()}
        self._open = {tid for tid, run in self._trials.items() if not run.ended}
        self.client.update_run(self.parent_run_id, status="RUNNING")
        self._adopt_children()
        # Numbered on from the last; trials an earlier version saved count without a number.
        self._numbered = max([len(self._trials), *(r.number for r in self._trials.values())])

    def _adopt_children(self) -> None:
        """Child runs MLflow has but the saved state missed (a crash right after creating one)."""
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent_run_id}'",
            max_results=10_000,
        )
        for found in runs:
            tid = found.data.tags.get(TRIAL_ID)
            known = self._trials.get(tid) if tid else None
            if tid is None or (known is not None and known.run_id):
                continue
            history = self.client.get_metric_history(found.info.run_id, self.metric)
            last = max((m.step for m in history), default=0)
            run = known or _TrialRun(config=dict(found.data.params), number=number_in(found.info.run_name))
            run.run_id, run.last_step = found.info.run_id, max(last, run.last_step)
            # A crash between creating the run and its first batch leaves it without params:
            # they are sent on the next flush (the config is Tune's again when the trial restarts).
            run.params_sent = bool(found.data.params)
            run.reopen = found.info.status != "RUNNING" and not run.run_status
            self._trials[tid] = run
            self._open.add(tid)
        self._save()

    def _experiment(self, name: str) -> str:
        """The experiment of this name, created if missing. Safe when another sweep of the same
        name creates it between our lookup and our creation (two sweeps started at once on one
        SQLite file or one server): the store refuses the second creation (a unique name), and
        the experiment is then read again. The UI's kind tag is added to an experiment made
        without it (by hand, or by MLflow's own ``set_experiment``)."""
        existing = self.client.get_experiment_by_name(name)
        if existing is None:
            try:
                return str(self.client.create_experiment(name, tags=dict([_EXPERIMENT_KIND])))
            except MlflowException:
                existing = self.client.get_experiment_by_name(name)
                if existing is None:
                    raise  # refused for another reason than a concurrent creation
        experiment_id = str(existing.experiment_id)
        key, kind = _EXPERIMENT_KIND
        if existing.tags.get(key) is None:
            try:
                self.client.set_experiment_tag(experiment_id, key, kind)
            except MlflowException:  # another sweep set it at the same moment: fine if it is there
                if self.client.get_experiment(experiment_id).tags.get(key) is None:
                    raise
        return experiment_id

    def suspend(self) -> None:
        """An interrupted sweep: runs still training and the parent become KILLED, and the trials'
        ``hypersweep.status`` ``interrupted``, until resumed."""
        self.flush(force=True)
        for run in self._trials.values():
            run.reopen = not run.run_status  # the next flush (after resume) makes it RUNNING again
        try:
            for run in self._trials.values():
                if run.reopen and run.run_id:
                    self.client.set_tag(run.run_id, STATUS, "interrupted")
                    self.client.set_terminated(run.run_id, status="KILLED")
            self.client.set_terminated(self.parent_run_id, status="KILLED")
        except _TRACKING_ERRORS as exc:
            self._went_down(exc)
        self._save()

    def finish_sweep(self, *, best_weights: Path | None, failed: bool) -> BestTrial | None:
        """Queue the parent run's last writes (the best trial, its weights, the run's end) behind
        the trials' backlog and send it all, waiting a bounded time. What MLflow did not take
        stays ``unsent``: the sweep is not finished, and ``hypersweep resume`` sends it."""
        best = self.best_trial()
        due: dict[str, Any] = {"end": RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)}
        if best is not None:
            due["best"] = best
            if best_weights is not None and best_weights.is_file():
                # The weights are in a checkpoint Tune may remove: a copy waits for MLflow.
                due["best_model"] = str(self._keep(best_weights, "best_model"))
        self._parent_due = due
        self.drain(FINAL_WAIT_SECONDS)
        # Again: the best trial's run may have been made by this drain (its id, for the summary).
        return self.best_trial() if best is not None else None

    def _send_parent(self) -> None:
        """The parent run's last writes, in order, each forgotten once MLflow has it."""
        due = self._parent_due
        if "best" in due:
            best: BestTrial = due["best"]
            run_id = self._trials[best.trial_id].run_id if best.trial_id in self._trials else best.run_id
            self.client.log_batch(
                self.parent_run_id,
                metrics=[Metric(f"best_{self.metric}", best.value, _now_ms(), 0)],
                tags=[RunTag(BEST_TRIAL, best.trial_id), RunTag(BEST_RUN, run_id)],
            )
            self.client.log_dict(self.parent_run_id, redact_settings(best.config), "best_config.json")
            del due["best"]
        if "best_model" in due:
            self.client.log_artifact(self.parent_run_id, due["best_model"], "best_model")
            self._drop_copy(due.pop("best_model"))
        if "end" in due:
            self.client.set_terminated(self.parent_run_id, status=due.pop("end"))

    def _drop_copy(self, kept: str) -> None:
        """MLflow has it: the copy goes, and the backlog's folder once it is empty."""
        shutil.rmtree(Path(kept).parent, ignore_errors=True)
        with contextlib.suppress(OSError):
            self._backlog.rmdir()

    def _keep(self, source: Path, name: str) -> Path:
        """A copy of ``source`` (a file or a folder) in the sweep's folder, until MLflow has it."""
        folder = self._backlog / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        target = folder / source.name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
        return target

    def drain(self, seconds: float) -> bool:
        """Flush until nothing is outstanding or ``seconds`` have passed; True when all was sent."""
        deadline = time.monotonic() + seconds
        while True:
            self.flush(force=True)
            if not self.unsent or time.monotonic() >= deadline:
                return not self.unsent
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))

    @property
    def unsent(self) -> int:
        """Writes MLflow has not acknowledged yet: metric values, runs to create, artifacts, runs to
        end, and the parent run's best trial, best model and end."""
        trials = sum(
            len(r.pending) + (not r.run_id) + len(r.unsent_artifacts) + (bool(r.run_status) and not r.ended)
            for r in self._trials.values()
        )
        return trials + len(self._parent_due)

    def best_trial(self) -> BestTrial | None:
        scored = [
            scoring.rank(t.best, tid, self.mode) for tid, t in self._trials.items() if math.isfinite(t.best)
        ]
        if not scored:
            return None
        _, tid = min(scored)
        run = self._trials[tid]
        return BestTrial(tid, run.run_id, run.best, run.config)

    def finished_results(self) -> dict[str, dict[str, Any]]:
        """Finished trials -> a final result as Tune wants one (last epoch, best value, reason)."""
        return {
            tid: {
                "epoch": run.last_step,
                self.metric: scoring.or_worst(run.best, self.mode),
                "stop_reason": run.final_tags.get(STOP_REASON, ""),
            }
            for tid, run in self._trials.items()
            if run.run_status
        }

    def statuses(self) -> dict[str, int]:
        """Finished trials by status (each trial counted once, across resumes)."""
        out: dict[str, int] = {}
        for run in self._trials.values():
            status = run.final_tags.get(STATUS)
            if status:
                out[status] = out.get(status, 0) + 1
        return out

    def count_tagged(self, tag: str, value: str) -> int:
        """Trials whose run carries ``tag=value`` (e.g. how many fell back to the CPU)."""
        key = next((k for k, t in _WHERE_TAGS.items() if t == tag), tag)
        return sum(1 for run in self._trials.values() if run.where.get(key) == value)

    @property
    def dropped(self) -> int:
        """Writes the store refused (each named in its run's hypersweep.dropped tag)."""
        return sum(len(r.dropped) for r in self._trials.values())

    def first_dropped(self) -> str:
        """The first write MLflow refused, '' if none was."""
        return next((r.dropped[0] for r in self._trials.values() if r.dropped), "")

    def first_error(self) -> str:
        """The error text of the first failed trial, '' if none failed."""
        return next(
            (
                r.final_tags["hypersweep.error"]
                for r in self._trials.values()
                if "hypersweep.error" in r.final_tags
            ),
            "",
        )

    def adopt_lost(self, trial_id: str, config: Mapping[str, Any], tune_trials: set[str]) -> str:
        """A new trial that trains the configuration of a trial lost in a driver crash takes over
        its run; returns the lost trial's id ('' if none).

        A driver killed between starting a trial and Tune's next snapshot leaves a run for a trial
        the restored Tune never saw; the searcher proposes its configuration again (``searcher``),
        and the new trial continues that run: one run per configuration, none deleted. Epochs the
        run holds already are not logged again (``_note_epoch``). ``tune_trials``: the trials
        the restored Tune knows."""
        if trial_id in self._trials:
            return ""
        wanted = dict(config)
        for tid, run in self._trials.items():
            if tid not in tune_trials and not run.run_status and run.config == wanted:
                with self._lock:
                    self._trials[trial_id] = self._trials.pop(tid)
                    self._open.discard(tid)
                    self._open.add(trial_id)
                    self._forgotten.append(tid)
                    run.reopen = True
                    # Its number and configuration are the lost trial's: so is its name, unless
                    # an earlier version named it by the lost trial's id.
                    name = RunTag(MLFLOW_RUN_NAME, self._run_name(trial_id, run))
                    run.pending_tags += [RunTag(TRIAL_ID, trial_id), name]
                    run.pending_tags.append(RunTag(EARLIER_TRIAL_ID, tid))
                    self._save(trial_id)
                return tid
        return ""

    def end_lost_trials(self, known: set[str]) -> int:
        """End the runs of trials Tune does not know and that ended nowhere (lost in a crash,
        their configuration not run again); returns how many. Their runs are kept, KILLED and
        ``interrupted``: what they logged was measured. Trials that ended after Tune's last
        snapshot are unknown to it too, and stay as they ended."""
        lost = [tid for tid, run in self._trials.items() if tid not in known and not run.run_status]
        for tid in lost:
            self.trial_finished(tid, status="interrupted", stop_reason=LOST_REASON)
        return len(lost)

    def knows(self, trial_id: str) -> bool:
        return trial_id in self._trials

    def is_finished(self, trial_id: str) -> bool:
        run = self._trials.get(trial_id)
        return run is not None and bool(run.run_status)

    # -- trials ----------------------------------------------------------------------------
    def trial_started(self, trial_id: str, config: Mapping[str, Any]) -> None:
        known = self._trials.get(trial_id)
        if known is not None:  # a retry or restore reattaches to the same run
            if not known.config:
                known.config = dict(config)
            return
        with self._lock:
            self._numbered += 1
            self._trials[trial_id] = _TrialRun(
                config=dict(config), started_ms=_now_ms(), number=self._numbered
            )
            self._open.add(trial_id)
        if self._writer is None:
            self.flush(force=True)  # create its run now (or as soon as the server answers)

    def trial_result(
        self, trial_id: str, result: Mapping[str, Any], *, epochs: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        """One report of a trial: ``epochs`` are the epochs it carries (default: ``result`` alone)."""
        with self._lock:
            run = self._trials[trial_id]
            self._note_where(run, result)
            stamp = _now_ms()
            for epoch in epochs or [result]:
                self._note_epoch(run, epoch, int(epoch.get(EPOCH_TIME) or stamp))
            self._save(trial_id)
        self.poll()

    def _note_epoch(self, run: _TrialRun, epoch: Mapping[str, Any], stamp: int) -> None:
        step = int(epoch["epoch"])
        if step <= run.last_step:
            return  # replayed after a rollback: already logged
        run.last_step = step
        for key, value in epoch.items():
            if key not in _NOT_METRICS and _is_number(value):
                run.pending.append(Metric(key, float(value), stamp, step))
        value = epoch.get(self.metric)
        if epoch.get("stop_reason") != "diverged":
            run.best = scoring.better(run.best, value, self.mode)  # the trial's result (see scoring)

    def _note_where(self, run: _TrialRun, result: Mapping[str, Any]) -> None:
        """Tag the node and device a trial runs on, once (again only if a retry moves it)."""
        for key, tag in _WHERE_TAGS.items():
            value = result.get(key)
            if isinstance(value, str) and value and run.where.get(key) != value:
                run.where[key] = value
                run.pending_tags.append(RunTag(tag, value))

    def trial_finished(self, trial_id: str, *, status: str, stop_reason: str, error: str = "") -> None:
        with self._lock:
            run = self._trials[trial_id]
            if run.run_status:
                return  # already accounted for
            if status in ("diverged", "failed", "interrupted"):
                run.best = math.nan  # never the best trial
            run.final_tags = {STATUS: status, STOP_REASON: stop_reason}
            if error:  # a traceback ends with its cause; it may name a URL with its token
                run.final_tags["hypersweep.error"] = redact(error)[-5000:]
            ended = _RUN_STATUS.get(status, RunStatus.FINISHED)
            run.run_status = RunStatus.to_string(ended)
            run.ended_ms = _now_ms()
            if math.isfinite(run.best):  # the trial's result (see scoring): a column in the UI
                run.pending.append(Metric(f"best_{self.metric}", run.best, run.ended_ms, run.last_step))
            self._save(trial_id)
        if self._writer is None:
            self.flush(force=True)

    def log_trial_artifacts(self, trial_id: str, directory: Path) -> None:
        """Send a trial's files; while the server is down, a copy waits in the sweep's folder
        (``directory`` is in a checkpoint Tune may remove) and goes with the run's next sync."""
        run = self._trials[trial_id]
        if time.monotonic() >= self._retry_at:  # a server known to be down is not waited for
            try:
                self._ensure_run(trial_id, run)  # the writer may not have made it yet
                self.client.log_artifacts(run.run_id, str(directory))
                return
            except _TRACKING_ERRORS as exc:
                self._went_down(exc)
        kept = self._keep(directory, f"{trial_id}-{len(run.unsent_artifacts)}")
        with self._lock:
            run.unsent_artifacts.append(str(kept))
            self._save(trial_id)

    def flush(self, *, force: bool = False) -> None:
        """Send what is outstanding: at most every few seconds unless forced, and while the server
        is down only after a growing wait (2 s up to 15 s), so a trial's result never waits long."""
        now = time.monotonic()
        if not force and now - self._last_flush < _FLUSH_SECONDS:
            return
        if now < self._retry_at:
            return
        self._last_flush = now
        with self._lock:
            trials = list(self._trials.items())
        try:
            for trial_id, run in trials:
                self._sync(trial_id, run)
            if self._parent_due and self.unsent == len(self._parent_due):
                self._send_parent()  # the sweep's end, once the trials' backlog is in
        except _TRACKING_ERRORS as exc:
            self._went_down(exc)
        else:
            self._down, self._retry_at = 0, 0.0
        with self._lock:
            self._save()

    def _went_down(self, exc: BaseException) -> None:
        self.failed_flushes += 1
        self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self._retry_at = time.monotonic() + _RETRY_SECONDS[min(self._down, len(_RETRY_SECONDS) - 1)]
        self._down += 1

    def _sync(self, trial_id: str, run: _TrialRun) -> None:
        """Bring one trial's run in MLflow up to date: at best one ``log_batch`` (params, tags and
        metrics together) and its end. Each write is kept until MLflow confirms it, and taken out
        of the state under the lock only for as long as its request is in flight."""
        waiting = run.pending or run.pending_tags or run.unsent_artifacts or run.run_status
        if run.ended or not (waiting or not run.params_sent):
            return
        self._ensure_run(trial_id, run)
        if run.reopen and not run.run_status:
            self.client.update_run(run.run_id, status="RUNNING")
            self.client.set_tag(run.run_id, STATUS, "running")
            run.reopen = False
        params = [] if run.params_sent else _trial_params(run.config)
        if len(params) > _MAX_PARAMS_PER_BATCH:
            self._log_params(run.run_id, params)
            params = []
        while True:
            with self._lock:
                ending = bool(run.run_status) and len(run.pending) <= _MAX_METRICS_PER_BATCH
                final_due = ending and not run.final_tags_sent
                final = [RunTag(k, v) for k, v in run.final_tags.items()] if final_due else []
                tags = run.pending_tags + final
                metrics = run.pending[:_MAX_METRICS_PER_BATCH]
            if tags or metrics or params:
                self._send(run, metrics=metrics, params=params, tags=tags)
            run.params_sent, params = True, []
            with self._lock:
                del run.pending[: len(metrics)]
                del run.pending_tags[: len(tags) - len(final)]
            if not run.pending:
                break
        for kept in list(run.unsent_artifacts):  # before the run's end
            self.client.log_artifacts(run.run_id, kept)
            self._drop_copy(kept)
            with self._lock:
                run.unsent_artifacts.remove(kept)
        if ending:
            self.client.set_terminated(run.run_id, status=run.run_status, end_time=run.ended_ms or None)
            run.ended = True

    def _send(
        self, run: _TrialRun, *, metrics: list[Metric], params: list[Param], tags: list[RunTag]
    ) -> None:
        """One ``log_batch``. A batch the store refuses (a 4xx answer, a name or value it does not
        accept) is sent again one key at a time: what is refused is dropped and named in the run's
        ``hypersweep.dropped`` tag, the rest goes through. Only a store that does not answer (a
        connection error, a timeout, a 5xx) is an outage, raised to the caller."""
        try:
            self.client.log_batch(run.run_id, metrics=metrics, params=params, tags=tags)
            return
        except MlflowException as exc:
            if not refused(exc):
                raise
        before = len(run.dropped)
        for what, batch in _one_key_each(metrics, params, tags):
            try:
                self.client.log_batch(run.run_id, **batch)
            except MlflowException as exc:
                if not refused(exc):
                    raise
                run.dropped.append(f"{what}: {first_line(exc)}"[:500])
        if len(run.dropped) > before:
            self.client.set_tag(run.run_id, DROPPED, "\n".join(run.dropped)[-5000:])

    def _ensure_run(self, trial_id: str, run: _TrialRun) -> None:
        """Create the trial's run unless it exists; the trial -> run map is saved at once.

        Tags known by then go with the creation: a short trial has often ended before its first
        flush, and its end tags in ``create_run`` save a third of its MLflow work (a tag in
        ``log_batch`` costs a query and an update each on SQL stores)."""
        with self._create_lock:
            if run.run_id:
                return
            with self._lock:
                tags = {t.key: t.value for t in run.pending_tags}
                sent_tags = len(run.pending_tags)
                ended = bool(run.run_status)
                if ended:
                    tags.update(run.final_tags)
            name = self._run_name(trial_id, run)
            created = self.client.create_run(
                self.experiment_id,
                start_time=run.started_ms or None,
                run_name=name,
                tags={
                    MLFLOW_PARENT_RUN_ID: self.parent_run_id,
                    MLFLOW_RUN_NAME: name,
                    ROLE: "trial",
                    TRIAL_ID: trial_id,
                    STATUS: "running",
                    **tags,
                },
            )
            with self._lock:
                run.run_id = created.info.run_id
                del run.pending_tags[:sent_tags]
                run.final_tags_sent = ended
                self._save(trial_id)  # the trial -> run map must outlive this process before anything else

    def _run_name(self, trial_id: str, run: _TrialRun) -> str:
        return self._names.name(run.number, trial_id, run.config) if run.number else trial_id

    def _log_params(self, run_id: str, params: list[Param]) -> None:
        for i in range(0, len(params), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=params[i : i + _MAX_PARAMS_PER_BATCH])

    def _save(self, *changed: str) -> None:
        """Record what changed in the state journal (see ``tracking.state``): the trials
        ``changed``, or else every trial whose end is not saved yet.

        Finished trials are not encoded again: their state never changes, and re-encoding a
        thousand of them after every result would make a sweep's cost grow with its length."""
        if self._journal is None:
            return
        ids = changed or tuple(self._open)
        head = {"parent_run_id": self.parent_run_id, "experiment_id": self.experiment_id}
        trials = [(tid, json.dumps(self._trials[tid].to_json())) for tid in ids]
        self._journal.save(head, trials, forget=self._forgotten)
        self._forgotten.clear()
        self._open.difference_update([tid for tid in ids if self._trials[tid].ended])


def refused(exc: MlflowException) -> bool:
    """The store answered and said no (4xx: an invalid name or value): that write is at fault.
    Anything else (no answer, a timeout, a 5xx) is the store's trouble: an outage."""
    return 400 <= int(exc.get_http_status_code()) < 500


def _one_key_each(
    metrics: list[Metric], params: list[Param], tags: list[RunTag]
) -> list[tuple[str, dict[str, Any]]]:
    """A refused batch split into one batch per metric key, param and tag: (what, batch)."""
    parts: list[tuple[str, dict[str, Any]]] = [
        (f"metric {key}", {"metrics": [m for m in metrics if m.key == key]})
        for key in dict.fromkeys(m.key for m in metrics)
    ]
    parts += [(f"param {p.key}", {"params": [p]}) for p in params]
    parts += [(f"tag {t.key}", {"tags": [t]}) for t in tags]
    return parts


def dropped_writes(run: Any) -> str:
    """What MLflow refused of a run, as its ``hypersweep.dropped`` tag says ('' if nothing)."""
    return str(run.data.tags.get(DROPPED, ""))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _trial_params(config: Mapping[str, Any]) -> list[Param]:
    """A trial's params: its config, which holds the sweep's fixed values too (a data URL, an
    API token), shown as everyone may see it."""
    return [Param(k, _param_text(v)) for k, v in sorted(redact_settings(config).items())]


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:6000]  # MLflow's param value limit


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and key != "search_space":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@dataclass(frozen=True)
class SweepSummary:
    sweep_id: str
    parent_run_id: str
    trial_id: str
    run_id: str
    metric: str
    value: float
    config: dict[str, str]


def find_best(ref: str, *, tracking_uri: str) -> SweepSummary:
    """The best trial of a sweep, by sweep id or (latest sweep of) sweep name."""
    require_existing_store(tracking_uri)
    check_tracking_uri(tracking_uri, source="")
    try:
        return _best_of(ref, MlflowClient(tracking_uri=tracking_uri), tracking_uri)
    except MlflowException as exc:  # an unknown scheme, a store MLflow cannot read
        raise ConfigError("", "tracking_uri", f"{redact(tracking_uri)}: {first_line(exc)}") from None


def _best_of(ref: str, client: MlflowClient, tracking_uri: str) -> SweepSummary:
    parent = _find_parent(client, ref)
    if parent is None:
        raise ConfigError("", "SWEEP", f"no sweep '{ref}' in {redact(tracking_uri)}")
    tags, metrics = parent.data.tags, parent.data.metrics
    best_run = tags.get(BEST_RUN)
    best_metric = next((k for k in metrics if k.startswith("best_")), None)
    if best_run is None or best_metric is None:
        raise ConfigError(
            "", "SWEEP", f"sweep '{tags[SWEEP_ID]}' has no best trial (unfinished or all failed)"
        )
    child = client.get_run(best_run)
    return SweepSummary(
        sweep_id=tags[SWEEP_ID],
        parent_run_id=parent.info.run_id,
        trial_id=tags[BEST_TRIAL],
        run_id=best_run,
        metric=best_metric.removeprefix("best_"),
        value=metrics[best_metric],
        config=dict(child.data.params),
    )


def _find_parent(client: MlflowClient, ref: str) -> Any:
    if "'" in ref or "`" in ref:
        return None
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return None
    by_id = client.search_runs(
        experiment_ids, f"tags.`{SWEEP_ID}` = '{ref}' and tags.`{ROLE}` = 'sweep'", max_results=1
    )
    if by_id:
        return by_id[0]
    experiment = client.get_experiment_by_name(ref)
    if experiment is None:
        return None
    latest = client.search_runs(
        [experiment.experiment_id],
        f"tags.`{ROLE}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return latest[0] if latest else None


def require_existing_store(uri: str) -> None:
    """Reading from a SQLite store that does not exist would silently create an empty one."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise ConfigError("", "--tracking-uri", f"no MLflow store at {path}")
