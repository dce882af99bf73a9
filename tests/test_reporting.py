"""How a trial's epochs reach the driver: batched reports at the scheduler's decision epochs, at the
end and at most ``report_every_s`` apart, with checkpoints where a retry or ASHA needs them; and the
driver's recorder, which logs every epoch of a batch once, from a writer thread."""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler, AsyncHyperBandScheduler

from hypersweep import trial
from hypersweep.config import build_spec
from hypersweep.errors import ConfigError
from hypersweep.schedulers import decision_epochs
from hypersweep.tracking import EPOCH_TIME, SweepRecorder
from hypersweep.trainer import TrainerState, TrainSettings
from tests.mlflow_store import read_sweep


def _spec(**overrides: Any) -> Any:
    space = {"lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1}}
    data = {"name": "r", "experiment": "tests.toy:ToyRegression", "search_space": space}
    return build_spec({**data, **overrides}, Path("r.yaml"))


@pytest.mark.parametrize(
    ("grace", "factor", "max_epochs"),
    [(1, 3.0, 20), (2, 3.0, 20), (1, 2.0, 6), (1, 4.0, 100), (3, 2.5, 50), (5, 3.0, 5)],
)
def test_decision_epochs_are_ashas_rungs(grace: int, factor: float, max_epochs: int) -> None:
    spec = _spec(
        max_epochs=max_epochs,
        scheduler={"type": "asha", "grace_period": grace, "reduction_factor": factor},
    )
    asha = ASHAScheduler(time_attr="epoch", max_t=max_epochs, grace_period=grace, reduction_factor=factor)
    rungs = {math.ceil(milestone) for milestone, _ in asha._brackets[0]._rungs}  # Ray's own
    assert decision_epochs(spec) == frozenset(min(max_epochs, r) for r in rungs)


@pytest.mark.parametrize(
    ("grace", "factor", "max_epochs", "brackets"), [(1, 3.0, 27, 3), (1, 2.0, 20, 4), (2, 3.0, 20, 2)]
)
def test_decision_epochs_are_every_hyperband_brackets_rungs(grace, factor, max_epochs, brackets) -> None:
    spec = _spec(
        max_epochs=max_epochs,
        scheduler={
            "type": "hyperband",
            "grace_period": grace,
            "reduction_factor": factor,
            "brackets": brackets,
        },
    )
    hyperband = AsyncHyperBandScheduler(
        time_attr="epoch", max_t=max_epochs, grace_period=grace, reduction_factor=factor, brackets=brackets
    )
    rungs = {math.ceil(m) for bracket in hyperband._brackets for m, _ in bracket._rungs}  # Ray's own
    assert all(bracket._rungs for bracket in hyperband._brackets)  # every bracket judges somewhere
    assert decision_epochs(spec) == frozenset(min(max_epochs, r) for r in rungs)


def test_fifo_decides_nothing_and_the_median_rule_every_epoch_past_its_grace() -> None:
    assert decision_epochs(_spec(scheduler={"type": "fifo"})) == frozenset()
    median = _spec(max_epochs=6, scheduler={"type": "median", "grace_period": 3})
    assert decision_epochs(median) == frozenset({3, 4, 5, 6})


def test_more_hyperband_brackets_than_fit_are_bad_input() -> None:
    with pytest.raises(ConfigError, match=r"scheduler.brackets: 4 brackets need more room: at most 3 fit"):
        _spec(max_epochs=9, scheduler={"type": "hyperband", "grace_period": 1, "brackets": 4})


class _Tune:
    """Stands in for ``ray.tune`` inside a worker: keeps every report and its checkpoint's files."""

    def __init__(self) -> None:
        self.reports: list[tuple[dict[str, Any], list[str]]] = []

    def report(self, result: dict[str, Any], checkpoint: Any = None) -> None:
        files = sorted(p.name for p in Path(checkpoint.path).rglob("*") if p.is_file()) if checkpoint else []
        self.reports.append((result, files))

    Checkpoint = tune.Checkpoint

    def get_checkpoint(self) -> None:
        return None


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tune_and_clock(monkeypatch: pytest.MonkeyPatch) -> tuple[_Tune, _Clock]:
    fake, clock = _Tune(), _Clock()
    monkeypatch.setattr(trial, "tune", fake)
    monkeypatch.setattr(time, "monotonic", clock)
    return fake, clock


def _job(**overrides: Any) -> trial.TrialJob:
    base: dict[str, Any] = dict(
        experiment="tests.toy:ToyRegression",
        roots=(),
        settings=TrainSettings(max_epochs=6),
        threads=1,
        gpus=0.0,
        allow_cpu_fallback=False,
        metric="val_loss",
        mode="min",
        report_every_s=2.0,
        checkpoint_every_s=10.0,
    )
    return trial.TrialJob(**{**base, **overrides})


def _state() -> TrainerState:
    weights = {"w": torch.zeros(2)}
    return TrainerState(epoch=1, model=weights, best_model=weights)


def _epochs(reporter: trial._TuneReporter, clock: _Clock, count: int, seconds: float, last: str = "") -> None:
    """``count`` epochs of ``seconds`` each; the last one ends the trial with ``last`` if given."""
    for epoch in range(1, count + 1):
        clock.now += seconds
        metrics: dict[str, Any] = {"epoch": epoch, "val_loss": 1.0 / epoch, "train_loss": 1.0}
        if last and epoch == count:
            metrics["stop_reason"] = last
        reporter.report(metrics, _state, {"plot.png": b"x"} if last and epoch == count else None)


def _history(result: dict[str, Any]) -> list[int]:
    return [e["epoch"] for e in result[trial.HISTORY]]


def test_only_the_last_report_is_marked_done(tune_and_clock) -> None:
    """Tune then stops the trial on its last report instead of asking the worker for another."""
    fake, clock = tune_and_clock
    reporter = trial._TuneReporter(_job(report_every_s=0.0))
    _epochs(reporter, clock, 3, seconds=0.1, last="patience")
    assert [r.get("done", False) for r, _ in fake.reports] == [False, False, True]


def test_short_epochs_wait_for_decisions_and_the_end(tune_and_clock) -> None:
    fake, clock = tune_and_clock
    reporter = trial._TuneReporter(_job(decision_epochs=frozenset({2, 4})), {"device": "cpu"})
    _epochs(reporter, clock, 6, seconds=0.1, last="completed")
    assert [_history(r) for r, _ in fake.reports] == [[1, 2], [3, 4], [5, 6]]
    assert [r["epoch"] for r, _ in fake.reports] == [2, 4, 6]  # the result itself is the last epoch
    assert all(r["device"] == "cpu" for r, _ in fake.reports)
    # ASHA may stop the trial at a decision epoch: its weights there must be in a checkpoint.
    assert [files for _, files in fake.reports] == [
        ["model.pt", "trainer.pt"],
        ["model.pt", "trainer.pt"],
        ["model.pt", "plot.png", "trainer.pt"],
    ]


def test_each_epoch_carries_when_it_ended_under_the_recorders_key(tune_and_clock) -> None:
    fake, clock = tune_and_clock
    reporter = trial._TuneReporter(_job(report_every_s=60.0))
    _epochs(reporter, clock, 3, seconds=0.1, last="completed")
    (result, _), now = fake.reports[0], time.time() * 1000
    assert trial.EPOCH_TIME == EPOCH_TIME  # worker and recorder agree on the key
    times = [e[EPOCH_TIME] for e in result[trial.HISTORY]]
    assert times == sorted(times) and now - 60_000 < times[0] <= now


def test_reports_come_at_most_report_every_s_apart(tune_and_clock) -> None:
    fake, clock = tune_and_clock
    reporter = trial._TuneReporter(_job(settings=TrainSettings(max_epochs=20)))
    _epochs(reporter, clock, 10, seconds=0.9)  # 2 s between reports: every third epoch
    assert [_history(r) for r, _ in fake.reports] == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert all(files == [] for _, files in fake.reports)  # 8.1 s < checkpoint_every_s


def test_checkpoints_come_at_most_checkpoint_every_s_apart(tune_and_clock) -> None:
    fake, clock = tune_and_clock
    reporter = trial._TuneReporter(_job(report_every_s=0.0, checkpoint_every_s=3.0))
    _epochs(reporter, clock, 6, seconds=1.0)
    assert [_history(r) for r, _ in fake.reports] == [[1], [2], [3], [4], [5], [6]]
    assert [bool(files) for _, files in fake.reports] == [False, False, True, False, False, True]


def test_zero_intervals_report_and_checkpoint_every_epoch(tune_and_clock) -> None:
    fake, clock = tune_and_clock
    reporter = trial._TuneReporter(_job(report_every_s=0.0, checkpoint_every_s=0.0))
    _epochs(reporter, clock, 3, seconds=0.01)
    reports = [(_history(r), bool(files)) for r, files in fake.reports]
    assert reports == [([1], True), ([2], True), ([3], True)]


@pytest.mark.parametrize(("mode", "worst"), [("min", math.inf), ("max", -math.inf)])
def test_a_diverged_epoch_scores_worst(tune_and_clock, mode: str, worst: float) -> None:
    fake, _ = tune_and_clock
    reporter = trial._TuneReporter(_job(mode=mode))
    reporter.report({"epoch": 1, "val_loss": 7.5, "val_acc": 0.3, "stop_reason": "diverged"}, _state)
    result, _ = fake.reports[0]
    assert result["val_loss"] == worst
    # MLflow logs what was measured: a chart of val_loss does not end at 1.8e308.
    assert result[trial.HISTORY][0]["val_loss"] == 7.5 and result[trial.HISTORY][0]["val_acc"] == 0.3


def test_the_recorder_logs_each_epoch_of_a_batch_once(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/x.db"
    recorder = SweepRecorder(tracking_uri=uri, metric="val_loss", mode="min", state_file=tmp_path / "s.json")
    recorder.start_sweep(name="batches", sweep_id="b-1", settings={})
    recorder.start_writer()
    recorder.trial_started("t1", {"lr": 0.1})
    first = [{"epoch": e, "val_loss": 1.0 / e} for e in (1, 2, 3)]
    recorder.trial_result("t1", {**first[-1], "device": "cpu"}, epochs=first)
    # A retry from the epoch-2 checkpoint replays epoch 3 with the next batch.
    replay = [{"epoch": e, "val_loss": 0.5 / e} for e in (3, 4)]
    recorder.trial_result("t1", replay[-1], epochs=replay)
    recorder.trial_finished("t1", status="completed", stop_reason="completed")
    recorder.stop_writer()
    assert recorder.finish_sweep(best_weights=None, failed=False) is not None
    stored = read_sweep(uri, "batches")
    (child,) = stored.children
    assert stored.history(child) == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.125)]
    assert stored.tag(child, "device") == "cpu" and child.info.status == "FINISHED"
    assert child.data.params == {"lr": "0.1"}
    assert recorder.unsent == 0


class _Outage:
    """A real client behind a switch: while ``down``, every request fails as a lost server's would."""

    def __init__(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.real, self.down = MlflowClient(tracking_uri=uri), False
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise OSError("connection refused")
            self.calls.append((name, kwargs))
            return getattr(self.real, name)(*args, **kwargs)

        return call


def test_a_trial_that_ended_before_its_run_was_made_gets_its_tags_at_creation(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/x.db"
    client = _Outage(uri)
    recorder = SweepRecorder(tracking_uri=uri, metric="val_loss", mode="min", client=client)
    recorder.start_sweep(name="late", sweep_id="l-1", settings={})
    client.down = True
    recorder.trial_started("t1", {"lr": 0.1})
    recorder.trial_result("t1", {"epoch": 1, "val_loss": 0.5, "device": "cpu"})
    recorder.trial_finished("t1", status="completed", stop_reason="completed")
    client.down, client.calls = False, []
    assert recorder.drain(30)
    assert [name for name, _ in client.calls] == ["create_run", "log_batch", "set_terminated"]
    assert client.calls[1][1]["tags"] == []  # every tag went with the creation
    (child,) = read_sweep(uri, "late").children
    assert child.data.tags["hypersweep.status"] == "completed" and child.info.status == "FINISHED"
    assert child.data.tags["hypersweep.stop_reason"] == "completed"
    assert child.data.tags["hypersweep.device"] == "cpu"
    assert child.data.params == {"lr": "0.1"} and child.data.metrics == {
        "val_loss": 0.5,
        "best_val_loss": 0.5,
    }


def test_the_best_trial_named_at_the_end_has_its_run_made_by_the_last_flush(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/x.db"
    client = _Outage(uri)
    recorder = SweepRecorder(tracking_uri=uri, metric="val_loss", mode="min", client=client)
    recorder.start_sweep(name="late", sweep_id="l-1", settings={})
    client.down = True  # the writer has not made the run before the trial ends
    recorder.trial_started("t1", {"lr": 0.1})
    recorder.trial_result("t1", {"epoch": 1, "val_loss": 0.5})
    recorder.trial_finished("t1", status="completed", stop_reason="completed")
    client.down = False
    best = recorder.finish_sweep(best_weights=None, failed=False)
    (child,) = read_sweep(uri, "late").children
    assert best is not None and best.run_id == child.info.run_id


def test_a_run_made_late_keeps_the_trials_own_times(tmp_path: Path) -> None:
    """Runs are made by the writer, often after a short trial ended: its Duration column and its
    metrics' time axis must still show when the trial and each epoch ran."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/x.db"
    client = _Outage(uri)
    recorder = SweepRecorder(tracking_uri=uri, metric="val_loss", mode="min", client=client)
    recorder.start_sweep(name="late", sweep_id="l-1", settings={})
    client.down = True
    before = int(time.time() * 1000)
    recorder.trial_started("t1", {"lr": 0.1})
    epochs = [{"epoch": e, "val_loss": 1.0 / e, EPOCH_TIME: before + 100 * e} for e in (1, 2)]
    recorder.trial_result("t1", epochs[-1], epochs=epochs)
    recorder.trial_finished("t1", status="completed", stop_reason="completed")
    ended = int(time.time() * 1000)
    time.sleep(0.5)  # the store answers again only later
    client.down = False
    assert recorder.drain(30)
    (child,) = read_sweep(uri, "late").children
    assert before <= child.info.start_time <= child.info.end_time <= ended
    history = MlflowClient(tracking_uri=uri).get_metric_history(child.info.run_id, "val_loss")
    assert [m.timestamp for m in history] == [before + 100, before + 200]
    assert EPOCH_TIME not in child.data.metrics


def test_the_tuning_loop_never_waits_for_a_slow_store(tmp_path: Path) -> None:
    """While the writer thread is inside a request that does not return, the tuning loop records
    a whole trial; what it recorded is kept and sent once the request returns."""
    gate, inside, recorded = threading.Event(), threading.Event(), threading.Event()

    class SlowClient:
        def __init__(self) -> None:
            self.released = False  # the request returned because the test opened the gate
            self.in_request = False
            self.metrics: list[tuple[str, int]] = []

        def create_run(self, *args: Any, **kwargs: Any) -> Any:
            self.in_request = True
            inside.set()
            self.released = gate.wait(60)  # far longer than the test waits for the tuning loop
            self.in_request = False
            return type("R", (), {"info": type("I", (), {"run_id": "run-1"})()})()

        def log_batch(self, run_id: str, metrics: Any = (), **kwargs: Any) -> None:
            self.metrics += [(m.key, m.step) for m in metrics]

        def set_terminated(self, *args: Any, **kwargs: Any) -> None:
            return None

    def tuning_loop() -> None:
        for epoch in range(1, 50):
            recorder.trial_result("t1", {"epoch": epoch, "val_loss": 1.0 / epoch})
        recorder.trial_finished("t1", status="completed", stop_reason="completed")
        recorded.set()

    client = SlowClient()
    recorder = SweepRecorder(tracking_uri="sqlite:///unused.db", metric="val_loss", mode="min", client=client)
    recorder.start_writer()
    try:
        recorder.trial_started("t1", {"lr": 0.1})
        assert inside.wait(10), "the writer never asked for the trial's run"
        threading.Thread(target=tuning_loop, daemon=True).start()
        assert recorded.wait(10), "recording waited for the store's request"
        assert client.in_request and not gate.is_set()  # the writer was inside it all along
        # 49 epochs and the trial's best, its run to create, its end: all kept, none sent yet.
        assert recorder.unsent == 49 + 1 + 1 + 1 and client.metrics == []
    finally:
        gate.set()
        recorder.stop_writer()
    assert client.released
    recorder.flush(force=True)
    assert recorder.unsent == 0
    expected = [("val_loss", e) for e in range(1, 50)] + [("best_val_loss", 49)]
    assert sorted(client.metrics) == sorted(expected)


def test_the_writer_process_makes_runs_and_reports_mlflow_errors(tmp_path: Path) -> None:
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from hypersweep.tracking.process import ProcessClient

    uri = f"sqlite:///{tmp_path}/x.db"
    writer = ProcessClient(uri)
    try:
        experiment = writer.create_experiment("proc")
        run_id = writer.create_run(experiment, run_name="t1").info.run_id
        writer.log_batch(run_id, metrics=[Metric("val_loss", 0.5, 0, 1)], params=[Param("lr", "0.1")])
        writer.set_terminated(run_id, status="FINISHED")
        with pytest.raises(MlflowException):
            writer.log_batch("no-such-run", params=[Param("lr", "0.1")])
        with pytest.raises(AttributeError):
            writer._tracking_client  # noqa: B018  # only MlflowClient's public methods cross over
        assert writer.get_run(run_id).data.params == {"lr": "0.1"}  # entities come back whole
    finally:
        writer.close()
    # Write-ahead log while it wrote; folded back into the file when it closed.
    with contextlib.closing(sqlite3.connect(tmp_path / "x.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.db"]
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert (run.data.params, run.data.metrics) == ({"lr": "0.1"}, {"val_loss": 0.5})
    with pytest.raises(OSError, match="writer process stopped"):
        writer.set_terminated(run_id, status="FINISHED")


def test_a_store_the_writer_process_cannot_open_fails_ready(tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    from hypersweep.tracking.process import ProcessClient

    (tmp_path / "a-file").write_text("not a folder")
    writer = ProcessClient(f"sqlite:///{tmp_path}/a-file/x.db")
    try:
        with pytest.raises((MlflowException, OSError)):
            writer.ready()
    finally:
        writer.close()


def test_the_live_view_sees_the_best_epoch_of_a_batch() -> None:
    from io import StringIO

    from rich.console import Console

    from hypersweep.console import Progress

    progress = Progress(total=2, metric="val_loss", mode="min", console=Console(file=StringIO()))
    batch = [{"epoch": 1, "val_loss": 0.4}, {"epoch": 2, "val_loss": 0.1}, {"epoch": 3, "val_loss": 0.3}]
    progress.trial_result("a", batch[-1], epochs=batch)
    progress.trial_result("b", {"epoch": 1, "val_loss": 0.2})
    assert progress.best == (0.1, "a")  # the report's own value (0.3) is not its best epoch


@pytest.mark.parametrize("order", [("b", "a"), ("a", "b")])
def test_on_a_tie_the_live_view_and_the_summary_name_the_same_best_trial(tmp_path, order) -> None:
    from io import StringIO

    from rich.console import Console

    from hypersweep.console import Progress
    from hypersweep.tracking import SweepRecorder

    progress = Progress(total=2, metric="val_loss", mode="min", console=Console(file=StringIO()))
    recorder = SweepRecorder(tracking_uri=f"sqlite:///{tmp_path}/m.db", metric="val_loss", mode="min")
    recorder.start_sweep(name="tie", sweep_id="tie-1", settings={})
    for trial_id in order:  # both reach 0.25, in either order
        result = {"epoch": 1, "val_loss": 0.25}
        recorder.trial_started(trial_id, {"lr": 0.1})
        recorder.trial_result(trial_id, result)
        progress.trial_result(trial_id, result)
    best = recorder.best_trial()
    assert best is not None and progress.best == (0.25, best.trial_id) == (0.25, "a")


def test_local_trial_actors_inherit_the_environment_instead_of_carrying_one() -> None:
    """Ray gives an actor with a runtime env of its own a fresh worker (seconds of imports); the
    prestarted, preloaded workers have none. Tune's defaults go to the workers' environment."""
    from ray.tune.execution import class_cache

    from hypersweep.ray_private import actors_inherit_env

    before = (dict(class_cache.DEFAULT_ENV_VARS), set(class_cache.ENV_VARS_TO_PROPAGATE))
    assert before[0], "Tune no longer sets default env vars for trial actors: revisit actors_inherit_env"

    class Trainable:
        pass

    with actors_inherit_env():
        local = class_cache._ActorClassCache().get(Trainable)
    elsewhere = class_cache._ActorClassCache().get(Trainable)
    assert not local._default_options["runtime_env"]
    assert elsewhere._default_options["runtime_env"]["env_vars"] == before[0]
    assert (dict(class_cache.DEFAULT_ENV_VARS), set(class_cache.ENV_VARS_TO_PROPAGATE)) == before


def test_the_environment_ray_starts_with_is_restored_afterwards(monkeypatch: pytest.MonkeyPatch) -> None:
    from hypersweep.cluster import _environ

    monkeypatch.setenv("HS_KEPT", "old")
    monkeypatch.delenv("HS_NEW", raising=False)
    with _environ({"HS_KEPT": "new", "HS_NEW": "1"}):
        assert (os.environ["HS_KEPT"], os.environ["HS_NEW"]) == ("new", "1")
    assert os.environ["HS_KEPT"] == "old" and "HS_NEW" not in os.environ
