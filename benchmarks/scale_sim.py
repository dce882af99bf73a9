"""Measure the three parts of a sweep that do not scale out with GPUs: the searcher, the tracking
server and the driver. Their per-trial and per-result costs, measured here, bound the sweep's
throughput at 100 or 1,000 GPUs (docs/scaling.md turns them into trials per hour).

    python -m benchmarks.scale_sim              # all three (~2-4 minutes on 2 cores)
    python -m benchmarks.scale_sim optuna mlflow tune

* optuna: TPE ``ask`` time (define-by-run on the project's classifier space) vs history length.
* mlflow: a real ``mlflow server`` (SQLite backend, proxied artifacts) on 127.0.0.1: the cost of a
  trial's bookkeeping (create the nested run, params, end tags) and of one epoch's metrics, sent
  the way SweepRecorder sends them (log_batch per run per flush), vs one request per value.
* tune: a fast dummy trainable on local Ray with declared resources (more "GPUs" than exist):
  results per second the Tune driver handles, with and without a checkpoint per result.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]


def bench_optuna(histories: tuple[int, ...] = (0, 100, 300, 1000, 2000, 5000)) -> dict[str, float]:
    import optuna

    from hypersweep.config import load_sweep

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_sweep(ROOT / "experiments" / "breast_cancer_mlp.yaml").search_space
    out: dict[str, float] = {}
    for size in histories:
        # The sweep's space: a random history of `size` finished trials, then TPE on top of it.
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
        for trial in _random_history(space, size):
            study.add_trial(trial)
        times = []
        for _ in range(20):
            start = time.perf_counter()
            trial = study.ask()
            space.define_by_run(trial)
            times.append(time.perf_counter() - start)
            study.tell(trial, random.random())
        out[f"tpe_ask_ms@{size}"] = 1000 * statistics.median(times)
    return out


def _random_history(space: Any, size: int) -> list[Any]:
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(size):
        trial = study.ask()
        space.define_by_run(trial)
        study.tell(trial, random.random())
    return list(study.trials)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_mlflow(trials: int = 40, epochs: int = 20) -> dict[str, float]:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from hypersweep.tracking import SweepRecorder

    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{tmp}/m.db", "--serve-artifacts",
             "--artifacts-destination", f"{tmp}/a", "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        uri = f"http://127.0.0.1:{port}"
        try:
            _wait_http(uri + "/health")
            recorder = SweepRecorder(tracking_uri=uri, metric="val_loss", mode="min")
            recorder.start_sweep(name="scale-sim", sweep_id="scale-sim-1", settings={"a": 1})
            config = {"lr": 0.01, "optimizer": "adam", "dropout": 0.1, "batch_size": 32}
            start = time.perf_counter()
            for i in range(trials):
                recorder.trial_started(f"t{i}", config)
            per_start = (time.perf_counter() - start) / trials
            start = time.perf_counter()
            for epoch in range(1, epochs + 1):
                for i in range(trials):
                    recorder.trial_result(f"t{i}", _result(epoch))
                recorder.flush(force=True)  # one log_batch per run per epoch: the worst case
            per_result = (time.perf_counter() - start) / (trials * epochs)
            start = time.perf_counter()
            for i in range(trials):
                recorder.trial_finished(f"t{i}", status="completed", stop_reason="completed")
            per_finish = (time.perf_counter() - start) / trials
            client = MlflowClient(tracking_uri=uri)
            run_id = recorder._trials["t0"].run_id
            start = time.perf_counter()
            n = 100
            for step in range(n):
                client.log_metric(run_id, "single", 1.0, step=1000 + step)
            per_single = (time.perf_counter() - start) / n
            start = time.perf_counter()
            metrics = [Metric("batch", 1.0, 0, s) for s in range(1000)]
            client.log_batch(run_id, metrics=metrics)
            batch_1000 = time.perf_counter() - start
        finally:
            server.terminate()
            server.wait(timeout=30)
    return {
        "trial_start_ms": 1000 * per_start,
        "result_ms_batched": 1000 * per_result,
        "trial_finish_ms": 1000 * per_finish,
        "log_metric_single_ms": 1000 * per_single,
        "log_batch_1000_metrics_ms": 1000 * batch_1000,
    }


def _result(epoch: int) -> dict[str, Any]:
    return {"epoch": epoch, "train_loss": 1 / epoch, "val_loss": 1.1 / epoch, "val_accuracy": 0.9,
            "device": "cuda:0", "node_id": "n1", "node_ip": "10.0.0.1"}  # fmt: skip


def _wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer")


def _dummy(config: dict[str, Any]) -> None:
    from ray import tune

    checkpoint = config.get("checkpoint", False)
    for epoch in range(1, int(config["epochs"]) + 1):
        if checkpoint:
            with tempfile.TemporaryDirectory() as d:
                Path(d, "model.pt").write_bytes(b"0" * 100_000)  # a 100 kB state_dict
                tune.report(
                    {"epoch": epoch, "val_loss": 1 / epoch}, checkpoint=tune.Checkpoint.from_directory(d)
                )
        else:
            tune.report({"epoch": epoch, "val_loss": 1 / epoch})


def bench_tune(concurrent: int = 8, trials: int = 16, epochs: int = 50) -> dict[str, float]:
    import ray
    from ray import tune

    class Clock(tune.Callback):
        """Driver-side arrival time of every result: the steady-state rate excludes worker start-up."""

        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_trial_result(
            self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
        ) -> None:
            self.stamps.append(time.perf_counter())

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Declared resources: the node claims `concurrent` GPUs; trials take one each (none is used).
    ray.init(num_cpus=concurrent, num_gpus=concurrent, include_dashboard=False, log_to_driver=False)
    out: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for checkpoint in (False, True):
                clock = Clock()
                tuner = tune.Tuner(
                    tune.with_resources(_dummy, {"cpu": 1, "gpu": 1}),
                    param_space={"epochs": epochs, "checkpoint": checkpoint},
                    tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=concurrent,
                                                reuse_actors=True, metric="val_loss", mode="min"),
                    run_config=tune.RunConfig(storage_path=tmp, verbose=0, callbacks=[clock],
                                              checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
                )  # fmt: skip
                start = time.perf_counter()
                tuner.fit()
                wall = time.perf_counter() - start
                key = "ckpt" if checkpoint else "plain"
                stamps = clock.stamps
                out[f"tune_results_{key}"] = len(stamps)
                out[f"tune_wall_s_{key}"] = wall
                # Between the first and the last result: every worker is up, the driver is the limit.
                out[f"tune_results_per_s_{key}"] = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    finally:
        ray.shutdown()
    return out


def main(argv: list[str]) -> None:
    parts = argv or ["optuna", "mlflow", "tune"]
    benches: dict[str, Callable[[], dict[str, float]]] = {
        "optuna": bench_optuna,
        "mlflow": bench_mlflow,
        "tune": bench_tune,
    }
    results: dict[str, float] = {}
    for name in parts:
        results.update(benches[name]())
        print(json.dumps({k: round(v, 2) for k, v in results.items()}, indent=1), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
