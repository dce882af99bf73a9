"""Predicting a number: the perceptron stack as a regressor, trained with mean squared error.

scikit-learn's diabetes data (442 patients, 10 standardised measurements); the target is a
quantitative measure of disease progression one year later (25..346, mean ~152). Targets are
standardised with the training split's mean and spread, so the loss (MSE) is in units of that
spread; ``val_rmse`` converts back to the target's own units and ``val_r2`` is unit-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor, nn

from experiments._tabular import split_rows, split_tabular
from hypersweep.experiment import Data, Experiment, Output
from hypersweep.layers import mlp_from_config


class DiabetesMLP(Experiment):
    metric_names: ClassVar[tuple[str, ...]] = ("val_rmse", "val_r2")
    default_config: ClassVar[Mapping[str, Any]] = {
        "hidden_sizes": [32, 16],
        "activation": "relu",
        "dropout": 0.1,
    }

    def __init__(self) -> None:
        self.target_std = 1.0  # the training targets' spread: loss units -> disease-progression units

    def load_data(self, *, seed: int) -> Data:
        from sklearn.datasets import load_diabetes  # seconds to import: only where the data loads

        x, y = load_diabetes(return_X_y=True)
        train, _, _ = split_rows(len(x), seed=seed)
        self.target_std = float(y[train].std() + 1e-8)
        return split_tabular(x, y, seed=seed, standardize_targets=True)

    def build_model(self, config: Mapping[str, Any], data: Data) -> nn.Module:
        return mlp_from_config(config, data.train.inputs.shape[1], 1)

    def loss(self, output: Output, target: Tensor) -> Tensor:
        assert isinstance(output, Tensor)
        return nn.functional.mse_loss(output, target)

    def metrics(self, output: Output, target: Tensor) -> dict[str, float]:
        assert isinstance(output, Tensor)
        mse = float(nn.functional.mse_loss(output, target))
        total = float(((target - target.mean()) ** 2).mean())
        return {"val_rmse": mse**0.5 * self.target_std, "val_r2": 1.0 - mse / max(total, 1e-12)}
