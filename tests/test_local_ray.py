"""The local Ray node: a sweep starts its own (in a process of its own) and stops it whole."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from hypersweep import cluster, ray_private, sweep_start
from hypersweep.config import load_sweep
from hypersweep.ray_node import LocalNode
from tests.conftest import DEFAULT_SWEEP, ROOT


def _descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid``, with its command line (from /proc)."""
    children: dict[int, list[int]] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found[child] = commands.get(child, "")
        todo.extend(children.get(child, []))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


@pytest.mark.slow
def test_the_local_node_runs_what_a_sweep_uses_and_shutdown_ends_all_of_it() -> None:
    info = cluster.connect(address=None, import_roots=[])
    try:
        assert info.nodes == 1 and info.address is None
        assert info.cpus == cluster.probe(None).cpus  # what validate counts without starting Ray
        assert cluster._NODE is not None
        node_pid = cluster._NODE.pid
        started = {node_pid: "ray_node", **_descendants(node_pid)}
        commands = " ".join(started.values())
        assert "gcs_server" in commands and "raylet" in commands
        # Neither monitor: nothing to scale, and the workers' output is not printed by the driver.
        assert "monitor.py" not in commands and "log_monitor" not in commands
        # No API server (Ray's reduced dashboard, for `ray job` and `ray list`) either.
        assert "dashboard/dashboard.py" not in commands
    finally:
        cluster.shutdown()
    assert not ray.is_initialized()
    assert [command for pid, command in started.items() if _alive(pid)] == []


@pytest.mark.slow
def test_a_local_node_started_early_is_used_and_ends_when_its_driver_dies(tmp_path: Path) -> None:
    """The command line starts the node before it imports torch; connect takes that node. A
    driver killed outright leaves no Ray process behind: the node sees its stdin close."""
    node = LocalNode.start(import_roots=[])
    pid = node.pid
    info = cluster.connect(address=None, import_roots=[], node=node)
    try:
        assert info.nodes == 1 and cluster._NODE is node
        assert ray.get_runtime_context().gcs_address == node.address()
    finally:
        cluster.shutdown()
    assert not _alive(pid)

    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER_THAT_WAITS], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert driver.stdout is not None
    node_pid = int(driver.stdout.readline())
    started = {node_pid: "ray_node", **_descendants(node_pid)}
    assert any("raylet" in command for command in started.values())
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in started):
        time.sleep(0.2)
    assert [command for pid, command in started.items() if _alive(pid)] == []


@pytest.mark.slow
def test_the_node_starts_its_workers_before_a_driver_joins_and_the_driver_uses_them() -> None:
    """The workers import torch while the command line still imports its own modules; the
    sweep's tasks then run on those workers, not on fresh ones."""
    node = LocalNode.start(import_roots=[], preload=["torch"])
    try:
        node.address()
        cpus = ray_private.num_cpus()  # what the node counts
        deadline = time.monotonic() + 60
        early: list[int] = []
        while time.monotonic() < deadline and len(early) < cpus:
            early = [p for p, cmd in _descendants(node.pid).items() if cmd.startswith("ray::IDLE")]
            time.sleep(0.2)
        assert len(early) == cpus  # one per CPU, before any driver joined
        cluster.connect(address=None, import_roots=[], node=node)

        @ray.remote(num_cpus=1)
        def where() -> tuple[int, bool]:
            return os.getpid(), "torch" in sys.modules

        ran = ray.get([where.remote() for _ in range(4)])
        assert {pid for pid, _ in ran} <= set(early)
        assert all(imported for _, imported in ran)
    finally:
        cluster.shutdown()
        node.stop()


_DRIVER_THAT_WAITS = """
import time
from hypersweep import cluster
cluster.connect(address=None, import_roots=[])
print(cluster._NODE.pid, flush=True)
time.sleep(600)
"""


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

    monkeypatch.setattr(sweep_start, "ProcessClient", probe)
    spec = load_sweep(DEFAULT_SWEEP)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(_Stop), sweep_start.started(spec, [], None, f"sqlite:///{tmp_path}/m.db", None):
            pass
    finally:
        cluster.shutdown()
    assert seen == [False]


def test_the_node_gives_workers_what_tune_would() -> None:
    """The command line starts the node without importing Ray Tune, so the node keeps its own
    copy of what Tune gives each trial actor, and of the trial's module name: both must match."""
    from ray.tune.execution import class_cache

    from hypersweep import ray_node, trial

    assert ray_node.TUNE_WORKER_ENV == class_cache.DEFAULT_ENV_VARS
    assert trial.trainable.__module__ == ray_node.TRIAL_MODULE
