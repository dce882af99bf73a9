"""The ``Experiment`` interface a user implements: data, model, loss, metrics. Plain PyTorch.

An experiment knows nothing about Ray, Optuna or MLflow, so it can be unit-tested and trained
alone. The platform calls it as follows:

* ``configure(fixed)`` first, with the sweep's ``fixed`` values (constants every trial shares, e.g.
  a ``data_dir``); it may raise ``ValueError`` for a value it cannot use, which is reported as bad
  input before the sweep starts.
* ``load_data(seed=...)`` once per sweep, by the driver, while Ray starts. Everything returned is
  a tensor on the CPU; the platform ships it to the workers through Ray's object store and moves
  it to each worker's device once, so workers never run the loader (import its heavy libraries
  inside ``load_data``, not at module level, and workers start faster).
* The experiment object itself travels with the data, as ``configure`` and ``load_data`` left
  it: state derived from the data there (a target's mean and spread, a vocabulary) is what every
  worker's ``build_model``, ``loss``, ``metrics`` and ``artifacts`` see. It must pickle (with
  cloudpickle, as Ray sends objects); one that does not is refused before the sweep starts.
  Tensors kept on it stay on the CPU (only the ``Data`` is moved to a trial's device).
* ``build_model(config, data)`` once per trial, after ``torch.manual_seed(seed)``. ``config`` holds
  the trial's sampled hyperparameters merged over ``default_config``; read what the model needs
  (``dropout``, ``activation``, sizes ...) and ignore the rest (``lr``, ``optimizer`` ... belong to
  the trainer).
* ``loss(output, target)`` on every mini-batch in training and on the whole validation split; it
  must return the *mean* over the batch, a scalar tensor.
* ``metrics(output, target)`` once per epoch on the validation split, in eval mode without
  gradients; returns the experiment's own metrics (names listed in ``metric_names``).
* ``artifacts(model, data)`` once when a trial finishes; files (name -> bytes) to keep with its run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

# A model's output: a tensor, or a tuple of tensors (e.g. a VAE's reconstruction, mu, log-var).
Output = Tensor | tuple[Tensor, ...]


@dataclass(frozen=True)
class Split:
    """One split of a dataset: ``inputs`` (N, ...) and ``targets`` (N, ...), row-aligned."""

    inputs: Tensor
    targets: Tensor

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.targets):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.inputs)

    def to(self, device: torch.device) -> Split:
        return Split(self.inputs.to(device), self.targets.to(device))

    def head(self, n: int) -> Split:
        return Split(self.inputs[:n], self.targets[:n])


@dataclass(frozen=True)
class Data:
    """Train, validation and (held-out, never used for selection) test splits."""

    train: Split
    val: Split
    test: Split | None = None

    def to(self, device: torch.device) -> Data:
        test = self.test.to(device) if self.test is not None else None
        return Data(self.train.to(device), self.val.to(device), test)


class Experiment(ABC):
    """A model and its data, trained by the platform's generic loop."""

    #: metrics returned by ``metrics``; a sweep may optimise any of them or ``val_loss``.
    metric_names: ClassVar[tuple[str, ...]] = ()
    #: what ``build_model`` and the trainer use where the search space is silent.
    default_config: ClassVar[Mapping[str, Any]] = {}

    def configure(self, fixed: Mapping[str, Any]) -> None:
        """Take what ``load_data`` needs from the sweep's fixed values; ignores them by default."""
        return None

    @abstractmethod
    def load_data(self, *, seed: int) -> Data:
        """Load and split the data; the split must depend on ``seed`` only."""

    @abstractmethod
    def build_model(self, config: Mapping[str, Any], data: Data) -> nn.Module:
        """A fresh model for one trial."""

    @abstractmethod
    def loss(self, output: Output, target: Tensor) -> Tensor:
        """Mean loss over the batch (scalar)."""

    def metrics(self, output: Output, target: Tensor) -> dict[str, float]:
        """Validation metrics for one epoch; none by default."""
        return {}

    def artifacts(self, model: nn.Module, data: Data) -> dict[str, bytes]:
        """Files to attach to a finished trial's run; none by default."""
        return {}
