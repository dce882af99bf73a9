"""Faults injected for real: trials that raise, workers killed, the driver killed or interrupted,
the tracking server stopped mid-sweep. Each test asserts the same ledger: every trial accounted
for exactly once, one child run per trial, no step logged twice, no run left RUNNING."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from hypersweep.searcher import STUDY_FILE, study_of
from hypersweep.tracking.state import read_state
from hypersweep.tune_log import TUNE_LOG
from hypersweep.tuning import TRACKING_STATE
from tests.chaos_tools import (
    NAME,
    builds_per_trial,
    chaos_sweep,
    cli,
    counts,
    evals_per_trial,
    free_port,
    kill_driver,
    start_server,
    steps,
    stop_group,
)
from tests.conftest import ROOT
from tests.mlflow_store import read_sweep

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]


def _wait(proc, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _run(sweep: Path, tmp: Path, uri: str, *args: str) -> tuple[int, str, str]:
    return _wait(cli("run", str(sweep), "--tracking-uri", uri, "--storage", str(tmp / "runs"), *args))


def _sweep_dir(tmp: Path, runs: str = "runs") -> Path:
    (folder,) = (tmp / runs).iterdir()
    return folder


@pytest.mark.parametrize("cadence", ["every epoch", "shipped defaults"])
@pytest.mark.parametrize("fault", ["raise", "kill"])
def test_failed_trial_retries_from_its_last_checkpoint(tmp_path: Path, fault: str, cadence: str) -> None:
    """An exception in a trial (raise) or its worker SIGKILLed (kill) at epoch 2, once per trial.
    With the shipped defaults the two fast epochs before the fault are in one batch not yet
    reported, with no checkpoint: the retry starts over, and its epochs are logged once."""
    every_epoch = cadence == "every epoch"
    sweep = chaos_sweep(tmp_path, samples=2, epochs=4, every_epoch=every_epoch, fault=fault, fault_epoch=2)
    uri = f"sqlite:///{tmp_path}/x.db"
    rc, out, err = _run(sweep, tmp_path, uri)
    assert rc == 0, out + err
    ledger = counts(uri)
    assert (ledger.trials, ledger.trial_ids, ledger.duplicated_steps, ledger.running) == (2, 2, 0, 0)
    assert ledger.statuses == {"completed": 2}
    assert steps(uri) == [[1, 2, 3, 4]] * 2
    assert builds_per_trial(tmp_path) == [2, 2]  # one retry each
    # From scratch a retry evaluates 1 + 4 times (first attempt: 1 untrained + 2); resumed after
    # epoch 1 it evaluates 3 times (epochs 2..4).
    assert evals_per_trial(tmp_path) == ([6, 6] if every_epoch else [8, 8])
    assert "Traceback" not in err
    how = "retrying from its last checkpoint" if every_epoch else "retrying from the start"
    retried = [line for line in err.splitlines() if how in line]
    assert len(retried) == 2 and all(": failure 1 (" in line for line in retried), err
    if fault == "raise":  # the failure's own cause, not the previous one's
        assert all("RuntimeError: injected fault in attempt 1)" in line for line in retried), err


def test_trial_failing_every_attempt_is_failed_and_the_sweep_exits_1(tmp_path: Path) -> None:
    sweep = chaos_sweep(tmp_path, samples=2, epochs=3, fault="raise", fault_epoch=1, fault_attempts=99)
    uri = f"sqlite:///{tmp_path}/x.db"
    rc, out, err = _run(sweep, tmp_path, uri, "--set", "training.max_failures=1")
    assert rc == 1, out + err
    ledger = counts(uri)
    assert (ledger.trials, ledger.trial_ids, ledger.duplicated_steps, ledger.running) == (2, 2, 0, 0)
    assert ledger.statuses == {"failed": 2}
    assert builds_per_trial(tmp_path) == [2, 2]  # first attempt + max_failures retries
    from tests.mlflow_store import read_sweep

    stored = read_sweep(uri, "chaos")
    for child in stored.children:
        assert child.info.status == "FAILED"
        assert "injected fault" in child.data.tags["hypersweep.error"]
    assert stored.parent.info.status == "FAILED"
    assert "Traceback" not in err and "no trial finished" in out
    assert "Trials did not complete" not in out + err  # Tune's line is in its log file only
    # It failed in its first epoch, before any checkpoint: the retry starts over, and says so.
    again = (
        "failure 1 (RuntimeError: injected fault in attempt 1); retrying from the start (no checkpoint yet)"
    )
    assert err.count(again) == 2, err


def _state(folder: Path) -> dict[str, Any]:
    path = folder / TRACKING_STATE
    return read_state(path) if path.is_file() else {"trials": {}}


def _wait_until_mid_sweep(tmp: Path, proc, *, finished: int, runs: str = "runs") -> None:
    """Until ``finished`` trials ended and another one has logged an epoch."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        folders = tmp / runs
        if folders.is_dir() and any(folders.iterdir()):
            trials = _state(_sweep_dir(tmp, runs))["trials"].values()
            done = sum(bool(t["run_status"]) for t in trials)
            busy = sum(not t["run_status"] and t["last_step"] >= 1 for t in trials)
            if done >= finished and busy >= 1:
                return
        time.sleep(0.2)
    raise AssertionError("the sweep never got half way")


@pytest.mark.parametrize("how", ["sigkill", "ctrl-c", "ctrl-c, storage URI"])
def test_driver_crash_then_resume_finishes_the_sweep(tmp_path: Path, how: str) -> None:
    sweep = chaos_sweep(tmp_path, samples=3, epochs=5, epoch_sleep=0.4)
    uri = f"sqlite:///{tmp_path}/x.db"
    storage, runs, cwd, env = str(tmp_path / "runs"), "runs", ROOT, None
    if how.endswith("URI"):
        # Tune's state at a URI (file:// takes Ray's URI path, as s3:// would); the sweep's
        # folder, for resume, in ./hypersweep_runs of the working directory.
        storage, runs = f"file://{tmp_path}/store", "hypersweep_runs"
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        cwd, env = tmp_path, {"PYTHONPATH": path}
    proc = cli("run", str(sweep), "--tracking-uri", uri, "--storage", storage, cwd=cwd, env=env)
    _wait_until_mid_sweep(tmp_path, proc, finished=1, runs=runs)
    folder = _sweep_dir(tmp_path, runs)
    finished_before = [t["config"]["lr"] for t in _state(folder)["trials"].values() if t["run_status"]]
    if how == "sigkill":
        kill_driver(proc)
        ref = str(folder)
        resume_args: tuple[str, ...] = ()
    else:
        proc.send_signal(signal.SIGINT)
        rc, _, err = _wait(proc, timeout=120)
        assert rc == 130, err
        assert "Traceback" not in err
        assert f"hypersweep resume {folder}" in err.splitlines()[-1]
        interrupted = counts(uri)
        assert interrupted.running == 0  # parent and unfinished children are KILLED, not RUNNING
        assert "running" not in interrupted.statuses
        killed = [c for c in read_sweep(uri, NAME).children if c.info.status == "KILLED"]
        assert all(c.data.tags["hypersweep.status"] == "interrupted" for c in killed)
        ref, resume_args = folder.name, ("--storage", storage)
    rc, out, err = _wait(cli("resume", ref, *resume_args, cwd=cwd, env=env))
    assert rc == 0, out + err
    if how.endswith("URI"):
        assert (tmp_path / "store" / folder.name / "tuner.pkl").is_file()
        local = sorted(p.name for p in folder.iterdir())
        assert local == [TRACKING_STATE, "hypersweep.json", STUDY_FILE, TUNE_LOG]  # no Tune state
        assert not (tmp_path / "file:").exists()
    ledger = counts(uri)
    assert (ledger.trials, ledger.trial_ids, ledger.duplicated_steps, ledger.running) == (3, 3, 0, 0)
    assert ledger.statuses == {"completed": 3}
    assert steps(uri) == [[1, 2, 3, 4, 5]] * 3
    # The searcher's study went on in the same journal: the 3 trials told COMPLETE, each once
    # (a trial asked for after Tune's last snapshot and never run is FAIL, not RUNNING for good).
    told = study_of(folder, folder.name).trials
    assert sorted(t.state.name for t in told if t.state.name != "FAIL") == ["COMPLETE"] * 3
    children = read_sweep(uri, NAME).children
    ids = {c.data.tags["hypersweep.trial_id"] for c in children}
    assert {t.user_attrs["trial_id"] for t in told if t.state.name == "COMPLETE"} == ids
    # A trial finished before the crash never trains again: its untrained model and its 5 epochs
    # were evaluated once each. (Tune may rebuild it from its final checkpoint, with nothing to do.)
    for lr in finished_before:
        log = tmp_path / "faults" / f"{float(lr):.12g}.log"
        assert log.read_text().split().count("eval") == 6, log.read_text()
    # Resuming it again finds it finished: nothing trains, nothing is recorded twice.
    rc, out, err = _wait(cli("resume", ref, *resume_args, cwd=cwd, env=env), timeout=60)
    assert (rc, out.strip()) == (0, f"sweep {folder.name} finished already: nothing to resume"), err
    stored = read_sweep(uri, NAME)
    assert len(stored.client.get_metric_history(stored.parent.info.run_id, "best_val_loss")) == 1
    assert counts(uri) == ledger


def test_resume_refuses_what_is_not_a_sweep(tmp_path: Path) -> None:
    (tmp_path / "some_folder").mkdir()
    for ref in (str(tmp_path / "some_folder"), "no-such-sweep-20200101-000000"):
        rc, _, err = _wait(cli("resume", ref, "--storage", str(tmp_path), cwd=tmp_path), timeout=60)
        assert rc == 2
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert "not a hypersweep sweep" in _wait(cli("resume", str(tmp_path / "some_folder")), 60)[2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["some_folder"]


def _wait_for_queued_epochs(folder: Path, proc, *, after: dict[str, int], held_s: float) -> None:
    """Until the tracking journal has kept two or more epochs unsent for ``held_s`` seconds, each
    reported after ``after`` (every trial's last step when the server stopped). The writer flushes
    every second: while the server answers, no epoch stays unsent that long."""
    first_seen: dict[tuple[str, int], float] = {}  # epochs unsent at every look since
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, ("the sweep ended before epochs were held", proc.communicate())
        now = time.monotonic()
        unsent = {
            (tid, step)
            for tid, trial in _state(folder)["trials"].items()
            for key, _, _, step in trial["pending"]
            if key == "val_loss" and step > after.get(tid, 0)
        }
        first_seen = {epoch: first_seen.get(epoch, now) for epoch in unsent}
        if len(first_seen) >= 2 and now - min(first_seen.values()) >= held_s:
            return
        time.sleep(0.2)
    raise AssertionError(f"no epochs were held while the tracking server was down: {first_seen}")


@pytest.mark.parametrize("cadence", ["every epoch", "shipped defaults"])
def test_tracking_server_outage_mid_sweep_loses_nothing(tmp_path: Path, cadence: str) -> None:
    """A real MLflow server killed after the first results and restarted on the same port/store:
    the epochs reported while it is down wait in the sweep's tracking journal, then reach it."""
    db, port = tmp_path / "server.db", free_port()
    server = start_server(db, port)
    uri = f"http://127.0.0.1:{port}"
    every_epoch = cadence == "every epoch"
    epochs = 6 if every_epoch else 10  # batched reports (2 s) come a few times per trial
    try:
        sweep = chaos_sweep(tmp_path, samples=3, epochs=epochs, every_epoch=every_epoch, epoch_sleep=0.3)
        proc = cli("run", str(sweep), "--tracking-uri", uri, "--storage", str(tmp_path / "runs"))
        _wait_until_mid_sweep(tmp_path, proc, finished=0)
        stop_group(server.pid)
        server.wait(timeout=30)
        folder = _sweep_dir(tmp_path)
        stopped_at = {tid: t["last_step"] for tid, t in _state(folder)["trials"].items()}
        # Results keep coming while the server is gone: they are queued, not lost or waited for.
        _wait_for_queued_epochs(folder, proc, after=stopped_at, held_s=3.0)
        server = start_server(db, port)
        rc, out, err = _wait(proc)
        assert rc == 0, out + err
        assert "did not answer" not in err  # the backlog was sent before the sweep ended
        ledger = counts(uri)
        assert (ledger.trials, ledger.trial_ids, ledger.duplicated_steps, ledger.running) == (3, 3, 0, 0)
        assert steps(uri) == [list(range(1, epochs + 1))] * 3
        assert steps(uri, "train_loss") == [list(range(1, epochs + 1))] * 3
        assert not any(t["pending"] for t in _state(folder)["trials"].values())  # the queue emptied
    finally:
        stop_group(server.pid)


def test_basic_auth_server_logs_with_credentials_and_refuses_without(tmp_path: Path) -> None:
    """A real `mlflow server --app-name basic-auth`: the recorder logs with env credentials."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from hypersweep.tracking import SweepRecorder

    db, port = tmp_path / "auth.db", free_port()
    (tmp_path / "basic_auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path}/users.db\n"
        "admin_username = admin\nadmin_password = hs-test-Pw-7781\nauthorization_function = "
        "mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(tmp_path / "basic_auth.ini")
    os.environ["MLFLOW_FLASK_SERVER_SECRET_KEY"] = "test-only-csrf-key"  # required by basic-auth
    try:
        server = start_server(db, port, "--app-name", "basic-auth")
    finally:
        del os.environ["MLFLOW_AUTH_CONFIG_PATH"], os.environ["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    uri = f"http://127.0.0.1:{port}"
    try:
        os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD="hs-test-Pw-7781")
        recorder = SweepRecorder(tracking_uri=uri, metric="val_loss", mode="min")
        recorder.start_sweep(name="auth", sweep_id="auth-1", settings={"tracking_uri": uri})
        recorder.trial_started("t1", {"lr": 0.1})
        recorder.trial_result("t1", {"epoch": 1, "val_loss": 0.5, "train_loss": 0.6})
        recorder.trial_finished("t1", status="completed", stop_reason="completed")
        assert recorder.finish_sweep(best_weights=None, failed=False) is not None
        assert recorder.unsent == 0
        del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
        with pytest.raises(MlflowException, match=r"401|Unauthorized|credentials"):
            MlflowClient(tracking_uri=uri).search_experiments()
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
        stop_group(server.pid)
