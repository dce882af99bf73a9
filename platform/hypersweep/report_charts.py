"""The sweep report's charts, drawn with matplotlib (parallel coordinates by Optuna's matplotlib
plot), each returned as PNG bytes. No MLflow: they take the ``tracking.report_data`` records.

Figures are made without pyplot where possible (``matplotlib.figure.Figure`` needs no backend and
keeps no global state); Optuna's plot makes its figure through pyplot, and is closed at once.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Sequence

# Charts go to files: no window, whatever display there is (a process that imported matplotlib
# earlier, a notebook, keeps the backend it chose).
os.environ.setdefault("MPLBACKEND", "agg")

import optuna
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from hypersweep import scoring
from hypersweep.config import SchedulerSpec
from hypersweep.tracking.report_data import SweepRecord

STATUS_COLOURS = {
    "completed": "#2ca02c",
    "early_stopped": "#1f77b4",
    "diverged": "#d62728",
    "failed": "#7f7f7f",
    "interrupted": "#9467bd",
    "running": "#bcbd22",
}
_SIZE = (10.0, 4.6)  # inches: 1000 x 460 px at _DPI
_DPI = 100


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes. Its margins come from its layout engine: ``bbox_inches="tight"``
    would draw it twice (0.33 s instead of 0.15 s for the parallel coordinates)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def curves(record: SweepRecord) -> bytes:
    """Every trial's metric per epoch, coloured by how it ended, with the epochs at which the
    scheduler judged the trials (ASHA's rungs)."""
    figure = Figure(figsize=_SIZE, layout="constrained")
    ax = figure.subplots()
    for status, colour in STATUS_COLOURS.items():
        trials = [t for t in record.trials if t.status == status]
        for i, trial in enumerate(trials):
            ax.plot(
                trial.epochs,
                trial.values,
                color=colour,
                alpha=0.75,
                linewidth=1.2,
                marker="o" if sum(map(math.isfinite, trial.values)) == 1 else None,  # no line to draw
                markersize=3,
                label=f"{status} ({len(trials)})" if i == 0 else None,
            )
    _mark_rungs(ax, record)
    _fit_y(ax, [v for t in record.trials for v in t.values])
    ax.set_xlim(0.5, record.max_epochs + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(record.metric)
    ax.set_title(f"learning curves: {len(record.trials)} trials")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # none for a sweep with no trial (and no rung)
        ax.legend(loc="upper right", fontsize=8)
    return png(figure)


def _mark_rungs(ax: Axes, record: SweepRecord) -> None:
    """ASHA's rungs (each Hyperband bracket's), or where the median rule starts to judge."""
    try:
        spec = SchedulerSpec.model_validate(record.scheduler)
    except ValueError:
        return  # a sweep recorded by a version with other scheduler settings: no marks
    if spec.type in ("asha", "hyperband"):
        brackets = spec.brackets if spec.type == "hyperband" else 1
        for bracket in range(brackets):
            rungs = [r for r in spec.rungs(record.max_epochs, bracket) if r < record.max_epochs]
            style = ("--", ":", "-.")[bracket % 3]
            label = "rung" if brackets == 1 else f"rung (bracket {bracket})"
            for i, rung in enumerate(rungs):
                ax.axvline(rung, color="black", linestyle=style, alpha=0.45, label=None if i else label)
    elif spec.type == "median":
        ax.axvline(spec.grace_period, color="black", linestyle="--", alpha=0.45, label="median rule")


def _fit_y(ax: Axes, values: Sequence[float]) -> None:
    """A log axis for positive values spanning a decade or more (losses); the top bounded so
    that one trial's first epochs far above the rest do not flatten every other curve."""
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return
    low, high = finite[0], finite[min(len(finite) - 1, int(0.98 * len(finite)))]
    if low > 0 and finite[-1] / low >= 10:
        ax.set_yscale("log")
        ax.set_ylim(low / 1.15, high * 1.15)
    elif high > low:
        pad = 0.05 * (high - low)
        ax.set_ylim(low - pad, high + pad)


def best_so_far(record: SweepRecord) -> bytes:
    """The best result so far against the epochs trained by all trials together, and against
    the wall time since the sweep started: what more epochs (or time) bought."""
    events = sorted(
        (stamp, value) for t in record.trials for stamp, value in zip(t.stamps, t.values, strict=True)
    )
    trained, seconds, best, so_far = [], [], [], scoring.NONE_YET
    for count, (stamp, value) in enumerate(events, start=1):
        so_far = scoring.better(so_far, value, record.mode)
        if math.isfinite(so_far):
            trained.append(count)
            seconds.append(max(0.0, (stamp - record.started_ms) / 1000))
            best.append(so_far)
    figure = Figure(figsize=_SIZE, layout="constrained")
    by_epochs, by_time = figure.subplots(1, 2, sharey=True)
    by_epochs.step(trained, best, where="post", color="#1f77b4")
    by_epochs.set_xlabel("epochs trained, all trials")
    by_epochs.set_ylabel(f"best {record.metric} so far")
    by_time.step(seconds, best, where="post", color="#ff7f0e")
    by_time.set_xlabel("wall time since the sweep started (s)")
    budget = record.num_samples * record.max_epochs
    figure.suptitle(f"best so far: {len(events)} epochs trained of a budget of {budget}")
    for ax in (by_epochs, by_time):
        ax.grid(alpha=0.3)
    return png(figure)


def parallel(study: optuna.Study, metric: str) -> bytes | None:
    """Optuna's parallel coordinates: one line per trial through its parameters, coloured by its
    result. None with no trial to draw."""
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return None
    import matplotlib.pyplot as plt

    with plt.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        ax = optuna.visualization.matplotlib.plot_parallel_coordinate(study, target_name=metric)
        figure = ax.get_figure(root=True)
        assert isinstance(figure, Figure)  # made by plt.subplots
        try:
            figure.set_size_inches(*_SIZE)
            # Optuna's figure has no layout engine: room for its tilted labels and colour bar.
            figure.subplots_adjust(left=0.06, right=0.92, bottom=0.16, top=0.88)
            ax.set_title(f"parallel coordinates: parameters against {metric}", y=1.06)
            return png(figure)
        finally:
            plt.close(figure)


def importance(importances: dict[str, float], *, trials: int, metric: str) -> bytes | None:
    """The parameters' importance as horizontal bars, most important on top; None without any."""
    if not importances:
        return None
    names = list(reversed(importances))
    values = [importances[n] for n in names]
    figure = Figure(figsize=(_SIZE[0], 0.9 + 0.45 * len(names)), layout="constrained")
    ax = figure.subplots()
    bars = ax.barh(names, values, color="#1f77b4")
    ax.bar_label(bars, labels=[f"{v:.0%}" for v in values], padding=3, fontsize=9)
    ax.set_xlim(0, min(1.0, max(values) * 1.15 + 0.05))
    ax.set_xlabel(f"share of the variance of {metric} (fANOVA, {trials} trials)")
    ax.set_title("parameter importance")
    ax.grid(axis="x", alpha=0.3)
    return png(figure)


def schedules(record: SweepRecord) -> bytes | None:
    """PBT: each key it changed, per epoch and trial, with each exploit drawn as a dotted line
    from the donor's value at the epoch it was copied to the member's first value after it: the
    lineage tree over the schedules. None for a sweep without schedules."""
    keys = sorted({key for trial in record.trials for key in trial.schedule})
    if not keys:
        return None
    figure = Figure(figsize=(_SIZE[0], 2.6 * len(keys)), layout="constrained")
    axes = figure.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    by_id = {trial.trial_id: trial for trial in record.trials}
    for ax, key in zip(axes, keys, strict=True):
        for trial in record.trials:
            points = trial.schedule.get(key, [])
            colour = None
            for segment in _runs_of_epochs(points):  # a gap: the member went on from a donor's epoch
                epochs, values = zip(*segment, strict=True)
                (line,) = ax.plot(epochs, values, marker=".", linewidth=1.2, alpha=0.8, color=colour)
                colour = line.get_color()
        for exploit in record.lineage:
            donor, member = by_id.get(exploit["donor_trial_id"]), by_id.get(exploit["trial_id"])
            at = int(exploit["from_epoch"])
            start = dict(donor.schedule.get(key, [])).get(at) if donor else None
            after = [(e, v) for e, v in (member.schedule.get(key, []) if member else []) if e > at]
            if start is not None and after:
                ax.plot([at, after[0][0]], [start, after[0][1]], ":", color="#555555")
        positive = [v for t in record.trials for _, v in t.schedule.get(key, []) if v > 0]
        if positive and max(positive) / min(positive) > 10:
            ax.set_yscale("log")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_title(f"schedules: {len(record.trials)} members, {len(record.lineage)} exploits (dotted)")
    return png(figure)


def _runs_of_epochs(points: Sequence[tuple[int, float]]) -> list[list[tuple[int, float]]]:
    """``points`` split where an epoch is skipped."""
    runs: list[list[tuple[int, float]]] = []
    for epoch, value in points:
        if not runs or epoch != runs[-1][-1][0] + 1:
            runs.append([])
        runs[-1].append((epoch, value))
    return runs
