"""Trial run names that say what a trial is at a glance: ``07 adam lr=0.023 bs=16``.

MLflow's runs table shows a run's name first, and a bare trial id (``60281afd``) says nothing. A
trial's name is its number in the sweep (the order trials started in, zero-padded so that names
sort in that order), then its swept parameters: choices that are words bare, other values as
``key=value``, numbers with 2 significant digits, well-known keys abbreviated. Parameters the
sweep fixes are left out: every trial has the same.

A name is for people only. A trial is found by its ``hypersweep.trial_id`` tag, never by its name:
two trials may share a name (their values round alike), and a name may be cut short.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ABBREVIATIONS = {
    "batch_size": "bs",
    "weight_decay": "wd",
    "dropout": "drop",
    "momentum": "mom",
    "learning_rate": "lr",
}
# MLflow's SQL stores keep a run's name in a column of 250 characters.
MAX_LENGTH = 250
_MAX_PART = 40  # one value (a long string choice) may not crowd out the others
_CUT = "…"


@dataclass(frozen=True)
class RunNames:
    """How one sweep names its trials' runs. ``swept``: the search space's parameters (its order);
    ``width``: digits of the number (those of the sweep's trial count, at least 2)."""

    swept: tuple[str, ...] = ()
    width: int = 2

    @classmethod
    def of_sweep(cls, swept: Iterable[str], num_samples: int) -> RunNames:
        return cls(tuple(swept), max(2, len(str(num_samples))))

    def name(self, number: int, trial_id: str, config: Mapping[str, Any]) -> str:
        """The run name of trial ``number`` (1, 2, ...). A sweep that names no swept parameter
        (a recorder used alone) gets the trial id after the number."""
        parts = describe(config, self.swept) or [trial_id]
        return fit([f"{number:0{self.width}d}", *parts])


def describe(config: Mapping[str, Any], swept: Iterable[str]) -> list[str]:
    """The swept values a trial has (a conditional one may be absent): the words first, as a
    reader says "adam with lr 0.02", then ``key=value`` in the search space's order."""
    present = [key for key in swept if key in config]
    words = [short(config[key]) for key in present if isinstance(config[key], str)]
    pairs = [
        f"{ABBREVIATIONS.get(key, key)}={short(config[key])}"
        for key in present
        if not isinstance(config[key], str)
    ]
    return [_clip(part) for part in words + pairs]


def short(value: Any) -> str:
    """A value in few characters: floats with 2 significant digits (0.023, 1e-5, 120), lists of
    sizes as ``64x32``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        mantissa, _, exponent = f"{float(f'{value:.2g}'):g}".partition("e")
        return f"{mantissa}e{int(exponent)}" if exponent else mantissa
    if isinstance(value, list | tuple):
        return "x".join(short(item) for item in value)
    return str(value)


def fit(parts: list[str], limit: int = MAX_LENGTH) -> str:
    """``parts`` joined by spaces; past ``limit``, whole parts are left off the end for ``…``."""
    text = " ".join(parts)
    while len(text) > limit and len(parts) > 1:
        parts = parts[:-1]
        text = " ".join([*parts, _CUT])
    return text[:limit]


def number_in(name: str) -> int:
    """The trial number a run name starts with; 0 when it has none (a name an earlier version
    gave: the trial id)."""
    head, space, _ = name.partition(" ")
    return int(head) if space and head.isdigit() else 0  # a trial id alone may be all digits


def _clip(part: str) -> str:
    return part if len(part) <= _MAX_PART else part[: _MAX_PART - 1] + _CUT
