"""New SQLite stores copied from a cached, migrated empty store are the stores MLflow makes."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from hypersweep.tracking.template import cache_dir, seed_store, template_file


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _contents(path: Path) -> tuple[Any, ...]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")
        schema = sorted((*row[:3], _clauses(row[3])) for row in rows)
        version = db.execute("SELECT version_num FROM alembic_version").fetchall()
        experiments = db.execute(
            "SELECT experiment_id, name, artifact_location, lifecycle_stage FROM experiments"
        ).fetchall()
    return schema, version, experiments


def _clauses(sql: str | None) -> tuple[str, ...]:
    """A table's columns and constraints in any order: MLflow's own migrations leave the CHECK
    constraints of a table in a different order from one new store to the next."""
    return tuple(sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()))


def test_a_seeded_store_is_the_store_mlflow_makes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made, seeded = tmp_path / "made" / "mlflow.db", tmp_path / "seeded" / "mlflow.db"
    template = template_file()
    assert template is not None and template.parent == cache_dir()
    for path in (made, seeded):
        # Each store opened from its own folder: MLflow puts the default experiment's artifacts
        # under the working folder, so a template must not carry them over from elsewhere.
        path.parent.mkdir()
        monkeypatch.chdir(path.parent)
        if path == seeded:
            assert seed_store(f"sqlite:///{path.name}")  # relative, as a user's default is
        MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    schema, version, experiments = _contents(made)
    assert len(schema) > 50 and version
    assert _contents(seeded) == (
        schema,
        version,
        [(0, "Default", str(seeded.parent / "mlruns" / "0"), "active")],
    )
    assert experiments == [(0, "Default", str(made.parent / "mlruns" / "0"), "active")]
    runs = MlflowClient(tracking_uri=f"sqlite:///{seeded}")
    run = runs.create_run(runs.create_experiment("e"))
    runs.log_metric(run.info.run_id, "loss", 0.5)
    assert runs.get_run(run.info.run_id).data.metrics == {"loss": 0.5}


def test_the_template_is_made_once_per_mlflow_schema(own_cache: Path) -> None:
    first = template_file()
    assert first is not None and mlflow.__version__ in first.name
    with contextlib.closing(sqlite3.connect(first)) as db:
        (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision in first.name
    stamp = first.stat().st_mtime_ns
    assert template_file() == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in own_cache.joinpath("hypersweep").iterdir()] == [first.name]  # no leftovers


def test_an_existing_store_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    path.write_bytes(b"a user's file")
    assert not seed_store(f"sqlite:///{path}")
    assert path.read_bytes() == b"a user's file"
    assert not seed_store("sqlite://") and not seed_store("http://127.0.0.1:5000")


def test_without_a_writable_cache_the_store_is_still_made_whole_and_linked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No template to copy: the store is made by MLflow's own code beside its final name and
    linked into place, so two sweeps starting on it never make its tables at once."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    path = tmp_path / "mlflow.db"
    assert template_file() is None
    assert seed_store(f"sqlite:///{path}") and path.exists()
    assert not seed_store(f"sqlite:///{path}")  # made already: left alone
    assert [e.name for e in MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()] == [
        "Default"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "not-a-folder"]  # no partial file
