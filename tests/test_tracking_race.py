"""Sweeps of one name started at once into one tracking store: every get-or-create is safe.

The race is forced, not hoped for: each sweep's client waits on a barrier right after looking the
experiment up, so both see it missing and both try to create it, every time.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from hypersweep.sweep_start import _drop_store_made_by
from hypersweep.tracking import SweepRecorder
from hypersweep.tracking.process import ProcessClient
from hypersweep.tracking.template import seed_store
from tests.chaos_tools import free_port, start_server, stop_group

SWEEPS = 2
_KIND = ("mlflow.experimentKind", "custom_model_development")


class _RacingClient(MlflowClient):
    """MlflowClient whose first experiment lookup returns only when every sweep has looked."""

    def __init__(self, uri: str, barrier: multiprocessing.synchronize.Barrier) -> None:
        super().__init__(tracking_uri=uri)
        self._barrier: multiprocessing.synchronize.Barrier | None = barrier

    def get_experiment_by_name(self, name: str) -> Any:
        found = super().get_experiment_by_name(name)
        if self._barrier is not None:
            barrier, self._barrier = self._barrier, None
            barrier.wait(timeout=60)
        return found


def _start_sweep(uri: str, index: int, barrier: Any, out: Any) -> None:
    """One sweep's start, in a process of its own (spawned: a fresh MLflow, as a second CLI)."""
    try:
        recorder = SweepRecorder(
            tracking_uri=uri, metric="val_loss", mode="min", client=_RacingClient(uri, barrier)
        )
        parent = recorder.start_sweep(name="race", sweep_id=f"race-{index}", settings={"index": index})
        out.put((index, "ok", recorder.experiment_id, parent))
    except BaseException as exc:
        out.put((index, "error", f"{type(exc).__name__}: {exc}", ""))


@pytest.fixture(params=["sqlite", "server"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    db = tmp_path / "x.db"
    if request.param == "sqlite":
        uri = f"sqlite:///{db}"
        assert seed_store(uri)  # the store exists: this test is about the experiment
        yield uri
        return
    port = free_port()
    server = start_server(db, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(server.pid)


@pytest.mark.timeout(240)
def test_sweeps_of_one_name_created_at_once_share_the_experiment(store_uri: str) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(SWEEPS), context.Queue()
    procs = [context.Process(target=_start_sweep, args=(store_uri, i, barrier, out)) for i in range(SWEEPS)]
    for proc in procs:
        proc.start()
    answers = sorted(out.get(timeout=180) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
    assert [a[1] for a in answers] == ["ok"] * SWEEPS, answers
    client = MlflowClient(tracking_uri=store_uri)
    experiment = client.get_experiment_by_name("race")
    assert experiment is not None
    assert {a[2] for a in answers} == {experiment.experiment_id}
    assert experiment.tags.get(_KIND[0]) == _KIND[1]
    parents = client.search_runs([experiment.experiment_id], "tags.`hypersweep.role` = 'sweep'")
    assert sorted(p.info.run_id for p in parents) == sorted(a[3] for a in answers)
    assert {p.data.tags["hypersweep.sweep_id"] for p in parents} == {f"race-{i}" for i in range(SWEEPS)}


def test_an_experiment_made_without_the_kind_tag_gets_it(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/x.db"
    seed_store(uri)
    client = MlflowClient(tracking_uri=uri)
    made = client.create_experiment("by-hand")
    recorder = SweepRecorder(tracking_uri=uri, metric="val_loss", mode="min", client=client)
    recorder.start_sweep(name="by-hand", sweep_id="by-hand-1", settings={})
    assert recorder.experiment_id == made
    assert client.get_experiment(made).tags.get(_KIND[0]) == _KIND[1]


def test_of_two_writers_opening_a_new_store_at_once_one_made_it(tmp_path: Path) -> None:
    """Each sweep knows whether the store's file is its own: only that one may remove it again
    when its preflight fails (the other may be using it)."""
    uri = f"sqlite:///{tmp_path}/new/x.db"
    stores = [ProcessClient(uri) for _ in range(SWEEPS)]
    try:
        for store in stores:
            store.ready()
        assert sorted(s.made_store for s in stores) == [False] * (SWEEPS - 1) + [True]
        assert [s.search_experiments()[0].name for s in stores] == ["Default"] * SWEEPS
    finally:
        for store in stores:
            store.close()
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["x.db"]  # no partial file left


def test_a_sweep_that_fails_its_preflight_removes_only_a_store_it_made(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/x.db"
    ours = ProcessClient(uri)
    _drop_store_made_by(ours, uri)  # as when Ray's check fails before the store was awaited
    assert not (tmp_path / "x.db").exists()
    theirs = ProcessClient(uri)  # another sweep, started at the same moment, made it first
    theirs.ready()
    ours = ProcessClient(uri)
    _drop_store_made_by(ours, uri)
    assert (tmp_path / "x.db").is_file()
    assert theirs.search_experiments()[0].name == "Default"  # still usable
    theirs.close()
