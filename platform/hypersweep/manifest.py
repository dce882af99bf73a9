"""A sweep's folder and its manifest (``hypersweep.json``), read without Ray or MLflow.

``tuning`` writes the manifest when a sweep starts; ``hypersweep resume`` reads it back before it
imports anything heavy, so that the local Ray node can start while the command imports the rest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hypersweep.config import SweepSpec, build_spec
from hypersweep.errors import ConfigError

MANIFEST = "hypersweep.json"  # in the sweep's folder
FORMAT = "hypersweep-sweep/1"


def storage_path(storage: str | None) -> str:
    """Where Tune keeps trial state and checkpoints: an absolute path or a URI (s3://...)."""
    if storage and "://" in storage:
        return storage
    return str(Path(storage or "hypersweep_runs").resolve())


def read_manifest(ref: str, *, storage: str | None) -> tuple[Path, dict[str, Any]]:
    """The folder and manifest of a sweep given its folder or its id; ConfigError for anything else."""
    candidates = [Path(ref), Path(storage_path(storage)) / ref]
    folder = next((c for c in candidates if (c / MANIFEST).is_file()), None)
    if folder is None:
        if not any(c.exists() for c in candidates):
            raise ConfigError(ref, "", "no such sweep (neither a folder nor a sweep id under the storage)")
        raise ConfigError(ref, "", f"not a hypersweep sweep (no {MANIFEST})")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(str(folder / MANIFEST), "", f"unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(str(folder / MANIFEST), "format", "not a hypersweep sweep manifest")
    return folder.resolve(), manifest


def spec_of(manifest: Mapping[str, Any]) -> SweepSpec:
    """The sweep as it was started (search space inlined), from its manifest."""
    return build_spec(manifest["spec"], Path(manifest["source"]))
