"""Connecting to Ray (a local instance, or a cluster with ``--address``) and preflight checks."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import ray

import hypersweep
from hypersweep import ray_private
from hypersweep.config import ResourcesSpec
from hypersweep.errors import ConfigError
from hypersweep.ray_node import LocalNode

_GCS_RETRIES = 8  # ~1 s each: how long joining may take once the address answers
_CONNECT_TIMEOUT_S = 5.0  # TCP reachability of --address: a dead address fails in seconds
_NODE: LocalNode | None = None  # the local node this process started: shutdown() stops it
_AUTH_HINT = (
    "; if the cluster uses token authentication (the default of `ray start --head`), set"
    " RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN, or ~/.ray/auth_token from `ray get-auth-token`)"
)
# Never shipped to the workers with the code.
_EXCLUDES = ["__pycache__", "*.pyc", ".git", ".venv", "mlruns", "mlartifacts", "*.db", "hypersweep_runs"]


@dataclass(frozen=True)
class ClusterInfo:
    """What the connected Ray cluster offers, read once at start."""

    address: str | None
    nodes: int
    cpus: float  # totals over alive nodes
    gpus: float
    node_cpus: tuple[float, ...]  # per alive node
    node_gpus: tuple[float, ...]


def connect(
    *,
    address: str | None,
    import_roots: list[str],
    modules: Sequence[str] = (),
    node: LocalNode | None = None,
) -> ClusterInfo:
    """Start local Ray (address None) or join a running cluster.

    Locally the workers share this machine's files: ``node`` (``ray_node.sweep_node``, started
    earlier; without one, a plain node on ``import_roots``) gives them the import roots on
    PYTHONPATH, Tune's worker environment, and the trial's modules imported from the moment it
    starts them, with itself, while the driver is still starting. No runtime environment is
    set, because Ray gives an actor only a worker whose runtime environment matches its own:
    with one, the prestarted workers sit idle and every trial waits for a fresh process to
    import torch (seconds each).

    A cluster's workers get the code itself through Ray's runtime environment: ``modules`` (the
    experiment's top-level package or module) and hypersweep are uploaded once as ``py_modules``
    and put on every worker's path, so the nodes run exactly the driver's version of both.
    Ray's own logging is kept off the terminal.
    """
    shutdown()
    init = _init_args(address)
    if address is None:
        global _NODE
        _NODE = node or LocalNode.start(import_roots=import_roots)
        try:
            _join_local(_NODE, init)
        except BaseException:
            shutdown()
            raise
    else:
        check_address(address)
        init["runtime_env"] = {"py_modules": ship_modules(modules), "excludes": _EXCLUDES}
        _join(address, init)
    return _cluster_info(address)


def _join_local(node: LocalNode, init: dict[str, Any]) -> None:
    """Join the local node; where this Ray lacks what the node is started with, start Ray here
    with the public ``ray.init`` (one warning line), its workers given the node's environment:
    the same sweep, without the node's faster start."""
    try:
        gcs = node.address()
    except ray_private.Missing as missing:
        ray_private.warn(missing, ray_private.PUBLIC_START)
        # Ray's processes copy this process's environment as they start; "local": a new Ray,
        # never one that another `ray start` runs on this machine.
        with _environ(node.worker_env):
            ray.init(**{**init, "address": "local"})
        return
    ray.init(**{**init, "address": gcs})


@contextlib.contextmanager
def _environ(env: Mapping[str, str]) -> Iterator[None]:
    """``env`` set in this process for a while, then restored."""
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _join(address: str, init: dict[str, Any]) -> None:
    """Join a cluster in bounded time, its C++ client's retry warnings off the terminal."""
    # Ray retries a GCS that refuses the driver (a wrong token) for ~70 s by default.
    key = "RAY_gcs_server_port_wait_time_s"
    with _environ({key: os.environ.get(key, str(_GCS_RETRIES))}), _stderr_captured() as captured:
        try:
            ray.init(**init)
        except Exception as exc:
            problem = _first_line(captured(), "InvalidAuthToken") or _first_line(str(exc), "")
            raise ConfigError(
                "--address", address, f"cannot join the Ray cluster: {problem}{_AUTH_HINT}"
            ) from None


@contextlib.contextmanager
def _stderr_captured() -> Iterator[Callable[[], str]]:
    """Send file descriptor 2 (where Ray's C++ core logs) to a temp file while joining."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: _read(sink)
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _read(sink: IO[bytes]) -> str:
    sink.seek(0)
    return sink.read().decode(errors="replace")


def _first_line(text: str, needle: str) -> str:
    for line in text.splitlines():
        if needle in line and line.strip():
            return line.split("] ", 1)[-1].strip()[:300]
    return ""


def ship_modules(modules: Sequence[str]) -> list[str]:
    """Local paths of the packages/modules the workers need: the experiment's and hypersweep."""
    package = str(Path(hypersweep.__file__).resolve().parent)
    paths = [package]
    for name in modules:
        found = _module_path(name)
        if found and found not in paths:
            paths.append(found)
    return paths


def _module_path(name: str) -> str | None:
    """Where an imported top-level module lives: its package folder, or its single .py file."""
    module = sys.modules.get(name)
    if module is None:
        return None
    locations = list(getattr(module, "__path__", []) or [])
    if locations:
        return str(Path(locations[0]).resolve())
    file = getattr(module, "__file__", None)
    return str(Path(file).resolve()) if file else None


def check_address(address: str) -> None:
    """Fail in seconds, with one clear line, when nothing listens at a cluster address."""
    if address == "auto":
        return
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError("--address", address, "expected HOST:PORT (the head node's GCS port, e.g. 6379)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            "--address", address, f"no Ray cluster reachable ({reason} within {_CONNECT_TIMEOUT_S:g} s)"
        ) from None


def probe(address: str | None) -> ClusterInfo:
    """What a sweep would run on, starting nothing: a running cluster's nodes (joined for a
    moment, no code shipped), or this machine as the local node Ray starts here would count it."""
    if address is None:
        return _this_machine()
    check_address(address)
    shutdown()
    _join(address, _init_args(address))
    try:
        return _cluster_info(address)
    finally:
        ray.shutdown()


def _init_args(address: str | None) -> dict[str, Any]:
    """``ray.init``'s arguments for a driver: no dashboard, Ray's own output kept quiet."""
    return dict(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)


def _this_machine() -> ClusterInfo:
    """The CPUs Ray's local node would take (a container's CPU quota, else every core) and the
    CUDA devices torch sees (Ray counts the GPUs; trials need torch to see them)."""
    import torch  # loaded already by whoever asks (validate builds the sweep's models)

    cpus = ray_private.num_cpus()
    gpus = float(torch.cuda.device_count())
    return ClusterInfo(None, 1, cpus, gpus, (cpus,), (gpus,))


def _cluster_info(address: str | None) -> ClusterInfo:
    alive = [n for n in ray.nodes() if n.get("Alive")]
    cpus = tuple(float(n["Resources"].get("CPU", 0)) for n in alive)
    gpus = tuple(float(n["Resources"].get("GPU", 0)) for n in alive)
    return ClusterInfo(address, len(alive), sum(cpus), sum(gpus), cpus, gpus)


def shutdown() -> None:
    """Leave Ray, and stop the local node this process started (a cluster keeps running)."""
    global _NODE
    if ray.is_initialized():
        ray.shutdown()
    if _NODE is not None:
        node, _NODE = _NODE, None
        node.stop()


def check_resources(resources: ResourcesSpec, info: ClusterInfo, *, source: str) -> None:
    """A trial that no node can ever hold would wait forever in Tune: refuse it up front."""
    fits = any(
        c >= resources.cpus_per_trial and g >= resources.gpus_per_trial
        for c, g in zip(info.node_cpus, info.node_gpus, strict=True)
    )
    if not fits:
        biggest = max(zip(info.node_cpus, info.node_gpus, strict=True), default=(0.0, 0.0))
        # The setting at fault, if one alone is: no node has that many CPUs, or GPUs.
        key = "resources"
        if max(info.node_cpus, default=0.0) < resources.cpus_per_trial:
            key = "resources.cpus_per_trial"
        elif max(info.node_gpus, default=0.0) < resources.gpus_per_trial:
            key = "resources.gpus_per_trial"
        raise ConfigError(
            source,
            key,
            f"a trial asks for {resources.cpus_per_trial:g} CPU and {resources.gpus_per_trial:g} GPU"
            f" but the largest node has {biggest[0]:g} CPU and {biggest[1]:g} GPU",
        )


def check_storage(storage: str | None, *, shared: bool, info: ClusterInfo, source: str) -> None:
    """Several nodes write trial checkpoints: they need one storage they all see (Ray >= 2.7)."""
    if info.nodes <= 1 or shared or (storage and "://" in storage and not storage.startswith("file://")):
        return
    where = storage or "./hypersweep_runs (the default)"
    raise ConfigError(
        source,
        "storage",
        f"the cluster has {info.nodes} nodes but {where} is a path on this machine; use --storage"
        " s3://bucket/path (or gs://, hdfs://), or declare a path every node mounts with"
        " --shared-storage (storage_shared: true)",
    )


def concurrency(resources: ResourcesSpec, info: ClusterInfo) -> int:
    """Trials to run at once: the user's limit, else as many as the cluster's nodes hold."""
    if resources.max_concurrent is not None:
        return resources.max_concurrent
    per_node = [_fit(c, g, resources) for c, g in zip(info.node_cpus, info.node_gpus, strict=True)]
    return max(1, sum(per_node))


def _fit(cpus: float, gpus: float, resources: ResourcesSpec) -> int:
    by_cpu = math.floor(cpus / resources.cpus_per_trial + 1e-9)
    if resources.gpus_per_trial <= 0:
        return by_cpu
    return min(by_cpu, math.floor(gpus / resources.gpus_per_trial + 1e-9))


def trial_resources(resources: ResourcesSpec) -> dict[str, Any]:
    return {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial}
