"""New SQLite stores start as a copy of an empty, fully migrated one.

MLflow makes a new SQLite store by creating its first tables and then running every schema
migration since, one by one (SQLite alters a table by copying it): ~2 s of CPU here, on the
critical path of a sweep's start, where it competes with Ray and the workers starting. The
result is the same empty database every time for one MLflow version, so it is made once into
a cache folder and copied after that. MLflow then opens the copy as it would any existing store:
it checks the schema version and adds its default experiment, with this store's own artifact
location.

Any failure here (no writable cache, a changed MLflow) only means MLflow makes the store itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from pathlib import Path

import mlflow

_log = logging.getLogger(__name__)


def seed_store(uri: str) -> bool:
    """Create the SQLite store of ``uri`` if it does not exist yet: True when the file was made here.

    The store is made whole beside its final name (a copy of the template, or, without one, made
    there by MLflow's own code) and linked into place, which fails rather than replaces when
    another process made the file meanwhile. So two sweeps started at once on a new store never
    both run MLflow's table creation on one file, and each knows whether the file is its own
    (to remove again if its preflight fails). Anything else going wrong leaves it to MLflow.
    """
    path = sqlite_path(uri)
    if path is None or path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)  # as MLflow does for a new SQLite store
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        template = template_file()
        if template is not None:
            shutil.copyfile(template, partial)
        else:
            _make_empty_store(partial)
        os.link(partial, path)
    except Exception as exc:  # taken meanwhile, or no store could be made: MLflow opens or makes it
        _log.debug("new store %s left to MLflow: %s", path, exc)
        return False
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    return True


def template_file() -> Path | None:
    """The cached empty store of this MLflow schema, made now if missing; None if it cannot be."""
    try:
        # Named by MLflow's version and its newest migration: a build with new migrations under
        # the same version number gets a template of its own (~30 ms to read the revision).
        from mlflow.store.db.utils import _get_latest_schema_revision

        path = cache_dir() / f"mlflow-{mlflow.__version__}-{_get_latest_schema_revision()}-empty.db"
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            _make_empty_store(partial)
            os.replace(partial, path)  # whole or absent, also when two sweeps make it at once
        finally:
            with contextlib.suppress(OSError):
                partial.unlink()
    except Exception as exc:  # a cache is an optimisation: MLflow still makes the store
        _log.debug("no store template: %s", exc)
        return None
    return path


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hypersweep"


def _make_empty_store(path: Path) -> None:
    """Exactly what MLflow's SQL store does to an empty database: its tables, then every migration."""
    import sqlalchemy
    from mlflow.store.db.utils import _all_tables_exist, _initialize_tables

    engine = sqlalchemy.create_engine(f"sqlite:///{path}", poolclass=sqlalchemy.pool.NullPool)
    try:
        _initialize_tables(engine)
        if not _all_tables_exist(engine):
            raise RuntimeError("MLflow's tables are missing after initialisation")
    finally:
        engine.dispose()


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` store (a relative path after three slashes, absolute after four)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
