"""The driver-side recorder of one sweep: what Ray Tune's events mean for the sweep's runs.

One parent run per sweep, one nested child run per trial (``conventions``); the trial -> run map
and everything not yet sent survive a driver crash in the sweep's journal (``resume``); sending is
``sender.RunSender``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from hypersweep import scoring
from hypersweep.redaction import redact, redact_settings
from hypersweep.run_names import number_in
from hypersweep.tracking.conventions import (
    _EXPERIMENT_KIND,
    _NOT_METRICS,
    _RUN_STATUS,
    _WHERE_TAGS,
    EARLIER_TRIAL_ID,
    EPOCH_TIME,
    LOST_REASON,
    PBT_DONOR,
    PBT_EXPLOITS,
    ROLE,
    STATUS,
    STOP_REASON,
    SWEEP_ID,
    TRIAL_ID,
    _flatten,
    _is_number,
    _now_ms,
    _param_text,
)
from hypersweep.tracking.sender import _TRACKING_ERRORS, FINAL_WAIT_SECONDS, BestTrial, RunSender, _TrialRun


class SweepRecorder(RunSender):
    """Driver-side recorder of one sweep. Not thread-safe: call it from the tuning loop only."""

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

    # -- population-based training ------------------------------------------------------------
    def trial_exploited(self, exploit: Mapping[str, Any]) -> None:
        """A PBT exploit (``pbt_scheduler.RecordedPBT``): the recipient keeps its run, which is
        tagged with its donor now; the exploit joins the sweep's lineage, sent at its end."""
        trial_id = str(exploit["trial_id"])
        with self._lock:
            run = self._trials.get(trial_id)
            if run is None:
                return
            run.exploits.append({**exploit, "at_ms": _now_ms()})
            count = len(run.exploits)
            run.pending_tags += [
                RunTag(PBT_DONOR, str(exploit["donor_trial_id"])),
                RunTag(PBT_EXPLOITS, str(count)),
            ]
            self._save(trial_id)

    def finish_sweep(
        self, *, best_weights: Path | None, failed: bool, best_schedule: Sequence[Mapping[str, float]] = ()
    ) -> BestTrial | None:
        """Queue the parent run's last writes (the best trial, its weights, the run's end) behind
        the trials' backlog and send it all, waiting a bounded time. What MLflow did not take
        stays ``unsent``: the sweep is not finished, and ``hypersweep resume`` sends it.
        ``best_schedule``: a PBT sweep's best trial's per-epoch hyperparameters (its lineage's)."""
        best = self.best_trial()
        due: dict[str, Any] = {"end": RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)}
        if best is not None:
            due["best"] = best
            if best_weights is not None and best_weights.is_file():
                # The weights are in a checkpoint Tune may remove: a copy waits for MLflow.
                due["best_model"] = str(self._keep(best_weights, "best_model"))
            if best_schedule:
                due["schedule"] = {"trial_id": best.trial_id, "epochs": [dict(e) for e in best_schedule]}
        if self.lineage:
            due["lineage"] = list(self.lineage)
        self._parent_due = due
        self.drain(FINAL_WAIT_SECONDS)
        # Again: the best trial's run may have been made by this drain (its id, for the summary).
        return self.best_trial() if best is not None else None

    def best_trial(self) -> BestTrial | None:
        scored = [
            scoring.rank(t.best, tid, self.mode) for tid, t in self._trials.items() if math.isfinite(t.best)
        ]
        if not scored:
            return None
        _, tid = min(scored)
        run = self._trials[tid]
        # A PBT member's configuration is its last exploit's: what its final weights trained with.
        config = run.exploits[-1]["config"] if run.exploits else run.config
        return BestTrial(tid, run.run_id, run.best, config)

    @property
    def lineage(self) -> list[dict[str, Any]]:
        """Every PBT exploit of the sweep, in the order they happened."""
        exploits = [e for run in self._trials.values() for e in run.exploits]
        return sorted(exploits, key=lambda e: int(e["at_ms"]))

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

    def open_run_ids(self) -> dict[str, str]:
        """Trial -> run id of the trials not ended yet whose run exists."""
        with self._lock:
            runs = ((tid, self._trials.get(tid)) for tid in self._open)
            return {tid: run.run_id for tid, run in runs if run is not None and run.run_id}

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
            # In the journal before its run exists: a crash between MLflow making the run and the
            # journal learning its id leaves a run without params, which resume can tell only by
            # this configuration (a lost trial's run is taken over by the trial with its config).
            self._save(trial_id)
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
