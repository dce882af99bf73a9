"""The local Ray instance: a sweep starts its own, after the tracking process, and stops it whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray
from ray._private import ray_constants, worker

from hypersweep import cluster, tuning
from hypersweep.config import load_sweep
from tests.conftest import DEFAULT_SWEEP


@pytest.mark.slow
def test_shutdown_ends_every_process_the_local_instance_started() -> None:
    info = cluster.connect(address=None, import_roots=[])
    try:
        assert info.nodes == 1 and info.address is None
        node: Any = worker._global_node
        processes = node.all_processes
        started = {kind: [p.process for p in infos] for kind, infos in processes.items()}
        assert ray_constants.PROCESS_TYPE_MONITOR in started  # the one stopped ahead of the rest
    finally:
        cluster.shutdown()
    assert not ray.is_initialized()
    running = [kind for kind, procs in started.items() for p in procs if p.poll() is None]
    assert running == []


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_a_ray_the_caller_runs_is_stopped_before_the_tracking_process_forks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library caller may have started Ray already. Forking a process that runs Ray copies its
    threads' locks half-held; the sweep stops that Ray first (it starts its own anyway)."""
    seen: list[bool] = []

    def probe(uri: str) -> None:
        seen.append(ray.is_initialized())
        raise _Stop

    monkeypatch.setattr(tuning, "ProcessClient", probe)
    spec = load_sweep(DEFAULT_SWEEP)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(_Stop), tuning._started(spec, [], None, f"sqlite:///{tmp_path}/m.db", None):
            pass
    finally:
        cluster.shutdown()
    assert seen == [False]
