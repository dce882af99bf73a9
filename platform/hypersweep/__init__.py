"""hypersweep: hyperparameter sweeps of PyTorch models on Ray Tune, Optuna, ASHA and MLflow."""

from __future__ import annotations

__version__ = "0.1.0"
