"""Seeded train/validation/test splits of tabular data, standardised on the training split only."""

from __future__ import annotations

import numpy as np
import torch

from hypersweep.experiment import Data, Split


def split_rows(
    n: int, *, seed: int, val_fraction: float = 0.2, test_fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices (train, val, test) of a seeded shuffle of ``n`` rows."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    test, val, train = np.split(order, [n_test, n_test + n_val])
    return train, val, test


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
    train, val, test = split_rows(len(x), seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-8
    y = y.astype(np.float64)
    y_mean, y_std = (y[train].mean(), y[train].std() + 1e-8) if standardize_targets else (0.0, 1.0)

    def part(rows: np.ndarray) -> Split:
        features = torch.tensor((x[rows] - mean) / std, dtype=torch.float32)
        targets = torch.tensor((y[rows] - y_mean) / y_std, dtype=torch.float32).unsqueeze(1)
        return Split(features, targets)

    return Data(part(train), part(val), part(test))
