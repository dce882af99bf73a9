"""One contender per subprocess: ``python -m benchmarks.contenders NAME --trials N --epochs E``.

Each prints one JSON line: wall seconds (whole process work, start-up included), the sweep part
alone where it can be told apart, and the driver's peak RSS. Running each in its own process keeps
Ray and import state from leaking between contenders.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import sklearn.datasets  # noqa: F401  # a plain script imports its loader up front; forks inherit it
import torch
from experiments.breast_cancer import BreastCancerMLP

from benchmarks.workloads import FIXED, SPACE, configs
from hypersweep.experiment import Data
from hypersweep.trainer import TrainerState, TrainSettings, fit

ROOT = Path(__file__).resolve().parents[1]
NO_STOP = {"patience": None, "divergence_factor": 1e9}  # every trial trains every epoch


class _Quiet:
    """A reporter that keeps nothing: pure training, as a hand-written loop would do."""

    def restore(self) -> TrainerState | None:
        return None

    def report(self, metrics: dict[str, Any], state: Any, artifacts: Any = None) -> None:
        return None


def _settings(epochs: int) -> TrainSettings:
    return TrainSettings(max_epochs=epochs, seed=0, patience=None, divergence_factor=1e9)


# -- (a) ideal: a plain 2-process pool, data loaded once per process ---------------------------
_POOL_DATA: Data | None = None


def _pool_init() -> None:
    global _POOL_DATA
    torch.set_num_threads(1)
    _POOL_DATA = BreastCancerMLP().load_data(seed=0)


def _pool_task(args: tuple[dict[str, Any], int]) -> float:
    config, epochs = args
    assert _POOL_DATA is not None
    started = time.perf_counter()
    fit(BreastCancerMLP(), _POOL_DATA, {**FIXED, **config}, _settings(epochs), _Quiet())
    return time.perf_counter() - started


def ideal(trials: int, epochs: int, **_: Any) -> dict[str, Any]:
    work = [(c, epochs) for c in configs(trials)]
    started = time.perf_counter()
    with mp.get_context("fork").Pool(2, initializer=_pool_init) as pool:
        times = pool.map(_pool_task, work, chunksize=1)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "sweep_s": wall, "trial_s": sum(times)}


# -- (b) hypersweep ------------------------------------------------------------------------------
class NullClient:
    """Stands in for MlflowClient: the recorder's bookkeeping runs, nothing is sent."""

    def __getattr__(self, name: str) -> Any:
        if name in ("create_run",):
            return lambda *a, **k: SimpleNamespace(info=SimpleNamespace(run_id=uuid.uuid4().hex))
        if name in ("get_experiment_by_name",):
            return lambda *a, **k: SimpleNamespace(experiment_id="0", tags={})
        return lambda *a, **k: None


def _spec(name: str, trials: int, epochs: int, experiment: str, tmp: Path, space: dict[str, Any]) -> Any:
    from hypersweep.config import build_spec

    data = {
        "name": name,
        "experiment": experiment,
        "search_space": space,
        "fixed": FIXED if "breast" in experiment else {},
        "max_epochs": epochs,
        "num_samples": trials,
        "scheduler": {"type": "fifo"},
        "search": {"type": "random", "seed": 0},
        "training": NO_STOP,
        "tracking_uri": f"sqlite:///{tmp}/mlflow.db",
        "storage": str(tmp / "runs"),
    }
    return build_spec(data, ROOT / "benchmarks" / "bench.yaml")


def hypersweep(trials: int, epochs: int, *, tracking: bool = True, trivial: bool = False) -> dict[str, Any]:
    from hypersweep.tuning import run_sweep

    experiment = "benchmarks.workloads:Trivial" if trivial else "experiments.breast_cancer:BreastCancerMLP"
    space = {"lr": SPACE["lr"]} if trivial else SPACE
    with tempfile.TemporaryDirectory() as tmp:
        spec = _spec("bench", trials, epochs, experiment, Path(tmp), space)
        started = time.perf_counter()
        outcome = run_sweep(spec, tracking_client=None if tracking else NullClient())
        wall = time.perf_counter() - started
        same = _same_configs(spec.tracking_uri, trials) if tracking and not trivial else None
    return {
        "wall_s": wall,
        "sweep_s": outcome.wall_seconds,
        "trial_s": outcome.trial_seconds,
        "finished": sum(outcome.statuses.values()),
        "same_configs": same,
    }


def _same_configs(uri: str, trials: int) -> bool:
    from mlflow.tracking import MlflowClient

    from benchmarks.workloads import is_close_config

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("bench")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], "tags.`hypersweep.role` = 'trial'", max_results=50_000)
    logged = [{k: v for k, v in r.data.params.items() if k in SPACE} for r in runs]
    expected = configs(trials)
    return len(logged) == trials and all(any(is_close_config(e, g) for g in logged) for e in expected)


# -- (c) a plain Ray Tune + OptunaSearch script, defaults, as a user writes it by hand ---------------
def ray_tune_defaults(trials: int, epochs: int, **_: Any) -> dict[str, Any]:
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    def train_fn(config: dict[str, Any]) -> None:
        experiment = BreastCancerMLP()
        data = experiment.load_data(seed=0)  # per trial: the usual hand-written script

        class _Report(_Quiet):
            def report(self, metrics: dict[str, Any], state: Any, artifacts: Any = None) -> None:
                tune.report({"val_loss": metrics["val_loss"], "epoch": metrics["epoch"]})

        fit(experiment, data, {**FIXED, **config}, _settings(epochs), _Report())

    space = {
        "lr": tune.loguniform(1e-3, 1e-1),
        "optimizer": tune.choice(SPACE["optimizer"]["values"]),
        "dropout": tune.uniform(0.0, 0.5),
        "batch_size": tune.choice(SPACE["batch_size"]["values"]),
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ray.init(
            include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}}
        )
        sweep_started = time.perf_counter()
        tuner = tune.Tuner(
            train_fn,
            param_space=space,
            tune_config=tune.TuneConfig(
                metric="val_loss",
                mode="min",
                num_samples=trials,
                search_alg=OptunaSearch(points_to_evaluate=configs(trials)),
            ),
            run_config=tune.RunConfig(storage_path=tmp, verbose=0),
        )
        grid = tuner.fit()
        sweep = time.perf_counter() - sweep_started
        ray.shutdown()
    return {"wall_s": time.perf_counter() - started, "sweep_s": sweep, "finished": len(grid)}


# -- (d) Optuna in-process, n_jobs=2 ----------------------------------------------------------------
def optuna_threads(trials: int, epochs: int, **_: Any) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    started = time.perf_counter()
    data = BreastCancerMLP().load_data(seed=0)

    def objective(trial: optuna.Trial) -> float:
        config = {
            "lr": trial.suggest_float("lr", 1e-3, 1e-1, log=True),
            "optimizer": trial.suggest_categorical("optimizer", SPACE["optimizer"]["values"]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "batch_size": trial.suggest_categorical("batch_size", SPACE["batch_size"]["values"]),
        }
        result = fit(BreastCancerMLP(), data, {**FIXED, **config}, _settings(epochs), _Quiet())
        return result.best_val_loss

    study = optuna.create_study()
    for config in configs(trials):
        study.enqueue_trial(config)
    study.optimize(objective, n_trials=trials, n_jobs=2)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "sweep_s": wall, "finished": len(study.trials)}


CONTENDERS = {
    "ideal": ideal,
    "hypersweep": hypersweep,
    "hypersweep_untracked": lambda trials, epochs: hypersweep(trials, epochs, tracking=False),
    "hypersweep_trivial": lambda trials, epochs: hypersweep(trials, epochs, trivial=True),
    "ray_tune_defaults": ray_tune_defaults,
    "optuna_threads": optuna_threads,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name", choices=sorted(CONTENDERS))
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    args = parser.parse_args()
    result = CONTENDERS[args.name](args.trials, args.epochs)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sys.stdout.write("BENCH " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
