"""Every experiment the project ships, found from its sweep files (experiments/ and examples/):
``Experiment`` classes (``ALL_SWEEPS``) and plain training functions (``FUNCTION_SWEEPS``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hypersweep.config import SweepSpec, import_roots, load_sweep
from hypersweep.experiment import Data, Experiment
from hypersweep.registry import is_function, resolve_experiment, resolve_target

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT_SWEEPS = sorted((ROOT / "experiments").glob("*.yaml"))
EXAMPLE_SWEEPS = sorted((ROOT / "examples").glob("*/*.yaml"))


def _names_a_function(path: Path) -> bool:
    spec = load_sweep(path)
    return is_function(resolve_target(spec.experiment, import_roots(spec.source), source=str(path)))


FUNCTION_SWEEPS = [p for p in EXPERIMENT_SWEEPS + EXAMPLE_SWEEPS if _names_a_function(p)]
ALL_SWEEPS = [p for p in EXPERIMENT_SWEEPS + EXAMPLE_SWEEPS if p not in FUNCTION_SWEEPS]


def sweep_id(path: Path) -> str:
    return path.stem


def load(path: Path) -> tuple[SweepSpec, Experiment]:
    """The sweep and a configured instance of its experiment, as a worker would make it."""
    spec = load_sweep(path)
    cls = resolve_experiment(spec.experiment, import_roots(spec.source), source=str(path))
    experiment = cls()
    experiment.configure(dict(spec.fixed))
    return spec, experiment


def split_digests(data: Data) -> dict[str, str | None]:
    """A sha256 of each part of ``data`` (its tensors' shapes, dtypes and values); None for no part."""
    out: dict[str, str | None] = {}
    for name, part in (("train", data.train), ("val", data.val), ("test", data.test)):
        if part is None:
            out[name] = None
            continue
        digest = hashlib.sha256()
        for tensor in (part.inputs, part.targets):
            digest.update(f"{tuple(tensor.shape)} {tensor.dtype}".encode())
            digest.update(tensor.contiguous().numpy().tobytes())
        out[name] = digest.hexdigest()
    return out
