"""Replaying sweep settings on recorded learning curves, in simulated time.

A *table* holds full learning curves of many configurations (a FIFO sweep's, recorded once). A
replay runs a sweep of other settings against it without training anything: ``workers`` trials at
once on a simulated clock, each epoch taking its recorded time, each trial its measured start-up
overhead. The decisions come from the real parts: Ray Tune's scheduler classes (ASHA / Hyperband,
the median rule, FIFO) and the platform's own searcher (``searcher.StudySearcher`` over Optuna's
samplers), called as Ray Tune calls them. A proposed configuration trains as the nearest recorded
one (as Syne Tune's tabulated benchmarks do): numbers compared on their search scale (log for
``loguniform``), choices by equality, a parameter only one side has counting as far apart; each
recorded configuration trains once per replay while any is left (see ``_Nearest``).

Within a trial the platform's own rules apply: the trial's result so far (``scoring``) is what the
scheduler and searcher see, patience on val_loss stops it, and a recorded divergence ends it as
diverged. No MLflow here: a replay is pure computation (``hypersweep replay``, the search benchmark).
"""

from __future__ import annotations

import heapq
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import optuna
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from hypersweep import scoring
from hypersweep.config import SchedulerSpec
from hypersweep.errors import ConfigError
from hypersweep.schedulers import make_scheduler
from hypersweep.search_space import Choice, IntParam, LogUniform, SearchSpace, Uniform, parse_search_space
from hypersweep.searcher import StudySearcher, make_searcher
from hypersweep.trial import HISTORY

optuna.logging.set_verbosity(optuna.logging.WARNING)  # a study per replay: no line for each
# TPE's ``group`` is marked experimental: a warning per replay would bury the results.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@dataclass(frozen=True)
class Curve:
    """One recorded trial: metric and val_loss per trained epoch, each epoch's seconds (the
    diverged one included), whether it diverged after its last trained epoch, and whether the
    recorded sweep's scheduler cut it short (its later epochs are unknown)."""

    config: Mapping[str, Any]
    values: Sequence[float | None]
    val_loss: Sequence[float | None]
    times: Sequence[float]
    diverged: bool
    cut: bool = False


@dataclass(frozen=True)
class Table:
    metric: str
    mode: str
    max_epochs: int
    space: SearchSpace
    overhead_s: float
    curves: tuple[Curve, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Table:
        curves = tuple(
            Curve(
                t["config"],
                t["curve"],
                t.get("val_loss") or t["curve"],
                t["times"],
                t["diverged"],
                cut=t.get("stop_reason", "completed") not in _OWN_ENDS,
            )
            for t in data["trials"]
        )
        space = parse_search_space(data["search_space"], source="table")
        return cls(data["metric"], data["mode"], int(data["max_epochs"]), space, data["overhead_s"], curves)

    def results(self) -> list[float]:
        """Each curve's result (its best epoch); diverged curves have the worst."""
        out = []
        for curve in self.curves:
            best = scoring.NONE_YET
            for value in curve.values:
                best = scoring.better(best, value, self.mode)
            out.append(scoring.worst(self.mode) if curve.diverged else scoring.or_worst(best, self.mode))
        return out

    def best(self) -> float:
        sign = 1 if self.mode == "min" else -1
        return sign * min(sign * r for r in self.results())


@dataclass(frozen=True)
class Setting:
    scheduler: SchedulerSpec
    search: str = "optuna"  # optuna | random
    # truth: the platform (StudySearcher, results as ``scoring`` defines them); ray: a plain Ray
    # Tune script (OptunaSearch as it ships, each epoch's own value reported)
    told: str = "truth"
    num_samples: int = 32
    workers: int = 2
    patience: int | None = None
    seed: int = 0
    startup_trials: int = 10  # TPE's random trials first
    group: bool = False  # TPE models a conditional space's branches apart
    warm: tuple[optuna.trial.FrozenTrial, ...] = ()  # earlier trials the study starts with


@dataclass
class Trace:
    """What a replay did: after each simulated epoch, the clock, the epochs trained so far and
    the sweep's best result so far (diverging trials never count)."""

    times: list[float] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    best: list[float] = field(default_factory=list)
    trials: list[int] = field(default_factory=list)  # trials started so far
    curves: list[int] = field(default_factory=list)  # per trial started: the recorded curve it trained
    stopped: int = 0  # trials the scheduler stopped
    guessed: int = 0  # trials that needed epochs a cut curve does not hold: the replay is not exact
    # What the searcher told its study (a follow-up's warm start); not part of what a replay did.
    study: optuna.Study | None = field(default=None, compare=False, repr=False)


# What a trial's own rules end it with; any other recorded end was the scheduler's (or an error).
_OWN_ENDS = {"completed", "patience", "diverged"}


class _Nearest:
    """Maps a proposed configuration to the index of the nearest recorded one not trained yet in
    this replay (the nearest of all once every one has been).

    Without replacement: two proposals of a real sweep are two configurations, however close, and
    a model-based searcher refines near its best ones. Mapped to one recorded curve, each of those
    would repeat the same result, and the searcher would spend its trials learning nothing new
    (seen: TPE reached 32-43 distinct curves in 128 trials of a 200-curve table, random ~90).
    """

    def __init__(self, table: Table) -> None:
        self.names = list(table.space.names)
        self.entries = dict(table.space.entries)
        self.rows = np.array([self._vector(c.config) for c in table.curves])  # (N, P)
        self.choice = np.array([isinstance(self.entries[n], Choice) for n in self.names])  # (P,)
        self.used = np.zeros(len(self.rows), dtype=bool)

    def __call__(self, config: Mapping[str, Any]) -> int:
        point = np.array(self._vector(config))
        # A choice is the same or not (1 apart, as far as a number's whole range); absent: 1.
        gap = np.where(self.choice, (self.rows != point).astype(float), np.abs(self.rows - point))
        apart = np.where(np.isnan(self.rows) | np.isnan(point), 1.0, gap)
        distance = (apart**2).sum(axis=1)
        if not self.used.all():
            distance[self.used] = np.inf
        index = int(np.argmin(distance))
        self.used[index] = True
        return index

    def _vector(self, config: Mapping[str, Any]) -> list[float]:
        return [self._scale(name, config.get(name)) for name in self.names]

    def _scale(self, name: str, value: Any) -> float:
        """A value on its search scale in [0, 1]; choices by their index; NaN when absent."""
        entry = self.entries[name]
        if value is None:
            return math.nan
        if isinstance(entry, Choice):
            return float(entry.values.index(value)) if value in entry.values else math.nan
        if isinstance(entry, LogUniform):
            return (math.log(value) - math.log(entry.low)) / (math.log(entry.high) - math.log(entry.low))
        if isinstance(entry, Uniform | IntParam):
            return (float(value) - entry.low) / max(entry.high - entry.low, 1e-12)
        return 0.0


class _Controller:
    """What Ray's schedulers ask of Tune's controller: the live trials (none ever pending here:
    the platform runs as many trials as there are workers, with no queue)."""

    def get_live_trials(self) -> list[Any]:
        return []


@dataclass(eq=False)
class _SimTrial:
    trial_id: str
    curve: Curve
    epoch: int = 0
    so_far: float = scoring.NONE_YET
    best_loss: float = math.inf
    bad_epochs: int = 0
    status: str = Trial.RUNNING


def replay(table: Table, setting: Setting) -> Trace:
    """One simulated sweep of ``setting`` over ``table``."""
    return _Replay(table, setting).run()


class _Replay:
    def __init__(self, table: Table, setting: Setting) -> None:
        self.table, self.setting = table, setting
        self.nearest = _Nearest(table)
        self.searcher = make_searcher(
            setting.search,
            seed=setting.seed,
            space=table.space.define_by_run,
            metric=table.metric,
            mode=table.mode,
            study_file=None,
            study_name="replay",
            told=setting.told,
            startup_trials=setting.startup_trials,
            group=setting.group,
            scheduler=setting.scheduler.type,
            seeded=setting.warm,
        )
        self.scheduler = make_scheduler(setting.scheduler, max_epochs=table.max_epochs)
        self.scheduler.set_search_properties(table.metric, table.mode)
        self.controller = _Controller()
        self.trace = Trace()
        self.queue: list[tuple[float, int, _SimTrial]] = []
        self.started = self.epochs = self.pushed = 0
        self.best = scoring.NONE_YET

    def run(self) -> Trace:
        for _ in range(min(self.setting.workers, self.setting.num_samples)):
            self._start(0.0)
        while self.queue:
            clock, _, trial = heapq.heappop(self.queue)
            if self._epoch(clock, trial) and self.started < self.setting.num_samples:
                self._start(clock)
        if isinstance(self.searcher, StudySearcher):
            self.trace.study = self.searcher.study
        return self.trace

    def _start(self, clock: float) -> None:
        trial_id = f"{self.started:05d}"
        self.started += 1
        config = self.searcher.suggest(trial_id) or {}
        self.trace.curves.append(self.nearest(config))
        trial = _SimTrial(trial_id, self.table.curves[self.trace.curves[-1]])
        self.scheduler.on_trial_add(self.controller, trial)  # type: ignore[arg-type]
        self._schedule(clock + self.table.overhead_s, trial)

    def _schedule(self, clock: float, trial: _SimTrial) -> None:
        seconds = trial.curve.times[trial.epoch] if trial.epoch < len(trial.curve.times) else 0.0
        self.pushed += 1  # ties on the clock go in the order they were scheduled
        heapq.heappush(self.queue, (clock + seconds, self.pushed, trial))

    def _epoch(self, clock: float, trial: _SimTrial) -> bool:
        """The trial's next epoch ends at ``clock``; True when the trial ended with it."""
        trial.epoch += 1
        self.epochs += 1
        curve, epoch, mode = trial.curve, trial.epoch, self.table.mode
        diverged = curve.diverged and epoch > len(curve.values)
        record: dict[str, Any] = {"epoch": epoch}
        if diverged:
            record["stop_reason"] = "diverged"
        else:
            value = curve.values[epoch - 1]
            record[self.table.metric] = value
            trial.so_far = scoring.better(trial.so_far, value, mode)
            if not curve.diverged:
                self.best = scoring.better(self.best, value, mode)
            reason = self._own_stop(trial)
            if reason:
                record["stop_reason"] = reason
        metric = scoring.worst(mode) if diverged else scoring.or_worst(trial.so_far, mode)
        if self.setting.told == "ray" and not diverged:
            # A plain Ray Tune script reports each epoch's own value: what ASHA compares at a
            # rung and what OptunaSearch tells as the trial's value is the last one, not its best.
            metric = scoring.or_worst(
                scoring.better(scoring.NONE_YET, record.get(self.table.metric), mode), mode
            )
        # As Tune's result: training_iteration counts reports (Ray's own searcher reads it).
        result = {**record, self.table.metric: metric, HISTORY: [record], "training_iteration": epoch}
        self._note(clock)
        if "stop_reason" in record:
            return self._end(trial, result)
        decision = self.scheduler.on_trial_result(self.controller, trial, result)  # type: ignore[arg-type]
        if decision == TrialScheduler.STOP:
            self.trace.stopped += 1
            return self._end(trial, result)
        if epoch >= len(curve.values) and not curve.diverged:
            # It would train on, but what comes next was never recorded (a curve the recorded
            # sweep's scheduler cut, or one its own patience ended earlier than the replay's).
            self.trace.guessed += 1
            return self._end(trial, result)
        self.searcher.on_trial_result(trial.trial_id, result)
        self._schedule(clock, trial)
        return False

    def _own_stop(self, trial: _SimTrial) -> str:
        """The trainer's own reasons: the last epoch, or patience on val_loss."""
        if trial.epoch >= self.table.max_epochs:
            return "completed"
        loss = trial.curve.val_loss[trial.epoch - 1]
        if loss is not None and loss < trial.best_loss:
            trial.best_loss, trial.bad_epochs = loss, 0
            return ""
        trial.bad_epochs += 1
        patience = self.setting.patience
        return "patience" if patience is not None and trial.bad_epochs >= patience else ""

    def _end(self, trial: _SimTrial, result: dict[str, Any]) -> bool:
        self.searcher.on_trial_complete(trial.trial_id, result)
        self.scheduler.on_trial_complete(self.controller, trial, result)  # type: ignore[arg-type]
        return True

    def _note(self, clock: float) -> None:
        self.trace.times.append(clock)
        self.trace.epochs.append(self.epochs)
        self.trace.best.append(self.best)
        self.trace.trials.append(self.started)


@dataclass(frozen=True)
class Outcome:
    """A setting replayed with several seeds: medians over them."""

    setting: Setting
    best: float  # the sweep's best result
    epochs: float  # epochs trained in all
    seconds: float  # simulated wall time
    guessed: int  # seeds in which a trial needed epochs a cut curve lacks (0: exact)


def compare(table: Table, settings: Sequence[Setting], seeds: int) -> list[Outcome]:
    """Each setting replayed with seeds 0..seeds-1."""
    out = []
    for setting in settings:
        traces = [replay(table, replace(setting, seed=seed)) for seed in range(seeds)]
        out.append(
            Outcome(
                setting,
                best=float(np.median([t.best[-1] for t in traces])),
                epochs=float(np.median([t.epochs[-1] for t in traces])),
                seconds=float(np.median([t.times[-1] for t in traces])),
                guessed=sum(t.guessed > 0 for t in traces),
            )
        )
    return out


def settings_grid(
    base: SchedulerSpec,
    *,
    schedulers: Sequence[str],
    grace_periods: Sequence[int],
    reduction_factors: Sequence[float],
    searches: Sequence[str],
    num_samples: int,
    workers: int,
    patience: int | None,
) -> list[Setting]:
    """Every combination, each scheduler validated as a sweep file's would be (FIFO once, as
    grace period and reduction factor mean nothing to it)."""
    out: list[Setting] = []
    for kind in schedulers:
        graces = grace_periods if kind != "fifo" else grace_periods[:1]
        factors = reduction_factors if kind in ("asha", "hyperband") else reduction_factors[:1]
        for grace in graces:
            for factor in factors:
                scheduler = SchedulerSpec.model_validate(
                    {**base.model_dump(), "type": kind, "grace_period": grace, "reduction_factor": factor}
                )
                for search in searches:
                    out.append(Setting(scheduler, search, "truth", num_samples, workers, patience))
    return out


def settings_from_flags(data: Mapping[str, Any], table: Table, grid: Mapping[str, Any]) -> list[Setting]:
    """The settings ``hypersweep replay``'s flags ask for, each value checked (bad ones: exit 2)."""
    base = SchedulerSpec.model_validate(data["scheduler"])
    schedulers = _listed(grid["scheduler"], "--scheduler", str, {"asha", "hyperband", "median", "fifo"})
    graces = _listed(grid["grace_period"] or str(base.grace_period), "--grace-period", int)
    factors = _listed(grid["reduction_factor"] or f"{base.reduction_factor:g}", "--reduction-factor", float)
    searches = _listed(grid["search"] or data["search"], "--search", str, {"optuna", "random"})
    if any(g < 1 or g > table.max_epochs for g in graces):
        raise ConfigError("", "--grace-period", f"epochs must lie in 1..{table.max_epochs} (max_epochs)")
    if any(f <= 1 for f in factors):
        raise ConfigError("", "--reduction-factor", "each factor must be above 1")
    return settings_grid(
        base,
        schedulers=schedulers,
        grace_periods=graces,
        reduction_factors=factors,
        searches=searches,
        num_samples=grid["num_samples"] or data["num_samples"],
        workers=data["workers"],
        patience=data["patience"],
    )


def _listed(text: str, flag: str, kind: Any, allowed: set[str] | None = None) -> list[Any]:
    try:
        values = [kind(part.strip()) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ConfigError("", flag, f"'{text}' is not a comma-separated list of {kind.__name__}s") from None
    wrong = [v for v in values if allowed is not None and v not in allowed]
    if wrong or not values:
        raise ConfigError("", flag, f"'{text}': choose from {', '.join(sorted(allowed or []))}")
    return values
