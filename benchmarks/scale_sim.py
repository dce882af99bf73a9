"""Measure the parts of a sweep that do not scale out with GPUs: the searcher, the tracking
server and path, and the driver. Their per-trial and per-result costs, measured here, bound the sweep's
throughput at 100 or 1,000 GPUs (docs/scaling.md turns them into trials per hour).

    python -m benchmarks.scale_sim              # all four (~4 minutes on 2 cores)
    python -m benchmarks.scale_sim optuna mlflow driver tune

A whole run writes benchmarks/results/scale_sim.json (a run of some parts only prints them).

* optuna: TPE ``ask`` time (define-by-run on the project's classifier space) vs history length.
* mlflow: a real ``mlflow server`` (SQLite backend, proxied artifacts) on 127.0.0.1: the cost of a
  trial's bookkeeping (create the nested run, params, end tags) and of one epoch's metrics, sent
  the way SweepRecorder sends them (log_batch per run per flush), vs one request per value. Then
  the tracking path as a sweep drives it (``bench_recorder``), against that server and against a
  local SQLite store: what the recorder costs the tuning loop per trial, and what the writer
  thread and the tracking process take per trial to get everything into MLflow.
* driver: one sweep of a dummy trainable (TPE, ASHA, 8 trials at once) driven by Ray's own
  ``OptunaSearch`` and ``ASHAScheduler``, then by hypersweep's searcher (its study a file, flushed
  per proposed and per ended trial), its scheduler (a journal line per event) and its recorder
  (writer thread, tracking process): the driver's CPU per trial, its trials and results per second.
* tune: a fast dummy trainable on local Ray with declared resources (more "GPUs" than exist):
  results per second the Tune driver handles, with and without a checkpoint per result.
"""

from __future__ import annotations

import json
import math
import os
import platform
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
RESULTS = ROOT / "benchmarks" / "results"
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
            path = bench_recorder(uri, label="server")
        finally:
            server.terminate()
            server.wait(timeout=30)
        path.update(bench_recorder(f"sqlite:///{tmp}/local.db", label="sqlite"))
    return {
        "trial_start_ms": 1000 * per_start,
        "result_ms_batched": 1000 * per_result,
        "trial_finish_ms": 1000 * per_finish,
        "log_metric_single_ms": 1000 * per_single,
        "log_batch_1000_metrics_ms": 1000 * batch_1000,
        **path,
    }


def bench_recorder(uri: str, *, label: str, trials: int = 200, epochs: int = 6) -> dict[str, float]:
    """The tracking path as a sweep drives it: the recorder called from the tuning loop, its writer
    thread flushing every second through the tracking process (``tracking.process``), a state
    journal on disk. ``trials`` trials of ``epochs`` reports each are recorded as fast as the loop
    can; then it waits until MLflow has every write. Returns the loop's cost per trial (the
    recorder's calls: bookkeeping and journal) and the tracking path's (all sent, over ``trials``):
    the rate at which the tracking path can take trials whatever the loop does."""
    from hypersweep.tracking import SweepRecorder
    from hypersweep.tracking.process import ProcessClient

    with tempfile.TemporaryDirectory() as tmp:
        client = ProcessClient(uri)  # forked: call before Ray runs in this process
        try:
            client.ready()
            recorder = SweepRecorder(
                tracking_uri=uri,
                metric="val_loss",
                mode="min",
                state_file=Path(tmp) / "hypersweep-tracking.jsonl",
                client=client,
            )
            sweep_id = f"scale-sim-{label}-1"
            recorder.start_sweep(name=f"scale-sim-{label}", sweep_id=sweep_id, settings={"a": 1})
            recorder.start_writer()
            config = {"lr": 0.01, "optimizer": "adam", "dropout": 0.1, "batch_size": 32}
            start = time.perf_counter()
            for i in range(trials):
                recorder.trial_started(f"t{i}", config)
                for epoch in range(1, epochs + 1):
                    recorder.trial_result(f"t{i}", _result(epoch))
                recorder.trial_finished(f"t{i}", status="completed", stop_reason="completed")
            loop = time.perf_counter() - start
            while recorder.unsent:
                time.sleep(0.02)
            sent = time.perf_counter() - start
            recorder.stop_writer()
        finally:
            client.close()
    return {
        f"recorder_loop_ms_per_trial_{label}": 1000 * loop / trials,
        f"tracking_path_ms_per_trial_{label}": 1000 * sent / trials,
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


def _scored(config: dict[str, Any]) -> None:
    """A dummy trial whose curve depends on its configuration, so TPE and ASHA have something to
    rank: ``max_epochs`` reports unless the scheduler stops it."""
    from ray import tune

    floor = abs(math.log10(float(config["lr"])) + 2) + float(config["dropout"])
    for epoch in range(1, int(config["max_epochs"]) + 1):
        tune.report({"epoch": epoch, "val_loss": floor + 1 / epoch})


class _Clock:
    """Driver-side arrival time of every result and every trial's end, and the driver process's
    CPU time (all its threads: Tune's loop, the recorder's writer) at each result."""

    def __init__(self) -> None:
        self.results: list[float] = []
        self.cpu: list[float] = []
        self.ends: list[float] = []


def bench_driver(trials: int = 120, concurrent: int = 8) -> dict[str, float]:
    import ray

    from hypersweep.tracking import SweepRecorder
    from hypersweep.tracking.process import ProcessClient

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/m.db"
        client = ProcessClient(uri)  # forked before Ray starts, as in a sweep
        state = Path(tmp) / "hypersweep-tracking.jsonl"
        recorder = SweepRecorder(
            tracking_uri=uri, metric="val_loss", mode="min", state_file=state, client=client
        )
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        ray.init(num_cpus=concurrent, num_gpus=concurrent, include_dashboard=False, log_to_driver=False)
        try:
            client.ready()
            recorder.start_sweep(name="scale-sim-driver", sweep_id="scale-sim-driver-1", settings={"a": 1})
            recorder.start_writer()
            for kind in ("ray", "hypersweep"):
                out.update(_driver_sweep(kind, Path(tmp), recorder, trials=trials, concurrent=concurrent))
            start = time.perf_counter()
            while recorder.unsent:
                time.sleep(0.02)
            out["driver_tracking_left_s"] = time.perf_counter() - start  # still to send after the last trial
            recorder.stop_writer()
        finally:
            ray.shutdown()
            client.close()
    return out


def _driver_sweep(
    kind: str, tmp: Path, recorder: Any, *, trials: int, concurrent: int, max_epochs: int = 20
) -> dict[str, float]:
    """One sweep of ``_scored`` with Ray's searcher and scheduler (``kind`` ray) or hypersweep's
    and its recorder (hypersweep); the driver's rates between its first and its last result."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from hypersweep.config import load_sweep
    from hypersweep.schedulers import make_scheduler
    from hypersweep.searcher import make_searcher

    spec = load_sweep(ROOT / "experiments" / "breast_cancer_mlp.yaml")  # TPE over its space, ASHA 2/3
    ours = kind == "hypersweep"
    searcher = make_searcher(
        "optuna", seed=0, space=spec.search_space.define_by_run, metric="val_loss", mode="min",
        study_file=tmp / "optuna-study.jsonl" if ours else None, study_name="scale-sim",
        told="truth" if ours else "ray", scheduler="asha", num_samples=trials,
    )  # fmt: skip
    scheduler = (
        make_scheduler(spec.scheduler, max_epochs=max_epochs, journal=tmp / "scheduler.jsonl")
        if ours
        else ASHAScheduler(time_attr="epoch", max_t=max_epochs, grace_period=2, reduction_factor=3)
    )
    clock = _Clock()
    tuner = tune.Tuner(
        tune.with_resources(_scored, {"cpu": 1, "gpu": 1}),
        param_space={"max_epochs": max_epochs},
        tune_config=tune.TuneConfig(
            metric="val_loss", mode="min", num_samples=trials, search_alg=searcher, scheduler=scheduler,
            max_concurrent_trials=concurrent, reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            storage_path=str(tmp / kind), verbose=0, callbacks=[_callback(clock, recorder if ours else None)]
        ),
    )  # fmt: skip
    start = time.perf_counter()
    tuner.fit()
    span = clock.results[-1] - clock.results[0]
    return {
        f"driver_wall_s_{kind}": time.perf_counter() - start,
        f"driver_results_{kind}": len(clock.results),
        f"driver_results_per_s_{kind}": (len(clock.results) - 1) / span,
        f"driver_trials_per_s_{kind}": len(clock.ends) / span,
        f"driver_ms_per_trial_{kind}": 1000 * span / len(clock.ends),
        # The driver's CPU per trial: what bounds it once trials run on many more workers.
        f"driver_cpu_ms_per_trial_{kind}": 1000 * (clock.cpu[-1] - clock.cpu[0]) / len(clock.ends),
    }


def _callback(clock: _Clock, recorder: Any) -> Any:
    """Tune's events to ``clock`` and, when given, to the recorder (as the sweep's callback does)."""
    from ray import tune

    class Events(tune.Callback):
        def __reduce__(self) -> tuple[Any, tuple[()]]:
            # Tune pickles its callbacks for a restore that never comes here; the recorder's
            # locks do not pickle.
            return (_Clock, ())

        def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            if recorder is not None:
                recorder.trial_started(trial.trial_id, trial.config)

        def on_trial_result(
            self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
        ) -> None:
            clock.results.append(time.perf_counter())
            clock.cpu.append(time.process_time())
            if recorder is not None:
                epoch = {"epoch": result["epoch"], "val_loss": result["val_loss"]}
                recorder.trial_result(trial.trial_id, result, epochs=[epoch])

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            clock.ends.append(time.perf_counter())
            if recorder is not None:
                recorder.trial_finished(trial.trial_id, status="completed", stop_reason="completed")

    return Events()


def main(argv: list[str]) -> None:
    # The driver part forks the tracking process before it starts Ray: it runs before ``tune``.
    parts = argv or ["optuna", "mlflow", "driver", "tune"]
    benches: dict[str, Callable[[], dict[str, float]]] = {
        "optuna": bench_optuna,
        "mlflow": bench_mlflow,
        "driver": bench_driver,
        "tune": bench_tune,
    }
    started, load = time.strftime("%Y-%m-%d %H:%M"), [os.getloadavg()[0]]
    results: dict[str, float] = {}
    for name in parts:
        results.update(benches[name]())
        load.append(os.getloadavg()[0])
        print(json.dumps({k: round(v, 2) for k, v in results.items()}, indent=1), flush=True)
    if not argv:  # a whole run: the figures docs/scaling.md quotes
        record = {
            "started": started,
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "load_average_1min": [round(x, 1) for x in load],  # at the start and after each part
            "results": {k: round(v, 2) for k, v in results.items()},
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "scale_sim.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
