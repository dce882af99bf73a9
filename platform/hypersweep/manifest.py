"""A sweep's folder and its manifest (``hypersweep.json``), read without Ray or MLflow.

``tuning`` writes the manifest when a sweep starts; ``hypersweep resume`` reads it back before it
imports anything heavy, so that the local Ray node can start while the command imports the rest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hypersweep.config import SweepSpec, build_spec
from hypersweep.errors import ConfigError, folder_problem

MANIFEST = "hypersweep.json"  # in the sweep's folder
FORMAT = "hypersweep-sweep/1"


LOCAL_ROOT = "hypersweep_runs"  # in the working directory: the default storage


def is_uri(storage: str | None) -> bool:
    return bool(storage) and "://" in str(storage)


def storage_path(storage: str | None) -> str:
    """Where Tune keeps trial state and checkpoints: an absolute path or a URI (s3://...)."""
    if storage and is_uri(storage):
        return storage
    return str(Path(storage or LOCAL_ROOT).resolve())


def check_storage_path(storage: str | None, *, source: str) -> None:
    """The sweep's folder can be made where it goes (not below a file, not in a read-only folder)."""
    root = Path(storage_path(None if is_uri(storage) else storage))
    problem = folder_problem(root)
    if problem is not None:
        raise ConfigError(source, "storage", f"no sweep folder can be made in {root}: {problem}")


def sweep_folder(storage: str | None, sweep_id: str) -> Path:
    """The sweep's own folder, always on this machine's disk: its manifest and tracking journal,
    and with a storage path also Tune's state. With a storage URI (s3://...) Tune's state lives
    there and this folder is ``./hypersweep_runs/<sweep id>``: a sweep whose checkpoints are in a
    bucket is still resumed from here. (``Path`` would also fold ``s3://b/x`` into ``s3:/b/x``.)"""
    return Path(storage_path(None if is_uri(storage) else storage)) / sweep_id


def trials_location(storage: str | None, sweep_id: str) -> str:
    """Where Tune keeps this sweep's trial state and checkpoints: ``<storage>/<sweep id>``."""
    if storage and is_uri(storage):
        return f"{storage.rstrip('/')}/{sweep_id}"
    return str(Path(storage_path(storage)) / sweep_id)


def trials_of(folder: Path, manifest: Mapping[str, Any], storage: str | None = None) -> str:
    """Where a sweep's Tune state is. A storage URI given again (``resume --storage``) wins: the
    manifest keeps URIs without their credentials. Manifests from before sweeps on URIs have no
    ``trials``: their folder held both."""
    if storage and is_uri(storage):
        return trials_location(storage, str(manifest["sweep_id"]))
    trials = str(manifest.get("trials") or folder)
    if "***" in trials:
        raise ConfigError(
            str(folder / MANIFEST), "trials", "its storage credentials were not stored: pass --storage URI"
        )
    return trials


def read_manifest(ref: str, *, storage: str | None) -> tuple[Path, dict[str, Any]]:
    """The folder and manifest of a sweep given its folder or its id; ConfigError for anything else."""
    # A sweep id is looked up where its folder is made (see sweep_folder).
    candidates = [Path(ref), sweep_folder(storage, ref)]
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


def mark_finished(folder: Path) -> None:
    """Note in the manifest that the sweep ended and MLflow has all of it: ``resume`` then has
    nothing to do (and must not record the sweep's end a second time)."""
    path = folder / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["finished"] = True
    partial = path.with_name(f".{MANIFEST}.tmp")
    partial.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(partial, path)  # a crash leaves the old manifest or the new one, whole


def spec_of(manifest: Mapping[str, Any]) -> SweepSpec:
    """The sweep as it was started (search space inlined), from its manifest."""
    return build_spec(manifest["spec"], Path(manifest["source"]))
