"""Remembering the past: a recurrent network (LSTM or GRU, a swept choice) forecasts sunspots.

Yearly sunspot numbers 1700-2008 (309 values, shipped with statsmodels). Each example is a window
of ``WINDOW`` past years, (T, 1), and its target the next year's value, (1,). The series is split
in time order (train: the earliest 70% of targets, validation: the next 15%, test: the last 15%),
so no model ever sees the future it is judged on; values are standardised with the mean and
spread of the training years alone. ``val_rmse`` is in sunspot numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from hypersweep.experiment import Data, Experiment, Output, Split

WINDOW = 20  # years of history per example: about two 11-year solar cycles
CELLS: dict[str, type[nn.LSTM] | type[nn.GRU]] = {"lstm": nn.LSTM, "gru": nn.GRU}


class Forecaster(nn.Module):
    """(B, T, 1) windows -> (B, 1) next values: a recurrent cell, dropout, then a linear read-out."""

    def __init__(self, *, cell: str, hidden_size: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell '{cell}'; known: {', '.join(CELLS)}")
        # Between-layer dropout only exists with 2+ layers; the read-out dropout always applies.
        inner = dropout if num_layers > 1 else 0.0
        self.rnn = CELLS[cell](1, hidden_size, num_layers=num_layers, batch_first=True, dropout=inner)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.rnn(x)[0]  # (B, T, H)
        last: Tensor = self.head(self.dropout(out[:, -1]))  # (B, 1)
        return last


class SunspotsRNN(Experiment):
    metric_names: ClassVar[tuple[str, ...]] = ("val_rmse", "val_mae")
    default_config: ClassVar[Mapping[str, Any]] = {
        "cell": "lstm",
        "hidden_size": 32,
        "num_layers": 1,
        "dropout": 0.0,
    }

    def __init__(self) -> None:
        self.scale = 1.0  # the training years' spread: loss units -> sunspot numbers

    def load_data(self, *, seed: int) -> Data:
        # The split is chronological, so it does not depend on the seed at all.
        from statsmodels.datasets import sunspots  # statsmodels is slow to import; only here

        series = sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(dtype=np.float64)
        return self.windows(series)

    def windows(self, series: np.ndarray) -> Data:
        """Chronological train/val/test windows of ``series``, standardised on the training years."""
        n = len(series) - WINDOW  # one example per target year after the first window
        n_train, n_val = int(n * 0.7), int(n * 0.15)
        # Training targets are years WINDOW .. WINDOW+n_train-1; only years up to those are seen.
        seen = series[: WINDOW + n_train]
        mean, self.scale = float(seen.mean()), float(seen.std() + 1e-8)
        z = torch.tensor((series - mean) / self.scale, dtype=torch.float32)
        inputs = z.unfold(0, WINDOW, 1)[:n].unsqueeze(-1)  # (n, T, 1)
        targets = z[WINDOW:].unsqueeze(-1)  # (n, 1)

        def part(lo: int, hi: int) -> Split:
            return Split(inputs[lo:hi].clone(), targets[lo:hi].clone())

        return Data(part(0, n_train), part(n_train, n_train + n_val), part(n_train + n_val, n))

    def build_model(self, config: Mapping[str, Any], data: Data) -> nn.Module:
        return Forecaster(
            cell=str(config["cell"]).lower(),
            hidden_size=int(config["hidden_size"]),
            num_layers=int(config["num_layers"]),
            dropout=float(config["dropout"]),
        )

    def loss(self, output: Output, target: Tensor) -> Tensor:
        assert isinstance(output, Tensor)
        return nn.functional.mse_loss(output, target)

    def metrics(self, output: Output, target: Tensor) -> dict[str, float]:
        assert isinstance(output, Tensor)
        error = (output - target) * self.scale
        return {"val_rmse": float(error.pow(2).mean().sqrt()), "val_mae": float(error.abs().mean())}
