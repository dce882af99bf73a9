"""A user's own experiment, living outside the hypersweep package: which cultivar made this wine?

scikit-learn's wine data (178 wines, 13 chemical measurements, 3 cultivars). Plain PyTorch: it
imports only ``hypersweep.experiment`` (the interface) and, optionally, ``hypersweep.layers``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from hypersweep.experiment import Data, Experiment, Output, Split
from hypersweep.layers import mlp


class WineMLP(Experiment):
    # Metrics this experiment reports; a sweep's `metric` may name any of them, or val_loss.
    metric_names: ClassVar[tuple[str, ...]] = ("val_accuracy",)
    # Used where neither the search space nor the sweep's `fixed` says otherwise.
    default_config: ClassVar[Mapping[str, Any]] = {"hidden": 32, "activation": "relu", "dropout": 0.0}

    def load_data(self, *, seed: int) -> Data:
        from sklearn.datasets import load_wine  # seconds to import: only where the data loads

        x, y = load_wine(return_X_y=True)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        train, val, test = order[:106], order[106:142], order[142:]  # 60 / 20 / 20 %
        inputs = torch.tensor(x, dtype=torch.float32)
        mean, std = inputs[train].mean(0), inputs[train].std(0)  # training rows only: no leakage
        inputs = (inputs - mean) / std
        targets = torch.tensor(y, dtype=torch.int64)
        return Data(*(Split(inputs[rows], targets[rows]) for rows in (train, val, test)))

    def build_model(self, config: Mapping[str, Any], data: Data) -> nn.Module:
        width = data.train.inputs.shape[1]
        return mlp(width, [int(config["hidden"])], 3, act=config["activation"], dropout=config["dropout"])

    def loss(self, output: Output, target: Tensor) -> Tensor:
        assert isinstance(output, Tensor)
        return nn.functional.cross_entropy(output, target)  # mean over the batch

    def metrics(self, output: Output, target: Tensor) -> dict[str, float]:
        assert isinstance(output, Tensor)
        return {"val_accuracy": float((output.argmax(1) == target).float().mean())}
