"""A driver killed mid-sweep under the shipped defaults (ASHA, batched reports and checkpoints),
then ``hypersweep resume``: ASHA decides as if nothing had happened, every trial keeps one run
with its params, nothing is deleted and nothing finished trains again."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.entities import ViewType
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from hypersweep.config import SchedulerSpec
from hypersweep.tracking import ROLE, TRIAL_ID, SweepRecorder
from hypersweep.tracking.state import read_state
from hypersweep.tuning import TRACKING_STATE
from tests.chaos_tools import (
    NAME,
    chaos_sweep,
    cli,
    counts,
    free_port,
    kill_driver,
    start_server,
    stop_group,
)
from tests.mlflow_store import StoredSweep, read_sweep

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(420)]

EPOCHS, SAMPLES = 9, 12
ASHA = SchedulerSpec()  # the shipped defaults: grace period 1, reduction factor 3


def _sweep(folder: Path) -> Path:
    """The chaos experiment, one trial at a time (so the order in which ASHA saw the trials is
    the order they started in), with the shipped scheduler and report/checkpoint defaults."""
    faults = folder / "faults"
    faults.mkdir()
    path = folder / "resume.yaml"
    path.write_text(
        f"name: {NAME}\nexperiment: tests.chaos:ChaosToy\n"
        "search_space: {lr: {type: loguniform, low: 0.0005, high: 0.5}}\n"
        f"fixed: {{fault_dir: {faults}, batch_size: 64, epoch_sleep: 0.4}}\n"
        f"max_epochs: {EPOCHS}\nnum_samples: {SAMPLES}\n"
        "search: {type: random, seed: 3}\n"
        "training: {patience: null}\n"
        "resources: {cpus_per_trial: 1, max_concurrent: 1}\n"
    )
    return path


def _wait_for(folder: Path, proc, finished: int) -> Path:
    """The sweep's folder once ``finished`` trials ended and another one has logged an epoch."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for state in folder.glob(f"runs/{NAME}-*/{TRACKING_STATE}"):
            trials = read_state(state)["trials"].values()
            if sum(bool(t["run_status"]) for t in trials) >= finished and any(
                not t["run_status"] and t["last_step"] >= 1 for t in trials
            ):
                return state.parent
        time.sleep(0.2)
    raise AssertionError("the sweep never got half way")


def asha_violations(stored: StoredSweep, spec: SchedulerSpec, max_epochs: int) -> list[str]:
    """ASHA's rule applied to what MLflow holds, trial by trial in the order they started: a trial
    whose result so far at a rung was below the rung's cutoff (the 1 - 1/rf quantile of the
    trials before it there) must have ended at that rung, and one above must have gone on."""
    rungs = [m for m in spec.rungs(max_epochs) if m < max_epochs]  # at max_epochs every trial ends
    recorded: dict[int, list[float]] = {m: [] for m in rungs}
    problems = []
    for child in sorted(stored.children, key=lambda c: c.info.start_time):
        history = sorted(stored.history(child))
        last, best, so_far = history[-1][0], math.inf, {}
        for step, value in history:
            best = min(best, value)
            so_far[step] = -best  # ASHA maximises: mode min is negated
        for m in rungs:
            if last < m:
                break
            quantile = (1 - 1 / spec.reduction_factor) * 100
            cutoff = float(np.nanpercentile(recorded[m], quantile)) if recorded[m] else -math.inf
            recorded[m].append(so_far[m])
            if so_far[m] < cutoff:
                if last > m:
                    tid = stored.tag(child, "trial_id")
                    problems.append(f"{tid} went past rung {m} at {-so_far[m]:.4g} (cutoff {-cutoff:.4g})")
                break
            if last == m and stored.tag(child, "stop_reason") == "asha":
                problems.append(f"{stored.tag(child, 'trial_id')} was stopped at rung {m} above its cutoff")
    return problems


def test_sigkill_and_resume_with_the_shipped_defaults(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/x.db"
    proc = cli("run", str(_sweep(tmp_path)), "--tracking-uri", uri, "--storage", str(tmp_path / "runs"))
    folder = _wait_for(tmp_path, proc, finished=4)
    trials = read_state(folder / TRACKING_STATE)["trials"].values()
    finished_before = [t["config"]["lr"] for t in trials if t["run_status"]]
    kill_driver(proc)
    resumed = cli("resume", str(folder))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out + err

    stored = read_sweep(uri, NAME)
    ledger = counts(uri)
    assert (ledger.trials, ledger.trial_ids, ledger.duplicated_steps, ledger.running) == (
        SAMPLES,
        SAMPLES,
        0,
        0,
    )
    assert set(ledger.statuses) <= {"completed", "early_stopped"}, ledger.statuses
    deleted = stored.client.search_runs(
        [stored.parent.info.experiment_id], run_view_type=ViewType.DELETED_ONLY
    )
    assert deleted == []
    assert all("lr" in c.data.params for c in stored.children), [c.data.params for c in stored.children]
    assert asha_violations(stored, ASHA, EPOCHS) == []
    # The chaos experiment logs each build of a trial's model under its lr: a trial that had
    # finished before the kill was built once, whether Tune's snapshot knew it or not.
    assert len(list((tmp_path / "faults").glob("*.log"))) == SAMPLES
    for lr in finished_before:
        log = (tmp_path / "faults" / f"{float(lr):.12g}.log").read_text().split()
        assert log.count("build") == 1, lr
    # The resumed sweep's report covers the trials of both runs of the driver.
    assert "report: report/report.html" in out
    assert "report/report.html" in [
        f.path for f in stored.client.list_artifacts(stored.parent.info.run_id, "report")
    ]
    trained = sum(len(stored.history(c, "train_loss")) for c in stored.children)
    assert stored.parent.data.metrics["epochs_trained"] == trained


def test_a_run_made_just_before_a_crash_gets_its_params_on_resume(tmp_path: Path) -> None:
    """The driver died after MLflow created a trial's run and before its first batch (params,
    metrics) and before the journal learnt the run's id: resume adopts the run and sends them."""
    uri, state = f"sqlite:///{tmp_path}/m.db", tmp_path / TRACKING_STATE
    before = SweepRecorder(tracking_uri=uri, metric="val_loss", mode="min", state_file=state)
    before.start_sweep(name="crash", sweep_id="s1", settings={})
    before.start_writer()  # as in a sweep: trial_started leaves the sending to the writer
    before.trial_started("t1", {"lr": 0.1, "batch_size": 32})
    before._stop_writer.set()  # the driver dies before the writer's first flush (1 s in)
    before.client.create_run(  # what _ensure_run sent before the crash
        before.experiment_id,
        run_name="t1",
        tags={MLFLOW_PARENT_RUN_ID: before.parent_run_id, ROLE: "trial", TRIAL_ID: "t1"},
    )
    after = SweepRecorder(tracking_uri=uri, metric="val_loss", mode="min", state_file=state)
    after.resume()
    after.trial_started("t1", {"lr": 0.1, "batch_size": 32})  # Tune restarts it
    after.trial_result("t1", {"epoch": 1, "val_loss": 0.5})
    after.trial_finished("t1", status="completed", stop_reason="completed")
    after.flush(force=True)
    (run,) = read_sweep(uri, "crash").children
    assert run.data.params == {"lr": "0.1", "batch_size": "32"}
    assert run.info.status == "FINISHED"


def test_a_lost_trial_whose_run_was_made_just_before_a_crash_is_taken_over(tmp_path: Path) -> None:
    """As above, and Tune's snapshot never had the trial: the searcher proposes its configuration
    again and the new trial must take over its run, which MLflow holds without params. The
    journal knows the trial's configuration from its start, before its run exists."""
    uri, state = f"sqlite:///{tmp_path}/m.db", tmp_path / TRACKING_STATE
    config = {"lr": 0.1, "batch_size": 32}
    before = SweepRecorder(tracking_uri=uri, metric="val_loss", mode="min", state_file=state)
    before.start_sweep(name="crash", sweep_id="s1", settings={})
    before.start_writer()
    before.trial_started("t1", config)
    before._stop_writer.set()
    before.client.create_run(
        before.experiment_id,
        run_name="t1",
        tags={MLFLOW_PARENT_RUN_ID: before.parent_run_id, ROLE: "trial", TRIAL_ID: "t1"},
    )
    after = SweepRecorder(tracking_uri=uri, metric="val_loss", mode="min", state_file=state)
    after.resume()
    assert after.adopt_lost("t2", config, {"t2"}) == "t1"
    after.trial_started("t2", config)
    after.trial_result("t2", {"epoch": 1, "val_loss": 0.5})
    after.trial_finished("t2", status="completed", stop_reason="completed")
    after.flush(force=True)
    (run,) = read_sweep(uri, "crash").children
    assert run.data.tags[TRIAL_ID] == "t2" and run.data.params == {"lr": "0.1", "batch_size": "32"}


def test_the_outage_backlog_holds_artifacts_and_the_sweeps_end(tmp_path: Path) -> None:
    """The server dies mid-sweep and stays down past the end: the trials' files, the best trial,
    its weights and the parent's end wait in the sweep's folder (exit 4); a resume while it is
    still down says so in one line (exit 2); once it is back, a resume sends it all."""
    db, port = tmp_path / "server.db", free_port()
    server = start_server(db, port)
    uri = f"http://127.0.0.1:{port}"
    quick = {"HYPERSWEEP_TRACKING_WAIT_S": "3"}  # the end's wait for a server that is down
    try:
        sweep = chaos_sweep(tmp_path, samples=3, epochs=4, epoch_sleep=0.3, artifacts="true")
        proc = cli("run", str(sweep), "--tracking-uri", uri, "--storage", str(tmp_path / "runs"), env=quick)
        folder = _wait_for_first_epoch(tmp_path, proc)
        stop_group(server.pid)
        server.wait(timeout=30)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 4, out + err
        assert f"hypersweep resume {folder}" in err
        assert "report: " not in out and "no sweep report" not in out  # MLflow lacks part of it
        assert (folder / "unsent").is_dir()

        down = cli("resume", str(folder), env=quick)
        out, err = down.communicate(timeout=120)
        assert down.returncode == 2, out + err
        assert (
            err.startswith(f"error: {folder}: tracking_uri: no MLflow server answers")
            and "Traceback" not in err
        )

        server = start_server(db, port)
        up = cli("resume", str(folder), env=quick)
        out, err = up.communicate(timeout=300)
        assert up.returncode == 0, out + err
        stored = read_sweep(uri, NAME)
        assert [c.info.status for c in stored.children] == ["FINISHED"] * 3
        for child in stored.children:
            files = [f.path for f in stored.client.list_artifacts(child.info.run_id)]
            assert "lr.txt" in files, (child.data.params, files)
        parent = stored.parent
        assert parent.info.status == "FINISHED"
        assert stored.tag(parent, "best_trial") and f"best_{'val_loss'}" in parent.data.metrics
        assert [f.path for f in stored.client.list_artifacts(parent.info.run_id, "best_model")] == [
            "best_model/model.pt"
        ]
        assert not (folder / "unsent").exists()
        assert "report/report.html" in [
            f.path for f in stored.client.list_artifacts(parent.info.run_id, "report")
        ]
    finally:
        stop_group(server.pid)


def _wait_for_first_epoch(tmp: Path, proc) -> Path:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for state in tmp.glob(f"runs/{NAME}-*/{TRACKING_STATE}"):
            if any(t["last_step"] >= 1 for t in read_state(state)["trials"].values()):
                return state.parent
        time.sleep(0.2)
    raise AssertionError("no trial logged an epoch")
