"""The start of a sweep, before its first trial: Ray started (or joined) and checked, the data
loaded into Ray's object store, the tracking store opened in its own process, a new sweep's warm
start read. What fails here is bad input, and leaves nothing behind."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import ray

from hypersweep import cluster, warm_start
from hypersweep.config import SweepSpec
from hypersweep.errors import ConfigError, first_line
from hypersweep.ray_node import LocalNode, sweep_node
from hypersweep.registry import load_sweep_data
from hypersweep.report import import_charts_meanwhile
from hypersweep.tracking import redact
from hypersweep.tracking.process import ProcessClient
from hypersweep.tracking.template import sqlite_path
from hypersweep.warm_start import WarmStart


@dataclass(frozen=True)
class Ready:
    concurrent: int  # trials at once
    data: Any  # ObjectRef of the sweep's registry.SweepData (its experiment and data)
    client: Any  # the tracking client, its store open (a ProcessClient unless one was given)
    warm: WarmStart | None = None  # the earlier trials a new sweep's study starts with


@contextlib.contextmanager
def started(
    spec: SweepSpec,
    roots: list[str],
    address: str | None,
    uri: str,
    client: Any,
    node: LocalNode | None = None,
    *,
    warm: bool = False,
) -> Iterator[Ready]:
    """Ray started (or joined) and checked, the data in its object store, the tracking store open.

    Ray takes seconds to start. Locally its node starts in a process of its own (``node``, if
    the caller started it earlier); meanwhile the data loads in a thread and the tracking store
    opens in its own process (``tracking.process``), forked before this process joins Ray. If a
    check fails, a store made here is removed again: bad input leaves nothing behind. ``warm``:
    read the sweep's warm start (a new sweep's) from the store first, before Ray is joined.
    """
    if address is not None:
        cluster.check_address(address)  # an unreachable cluster fails before anything is made
    # A library caller may run Ray already (``connect`` would stop it anyway): stopped before the
    # tracking process is forked, which must not copy a process running Ray's threads.
    cluster.shutdown()
    if address is None and node is None:
        node = sweep_node(spec, roots)
    store = None
    try:
        store = ProcessClient(uri) if client is None else None
        seeds = _warm_start(spec, uri, client or store) if warm else None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hypersweep-start") as pool:
            data = pool.submit(load_sweep_data, spec, roots)
            import_charts_meanwhile()
            info = cluster.connect(
                address=address, import_roots=roots, modules=[_top_module(spec)], node=node
            )
        try:
            source = str(spec.source)
            cluster.check_resources(spec.resources, info, source=source)
            cluster.check_storage(spec.storage, shared=spec.storage_shared, info=info, source=source)
            if store is not None:
                _open_store(store, uri, source)
            concurrent = cluster.concurrency(spec.resources, info)
            ready = Ready(concurrent, ray.put(data.result()), client or store, seeds)
        except BaseException:
            cluster.shutdown()
            raise
    except BaseException:
        if node is not None:
            node.stop()  # if connect did not take it
        if store is not None:
            _drop_store_made_by(store, uri)
        raise
    try:
        yield ready
    finally:
        if store is not None:
            store.close()
        cluster.shutdown()


def _warm_start(spec: SweepSpec, uri: str, client: Any) -> WarmStart | None:
    if not spec.search.warm_start:
        return None
    if isinstance(client, ProcessClient):
        _open_store(client, uri, str(spec.source))
    return warm_start.gather(spec, client=client, tracking_uri=uri)


def _drop_store_made_by(store: ProcessClient, uri: str) -> None:
    """Close the store; remove its file if this sweep made it, and only then: another sweep
    started at the same moment may have made it, and be using it now."""
    path = sqlite_path(uri)
    if path is not None:
        with contextlib.suppress(Exception):  # wait for the child's answer: did it make the file?
            store.ready()
    store.close()  # after the child is done with the store file
    if path is not None and store.made_store:
        path.unlink(missing_ok=True)


def _open_store(store: ProcessClient, uri: str, source: str) -> None:
    """Wait for the writer process to open the store; a store MLflow cannot open (an unknown
    scheme, a folder store, a database it cannot migrate) is bad input: one line."""
    try:
        store.ready()
    except Exception as exc:
        raise ConfigError(
            source, "tracking_uri", f"MLflow cannot open {redact(uri)}: {first_line(exc)}"
        ) from None


def _top_module(spec: SweepSpec) -> str:
    """The experiment's top-level package or module: what a cluster's workers are sent."""
    return spec.experiment.partition(":")[0].split(".")[0]
