"""The trainer's side of population-based training: a new configuration taken over at an epoch
boundary without losing state. PyTorch only: no Ray, no MLflow.

When PBT exploits, Ray Tune restarts the lagging trial with the better trial's checkpoint and a
perturbed configuration (``pbt_scheduler``). The trainer then builds the model and the optimizer
from the new configuration and loads the checkpoint into them. Loading an optimizer's state dict
also loads its param groups, which carry the donor's *old* learning rate, momentum, betas and
weight decay: ``settings_of`` / ``restore_settings`` put the new configuration's values back.
Dropout lives in the model's modules, not in its state dict: the model is built from the new
configuration, so its dropout modules have the new rate before the donor's weights are loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

GroupSettings = list[dict[str, Any]]
# In a PBT trial's config: a conditional key its configuration does not sample. Tune's variant
# generator wants every key of the population in its param space (``pbt_scheduler``); a mapping
# there is a value it does not check a preset value against (a string would warn per key).
NOT_SAMPLED: Mapping[str, bool] = {"hypersweep_not_sampled": True}


def sampled(config: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration without the keys it did not sample."""
    return {k: v for k, v in config.items() if v != NOT_SAMPLED}


def settings_of(optimizer: torch.optim.Optimizer) -> GroupSettings:
    """Each param group's hyperparameters (lr, momentum, betas, weight_decay, ...), no params."""
    return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


def restore_settings(optimizer: torch.optim.Optimizer, settings: GroupSettings) -> None:
    """Put ``settings`` (from ``settings_of`` before a state dict was loaded) back into the
    param groups; the optimizer's state (moments, momentum buffers) stays as loaded."""
    for group, wanted in zip(optimizer.param_groups, settings, strict=True):
        group.update(wanted)


def hp_values(config: Mapping[str, Any], keys: Sequence[str]) -> dict[str, float]:
    """The numeric values of ``keys`` in ``config``: one epoch's line of the trial's schedule."""
    return {
        key: float(config[key])
        for key in keys
        if isinstance(config.get(key), int | float) and not isinstance(config.get(key), bool)
    }


def hp_metrics(values: Mapping[str, float]) -> dict[str, float]:
    """The schedule's values as per-epoch metrics (``hp/lr``), so a tracking UI charts them."""
    return {f"hp/{key}": value for key, value in values.items()}
