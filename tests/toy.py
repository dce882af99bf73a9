"""A tiny, fast experiment for unit tests: noisy linear regression, MSE loss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from hypersweep.experiment import Data, Experiment, Output, Split


class ToyRegression(Experiment):
    metric_names: ClassVar[tuple[str, ...]] = ("val_mae",)
    default_config: ClassVar[Mapping[str, Any]] = {"dropout": 0.0}

    def __init__(self, *, val_shift: float = 0.0) -> None:
        # val_shift > 0 makes the validation targets drift away from training: val_loss rises.
        self.val_shift = val_shift

    def load_data(self, *, seed: int) -> Data:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(256, 4, generator=g)
        w = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
        y = x @ w + 0.1 * torch.randn(256, 1, generator=g)
        val_y = y[192:] if not self.val_shift else -y[192:] * self.val_shift
        return Data(Split(x[:192], y[:192]), Split(x[192:], val_y))

    def build_model(self, config: Mapping[str, Any], data: Data) -> nn.Module:
        return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(config["dropout"]), nn.Linear(8, 1))

    def loss(self, output: Output, target: Tensor) -> Tensor:
        assert isinstance(output, Tensor)
        return nn.functional.mse_loss(output, target)

    def metrics(self, output: Output, target: Tensor) -> dict[str, float]:
        assert isinstance(output, Tensor)
        return {"val_mae": float((output - target).abs().mean())}
