"""Seeded train/validation/test splits of tabular data, standardised on the training split only."""

from __future__ import annotations

import numpy as np
import torch

from hypersweep.experiment import Data, Split


def split_tabular(
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    standardize_targets: bool = False,
) -> Data:
    """Shuffle with ``seed``, split, and standardise features with the training split's statistics.

    Statistics come from the training rows alone so nothing of validation or test leaks into
    training. ``x`` is (N, F); ``y`` is (N,) and becomes (N, 1) float32.
    """
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = round(len(x) * test_fraction)
    n_val = round(len(x) * val_fraction)
    test, val, train = np.split(order, [n_test, n_test + n_val])
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-8
    y = y.astype(np.float64)
    y_mean, y_std = (y[train].mean(), y[train].std() + 1e-8) if standardize_targets else (0.0, 1.0)

    def part(rows: np.ndarray) -> Split:
        features = torch.tensor((x[rows] - mean) / std, dtype=torch.float32)
        targets = torch.tensor((y[rows] - y_mean) / y_std, dtype=torch.float32).unsqueeze(1)
        return Split(features, targets)

    return Data(part(train), part(val), part(test))
