"""Function trials: a plain ``train(config, trial)`` swept with every platform feature kept.

Unit tests drive ``hypersweep.Trial`` with a recording sink; the sweeps run the real CLI on local
Ray with a real MLflow store (SQLite).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

import hypersweep
from hypersweep.cli import main
from hypersweep.handle import TRIAL_FILE, Trial, TrialStopped
from hypersweep.trainer import MODEL_FILE, TrainSettings
from tests.conftest import ROOT
from tests.conftest import hypersweep as cli
from tests.mlflow_store import read_sweep

pytestmark = pytest.mark.timeout(300)


class Sink:
    """Keeps every report and the checkpoint files it came with."""

    def __init__(self, saved: Mapping[str, Any] | None = None) -> None:
        self.sent: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self._saved = saved

    def saved(self) -> Mapping[str, Any] | None:
        return self._saved

    def report(
        self,
        metrics: dict[str, Any],
        state: Callable[[], Mapping[str, Any]],
        artifacts: Mapping[str, bytes] | None = None,
    ) -> None:
        self.sent.append((dict(metrics), dict(state())))

    def epochs(self) -> list[int]:
        return [m["epoch"] for m, _ in self.sent]


def handle(sink: Sink, **settings: Any) -> Trial:
    return Trial(settings=TrainSettings(**{"max_epochs": 5, "patience": None, **settings}), sink=sink)


def test_a_local_trial_runs_a_function_alone() -> None:
    from tests.function_toy import toy_train

    trial = hypersweep.Trial(max_epochs=4, quiet=True)
    assert trial.run(toy_train, {"lr": 0.05}) is trial.history
    assert [e["epoch"] for e in trial.history] == [1, 2, 3, 4]
    assert trial.stop_reason == "completed" and trial.history[-1]["stop_reason"] == "completed"
    assert trial.history[-1]["val_loss"] < trial.history[0]["val_loss"]  # it learns


def test_patience_ends_the_function_at_the_exact_epoch_and_passes_except_exception() -> None:
    """val_loss best at epoch 2, then worse: patience 2 ends it at epoch 4, through the loop's
    own ``except Exception`` (TrialStopped is a BaseException, as Ray's SystemExit)."""
    sink = Sink()
    trial = handle(sink, max_epochs=10, patience=2)
    caught = []
    with pytest.raises(TrialStopped) as stopped:
        for epoch, val in enumerate([1.0, 0.5, 0.6, 0.7, 0.4, 0.3], start=1):
            try:
                trial.report(epoch, train_loss=val, val_loss=val)
            except Exception as exc:  # a user's loop that catches everything it expects
                caught.append(exc)
    assert stopped.value.reason == "patience" and not caught
    assert sink.epochs() == [1, 2, 3]  # the last epoch goes when the function has ended
    trial.close()
    assert sink.epochs() == [1, 2, 3, 4]
    assert sink.sent[-1][0]["stop_reason"] == "patience"
    with pytest.raises(TrialStopped):  # a report after the end ends it again
        trial.report(5, val_loss=0.1)


@pytest.mark.parametrize(
    ("losses", "epochs"), [([1.0, math.nan], 2), ([1.0, 0.9, 10.5], 3), ([2.0, math.inf], 2)]
)
def test_the_divergence_guard_judges_the_reported_losses(losses: list[float], epochs: int) -> None:
    """Not finite, or above divergence_factor (10) times the first loss reported: diverged."""
    sink = Sink()
    trial = handle(sink, max_epochs=10)
    with pytest.raises(TrialStopped) as stopped:
        for epoch, loss in enumerate(losses, start=1):
            trial.report(epoch, train_loss=loss, val_loss=loss)
    assert stopped.value.reason == "diverged"
    trial.close()
    assert sink.epochs()[-1] == epochs and sink.sent[-1][0]["stop_reason"] == "diverged"


def _loop(trial: Trial, epochs: int, *, checkpoint_first: bool, every: int = 1) -> None:
    """Reports val_loss 1/epoch (each epoch the best) and checkpoints {'epoch': n} every ``every``."""
    for epoch in range(1, epochs + 1):
        state = {"epoch": epoch, "w": torch.full((2,), float(epoch))}
        if checkpoint_first and epoch % every == 0:
            trial.checkpoint(state)
        trial.report(epoch, val_loss=1.0 / epoch)
        if not checkpoint_first and epoch % every == 0:
            trial.checkpoint(state)


@pytest.mark.parametrize(
    "checkpoint_first", [False, True], ids=["report-then-checkpoint", "checkpoint-first"]
)
def test_each_report_carries_the_checkpoint_of_its_own_epoch(checkpoint_first: bool) -> None:
    """Whichever order the loop keeps, the state a report is sent with is that epoch's (the
    first report of a loop that checkpoints after reporting goes before its order is known)."""
    sink = Sink()
    trial = handle(sink, max_epochs=4)
    _loop(trial, 4, checkpoint_first=checkpoint_first)
    trial.close()
    assert sink.epochs() == [1, 2, 3, 4]
    for metrics, files in sink.sent[0 if checkpoint_first else 1 :]:
        assert files[TRIAL_FILE]["state"]["epoch"] == metrics["epoch"]
        assert files[TRIAL_FILE]["guard"]["epoch"] == metrics["epoch"]
        assert torch.equal(files[MODEL_FILE]["w"], torch.full((2,), float(metrics["epoch"])))
    assert sink.sent[-1][0]["stop_reason"] == "completed"


def test_the_model_file_is_the_state_of_the_best_epoch() -> None:
    sink = Sink()
    trial = handle(sink, max_epochs=4)
    for epoch, val in enumerate([1.0, 0.2, 0.5, 0.6], start=1):
        trial.report(epoch, val_loss=val)
        trial.checkpoint({"epoch": epoch})
    trial.close()
    _, files = sink.sent[-1]
    assert files[TRIAL_FILE]["state"] == {"epoch": 4} and files[MODEL_FILE] == {"epoch": 2}


def test_a_checkpoint_is_a_copy_taken_when_it_is_given() -> None:
    sink = Sink()
    trial = handle(sink, max_epochs=3)
    weights = torch.zeros(3)
    for epoch in (1, 2):
        trial.report(epoch, val_loss=1.0 / epoch)
        trial.checkpoint({"w": weights})
        weights += 1.0  # training goes on in place, as an optimizer step does
    assert torch.equal(sink.sent[-1][1][TRIAL_FILE]["state"]["w"], torch.ones(3))


def test_restore_continues_where_the_checkpoint_left_off() -> None:
    """A retry: the saved checkpoint of epoch 2 comes back, patience counters included, and the
    loop must go on from epoch 3."""
    first = Sink()
    trial = handle(first, max_epochs=6, patience=3)
    trial.log_artifact("notes.txt", b"kept")
    for epoch, val in enumerate([1.0, 1.5], start=1):
        trial.report(epoch, val_loss=val)
        trial.checkpoint({"epoch": epoch})
    saved = first.sent[-1][1][TRIAL_FILE]
    again = Sink(saved)
    retry = handle(again, max_epochs=6, patience=3)
    assert retry.restore() == {"epoch": 2} and retry.epoch == 2
    assert retry._artifacts == {"notes.txt": b"kept"}  # logged before the retry, still to go
    with pytest.raises(ValueError, match="epoch 2 reported after epoch 2"):
        retry.report(2, val_loss=0.1)
    retry.report(3, val_loss=1.6)
    with pytest.raises(TrialStopped):  # bad epochs 2, 3, 4: the count went on from the checkpoint
        retry.report(4, val_loss=1.7)
    assert handle(Sink(), max_epochs=3).restore() is None


def test_what_a_function_reports_is_checked() -> None:
    trial = handle(Sink())
    with pytest.raises(ValueError, match="'epoch' is the platform's own result key"):
        trial.report(1, epoch=3.0)
    with pytest.raises(
        ValueError, match="the sweep's metric 'val_loss' is not reported \\(got: train_loss\\)"
    ):
        trial.report(1, train_loss=1.0)
    with pytest.raises(TypeError, match="metric 'val_loss' must be a number, not str"):
        trial.report(1, val_loss="low")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="from 1 on"):
        trial.report(0, val_loss=1.0)
    with pytest.raises(ValueError, match="relative path"):
        trial.log_artifact("../x.txt", b"")
    trial.report(1, val_loss=torch.tensor(0.5))  # a one-element tensor is a number
    assert trial.history[0]["val_loss"] == 0.5


def test_a_function_that_never_checkpoints_has_no_model_file() -> None:
    sink = Sink()
    trial = handle(sink, max_epochs=2)
    trial.report(1, val_loss=1.0)
    trial.report(2, val_loss=0.5)
    trial.close()
    assert [set(files) for _, files in sink.sent] == [{TRIAL_FILE}] * 2


def test_a_function_that_reports_nothing_fails_saying_why() -> None:
    with pytest.raises(RuntimeError, match="returned without reporting an epoch"):
        handle(Sink()).close()


def test_a_function_that_ends_early_completes_with_its_last_epoch() -> None:
    sink = Sink()
    trial = handle(sink, max_epochs=10)
    trial.report(1, val_loss=1.0)
    trial.report(2, val_loss=0.5)
    trial.close()
    assert sink.epochs() == [1, 2, 2] and sink.sent[-1][0]["stop_reason"] == "completed"


# -- validation at sweep start (run's cases are in test_bad_input) ------------------------------
def test_validate_refuses_a_function_that_cannot_take_config_and_trial(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "fn.yaml"
    sweep.write_text(
        "name: fn\nexperiment: tests.function_toy:two_args_only\n"
        "search_space: {lr: {type: loguniform, low: 0.01, high: 0.1}}\n"
    )
    with pytest.raises(SystemExit) as exit_:
        main(["validate", str(sweep)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {sweep}: experiment: 'two_args_only' in 'tests.function_toy' cannot be called as "
        "train(config, trial): it takes (config: 'dict[str, Any]') -> 'None'"
    )


# -- real sweeps -----------------------------------------------------------------------------------
def _sweep(tmp: Path, experiment: str, *lines: str) -> Path:
    faults = tmp / "faults"
    faults.mkdir(exist_ok=True)
    path = tmp / "fn.yaml"
    path.write_text(
        f"name: fn\nexperiment: {experiment}\n"
        "search_space: {lr: {type: loguniform, low: 0.001, high: 0.5}}\n"
        f"fixed: {{fault_dir: {faults}}}\n" + "".join(f"{line}\n" for line in lines)
    )
    return path


def _run(sweep: Path, tmp: Path, *args: str) -> tuple[str, Any]:
    uri = f"sqlite:///{tmp}/x.db"
    result = cli("run", str(sweep), "--tracking-uri", uri, "--storage", str(tmp / "runs"), *args, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return uri, read_sweep(uri, "fn")


def _steps(stored: Any, run: Any, key: str) -> list[int]:
    return [
        m.step for m in sorted(stored.client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
    ]


def test_a_function_sweep_with_asha_logs_one_nested_run_per_trial(tmp_path: Path) -> None:
    """ASHA over a loop that also logs with MLflow itself (``tests.function_mlflow``): its own
    values land in its trial's run, those after the loop too when the trial completes."""
    sweep = _sweep(
        tmp_path,
        "tests.function_mlflow:logs_itself",
        "max_epochs: 9",
        "num_samples: 8",
        "scheduler: {type: asha, grace_period: 1, reduction_factor: 3}",
        "search: {type: random, seed: 3}",
        "resources: {cpus_per_trial: 1, max_concurrent: 2}",
    )
    _, stored = _run(sweep, tmp_path)
    parent = stored.parent.info.run_id
    assert len(stored.children) == 8
    statuses = sorted(stored.tag(c, "status") or "" for c in stored.children)
    assert "early_stopped" in statuses and "completed" in statuses, statuses  # ASHA stopped some
    for child in stored.children:
        assert child.data.tags["mlflow.parentRunId"] == parent
        assert float(child.data.params["lr"]) > 0
        steps = _steps(stored, child, "val_loss")
        assert steps == list(range(1, len(steps) + 1)), steps  # every epoch once, from 1
        assert _steps(stored, child, "val_mae") == steps and _steps(stored, child, "train_loss") == steps
        assert child.data.params["own_param"] == "set by the loop"
        assert child.data.tags["own_tag"] == child.data.tags["hypersweep.trial_id"]
        assert [a.path for a in stored.client.list_artifacts(child.info.run_id, "notes")] == ["notes/lr.txt"]
        own = _steps(stored, child, "own_metric")
        if stored.tag(child, "status") == "completed":
            assert steps[-1] == 9 and own == list(range(10))
        else:  # ASHA ended the function at its report: what it logged before is there
            assert own[0] == 0
    everything = stored.client.search_runs(
        [e.experiment_id for e in stored.client.search_experiments()], max_results=100
    )
    assert len(everything) == 9  # the parent and its 8 trials: no stray run
    assert stored.parent.data.tags["hypersweep.best_trial"]
    best_model = [a.path for a in stored.client.list_artifacts(parent, "best_model")]
    assert best_model == ["best_model/model.pt"]


def test_a_killed_worker_retries_from_the_functions_checkpoint(tmp_path: Path) -> None:
    """The worker is SIGKILLed after epoch 2's report: the retry gets trial.restore()'s state and
    goes on from there (epoch 3, or 2 if the kill beat the report); no step is logged twice."""
    sweep = _sweep(
        tmp_path,
        "tests.function_toy:toy_train",
        "max_epochs: 4",
        "num_samples: 2",
        "scheduler: {type: fifo}",
        "training: {patience: null, report_every_s: 0, checkpoint_every_s: 0}",
        "resources: {cpus_per_trial: 1, max_concurrent: 2}",
    )
    sweep.write_text(sweep.read_text().replace("fixed: {", "fixed: {fault: kill, fault_epoch: 2, "))
    _, stored = _run(sweep, tmp_path)
    for log in (tmp_path / "faults").glob("*.log"):
        first, retry = log.read_text().split("\n")[:2]
        assert first == "start 1" and retry in ("start 2", "start 3"), log.read_text()
    assert len(list((tmp_path / "faults").glob("*.log"))) == 2
    for child in stored.children:
        assert stored.tag(child, "status") == "completed"
        assert _steps(stored, child, "val_loss") == [1, 2, 3, 4]


def test_a_function_sweep_killed_with_its_driver_resumes_and_finishes(tmp_path: Path) -> None:
    """SIGKILL the driver (and its Ray) mid sweep, then ``hypersweep resume``: every trial ends
    once, each epoch is logged once, and a trial that had finished is not trained again."""
    from tests.chaos_tools import NAME, counts, kill_driver, steps
    from tests.chaos_tools import cli as background
    from tests.test_chaos import _state, _sweep_dir, _wait, _wait_until_mid_sweep

    sweep = _sweep(
        tmp_path,
        "tests.function_toy:toy_train",
        "max_epochs: 5",
        "num_samples: 3",
        "scheduler: {type: fifo}",
        "training: {patience: null}",
        "resources: {cpus_per_trial: 1, max_concurrent: 2}",
    )
    sweep.write_text(
        sweep.read_text()
        .replace("name: fn", f"name: {NAME}")
        .replace("fixed: {", "fixed: {epoch_sleep: 0.4, ")
    )
    uri = f"sqlite:///{tmp_path}/x.db"
    proc = background("run", str(sweep), "--tracking-uri", uri, "--storage", str(tmp_path / "runs"))
    _wait_until_mid_sweep(tmp_path, proc, finished=1)
    folder = _sweep_dir(tmp_path, "runs")
    finished_before = [t["config"]["lr"] for t in _state(folder)["trials"].values() if t["run_status"]]
    kill_driver(proc)
    rc, out, err = _wait(background("resume", str(folder)))
    assert rc == 0, out + err
    ledger = counts(uri)
    assert (ledger.trials, ledger.trial_ids, ledger.duplicated_steps, ledger.running) == (3, 3, 0, 0)
    assert ledger.statuses == {"completed": 3}
    assert steps(uri) == [[1, 2, 3, 4, 5]] * 3
    for lr in finished_before:
        log = tmp_path / "faults" / f"{float(lr):.12g}.log"
        assert log.read_text().split("\n").count("start 1") == 1, log.read_text()
