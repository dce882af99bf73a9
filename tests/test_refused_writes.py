"""A write MLflow refuses is that write's fault, not an outage: it is dropped, named, and the rest flows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import _validate_metric_name

from hypersweep.cli import main
from hypersweep.registry import _METRIC_NAME
from hypersweep.tracking import SweepRecorder, dropped_writes
from tests.chaos_tools import free_port, start_server, stop_group
from tests.conftest import ROOT, hypersweep
from tests.mlflow_store import read_sweep

_ODD = """
from tests.toy import ToyRegression

class OddMetric(ToyRegression):
    def metrics(self, output, target):
        return {**super().metrics(output, target), "odd?metric": 1.0}  # not a name MLflow takes

class DeclaresOdd(ToyRegression):
    metric_names = ("val_mae", "odd?metric")
"""
_SWEEP = (
    "name: odd\nexperiment: odd:{cls}\n"
    "search_space: {{lr: {{type: loguniform, low: 0.001, high: 0.1}}}}\n"
    "max_epochs: 3\nnum_samples: 4\nscheduler: {{type: fifo}}\n"
)


def _write(folder: Path, cls: str) -> Path:
    (folder / "odd.py").write_text(_ODD)
    sweep = folder / "odd.yaml"
    sweep.write_text(_SWEEP.format(cls=cls))
    return sweep


def test_a_refused_metric_is_dropped_and_named_and_the_run_goes_on(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/x.db"
    recorder = SweepRecorder(tracking_uri=uri, metric="val_loss", mode="min")
    recorder.start_sweep(name="odd", sweep_id="odd-1", settings={})
    recorder.trial_started("t1", {"lr": 0.01})
    epochs = [{"epoch": e, "val_loss": 1.0 / e, "odd?metric": 1.0} for e in (1, 2)]
    recorder.trial_result("t1", epochs[-1], epochs=epochs)
    recorder.trial_finished("t1", status="completed", stop_reason="completed")
    assert recorder.drain(10)
    assert recorder.failed_flushes == 0 and recorder.dropped == 1  # no outage, one write refused
    (child,) = read_sweep(uri, "odd").children
    assert child.info.status == "FINISHED" and child.data.params == {"lr": "0.01"}
    assert child.data.metrics == {"val_loss": 0.5, "best_val_loss": 0.5}
    assert dropped_writes(child).startswith("metric odd?metric: ")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_sweep_reporting_a_name_mlflow_refuses_records_all_else(tmp_path: Path) -> None:
    """Against a real `mlflow server`: the server answers 400 for the batch holding the bad name."""
    port = free_port()
    server = start_server(tmp_path / "server.db", port)
    try:
        uri = f"http://127.0.0.1:{port}"
        sweep = _write(tmp_path, "OddMetric")
        storage = str(tmp_path / "runs")
        # From the project's folder: the working directory is on the import path (tests.toy).
        result = hypersweep("run", str(sweep), "--tracking-uri", uri, "--storage", storage, cwd=ROOT)
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        assert "did not answer" not in result.stderr
        warning = r"MLflow refused 4 write\(s\).*the first: metric odd\?metric"
        assert re.search(warning, result.stdout.replace("\n", " ")), result.stdout
        stored = read_sweep(uri, "odd")
        assert len(stored.children) == 4
        for child in stored.children:
            assert child.info.status == "FINISHED" and "lr" in child.data.params
            assert [s for s, _ in stored.history(child)] == [1, 2, 3]
            assert dropped_writes(child).startswith("metric odd?metric: ")
        assert "best_val_loss" in stored.parent.data.metrics
    finally:
        stop_group(server.pid)


def test_validate_refuses_a_declared_metric_mlflow_cannot_record(tmp_path: Path, monkeypatch, capsys) -> None:
    sweep = _write(tmp_path, "DeclaresOdd")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["validate", str(sweep)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(
        f"error: {sweep}: experiment: DeclaresOdd reports a metric MLflow cannot record: 'odd?metric'"
    )


@pytest.mark.parametrize(
    "name", ["val_loss", "a/b", "x:y z", "odd?metric", "../up", "/abs", "a//b", ".", "ü"]
)
def test_the_metric_name_rule_is_mlflows(name: str) -> None:
    from hypersweep.registry import _check_metric_names
    from tests.toy import ToyRegression

    class Named(ToyRegression):
        metric_names = (name,)

    try:
        _validate_metric_name(name)
        mlflow_takes = True
    except MlflowException:
        mlflow_takes = False
    try:
        _check_metric_names(Named.metric_names, "Named", "s.yaml")
        ours = True
    except Exception:
        ours = False
    assert ours == mlflow_takes, name
    assert bool(_METRIC_NAME.match(name)) or not mlflow_takes
