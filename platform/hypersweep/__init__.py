"""hypersweep: hyperparameter sweeps of PyTorch models on Ray Tune, Optuna, ASHA and MLflow.

``hypersweep.Trial`` (and ``reports``, ``TrialStopped``) are what a function trial uses (see
``hypersweep.handle``); they load on first use, so the command line starts without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Trial", "TrialStopped", "reports"]

if TYPE_CHECKING:
    from hypersweep.handle import Trial, TrialStopped, reports


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hypersweep import handle

        return getattr(handle, name)
    raise AttributeError(f"module 'hypersweep' has no attribute '{name}'")
