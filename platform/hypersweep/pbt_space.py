"""Which search-space keys population-based training may change, checked at sweep start.

PBT restarts a lagging trial from a better trial's checkpoint with perturbed values. Only values
the trainer can take over at an epoch boundary without losing state can change: what goes into
the optimizer's param groups, the dropout modules' rate and the size of the next mini-batches.
What shapes the model (layers, widths, activations) or picks the optimizer's type cannot: the
copied weights and the optimizer's state (momentum buffers, Adam's moments) belong to them.

No torch or Ray here: ``config`` validates with it before anything heavy is imported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hypersweep.search_space import Choice, IntParam, LogUniform, SearchSpace, Uniform

# Keys the trainer applies at an epoch boundary (see ``pbt.apply_config``), and how.
CHANGEABLE: Mapping[str, str] = {
    "lr": "optimizer",
    "momentum": "optimizer",
    "beta1": "optimizer",
    "beta2": "optimizer",
    "weight_decay": "optimizer",
    "alpha": "optimizer",  # RMSprop's smoothing
    "dropout": "model",
    # The epoch loop reads it at every epoch; only the batch order's generator carries over.
    "batch_size": "loop",
}

_WHY_NOT: Mapping[str, str] = {
    "optimizer": (
        "the optimizer type cannot change mid-trial: the copied optimizer state (momentum "
        "buffers, Adam's moments) belongs to one type"
    ),
}


def mutation_problem(
    key: str, space: SearchSpace, fixed: Mapping[str, object], scheduler: str = "pbt"
) -> str | None:
    """Why ``key`` cannot be a PBT mutation of this space (None: it can)."""
    entries = dict(space.entries)
    if key not in entries:
        if key in fixed:
            return "is fixed, not in the search space: PBT mutates search-space keys"
        return "is not a key of the search space"
    if key in _WHY_NOT:
        return _WHY_NOT[key]
    if key not in CHANGEABLE:
        allowed = ", ".join(CHANGEABLE)
        return f"the trainer cannot change {key} mid-trial (it shapes the model); PBT can change: {allowed}"
    entry = entries[key]
    if not isinstance(entry, LogUniform | Uniform | IntParam | Choice):
        return "is a constant in the search space: there is nothing to mutate"
    if scheduler == "pb2" and isinstance(entry, Choice):
        return "is a choice: pb2 models ranges only (loguniform, uniform, int); pbt resamples choices"
    if entry.when:
        names = ", ".join(entry.when)
        return f"is sampled only for some values of {names}: PBT mutates keys every member has"
    return None


def default_mutations(space: SearchSpace) -> tuple[str, ...]:
    """Without ``mutations``: the continuous keys of the space the trainer can change."""
    return tuple(
        name
        for name, entry in space.entries
        if name in CHANGEABLE
        and isinstance(entry, LogUniform | Uniform)
        and mutation_problem(name, space, {}) is None
    )


def bounds(space: SearchSpace, keys: Sequence[str]) -> dict[str, tuple[float, float]]:
    """(low, high) of each ranged key: a perturbed value is clipped into them."""
    out = {}
    entries = dict(space.entries)
    for key in keys:
        entry = entries.get(key)
        if isinstance(entry, LogUniform | Uniform | IntParam):
            out[key] = (float(entry.low), float(entry.high))
    return out
