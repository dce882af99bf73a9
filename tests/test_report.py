"""The sweep report: importance on a diverged trial, the page alone (fast); the report a real
sweep logs to its parent run, `hypersweep report` into a folder, against a real `mlflow server`,
and its bad input (slow)."""

from __future__ import annotations

import dataclasses
import io
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from hypersweep.console import print_report
from hypersweep.importance import importances, results_study
from hypersweep.report import at_sweep_end, build, figures
from hypersweep.search_space import parse_search_space
from hypersweep.tracking.report_data import SweepRecord, TrialRecord, ui_root
from hypersweep.tracking.state import read_state
from hypersweep.tuning import TRACKING_STATE
from tests.chaos_tools import free_port, start_server, stop_group
from tests.conftest import DEFAULT_SWEEP, hypersweep
from tests.mlflow_store import read_sweep

SPACE = {
    "lr": {"type": "loguniform", "low": 1e-4, "high": 1.0},
    "optimizer": {"type": "choice", "values": ["sgd", "momentum", "adam"]},
    "momentum": {"type": "uniform", "low": 0.5, "high": 0.99, "when": {"optimizer": "momentum"}},
    "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
    "hidden": {"type": "choice", "values": [[16], [32, 16]]},  # not native to Optuna: by its label
}
CHARTS = ["curves.png", "best_so_far.png", "parallel_coordinates.png", "importance.png"]


def _configs(count: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        config = {
            "lr": 10 ** rng.uniform(-4, 0),
            "optimizer": rng.choice(["sgd", "momentum", "adam"]),
            "dropout": rng.uniform(0, 0.5),
            "hidden": rng.choice([[16], [32, 16]]),
        }
        if config["optimizer"] == "momentum":
            config["momentum"] = rng.uniform(0.5, 0.99)
        out.append(config)
    return out


def test_importance_leaves_a_diverged_trial_out_and_finds_what_the_result_depends_on() -> None:
    space = parse_search_space(SPACE, "test")
    configs = _configs(40)
    # The result depends on the learning rate alone (best at 1e-2); dropout and the rest are noise.
    trials = [(c, (math.log10(c["lr"]) + 2) ** 2 + 0.01 * c["dropout"]) for c in configs]
    trials.append(({**configs[0], "lr": 0.9}, math.inf))  # diverged: the worst value, +inf
    trials.append(({**configs[1], "lr": 5.0}, 1.0))  # a value the space cannot hold: left out
    study = results_study(space, trials, mode="min")
    assert len(study.trials) == 40
    found = importances(study)
    assert found and all(math.isfinite(v) for v in found.values())
    assert math.isclose(sum(found.values()), 1.0, rel_tol=1e-6)
    assert next(iter(found)) == "lr" and found["lr"] > 0.8, found
    assert "momentum" not in found  # conditional: not every trial has it
    assert importances(results_study(space, trials[:4], mode="min")) == {}  # too few to tell


def _record(trials: int = 12) -> SweepRecord:
    rng = random.Random(1)
    records = []
    for i, config in enumerate(_configs(trials, seed=2)):
        status = ["early_stopped", "completed", "diverged"][i % 3]
        epochs = list(range(1, (6 if status == "completed" else 2) + 1))
        values = [1.0 / step + rng.uniform(0, 0.3) for step in epochs]
        if status == "diverged":
            values[-1] = math.nan
        result = math.nan if status == "diverged" else min(values)
        stamps = [1_000_000 + 1000 * (i + step) for step in epochs]
        records.append(
            TrialRecord(
                f"t{i:02d}", f"run{i:02d}" * 4, f"t{i:02d}", status, config, epochs, values, stamps, result
            )
        )
    return SweepRecord(
        sweep_id="toy-1",
        experiment_id="7",
        parent_run_id="p" * 32,
        metric="val_loss",
        mode="min",
        max_epochs=6,
        num_samples=trials,
        scheduler={"type": "asha", "grace_period": 2, "reduction_factor": 3},
        search_space=SPACE,
        started_ms=999_000,
        trials=records,
    )


def test_the_page_holds_its_charts_and_top_trials_and_fetches_nothing(tmp_path: Path) -> None:
    record = _record()
    built = build(record, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(CHARTS)
    assert page.count('<img class="chart"') == 4 and page.count("data:image/png;base64,") == 4
    # Offline: nothing the page loads comes from elsewhere (its links are only followed on a click).
    assert re.findall(r"""\bsrc=["']([a-z]+:)""", page) == ["data:"] * 4
    assert not any(word in page for word in ("<link", "<script src", "@import", "url(", "fetch("))
    finite = [t for t in record.trials if math.isfinite(t.result)]
    assert page.count("<tr>") == 1 + min(10, len(finite))  # header + the top trials
    best = min(finite, key=lambda t: t.result)
    assert built.top[0] is best and f'href="http://127.0.0.1:5000/#/experiments/7/runs/{best.run_id}"' in page
    trained = sum(len(t.epochs) for t in record.trials)
    assert built.metrics["epochs_trained"] == trained and built.metrics["epochs_budget"] == 72
    assert math.isclose(built.metrics["compute_saved"], 1 - trained / 72)
    assert {k for k in built.metrics if k.startswith("importance_")} == {
        f"importance_{name}" for name in built.importances
    }


def test_a_sweep_without_trials_still_has_a_page(tmp_path: Path) -> None:
    record = dataclasses.replace(_record(), trials=[], scheduler={"type": "fifo"})
    built = build(record, tmp_path)
    assert (built.top, built.importances, built.metrics["epochs_trained"]) == ([], {}, 0)
    page = (tmp_path / "report.html").read_text()
    assert page.count('<img class="chart"') == 2 and page.count("Not drawn: only 0 trial(s)") == 2


def test_a_report_that_fails_is_one_warning_line(tmp_path: Path) -> None:
    """At a sweep's end (a real SQLite store): a report that cannot be made is a reason, never an
    exception, and the summary shows it in one line."""
    uri = f"sqlite:///{tmp_path}/x.db"
    client = MlflowClient(uri)
    client.search_experiments()  # makes the store
    summary, error = at_sweep_end(client, "no-such-run", uri)
    assert summary is None and error.startswith("MlflowException: ")
    shown = io.StringIO()
    print_report(Console(file=shown, width=100), summary, error=error)
    assert shown.getvalue().startswith("warning: no sweep report: MlflowException")
    assert len(shown.getvalue().splitlines()) == 1


def test_links_go_to_a_tracking_servers_ui_without_its_credentials() -> None:
    assert ui_root("http://user:secret@mlflow.example:5000/") == "http://mlflow.example:5000/"
    assert ui_root("https://mlflow.example/prefix") == "https://mlflow.example/prefix/"
    assert ui_root("sqlite:///mlflow.db") == ""
    assert figures(_record(3), {})["compute_saved"] == 1 - (2 + 6 + 2) / 18


# -- real sweeps --------------------------------------------------------------------------------
def _sweep_args(cwd: Path, uri: str) -> list[str]:
    """8 trials x 6 epochs, ASHA at 1, 2, 4 epochs: most stop early."""
    return [
        *("run", str(DEFAULT_SWEEP), "--num-samples", "8", "--max-epochs", "6"),
        *("--tracking-uri", uri, "--storage", str(cwd / "runs")),
        *("--set", "scheduler.grace_period=1", "--set", "scheduler.reduction_factor=2"),
    ]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory):
    cwd = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{cwd}/x.db"
    result = hypersweep(*_sweep_args(cwd, uri), cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return cwd, uri, result


def _report_files(client: MlflowClient, run_id: str) -> list[str]:
    return sorted(f.path.removeprefix("report/") for f in client.list_artifacts(run_id, "report"))


def _check_metrics(stored, folder: Path, budget: int) -> None:
    """The parent's figures against what the trials' runs hold, and against the driver's own
    journal of the epochs each trial reported."""
    metrics = stored.parent.data.metrics
    trained = sum(len(stored.history(c, "train_loss")) for c in stored.children)
    journal = read_state(folder / TRACKING_STATE)["trials"].values()
    assert metrics["epochs_trained"] == trained == sum(t["last_step"] for t in journal)
    assert metrics["epochs_budget"] == budget
    assert math.isclose(metrics["compute_saved"], 1 - trained / budget, rel_tol=1e-9)
    shares = {k.removeprefix("importance_"): v for k, v in metrics.items() if k.startswith("importance_")}
    assert shares and set(shares) <= {"lr", "optimizer", "dropout", "batch_size"}
    assert math.isclose(sum(shares.values()), 1.0, rel_tol=1e-6)


@pytest.mark.slow
def test_a_sweep_ends_with_its_report_on_the_parent_run(swept) -> None:
    cwd, uri, result = swept
    stored = read_sweep(uri, "breast-cancer-mlp")
    assert _report_files(stored.client, stored.parent.info.run_id) == sorted([*CHARTS, "report.html"])
    (folder,) = (cwd / "runs").iterdir()
    _check_metrics(stored, folder, budget=8 * 6)
    assert "top 5 trials by val_loss" in result.stdout
    assert (
        "most important parameters: " in result.stdout
        and "compute saved by stopping early: " in result.stdout
    )
    assert f"report: report/report.html on run {stored.parent.info.run_id}" in result.stdout
    assert "warning" not in result.stdout


@pytest.mark.slow
def test_report_command_writes_a_folder_and_refuses_bad_input_in_one_line(swept, tmp_path: Path) -> None:
    cwd, uri, _ = swept
    stored = read_sweep(uri, "breast-cancer-mlp")
    sweep_id = stored.parent.data.tags["hypersweep.sweep_id"]
    out = tmp_path / "out"
    result = hypersweep("report", sweep_id, "--tracking-uri", uri, "--out", str(out), cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([*CHARTS, "report.html"])
    assert sweep_id in (out / "report.html").read_text()
    assert f"report: {out / 'report.html'}" in result.stdout
    for args in (
        ("no-such-sweep", "--tracking-uri", uri),
        (sweep_id, "--tracking-uri", f"http://127.0.0.1:{free_port()}"),
        (sweep_id, "--tracking-uri", uri, "--out", str(out / "report.html")),
    ):
        bad = hypersweep("report", *args, cwd=cwd)
        assert bad.returncode == 2, bad.stdout + bad.stderr
        assert bad.stderr.startswith("error: ") and len(bad.stderr.splitlines()) == 1, bad.stderr


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_report_of_a_sweep_on_a_real_mlflow_server(tmp_path: Path) -> None:
    """The sweep logs to a real `mlflow server` (artifacts through it); `hypersweep report`
    rebuilds the report from the server alone."""
    db, port = tmp_path / "server.db", free_port()
    server = start_server(db, port)
    uri = f"http://127.0.0.1:{port}"
    try:
        ran = hypersweep(*_sweep_args(tmp_path, uri), cwd=tmp_path)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        stored = read_sweep(uri, "breast-cancer-mlp")
        parent_id = stored.parent.info.run_id
        assert _report_files(stored.client, parent_id) == sorted([*CHARTS, "report.html"])
        (folder,) = (tmp_path / "runs").iterdir()
        _check_metrics(stored, folder, budget=8 * 6)

        again = hypersweep("report", "breast-cancer-mlp", "--tracking-uri", uri, cwd=tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"report: report/report.html on run {parent_id}" in again.stdout
        page = stored.client.download_artifacts(parent_id, "report/report.html", str(tmp_path))
        assert f'href="{uri}/#/experiments/{stored.parent.info.experiment_id}/runs/' in Path(page).read_text()
        history = stored.client.get_metric_history(parent_id, "epochs_trained")
        assert len(history) == 2 and history[0].value == history[1].value  # logged again, the same
    finally:
        stop_group(server.pid)
