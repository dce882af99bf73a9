"""Which hyperparameters mattered: a sweep's trials as an Optuna study, and their importance.

The study is built from the trials' configurations and results (``scoring``), as MLflow holds
them, so it can be built wherever the runs can be read (the sweep's own study file stays in its
folder, on the machine that ran it). Every trial with a finite result counts, including the ones
the scheduler stopped early, valued at their result when stopped: under ASHA most trials stop
early (21 of 24 in the default sweep), and they were stopped for scoring worse than their peers
at the same epoch. Trials without a finite result (diverged, failed) are left out: importance is
measured on values, and Optuna's evaluators cannot use an infinite one.

Importance is fANOVA (Hutter et al. 2014; Optuna's ``FanovaImportanceEvaluator``): the share of
the results' variance each parameter explains, from a random forest fitted on the trials (64 trees,
seeded: the same sweep gives the same figures; ~0.2 s for 24 trials). It covers the parameters
every trial has; a conditional one (``momentum`` only under momentum SGD) is left out. Optuna's
default, PED-ANOVA, covers those too, but it compares the few best trials with the rest: on the
default sweep (23 results, 5 of them in its top) it gave ``beta1``, which 5 trials sampled, 65% of
the importance and the learning rate 1%, where fANOVA gives the learning rate 63% (the range spans
stuck, good and diverging rates on purpose).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.importance import FanovaImportanceEvaluator

from hypersweep.search_space import Choice, SearchSpace, choice_label

optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per in-memory study made

MIN_TRIALS = 5  # fewer finite results are too few for a forest to tell the parameters apart
_NATIVE = (type(None), bool, int, float, str)  # choices Optuna stores as they are (search_space)


def results_study(
    space: SearchSpace, trials: Sequence[tuple[Mapping[str, Any], float]], *, mode: str
) -> optuna.Study:
    """An in-memory study holding each (config, result) with a finite result as a COMPLETE
    trial, with the distributions the sweep sampled it from. A config the space cannot have
    produced (a value outside it) is left out."""
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    frozen = []
    for config, result in trials:
        if not math.isfinite(result):
            continue
        fixed = optuna.trial.FixedTrial(_as_stored(space, config))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a value out of range: create_trial refuses it
                space.define_by_run(fixed)  # type: ignore[arg-type]  # a FixedTrial suggests as a Trial
                frozen.append(
                    optuna.trial.create_trial(
                        params=fixed.params, distributions=fixed.distributions, value=result
                    )
                )
        except ValueError:
            continue  # a parameter missing or outside the space
    study.add_trials(frozen)
    return study


def _as_stored(space: SearchSpace, config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as the space's trials hold it: a choice Optuna cannot store natively (a list)
    by its label (``search_space.choice_label``)."""
    out = dict(config)
    for name, entry in space.entries:
        if (
            isinstance(entry, Choice)
            and name in out
            and not all(isinstance(v, _NATIVE) for v in entry.values)
        ):
            out[name] = choice_label(out[name])
    return out


def evaluator() -> FanovaImportanceEvaluator:
    """The evaluator of every importance hypersweep reports (see the module)."""
    return FanovaImportanceEvaluator(seed=0)


def importances(study: optuna.Study) -> dict[str, float]:
    """Parameter -> importance (summing to 1), most important first; {} with fewer than
    ``MIN_TRIALS`` finite results. Conditional parameters are left out (see the module)."""
    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(finished) < MIN_TRIALS:
        return {}
    found = optuna.importance.get_param_importances(study, evaluator=evaluator())
    return {name: float(value) for name, value in found.items()}
