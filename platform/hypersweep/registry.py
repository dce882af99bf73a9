"""Finding a user's ``Experiment`` from its import path (``package.module:Class``)."""

from __future__ import annotations

import importlib
import inspect
import posixpath
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle
import torch

from hypersweep.errors import ConfigError, first_line, not_one_of
from hypersweep.experiment import Data, Experiment
from hypersweep.handle import METRICS_ATTRIBUTE
from hypersweep.trainer import OPTIMIZERS, TRAINER_DEFAULTS, make_optimizer

if TYPE_CHECKING:  # workers import this module; keep pydantic and Optuna out of their start-up
    from hypersweep.config import SweepSpec


# What a sweep's ``experiment:`` names: an Experiment class, or a function train(config, trial).
Target = type[Experiment] | Callable[..., Any]


def resolve_target(path: str, roots: list[str], *, source: str = "") -> Target:
    """Import ``module:name`` with ``roots`` on sys.path: an ``Experiment`` subclass, or a
    function that can be called as ``train(config, trial)``; ConfigError naming the key otherwise."""
    module_name, _, name = path.partition(":")
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
    target = getattr(module, name, None)
    if isinstance(target, type) and issubclass(target, Experiment):
        return target
    if callable(target) and not isinstance(target, type):
        function: Callable[..., Any] = target
        _check_signature(function, f"'{name}' in '{module_name}'", source)
        return function
    what = "not found" if target is None else "neither an Experiment subclass nor a function"
    raise ConfigError(source, "experiment", f"'{name}' in '{module_name}' is {what}")


def _check_signature(fn: Callable[..., Any], shown: str, source: str) -> None:
    """A function trial is called as ``fn(config, trial)``: its signature must take that."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or an object without one: try it as it is
        return
    try:
        signature.bind(object(), object())
    except TypeError:
        raise ConfigError(
            source, "experiment", f"{shown} cannot be called as train(config, trial): it takes {signature}"
        ) from None


def is_function(target: Target) -> bool:
    return not isinstance(target, type)


def resolve_experiment(path: str, roots: list[str], *, source: str = "") -> type[Experiment]:
    """``resolve_target`` where only an ``Experiment`` class will do."""
    target = resolve_target(path, roots, source=source)
    if not isinstance(target, type):
        raise ConfigError(source, "experiment", f"'{path}' is a function, not an Experiment subclass")
    return target


def check_experiment(spec: SweepSpec) -> Target:
    """Import the sweep's experiment (or function); check its metric is reported (as far as a
    function declares its metrics, see ``handle.reports``) and its optimizers exist."""
    from hypersweep.config import import_roots  # the caller has it loaded already (spec)

    source = str(spec.source)
    target = resolve_target(spec.experiment, import_roots(spec.source), source=source)
    if is_function(target):
        _check_loop_settings(spec)
        declared = getattr(target, METRICS_ATTRIBUTE, None)
        if declared is not None:
            _check_metric(spec, ("train_loss", "val_loss", *declared))
            _check_metric_names(declared, getattr(target, "__name__", "the function"), source)
        return target
    assert isinstance(target, type) and issubclass(target, Experiment)
    _check_metric(spec, ("train_loss", "val_loss", *target.metric_names))
    _check_optimizers(spec)
    _check_configure(target, spec)
    _check_metric_names(target.metric_names, target.__name__, source)
    return target


def _check_loop_settings(spec: SweepSpec) -> None:
    """Settings of the generic loop that a function's own loop does not get: set, they would be
    silently ignored."""
    if spec.scheduler.population_based:
        # An exploit restarts the member with the donor's checkpoint and a new config: the
        # generic loop puts the new lr into the donor's optimizer state; a function's would not.
        problem = (
            f"{spec.scheduler.type} needs the generic loop (it changes lr and dropout mid-trial);"
            " a training function cannot take it yet: use asha, hyperband, median or fifo"
        )
        raise ConfigError(str(spec.source), "scheduler.type", problem)
    for key, value in (("amp", spec.training.amp), ("grad_clip_norm", spec.training.grad_clip_norm)):
        if value not in (None, False):
            problem = "the generic loop's setting; a training function does this in its own loop"
            raise ConfigError(str(spec.source), f"training.{key}", problem)


def _check_metric(spec: SweepSpec, known: tuple[str, ...]) -> None:
    if spec.metric not in known:
        problem = f"'{spec.metric}' is not reported; known: {', '.join(known)}"
        raise ConfigError(str(spec.source), "metric", problem)


# MLflow's rule for metric names (mlflow/utils/validation.py: validate_param_and_metric_name,
# path_not_unique; a test holds this to MLflow's own check): slashes, word characters, periods,
# dashes, colons and spaces, and a path that normalises to itself.
_METRIC_NAME = re.compile(r"^[/\w.\- :]*$")


def _check_metric_names(names: Sequence[str], owner: str, source: str) -> None:
    """A metric MLflow would refuse to record is bad input, where the experiment declares it."""
    for name in names:
        normal = posixpath.normpath(name)
        if not _METRIC_NAME.match(name) or normal != name or normal.startswith(("..", "/")) or normal == ".":
            raise ConfigError(
                source,
                "experiment",
                f"{owner} reports a metric MLflow cannot record: '{name}' (names hold letters, "
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


def load_sweep_data(spec: SweepSpec, roots: list[str]) -> SweepData | None:
    """The sweep's experiment and data, loaded once (by the driver, which ships both to every
    worker). A loader that fails is the sweep's input at fault (a missing file, a bad fixed
    value), and so is an experiment that cannot be sent to the workers: ConfigError. None for
    a function trial, which loads its own data."""
    cls = resolve_target(spec.experiment, roots, source=str(spec.source))
    if not isinstance(cls, type):
        return None
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
