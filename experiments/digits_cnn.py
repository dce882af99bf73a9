"""Seeing shapes: a small convolutional network reads handwritten digits.

By default scikit-learn's 8x8 digits (1,797 images, 16 grey levels), shuffled with the seed into
train/validation/test (60/20/20). With ``fixed: {data_dir: /abs/path}`` it reads MNIST or
Fashion-MNIST instead, from the four standard IDX files in that folder (plain or .gz): the seeded
split takes a sixth of the 60,000 training images for validation, the 10,000 t10k images are the
test split. Cross-entropy over 10 classes; validation accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from experiments._idx import find_idx_files, load_idx_folder
from experiments._tabular import split_rows
from hypersweep.experiment import Data, Experiment, Output, Split
from hypersweep.layers import activation

CLASSES = 10


class DigitsCNN(Experiment):
    metric_names: ClassVar[tuple[str, ...]] = ("val_accuracy",)
    default_config: ClassVar[Mapping[str, Any]] = {"channels": 16, "activation": "relu", "dropout": 0.2}

    def __init__(self) -> None:
        self.data_dir: Path | None = None  # an MNIST-style folder; None = scikit-learn's digits

    def configure(self, fixed: Mapping[str, Any]) -> None:
        value = fixed.get("data_dir")
        if value is None:
            return
        folder = Path(str(value)).expanduser()
        # Trials run in their own working directories, so a relative path would mean nothing there.
        if not folder.is_absolute():
            raise ValueError(f"data_dir: must be an absolute path, got '{value}'")
        try:
            find_idx_files(folder)
        except ValueError as exc:
            raise ValueError(f"data_dir: {exc}") from None
        self.data_dir = folder

    def load_data(self, *, seed: int) -> Data:
        if self.data_dir is not None:
            return self._idx_data(self.data_dir, seed=seed)
        from sklearn.datasets import load_digits  # seconds to import: only where the data loads

        digits = load_digits()
        images = digits.images / 16.0  # (N, 8, 8), 16 grey levels -> [0, 1]
        train, val, test = split_rows(len(images), seed=seed)
        return Data(*(_split(images[rows], digits.target[rows]) for rows in (train, val, test)))

    @staticmethod
    def _idx_data(folder: Path, *, seed: int) -> Data:
        train_x, train_y, test_x, test_y = load_idx_folder(folder)
        train, val, _ = split_rows(len(train_x), seed=seed, val_fraction=1 / 6, test_fraction=0.0)
        # uint8 grey levels -> [0, 1]
        return Data(
            _split(train_x[train] / 255.0, train_y[train]),
            _split(train_x[val] / 255.0, train_y[val]),
            _split(test_x / 255.0, test_y),
        )

    def build_model(self, config: Mapping[str, Any], data: Data) -> nn.Module:
        _, _, height, width = data.train.inputs.shape
        c, act = int(config["channels"]), str(config["activation"])
        # Two conv blocks each halve the image: (B, 1, H, W) -> (B, 2c, H/4, W/4).
        return nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1),
            activation(act),
            nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1),
            activation(act),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(float(config["dropout"])),
            nn.Linear(2 * c * (height // 4) * (width // 4), 64),
            activation(act),
            nn.Linear(64, CLASSES),
        )

    def loss(self, output: Output, target: Tensor) -> Tensor:
        assert isinstance(output, Tensor)
        return nn.functional.cross_entropy(output, target)

    def metrics(self, output: Output, target: Tensor) -> dict[str, float]:
        assert isinstance(output, Tensor)
        return {"val_accuracy": float((output.argmax(dim=1) == target).float().mean())}


def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    """(N, H, W) images in [0, 1] and (N,) labels -> inputs (N, 1, H, W) float32, targets (N,) int64."""
    inputs = torch.tensor(images, dtype=torch.float32).unsqueeze(1)
    return Split(inputs, torch.tensor(labels, dtype=torch.int64))
