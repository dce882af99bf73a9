"""Every use of Ray's private internals, each behind a fallback to Ray's public API.

A sweep on this machine starts faster through three of them (see ``ray_node`` and FIELD_NOTES):
the local node is started with ``ray._private.node.Node`` (no API server, log monitor or
autoscaler monitor) and ``_system_config`` settings (workers prestarted with the trial's
modules imported, kept while idle); Tune's ``class_cache`` defaults are cleared so trial
actors run on those workers; and ``ray._private.utils.get_num_cpus`` counts the CPUs as the
node will. A newer Ray may lack any of them or have changed it. Then hypersweep prints one
warning line naming what is missing and goes the public way, slower to start but the same sweep:
``ray.init`` starts the node, trial actors keep Tune's runtime environment, the CPUs are counted
with the standard library.

Ray is imported inside the functions only: ``ray_node``'s command line imports this module
before anything heavy.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

# Ray's ways of saying that an internal is gone or changed: a module or name missing, a
# signature that no longer takes the arguments.
CHANGED = (ImportError, AttributeError, TypeError)
PUBLIC_START = "starting Ray with the public ray.init (slower start)"
# As ray.init() starts a local node. spawn_reaper: the node's processes end with its process, even
# if that is killed (on Linux the kernel sees to it).
_NODE_OPTIONS = {"head": True, "shutdown_at_exit": False, "spawn_reaper": True, "ray_init_cluster": True}
# What main() calls on the node once it runs, checked before it starts.
_NODE_API = ("address", "kill_all_processes", "destroy_external_storage")
_FILE_NAMED = re.compile(r" \((/|[A-Za-z]:\\)[^()]*\)$")  # "... from 'x' (/path/x.py)"
_UNKNOWN_SETTING = re.compile(r"unexpected config parameter (\S+)")
_warned: set[str] = set()


class Missing(Exception):
    """This Ray lacks an internal as hypersweep uses it; the message names it."""


def warn(missing: object, instead: str) -> None:
    """One line on stderr, once per process for each internal that is missing."""
    what = str(missing)
    if what in _warned:
        return
    _warned.add(what)
    print(f"warning: this Ray ({ray_version()}) lacks {what}; {instead}", file=sys.stderr, flush=True)


def ray_version() -> str:
    """The installed Ray's version, read without importing Ray."""
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def _named(what: str, exc: BaseException) -> Missing:
    """``what`` and why, in one line: the exception's first line, without the file it names."""
    lines = str(exc).strip().splitlines()
    reason = _FILE_NAMED.sub("", lines[0])[:200] if lines else ""
    return Missing(f"{what} ({type(exc).__name__}{': ' + reason if reason else ''})")


# -- the local node, in ``ray_node``'s process -------------------------------------------------
def start_node(system_config: Mapping[str, Any]) -> Any:
    """A running local head node with ``system_config``, without the processes a sweep does
    not use. ``Missing`` if this Ray's ``Node`` is not as expected: raised before anything
    starts, except for a setting this Ray does not know, which its GCS rejects as it starts."""
    try:
        from ray._private.node import Node
        from ray._private.parameter import RayParams

        params = RayParams(
            include_dashboard=False,
            include_log_monitor=False,  # type: ignore[arg-type]  # annotated as str, read as a flag
            no_monitor=True,
            _system_config=dict(system_config),
        )
        inspect.signature(Node).bind(params, **_NODE_OPTIONS)
        for name in _NODE_API:
            getattr(Node, name)
    except CHANGED as exc:
        raise _named("ray._private.node.Node as hypersweep starts it", exc) from exc
    return _sweep_node_class(Node)(params, **_NODE_OPTIONS)


def stop_node(node: Any) -> None:
    """Stop every process ``node`` started (``start_node``'s node)."""
    node.destroy_external_storage()
    node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)


def _sweep_node_class(node: type) -> Any:
    class SweepNode(node):  # type: ignore[misc,valid-type]
        """Ray's head node without its API server.

        With the dashboard off Ray still starts a reduced dashboard process for its job
        submission and state APIs (``ray job``, ``ray list``); a sweep's driver uses neither.
        It cost ~1.0-1.3 s of CPU at start, on the cores the workers need then.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            try:
                super().__init__(*args, **kwargs)
            except Exception:
                # A setting Ray no longer knows stops its GCS at once, and Ray says only that
                # the GCS did not start (after 30 s); the GCS's log names the setting.
                setting = _unknown_setting(getattr(self, "_logs_dir", None))
                if setting is None:
                    raise
                with contextlib.suppress(Exception):
                    self.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
                raise Missing(f"the system setting {setting}") from None

        def start_api_server(self, **_: Any) -> None:
            pass

    return SweepNode


def _unknown_setting(logs_dir: str | None) -> str | None:
    """The ``_system_config`` key a node's GCS refused, from its log; None if none was."""
    if logs_dir is None:
        return None
    for name in ("gcs_server.err", "gcs_server.out"):
        with contextlib.suppress(OSError):
            found = _UNKNOWN_SETTING.search((Path(logs_dir) / name).read_text(errors="replace"))
            if found:
                return found.group(1)
    return None


# -- the driver --------------------------------------------------------------------------------
@contextlib.contextmanager
def actors_inherit_env() -> Iterator[None]:
    """Local trials start on the workers Ray prestarted, which have imported torch already.

    Tune gives every trial actor a runtime environment of its own (``PL_DISABLE_FORK`` and a
    few variables copied from this process), and Ray starts a fresh worker for an actor whose
    runtime environment differs from the prestarted workers' (none): ~5 s of imports per worker
    on a small machine, while the prestarted ones sit idle. Locally, every worker inherits this
    process's environment through the node anyway (``ray_node.sweep_node`` sets Tune's defaults in
    it), so Tune's copy is dropped for the duration of the fit. A cluster's workers do not share
    this environment; there Tune's runtime environment stays. So it stays where this Ray's
    Tune keeps it elsewhere: correct, with a fresh worker per trial actor.
    """
    cache = _tune_actor_env()
    if cache is None:
        yield
        return
    defaults, propagated = cache
    kept = dict(defaults), set(propagated)
    defaults.clear()
    propagated.clear()
    try:
        yield
    finally:
        defaults.update(kept[0])
        propagated.update(kept[1])


def _tune_actor_env() -> tuple[dict[str, str], set[str]] | None:
    """Tune's defaults for every trial actor's environment (``class_cache``), if this Ray's Tune
    keeps them where hypersweep can clear and restore them; else None, after a warning."""
    try:
        from ray.tune.execution import class_cache

        defaults, propagated = class_cache.DEFAULT_ENV_VARS, class_cache.ENV_VARS_TO_PROPAGATE
        if not isinstance(defaults, dict) or not isinstance(propagated, set):  # cleared in place
            raise TypeError(f"a {type(defaults).__name__} and a {type(propagated).__name__}")
    except CHANGED as exc:
        warn(_named("ray.tune.execution.class_cache's defaults", exc), "trial actors start fresh workers")
        return None
    return defaults, propagated


def num_cpus() -> float:
    """The CPUs Ray's local node takes: a container's CPU quota, else every core this process
    may run on (where this Ray lacks its counter, the cores alone)."""
    try:
        from ray._private.utils import get_num_cpus

        return float(get_num_cpus(override_docker_cpu_warning=True))
    except CHANGED as exc:
        warn(_named("ray._private.utils.get_num_cpus", exc), "counting this machine's cores instead")
    affinity = getattr(os, "sched_getaffinity", None)
    return float(len(affinity(0)) if affinity else os.cpu_count() or 1)
