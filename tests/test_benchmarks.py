"""The benchmark command keeps working: its quick mode runs every contender on tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from benchmarks.gpu import Sample, Sampler, parse_smi, utilisation
from benchmarks.gpu import markdown as markdown_gpu
from benchmarks.run import median_run
from benchmarks.workloads import configs, is_close_config

from tests.conftest import ROOT


def _module(
    name: str, *args: str, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m name args`` from the project root, as the docs run the benchmarks."""
    return subprocess.run(
        [sys.executable, "-m", name, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_benchmark_configs_are_reproducible_and_flat() -> None:
    first, again = configs(5), configs(5)
    assert all(is_close_config(a, b) for a, b in zip(first, again, strict=True))
    assert all(set(c) == {"lr", "optimizer", "dropout", "batch_size"} for c in first)
    assert not is_close_config(first[0], first[1])


def test_rounds_are_reported_by_their_medians_and_worst_checks() -> None:
    rounds = [
        {"wall_s": 20.0, "sweep_s": 12.0, "finished": 32, "same_configs": True, "peak_rss_mb": 500.0},
        {"wall_s": 30.0, "sweep_s": 11.0, "finished": 31, "same_configs": False, "peak_rss_mb": 520.0},
        {"wall_s": 22.0, "sweep_s": 19.0, "finished": 32, "same_configs": True, "peak_rss_mb": 510.0},
    ]
    result = median_run(rounds)
    # Each time is its own median: a slow sweep part in one round and a slow start in another
    # do not add up to a round that never happened.
    assert (result["wall_s"], result["sweep_s"], result["peak_rss_mb"]) == (22.0, 12.0, 510.0)
    assert result["finished"] == 31 and result["same_configs"] is False
    assert result["rounds_wall_s"] == [20.0, 30.0, 22.0]
    assert result["rounds_sweep_s"] == [12.0, 11.0, 19.0]
    assert median_run(rounds[:1])["wall_s"] == 20.0


@pytest.mark.slow
def test_quick_benchmark_measures_every_contender(tmp_path: Path) -> None:
    result = _module("benchmarks.run", "--quick", "--out", str(tmp_path), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "quick.json").read_text())
    runs = data["runs"]
    for name in ("ideal", "hypersweep", "hypersweep_untracked_big", "ray_tune_defaults", "optuna_threads"):
        assert runs[name]["wall_s"] > 0
    assert runs["hypersweep"]["finished"] == 2 and runs["ray_tune_defaults"]["finished"] == 2
    assert data["summary"]["same configurations as ideal"] is True
    assert "| hypersweep |" in (tmp_path / "quick.md").read_text()


def test_gpu_samples_average_over_the_sweep_and_peak_over_the_run() -> None:
    report = ["37, 1200", " 41 , 800"]  # two GPUs: utilisation %, memory MiB
    assert parse_smi(5.0, report) == Sample(5.0, 39.0, 2000.0)
    assert parse_smi(5.0, ["[N/A], 3"]) is None and parse_smi(5.0, []) is None
    samples = [Sample(0.5, 0.0, 100.0), *(Sample(1.0 + i, 10.0 * i, 500.0) for i in range(10))]
    samples.append(Sample(20.0, 0.0, 9000.0))  # after the sweep: memory counts, utilisation not
    found = utilisation(samples, 1.0, 10.0)
    assert found["gpu_util_mean"] == 45.0 and found["gpu_util_p90"] == 80.0
    assert found["gpu_memory_peak_mib"] == 9000.0 and found["samples"] == 10.0
    assert utilisation([], 0.0, 1.0)["gpu_util_mean"] is None


def test_gpu_table_compares_with_one_trial_per_gpu() -> None:
    run = {
        "finished": 16,
        "statuses": {"completed": 15, "diverged": 1},
        "sweep_s": 60.0,
        "gpu_util_mean": 30.0,
        "gpu_util_p90": 50.0,
        "gpu_memory_peak_mib": None,
    }
    runs = [
        {**run, "per_gpu": 0, "trials_per_hour": 500.0, "gpu_util_mean": None, "gpu_util_p90": None},
        {**run, "per_gpu": 1, "trials_per_hour": 960.0, "gpu_memory_peak_mib": 900.0},
        {**run, "per_gpu": 4, "trials_per_hour": 2880.0, "gpu_memory_peak_mib": None},
    ]
    data = {"device": "GPU", "gpus": 1, "trials": 16, "epochs": 10, "channels": 64, "runs": runs}
    rows = [line for line in markdown_gpu(data).splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1].split(" | ")[1:5] == ["16 (15)", "60.0", "500", "0.52"] and "| n/a | n/a |" in rows[1]
    assert rows[3].split(" | ")[3:5] == ["2880", "3.00"] and rows[3].endswith("| n/a |")


def test_gpu_benchmark_without_a_cuda_device_is_one_line_and_exit_2(tmp_path: Path) -> None:
    no_device = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # on any machine
    result = _module("benchmarks.gpu", "--out", str(tmp_path), timeout=300, env=no_device)
    assert result.returncode == 2
    assert result.stderr.startswith("error: benchmarks.gpu: needs a CUDA device")
    assert len(result.stderr.splitlines()) == 1 and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_gpu_benchmark_sweep_runs_the_cnn_on_the_cpus() -> None:
    """The benchmark's own sweep (packing 0: no GPU), so that it still runs where GPUs are."""
    args = ("--one", "0", "--trials", "2", "--epochs", "1", "--channels", "8")
    result = _module("benchmarks.gpu", *args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("BENCH "))
    run = json.loads(line.removeprefix("BENCH "))
    assert run["finished"] == 2 and run["per_gpu"] == 0 and run["cpu_fallbacks"] == 0
    assert 0 < run["sweep_s"] < run["wall_s"]


_FAKE_SMI = """#!/bin/sh
case "$*" in
  *count*) echo 2; echo 2 ;;
  *) while true; do echo "30, 1000"; echo "50, 3000"; sleep 0.05; done ;;
esac
"""


def test_gpu_sampler_reads_every_gpu_of_each_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampler against a stand-in nvidia-smi with two GPUs (this machine has none)."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text(_FAKE_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    started = time.time()
    with Sampler() as sampler:
        time.sleep(0.5)
    assert len(sampler.samples) >= 3
    assert {(s.utilization, s.memory_mib) for s in sampler.samples} == {(40.0, 4000.0)}
    assert all(started <= s.at <= time.time() for s in sampler.samples)


def test_search_statistics() -> None:
    from benchmarks.search import iqm, regret, scaled_startup, time_to

    assert iqm([1.0, 2.0, 3.0, 100.0]) == 2.5  # the middle half: an outlier does not move it
    assert regret(0.101, 0.1) == pytest.approx(0.01) and regret(float("nan"), 0.1) == float("inf")
    run = {"times": [1.0, 5.0, 9.0], "epochs": [3, 20, 40], "best": [0.2, 0.104, 0.1005]}
    assert time_to(run, 0.1, 0.05, "times") == 5.0 and time_to(run, 0.1, 0.01, "epochs") == 40
    assert time_to(run, 0.1, 0.001, "times") == float("inf")
    assert [scaled_startup(n) for n in (16, 32, 64, 128)] == [4, 8, 10, 10]


def test_search_benchmark_runs_on_a_committed_table(tmp_path: Path) -> None:
    result = _module(
        "benchmarks.search",
        *("--tables", "breast_cancer_mlp", "--budgets", "16", "--seeds", "2", "--validate", "1"),
        *("--out", str(tmp_path)),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "search.json").read_text())
    contenders = report["summary"]["breast_cancer_mlp"]["contenders"]
    assert "random + FIFO" in contenders and "TPE + ASHA (hypersweep)" in contenders
    # One real sweep per validated contender, each against its replays' spread.
    assert [(v["contender"], v["seed"]) for v in report["validation"]] == [
        ("random + ASHA", 0),
        ("TPE + ASHA (hypersweep)", 0),
    ]
    assert (tmp_path / "search.png").stat().st_size > 10_000 and "| random + FIFO |" in (
        tmp_path / "search.md"
    ).read_text()


def test_the_follow_up_is_narrowed_around_the_best_quarter_of_the_first_sweep() -> None:
    from benchmarks.warm_start import narrowed
    from optuna.trial import TrialState

    from hypersweep.search_space import parse_search_space
    from hypersweep.warm_start import Earlier

    space = parse_search_space(
        {
            "lr": {"type": "loguniform", "low": 1e-4, "high": 1.0},
            "optimizer": {"type": "choice", "values": ["sgd", "momentum", "adam"]},
            "momentum": {"type": "uniform", "low": 0.5, "high": 0.99, "when": {"optimizer": "momentum"}},
            "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
        },
        "space",
    )

    def trial(value: float, lr: float, optimizer: str) -> Earlier:
        params = {"lr": lr, "optimizer": optimizer, "dropout": 0.2, "momentum": 0.9}
        return Earlier("a", "t", params, TrialState.COMPLETE, value, {})

    best = [
        trial(0.1, 0.01, "adam"),
        trial(0.2, 0.02, "adam"),
        trial(0.3, 0.015, "sgd"),
        trial(0.3, 0.01, "sgd"),
    ]
    worse = [trial(1.0 + i, 0.5, "momentum") for i in range(12)]
    cut = narrowed(space, best + worse, "min").as_dict()
    assert cut["lr"] == {"type": "loguniform", "low": 0.005, "high": 0.04}
    assert cut["optimizer"]["values"] == ["sgd", "adam"]
    assert "momentum" not in cut  # only the momentum optimizer used it, and it is gone
    assert cut["dropout"] == {"type": "uniform", "low": 0.15000000000000002, "high": 0.25}


def test_the_warm_start_benchmark_runs(tmp_path: Path) -> None:
    from benchmarks.warm_start import main

    args = ["--tables", "breast_cancer_mlp", "--seeds", "2", "--first", "16", "--follow-up", "8"]
    main([*args, "--out", str(tmp_path)])
    runs = json.loads((tmp_path / "warm_start.json").read_text())["runs"]
    assert len(runs) == 2 and all(r["seeded"] > 0 and r["b_configurations"] > 0 for r in runs)
    assert "| breast_cancer_mlp |" in (tmp_path / "warm_start.md").read_text()


def test_scale_sim_sends_the_whole_sweep_through_the_tracking_path(tmp_path: Path) -> None:
    from benchmarks.scale_sim import bench_recorder
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = bench_recorder(uri, label="t", trials=3, epochs=2)
    assert 0 < result["recorder_loop_ms_per_trial_t"] <= result["tracking_path_ms_per_trial_t"]
    # What it timed is what MLflow holds: the sweep's run and every trial's, each epoch logged.
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("scale-sim-t")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    trials = [r for r in runs if r.data.tags.get("hypersweep.role") == "trial"]
    assert len(runs) == 4 and len(trials) == 3
    assert all(len(client.get_metric_history(r.info.run_id, "val_loss")) == 2 for r in trials)
