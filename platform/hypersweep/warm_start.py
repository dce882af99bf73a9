"""Warm start: a new sweep's study seeded with earlier sweeps' trials (``search.warm_start``).

A narrowed follow-up sweep should not start from scratch: before its first trial, the trials of
the sweeps it names go into its Optuna study as finished trials, so TPE models the region from
the first proposal (they also count as its start-up trials).

**Where they come from: MLflow.** The earlier sweep's study journal holds the same (it lives in
that sweep's folder), but only on the machine and storage that ran it; MLflow is where sweeps are
found by id or name (``hypersweep best``, ``replay``), on any machine that reaches the tracking
store. From a trial's run (``tracking.earlier``) its study entry is rebuilt by the searcher's own
rules (``searcher``): the intermediate value at each epoch is the trial's result so far
(``scoring``); a trial the scheduler stopped is PRUNED, valued at its last epoch; one that
completed or stopped itself is COMPLETE with its result; a diverged one is COMPLETE with the
worst value. A failed, interrupted or unfinished trial has no result and is left out.

**What is taken.** Only what the new space could have proposed: for each of its parameters (in
its order, conditions applied) the earlier value must be of the same kind and inside it (a number
within the range, an integer on the step, one of the choices); a parameter the new space does not
sample (or whose condition is not met) is left out; a parameter it holds constant (the search
space's constants, ``fixed``) must have had that value. A trial with any value outside is
skipped, and so is one that shares no parameter with the new space.

Seeded trials carry the user attribute ``warm_start`` (their sweep's id): the searcher never
counts them as Tune's trials (``num_samples`` counts this sweep's own), nor as trials lost in a
crash on resume.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState, create_trial

from hypersweep import scoring
from hypersweep.redaction import redact_settings
from hypersweep.search_space import Choice, IntParam, LogUniform, SearchSpace, Uniform, choice_label
from hypersweep.searcher import SELF_STOPPED, WARM_START

EARLIER_TRIAL = "earlier_trial_id"  # user attribute: the seeded trial's id in its own sweep
_NATIVE = (type(None), bool, int, float, str)  # as search_space: choices Optuna stores as they are
_OUTSIDE = object()


@dataclass(frozen=True)
class Earlier:
    """One earlier trial with a result, as its study would hold it. ``params``: as recorded, text
    (MLflow) or values (a study)."""

    source: str  # its sweep's id
    trial_id: str
    params: Mapping[str, Any]
    state: TrialState  # COMPLETE or PRUNED
    value: float | None
    steps: Mapping[int, float]  # intermediate values: the result so far per epoch


@dataclass(frozen=True)
class WarmStart:
    """What a sweep is seeded with, and what was left out."""

    sources: tuple[str, ...]
    trials: tuple[FrozenTrial, ...]
    outside: int = 0  # trials with a value outside the new space
    no_result: int = 0  # trials that failed, were interrupted or had not finished

    def line(self) -> str:
        """One line for the terminal."""
        skipped = self.outside + self.no_result
        line = (
            f"warm start from {', '.join(self.sources)}: {len(self.trials)} trials taken, {skipped} skipped"
        )
        parts = [f"{self.outside} outside the search space"] if self.outside else []
        parts += [f"{self.no_result} without a result"] if self.no_result else []
        return line + (f" ({', '.join(parts)})" if parts else "")


def seeds(
    earlier: Iterable[Earlier], space: SearchSpace, fixed: Mapping[str, Any]
) -> tuple[list[FrozenTrial], int]:
    """The trials to add to the new study, and how many fell outside ``space`` or ``fixed``."""
    distributions = {name: distribution(entry) for name, entry in space.entries if _is_sampled(entry)}
    taken: list[FrozenTrial] = []
    outside = 0
    for trial in earlier:
        params = fit(trial.params, space, fixed)
        if not params:
            outside += 1
            continue
        taken.append(
            create_trial(
                state=trial.state,
                value=trial.value,
                params=params,
                distributions={name: distributions[name] for name in params},
                intermediate_values=dict(trial.steps),
                user_attrs={WARM_START: trial.source, EARLIER_TRIAL: trial.trial_id},
            )
        )
    return taken, outside


def fit(params: Mapping[str, Any], space: SearchSpace, fixed: Mapping[str, Any]) -> dict[str, Any] | None:
    """``params`` as the new space would have sampled them (Optuna's values: a label for a choice
    it cannot store), or None when one falls outside it, its constants or ``fixed`` (see the
    module). An empty dict: nothing in common."""
    constants = {name: entry for name, entry in space.entries if not _is_sampled(entry)}
    constants.update(fixed)
    for name, constant in redact_settings(constants).items():  # redacted, as the runs show them
        if name in params and not _matches(params[name], constant):
            return None
    taken: dict[str, Any] = {}
    values: dict[str, Any] = {}  # as the trial's config had them: what conditions test
    for name, entry in space.entries:
        if not _is_sampled(entry) or name not in params or not _active(entry, values):
            continue
        found = _inside(entry, params[name])
        if found is _OUTSIDE:
            return None
        values[name], taken[name] = found
    return taken


def distribution(entry: Any) -> BaseDistribution:
    """The Optuna distribution ``search_space`` samples ``entry`` from: the seeded trials' must be
    the same, or TPE would model them apart."""
    if isinstance(entry, LogUniform):
        return FloatDistribution(entry.low, entry.high, log=True)
    if isinstance(entry, Uniform):
        return FloatDistribution(entry.low, entry.high)
    if isinstance(entry, IntParam):
        return IntDistribution(entry.low, entry.high, step=1 if entry.log else entry.step, log=entry.log)
    assert isinstance(entry, Choice)
    return CategoricalDistribution(_choices(entry))


def from_recorded(sweep: Any, mode: str) -> tuple[list[Earlier], int]:
    """A ``tracking.earlier.RecordedSweep``'s trials with a result, and how many had none."""
    out = []
    for trial in sweep.trials:
        if not trial.curve and trial.status != "diverged":
            continue
        state, value, steps = outcome(trial.curve, trial.stop_reason, mode)
        out.append(Earlier(sweep.sweep_id, trial.trial_id, trial.params, state, value, steps))
    return out, len(sweep.trials) - len(out)


def outcome(
    curve: Sequence[float | None], stop_reason: str, mode: str
) -> tuple[TrialState, float | None, dict[int, float]]:
    """(state, value, intermediate values) of a trial that ended with ``stop_reason`` after the
    epochs of ``curve``, as the searcher told its study (``searcher.StudySearcher._outcome``)."""
    steps: dict[int, float] = {}
    so_far = scoring.NONE_YET
    for epoch, value in enumerate(curve, start=1):
        so_far = scoring.better(so_far, value, mode)
        if not math.isnan(so_far):
            steps[epoch] = so_far
    if stop_reason == "diverged":
        return TrialState.COMPLETE, scoring.worst(mode), steps
    if stop_reason in SELF_STOPPED:
        return TrialState.COMPLETE, scoring.or_worst(so_far, mode), steps
    return TrialState.PRUNED, steps[max(steps)] if steps else None, steps  # the scheduler's stop


def from_study(study: optuna.Study, source: str) -> list[Earlier]:
    """A study's own finished trials with a result (a replay's, in the benchmark)."""
    return [
        Earlier(
            source,
            str(t.user_attrs.get("trial_id", t.number)),
            t.params,
            t.state,
            t.value,
            t.intermediate_values,
        )
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if WARM_START not in t.user_attrs
    ]


def gather(spec: Any, *, client: Any, tracking_uri: str) -> WarmStart | None:
    """The warm start of sweep ``spec`` (a ``SweepSpec``) from the tracking store ``client``
    opens; None without one. Bad input (an unknown sweep, another metric or mode): ConfigError."""
    if not spec.search.warm_start:
        return None
    from hypersweep.tracking.earlier import read_sweeps  # MLflow: the driver's, not a replay's

    recorded = read_sweeps(
        spec.search.warm_start,
        client=client,
        tracking_uri=tracking_uri,
        metric=spec.metric,
        mode=spec.mode,
        source=str(spec.source),
    )
    earlier: list[Earlier] = []
    no_result = 0
    for sweep in recorded:
        trials, none = from_recorded(sweep, spec.mode)
        earlier += trials
        no_result += none
    taken, outside = seeds(earlier, spec.search_space, spec.fixed)
    return WarmStart(tuple(s.sweep_id for s in recorded), tuple(taken), outside, no_result)


def validate(spec: Any, *, tracking_uri: str) -> str:
    """``hypersweep validate``'s check of the warm start: its line, or '' without one."""
    if not spec.search.warm_start:
        return ""
    from hypersweep.tracking.earlier import reader

    client = reader(tracking_uri, spec.search.warm_start, source=str(spec.source))
    warm = gather(spec, client=client, tracking_uri=tracking_uri)
    return warm.line() if warm is not None else ""


def _inside(entry: Any, raw: Any) -> Any:
    """(value, Optuna's value) of ``raw`` in ``entry``, or _OUTSIDE."""
    if isinstance(entry, Choice):
        for value, stored in zip(entry.values, _choices(entry), strict=True):
            if _matches(raw, value) or raw == stored:
                return value, stored
        return _OUTSIDE
    number = _number(raw)
    if number is None or not entry.low <= number <= entry.high:
        return _OUTSIDE
    if isinstance(entry, IntParam):
        on_step = entry.log or (number - entry.low) % entry.step == 0
        return (int(number), int(number)) if number.is_integer() and on_step else _OUTSIDE
    return number, number


def _matches(raw: Any, value: Any) -> bool:
    """Whether a recorded value is ``value``: the same value (a study's; True is not 1), or its
    text as the recorder writes a param."""
    if isinstance(raw, str) and not isinstance(value, str):
        return raw == json.dumps(value)
    return raw == value and isinstance(raw, bool) == isinstance(value, bool)


def _number(raw: Any) -> float | None:
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _choices(entry: Choice) -> list[Any]:
    """The choices as Optuna stores them (``search_space._suggest``): labels unless all native."""
    if all(isinstance(v, _NATIVE) for v in entry.values):
        return list(entry.values)
    return [choice_label(v) for v in entry.values]


def _is_sampled(entry: Any) -> bool:
    return isinstance(entry, LogUniform | Uniform | IntParam | Choice)


def _active(entry: Any, values: Mapping[str, Any]) -> bool:
    """A conditional parameter's condition on the choices taken so far (``search_space``)."""
    return all(values.get(name, _OUTSIDE) in allowed for name, allowed in (entry.when or {}).items())
