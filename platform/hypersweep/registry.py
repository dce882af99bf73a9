"""Finding a user's ``Experiment`` from its import path (``package.module:Class``)."""

from __future__ import annotations

import importlib
import posixpath
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle
import torch

from hypersweep.errors import ConfigError, first_line, not_one_of
from hypersweep.experiment import Data, Experiment
from hypersweep.trainer import OPTIMIZERS, TRAINER_DEFAULTS, make_optimizer

if TYPE_CHECKING:  # workers import this module; keep pydantic and Optuna out of their start-up
    from hypersweep.config import SweepSpec


def resolve_experiment(path: str, roots: list[str], *, source: str = "") -> type[Experiment]:
    """Import ``module:Class`` with ``roots`` on sys.path; ConfigError naming the key otherwise."""
    module_name, _, class_name = path.partition(":")
    for root in reversed(roots):
        if root not in sys.path:
            sys.path.insert(0, root)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(source, "experiment", f"cannot import '{module_name}': {exc}") from None
    except SyntaxError as exc:
        where = f"{Path(exc.filename or '?').name} line {exc.lineno}"
        raise ConfigError(source, "experiment", f"'{module_name}' has a syntax error ({where})") from None
    except Exception as exc:  # the user's module ran code that failed at import time
        what = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise ConfigError(source, "experiment", f"importing '{module_name}' failed: {what}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Experiment)):
        what = "not found" if cls is None else "not an Experiment subclass"
        raise ConfigError(source, "experiment", f"'{class_name}' in '{module_name}' is {what}")
    return cls


def check_experiment(spec: SweepSpec) -> type[Experiment]:
    """Import the sweep's experiment; check its metric is reported and its optimizers exist."""
    from hypersweep.config import import_roots  # the caller has it loaded already (spec)

    source = str(spec.source)
    cls = resolve_experiment(spec.experiment, import_roots(spec.source), source=source)
    known = ("train_loss", "val_loss", *cls.metric_names)
    if spec.metric not in known:
        raise ConfigError(source, "metric", f"'{spec.metric}' is not reported; known: {', '.join(known)}")
    _check_optimizers(spec)
    _check_configure(cls, spec)
    _check_metric_names(cls, source)
    return cls


# MLflow's rule for metric names (mlflow/utils/validation.py: validate_param_and_metric_name,
# path_not_unique; a test holds this to MLflow's own check): slashes, word characters, periods,
# dashes, colons and spaces, and a path that normalises to itself.
_METRIC_NAME = re.compile(r"^[/\w.\- :]*$")


def _check_metric_names(cls: type[Experiment], source: str) -> None:
    """A metric MLflow would refuse to record is bad input, where the experiment declares it."""
    for name in cls.metric_names:
        normal = posixpath.normpath(name)
        if not _METRIC_NAME.match(name) or normal != name or normal.startswith(("..", "/")) or normal == ".":
            raise ConfigError(
                source,
                "experiment",
                f"{cls.__name__} reports a metric MLflow cannot record: '{name}' (names hold letters, "
                "digits, _ - . : / and spaces, and are not paths that resolve elsewhere)",
            )


def _check_configure(cls: type[Experiment], spec: SweepSpec) -> None:
    """Let the experiment refuse a fixed value (a missing data folder) before anything starts."""
    try:
        cls().configure(dict(spec.fixed))
    except ValueError as exc:
        # "data_dir: no such folder" names its key: error: sweep.yaml: fixed.data_dir: no such folder
        key, sep, message = str(exc).partition(": ")
        if not (sep and key in spec.fixed):
            key, message = "", str(exc)
        raise ConfigError(str(spec.source), f"fixed.{key}".rstrip("."), message) from None


@dataclass(frozen=True)
class SweepData:
    """What every trial of a sweep starts from: the experiment as ``configure`` and ``load_data``
    left it, and its data. Shipped whole to the workers, so state an experiment derives from its
    data (a target's spread, a vocabulary) is the same in every worker's ``metrics``, ``loss`` and
    ``artifacts`` as in the driver: workers never load the data, and an experiment object made
    afresh there would hold only its placeholders (metrics silently in the wrong units)."""

    experiment: Experiment
    data: Data


def load_sweep_data(spec: SweepSpec, roots: list[str]) -> SweepData:
    """The sweep's experiment and data, loaded once (by the driver, which ships both to every
    worker). A loader that fails is the sweep's input at fault (a missing file, a bad fixed
    value), and so is an experiment that cannot be sent to the workers: ConfigError."""
    cls = resolve_experiment(spec.experiment, roots, source=str(spec.source))
    experiment = cls()
    experiment.configure(dict(spec.fixed))
    try:
        data = experiment.load_data(seed=spec.data_seed)
    except Exception as exc:
        what = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise ConfigError(str(spec.source), "experiment", f"loading its data failed: {what}") from None
    check_builds(experiment, data, spec)
    _check_shippable(experiment, spec)
    return SweepData(experiment, data)


def _check_shippable(experiment: Experiment, spec: SweepSpec) -> None:
    """The experiment after ``load_data`` must pickle (with cloudpickle, as Ray sends objects):
    an open file or a lock kept on it would otherwise fail every trial, after its retries."""
    try:
        cloudpickle.dumps(experiment)
    except Exception as exc:
        problem = (
            f"{type(experiment).__name__} cannot be sent to the workers after load_data "
            f"({type(exc).__name__}: {first_line(exc)}); keep only picklable state on it"
        )
        raise ConfigError(str(spec.source), "experiment", problem) from None


def check_builds(experiment: Experiment, data: Data, spec: SweepSpec) -> None:
    """Build the model and optimizer of a few configurations (every choice, both ends of every
    range) before any trial runs: a value that cannot work (an unknown activation, a beta of
    1.5) would otherwise fail every trial, each after its retries. Built on PyTorch's meta
    device, which allocates nothing; a model that cannot be built there is built on the CPU."""
    for corner in spec.search_space.corners():
        config = {**TRAINER_DEFAULTS, **experiment.default_config, **spec.fixed, **corner}
        try:
            _build(experiment, data, config, torch.device("meta"))
        except Exception:
            try:
                _build(experiment, data, config, torch.device("cpu"))
            except Exception as exc:
                shown = ", ".join(f"{k}={v}" for k, v in corner.items()) or "the fixed values"
                problem = f"building the model failed with {shown}: {type(exc).__name__}: {first_line(exc)}"
                raise ConfigError(str(spec.source), "experiment", problem) from None


def _build(experiment: Experiment, data: Data, config: dict[str, Any], device: torch.device) -> None:
    with device:
        make_optimizer(experiment.build_model(config, data), config)


def _check_optimizers(spec: SweepSpec) -> None:
    from hypersweep.search_space import Choice

    entry = dict(spec.search_space.entries).get("optimizer", spec.fixed.get("optimizer"))
    names = entry.values if isinstance(entry, Choice) else [entry] if entry is not None else []
    for name in names:
        if str(name).lower() not in OPTIMIZERS:
            raise ConfigError(str(spec.source), "optimizer", not_one_of(name, OPTIMIZERS))
