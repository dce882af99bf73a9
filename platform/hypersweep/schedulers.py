"""Driver side: Ray Tune's schedulers as a sweep's ``scheduler:`` section asks for them, and the
epochs at which they decide (where a trial always reports, with a checkpoint)."""

from __future__ import annotations

from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)

from hypersweep.config import SchedulerSpec, SweepSpec


def make_scheduler(scheduler: SchedulerSpec, *, max_epochs: int) -> TrialScheduler:
    """The scheduler; metric and mode come from Tune's config (``set_search_properties``)."""
    if scheduler.type == "fifo":
        return FIFOScheduler()
    if scheduler.type == "median":
        return MedianStoppingRule(
            time_attr="epoch",
            grace_period=scheduler.grace_period,
            min_samples_required=scheduler.min_samples_required,
        )
    return AsyncHyperBandScheduler(  # ASHA is its one-bracket case
        time_attr="epoch",
        max_t=max_epochs,
        grace_period=scheduler.grace_period,
        reduction_factor=scheduler.reduction_factor,
        brackets=scheduler.brackets if scheduler.type == "hyperband" else 1,
    )


def decision_epochs(spec: SweepSpec) -> frozenset[int]:
    """The epochs at which the scheduler decides, where a trial always reports (with a
    checkpoint): every rung of every ASHA / Hyperband bracket (see ``SchedulerSpec.rungs``), and
    for the median rule every epoch from its grace period on (it judges a trial at any result,
    and a batched report would let a fast trial finish before it was ever judged). FIFO decides
    nothing."""
    scheduler = spec.scheduler
    if scheduler.type == "median":
        return frozenset(range(scheduler.grace_period, spec.max_epochs + 1))
    brackets = {"asha": 1, "hyperband": scheduler.brackets}.get(scheduler.type, 0)
    return frozenset(e for s in range(brackets) for e in scheduler.rungs(spec.max_epochs, s))
