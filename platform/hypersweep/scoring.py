"""A trial's result: the one value of the sweep's metric that every part of hypersweep uses.

**A trial's result is the best value of the sweep's metric over the epochs it trained** (lowest
for ``mode: min``, highest for ``max``), counting only finite values. It is the value of the
weights the trial keeps (``model.pt``, the experiment's artifacts), so what is ranked is what is
saved. A trial that diverged has the worst result (``+inf`` for min, ``-inf`` for max) whatever
its earlier epochs scored: it is never the best trial. A trial's result *at epoch t* is the same
definition over epochs 1..t, so it never gets worse as a trial trains.

Used by: the worker (the value Ray Tune, hence ASHA, sees in each report), the searcher (Optuna's
intermediate values and the final value it is told), the recorder (MLflow's ``best_<metric>`` and
``hypersweep best``). Plain Python: imported on both sides of Ray.
"""

from __future__ import annotations

import math
from typing import Any, Literal

Mode = Literal["min", "max"]
NONE_YET = math.nan  # no finite value seen yet


def better(best: float, value: Any, mode: str) -> float:
    """The better of the result so far (``NONE_YET``: none) and an epoch's value; a value that is
    not a finite number never counts."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return best
    if math.isnan(best):
        return float(value)
    return min(best, float(value)) if mode == "min" else max(best, float(value))


def worst(mode: str) -> float:
    """The result of a diverged trial, or of one with no finite value yet."""
    return math.inf if mode == "min" else -math.inf


def or_worst(result: float, mode: str) -> float:
    """``result``, or the worst value when there is none yet: what Tune's scheduler compares."""
    return result if math.isfinite(result) else worst(mode)


def rank(result: float, trial_id: str, mode: str) -> tuple[float, str]:
    """The order of trials, best first: by result, then (a tie) by trial id, so that every view
    (the live line, the summary, MLflow's best-trial tag) names the same best trial."""
    return (result if mode == "min" else -result, trial_id)
