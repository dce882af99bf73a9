"""The benchmark workloads: fixed configurations of the breast-cancer MLP and a trivial trainable."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import optuna
import torch
from torch import Tensor, nn

from hypersweep.experiment import Data, Experiment, Output, Split
from hypersweep.search_space import parse_search_space

# A flat space (no conditions) so every contender can be handed exactly the same configurations.
SPACE: dict[str, Any] = {
    "lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
    "optimizer": {"type": "choice", "values": ["sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad"]},
    "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
    "batch_size": {"type": "choice", "values": [16, 32, 64, 128]},
}
FIXED: dict[str, Any] = {"hidden_sizes": [32, 16], "activation": "relu"}


def configs(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """The first ``n`` configurations a seeded random sampler draws from SPACE.

    hypersweep's ``search: {type: random, seed}`` draws the same sequence (same space, same
    sampler, same seed), which the benchmark checks by reading the configs back from MLflow.
    """
    space = parse_search_space(SPACE, "benchmark")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        extra = space.define_by_run(trial)
        out.append({**trial.params, **extra})
        study.tell(trial, 0.0)
    return out


class Trivial(Experiment):
    """Almost no compute: what is left of a trial's wall time is the platform's."""

    metric_names: ClassVar[tuple[str, ...]] = ()
    default_config: ClassVar[Mapping[str, Any]] = {}

    def load_data(self, *, seed: int) -> Data:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(8, 2, generator=g)
        return Data(Split(x, x[:, :1]), Split(x, x[:, :1]))

    def build_model(self, config: Mapping[str, Any], data: Data) -> nn.Module:
        return nn.Linear(2, 1)

    def loss(self, output: Output, target: Tensor) -> Tensor:
        assert isinstance(output, Tensor)
        return nn.functional.mse_loss(output, target)


def is_close_config(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Same configuration up to float text round-trips (MLflow stores params as text)."""
    if set(a) != set(b):
        return False
    for key, value in a.items():
        other = b[key]
        if isinstance(value, float):
            if not math.isclose(value, float(other), rel_tol=1e-9):
                return False
        elif str(value) != str(other):
            return False
    return True
