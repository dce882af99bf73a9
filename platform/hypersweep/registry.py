"""Finding a user's ``Experiment`` from its import path (``package.module:Class``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from hypersweep.errors import ConfigError
from hypersweep.experiment import Experiment


def import_roots(sweep_file: Path) -> list[str]:
    """Folders an experiment's module is imported from: cwd, the sweep file's parent and its folder.

    ``experiments/x.yaml`` naming ``experiments.mod:Cls`` resolves from the project root; a user's
    ``my_exp:Cls`` beside its sweep file resolves from the sweep file's folder. Workers get the same
    folders on their PYTHONPATH.
    """
    folder = sweep_file.resolve().parent
    roots: list[str] = []
    for path in (Path.cwd(), folder.parent, folder):
        if str(path) not in roots:
            roots.append(str(path))
    return roots


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
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Experiment)):
        what = "not found" if cls is None else "not an Experiment subclass"
        raise ConfigError(source, "experiment", f"'{class_name}' in '{module_name}' is {what}")
    return cls
