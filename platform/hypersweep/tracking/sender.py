"""Sending a sweep's records to MLflow: buffered, batched, never lost, never holding up Tune.

Metrics are buffered and sent with ``log_batch`` (one request per run per flush, never one per
value); a step already logged for a trial is never logged again (retries replay epochs).

Nothing is lost when the tracking server goes away: every write is first recorded in the
recorder's state (runs to create, metrics to send, artifacts, runs to end), which is saved to a
local journal after each change; a flush sends what is outstanding and, when the server does not
answer, keeps it and tries again later with bounded waits, so training never stalls on tracking.
A write the store refuses (a 4xx answer) is dropped alone and named on its run (``refused``).

During a sweep a writer thread does the flushing: MLflow's requests (a SQLite commit each) never
hold up Ray Tune's loop, which would otherwise leave a worker idle between two trials.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from hypersweep.errors import first_line
from hypersweep.redaction import redact_settings
from hypersweep.run_names import RunNames
from hypersweep.tracking.conventions import (
    BEST_RUN,
    BEST_SCHEDULE_FILE,
    BEST_TRIAL,
    DROPPED,
    LINEAGE_FILE,
    ROLE,
    STATUS,
    SWEEP_LINEAGE_FILE,
    TRIAL_ID,
    _now_ms,
    _trial_params,
)
from hypersweep.tracking.state import StateJournal

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
    # PBT: the exploits this trial made, oldest first (``SweepRecorder.trial_exploited``); kept
    # with the trial's state, so a resumed sweep's lineage has them.
    exploits: list[dict[str, Any]] = field(default_factory=list)

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


class RunSender:
    """A sweep's runs as recorded and as sent: the trials' state, its journal, the writer thread
    and the outage backlog. ``SweepRecorder`` adds what the sweep's events mean."""

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
        if "lineage" in due:
            self._send_lineage(due["lineage"])
            del due["lineage"]
        if "schedule" in due:
            self.client.log_dict(self.parent_run_id, due.pop("schedule"), BEST_SCHEDULE_FILE)
        if "end" in due:
            self.client.set_terminated(self.parent_run_id, status=due.pop("end"))

    def _send_lineage(self, exploits: list[dict[str, Any]]) -> None:
        """PBT's exploits: each with its runs' ids, all on the parent run, each recipient's own
        on its run (sent once the runs exist: with the sweep's end)."""
        runs = {tid: run.run_id for tid, run in self._trials.items()}
        table = [
            {**e, "run_id": runs.get(e["trial_id"], ""), "donor_run_id": runs.get(e["donor_trial_id"], "")}
            for e in exploits
        ]
        self.client.log_dict(self.parent_run_id, {"exploits": table}, SWEEP_LINEAGE_FILE)
        for trial_id in dict.fromkeys(e["trial_id"] for e in table):
            if runs.get(trial_id):
                own = [e for e in table if e["trial_id"] == trial_id]
                self.client.log_dict(runs[trial_id], {"trial_id": trial_id, "exploits": own}, LINEAGE_FILE)

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
