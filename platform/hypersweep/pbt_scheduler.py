"""Driver side of population-based training: Ray's ``PopulationBasedTraining`` (or ``PB2``) over
the sweep's search space, its initial population, and a record of every exploit for the tracking callback.

How Ray's PBT (``ray/tune/schedulers/pbt.py``, Ray 2.60) exploits a function trainable: at a result
whose ``epoch`` is ``perturbation_interval`` past the trial's last perturbation, a trial in the
bottom quantile is paused (``_exploit``: ``pause_trial(should_checkpoint=False)``), its config is
replaced by a perturbed copy of a top trial's (``set_config``) and its latest checkpoint by that
trial's (``_latest_checkpoint_result``). It is then started again: with ``reuse_actors=True`` the
actor's ``reset_config`` ends the function's thread and runs it anew with the new config, and
``tune.get_checkpoint()`` gives the donor's checkpoint (``trainer.fit`` restores it). The donor's
checkpoint is the one it reported at its own perturbation epoch (``_checkpoint_or_exploit`` asks a
function trainable to save, which hands back the checkpoint of its last result, or None: so
every perturbation epoch must report with a checkpoint, see ``schedulers.decision_epochs``).

Ray's PBT refuses a searcher (``on_trial_add`` raises for any ``SearchGenerator``, which is what
Tune wraps ``OptunaSearch`` in): the population is sampled up front from the search space with a
seeded random sampler and given to Tune's own variant generator.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from ray import tune
from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.schedulers.pb2 import PB2
from ray.tune.search import BasicVariantGenerator

from hypersweep import pbt_space
from hypersweep.config import SchedulerSpec
from hypersweep.pbt import NOT_SAMPLED, sampled
from hypersweep.search_space import Choice, IntParam, LogUniform, SearchSpace

_TIME = "epoch"
# Exploits not yet taken by the tracking callback, per sweep id (the scheduler and the callbacks
# are separate objects that Tune pickles apart: this is where the one hands over to the other).
_EXPLOITS: dict[str, list[dict[str, Any]]] = {}


def take_exploits(sweep_id: str) -> list[dict[str, Any]]:
    """The exploits recorded since the last call, oldest first."""
    return _EXPLOITS.pop(sweep_id, [])


def population(space: SearchSpace, size: int, seed: int) -> list[dict[str, Any]]:
    """``size`` configurations drawn at random from ``space`` (conditions respected), seeded."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(size):
        trial = study.ask()
        extra = space.define_by_run(trial)  # constants and decoded choices; the rest is in params
        configs.append({**trial.params, **extra})
    return configs


def population_search(space: SearchSpace, size: int, seed: int) -> BasicVariantGenerator:
    """Tune's variant generator that runs exactly ``population(space, size, seed)``. Its points
    must name keys of the param space (``placeholders``) and it gives a trial every key of it:
    a key a configuration did not sample is ``pbt.NOT_SAMPLED`` there (``pbt.sampled``)."""
    members = population(space, size, seed)
    points = [{**placeholders(space), **member} for member in members]
    # No limit on trials at once: every member must exist (PENDING) from the start, so that PBT
    # pauses a member at each perturbation epoch and runs the one furthest behind
    # (``choose_trial_to_run``). Members run one after another would never meet in a quantile.
    return BasicVariantGenerator(points_to_evaluate=points, random_state=seed)


def placeholders(space: SearchSpace) -> dict[str, Any]:
    """Every key of the space, for Tune's param space (each point sets its own values)."""
    return {name: dict(NOT_SAMPLED) for name in space.names}


@dataclass(frozen=True)
class _Clip:
    """Ray multiplies a continuous value by 0.8 or 1.2 and never clips it: this keeps a perturbed
    value within the search space's range (a dropout of 0.6 from a space up to 0.5, an lr that
    grows past its range). Picklable, as Tune pickles the scheduler."""

    bounds: Mapping[str, tuple[float, float]]
    integers: frozenset[str]

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for key, (low, high) in self.bounds.items():
            if key in config:
                value = min(max(config[key], low), high)
                config[key] = round(value) if key in self.integers else value
        return config


def _distribution(entry: Any) -> Any:
    """The search-space entry as Ray's PBT wants it: a Tune domain is perturbed by a factor and
    resampled with ``resample_probability``; a list is shifted one place or resampled."""
    if isinstance(entry, Choice):
        return list(entry.values)
    if isinstance(entry, LogUniform):
        return tune.loguniform(entry.low, entry.high)
    if isinstance(entry, IntParam):
        return (
            tune.lograndint(entry.low, entry.high + 1)
            if entry.log
            else tune.randint(entry.low, entry.high + 1)
        )
    return tune.uniform(entry.low, entry.high)


class _Recorded(PopulationBasedTraining):
    """Ray's PBT (or PB2) with every exploit recorded (``take_exploits``): the recipient, the
    donor, the epoch it continues from, and the mutated keys' values before and after."""

    _sweep_id: str
    _mutated: tuple[str, ...]

    def _record_as(self, sweep_id: str, mutations: Sequence[str]) -> None:
        self._sweep_id = sweep_id
        self._mutated = tuple(mutations)

    def _exploit(self, tune_controller: Any, trial: Any, trial_to_clone: Any) -> None:
        before = {k: trial.config.get(k) for k in self._mutated}
        at = self._trial_state[trial].last_train_time
        super()._exploit(tune_controller, trial, trial_to_clone)
        donor_state = self._trial_state[trial_to_clone]
        score, sign = donor_state.last_score, self._metric_op or 1.0  # Ray's score: value x sign
        _EXPLOITS.setdefault(self._sweep_id, []).append(
            {
                "trial_id": trial.trial_id,
                "donor_trial_id": trial_to_clone.trial_id,
                "epoch": int(at),  # the recipient's epoch when it was told to exploit
                "from_epoch": int(donor_state.last_train_time),  # the donor's checkpoint: goes on from here
                "donor_score": None if score is None or math.isnan(score) else score * sign,
                "old": before,
                "donor": {k: trial_to_clone.config.get(k) for k in self._mutated},
                "new": {k: trial.config.get(k) for k in self._mutated},
                "config": sampled(trial.config),  # all of it: the donor's, perturbed
            }
        )


class RecordedPBT(_Recorded):
    """Ray's PBT, its exploits recorded."""


class RecordedPB2(_Recorded, PB2):
    """Ray's PB2 (new values from a GP bandit over the population's results), exploits recorded."""


def make_population_based(
    scheduler: SchedulerSpec, *, space: SearchSpace, mutations: Sequence[str], sweep_id: str, seed: int
) -> _Recorded:
    """Ray's PBT or PB2 on ``epoch`` with the sweep's settings; metric and mode come from Tune's
    config."""
    entries = dict(space.entries)
    bounds = pbt_space.bounds(space, mutations)
    integers = frozenset(k for k in mutations if isinstance(entries[k], IntParam))
    random.seed(seed)  # Ray's explore draws from the random module: a seeded sweep repeats
    np.random.seed(seed)  # and PB2's from numpy's
    shared: dict[str, Any] = {
        "time_attr": _TIME,
        "perturbation_interval": scheduler.perturbation_interval,
        "quantile_fraction": scheduler.quantile_fraction,
        "custom_explore_fn": _Clip(bounds, integers),
        "log_config": False,  # its pbt_policy files duplicate what MLflow records
    }
    made: _Recorded
    if scheduler.type == "pb2":
        # PB2 models each key on its linear range: a log-uniform lr is explored in [low, high]
        # as it is, not on its log scale (Ray's pb2_utils normalises linearly).
        made = RecordedPB2(hyperparam_bounds={k: list(bounds[k]) for k in mutations}, **shared)
    else:
        made = RecordedPBT(
            hyperparam_mutations={k: _distribution(entries[k]) for k in mutations},
            resample_probability=scheduler.resample_probability,
            **shared,
        )
    made._record_as(sweep_id, mutations)
    return made
