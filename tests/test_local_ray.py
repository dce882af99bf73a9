"""The local Ray instance a sweep starts is stopped whole."""

from __future__ import annotations

import pytest
from ray._private import ray_constants, worker

from hypersweep import cluster


@pytest.mark.slow
def test_shutdown_ends_every_process_the_local_instance_started() -> None:
    info = cluster.connect(address=None, import_roots=[])
    try:
        assert info.nodes == 1 and info.address is None
        processes = worker._global_node.all_processes  # type: ignore[union-attr]
        started = {kind: [p.process for p in infos] for kind, infos in processes.items()}
        assert ray_constants.PROCESS_TYPE_MONITOR in started  # the one stopped ahead of the rest
    finally:
        cluster.shutdown()
    assert not cluster.ray.is_initialized()
    running = [kind for kind, procs in started.items() for p in procs if p.poll() is None]
    assert running == []
