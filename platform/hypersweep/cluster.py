"""Connecting to Ray (a local instance, or a cluster with ``--address``) and preflight checks."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import ray

from hypersweep.config import ResourcesSpec
from hypersweep.errors import ConfigError


@dataclass(frozen=True)
class ClusterInfo:
    """What the connected Ray cluster offers, read once at start."""

    address: str | None
    nodes: int
    cpus: float  # totals over alive nodes
    gpus: float
    node_cpus: tuple[float, ...]  # per alive node
    node_gpus: tuple[float, ...]


def connect(*, address: str | None, import_roots: list[str]) -> ClusterInfo:
    """Start local Ray (address None) or join a running cluster; workers import from ``import_roots``.

    Ray's own logging is kept off the terminal: the CLI shows its own compact progress.
    """
    if ray.is_initialized():
        ray.shutdown()
    pythonpath = os.pathsep.join([*import_roots, os.environ.get("PYTHONPATH", "")]).strip(os.pathsep)
    ray.init(
        address=address,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
    )
    return _cluster_info(address)


def _cluster_info(address: str | None) -> ClusterInfo:
    alive = [n for n in ray.nodes() if n.get("Alive")]
    cpus = tuple(float(n["Resources"].get("CPU", 0)) for n in alive)
    gpus = tuple(float(n["Resources"].get("GPU", 0)) for n in alive)
    return ClusterInfo(address, len(alive), sum(cpus), sum(gpus), cpus, gpus)


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def check_resources(resources: ResourcesSpec, info: ClusterInfo, *, source: str) -> None:
    """A trial that no node can ever hold would wait forever in Tune: refuse it up front."""
    fits = any(
        c >= resources.cpus_per_trial and g >= resources.gpus_per_trial
        for c, g in zip(info.node_cpus, info.node_gpus, strict=True)
    )
    if not fits:
        biggest = max(zip(info.node_cpus, info.node_gpus, strict=True), default=(0.0, 0.0))
        raise ConfigError(
            source,
            "resources",
            f"a trial asks for {resources.cpus_per_trial:g} CPU and {resources.gpus_per_trial:g} GPU"
            f" but the largest node has {biggest[0]:g} CPU and {biggest[1]:g} GPU",
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
