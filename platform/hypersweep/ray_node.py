"""The local Ray node, in a process of its own: ``LocalNode`` here, ``main`` there.

``python -m hypersweep.ray_node SYSTEM_CONFIG_JSON`` starts a head node, writes the node's
address as one line on stdout, and keeps the node until SIGTERM (the driver is done) or until
its stdin closes (the driver died), then stops every process the node started.

In a process of its own the node starts while the driver still imports torch, Ray Tune and
MLflow (seconds, on one core) instead of after. And it starts only what a sweep on this machine
uses: no log monitor (the driver does not print the workers' output), no autoscaler monitor
(nothing to scale) and no API server (for ``ray job`` and ``ray list``, which a sweep does not
use), three Python processes of ~1 s of CPU each at start. Ray itself is imported
only in the node's process: the command line starts the node before it imports anything heavy.
The node is Ray's private ``Node`` (``ray_private``); where this Ray lacks it, the node's
process says so instead of an address, and the driver starts Ray with the public ``ray.init``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

import hypersweep
from hypersweep import ray_private
from hypersweep.errors import ConfigError

if TYPE_CHECKING:
    from hypersweep.config import SweepSpec

_START_TIMEOUT_S = 120.0  # a local node that has not started by then never will
_STOP_TIMEOUT_S = 15.0  # for the node to stop its processes, before it is killed
_IDLE_WORKER_MS = 60_000  # how long Ray keeps an idle worker locally (its default: 1 s)
TRIAL_MODULE = "hypersweep.trial"  # what every trial runs (``trial.trainable``)
# What Ray Tune gives every trial actor (its class_cache.DEFAULT_ENV_VARS, which imports all of
# Tune): locally the workers get it from the node instead (see tuning._actors_inherit_env).
TUNE_WORKER_ENV = {"PL_DISABLE_FORK": "1"}
# The node's answer, instead of an address, when this Ray lacks what it starts the node with.
_NO_NODE = "missing: "


def sweep_node(spec: SweepSpec, roots: list[str]) -> LocalNode:
    """The local node for ``spec``'s trials: its workers import the trial's modules up front."""
    experiment_module = spec.experiment.partition(":")[0]
    return LocalNode.start(
        import_roots=roots, preload=[TRIAL_MODULE, experiment_module], worker_env=TUNE_WORKER_ENV
    )


class LocalNode:
    """The driver's handle on a local node in its process, started as early as wanted.

    ``start`` returns at once; ``address`` waits for the node. The node ends on ``stop``, and
    when this process ends, however it ends: the node's process watches its stdin for that.
    """

    def __init__(
        self, process: subprocess.Popen[bytes], errors: IO[bytes], worker_env: Mapping[str, str]
    ) -> None:
        self._process, self._errors = process, errors
        self._address: str | None = None
        # What the node gives its workers beyond this process's environment: a Ray started
        # instead of it (``cluster.connect``, where this Ray lacks the node's internals) too.
        self.worker_env = dict(worker_env)

    @classmethod
    def start(
        cls,
        *,
        import_roots: Sequence[str],
        preload: Sequence[str] = (),
        worker_env: Mapping[str, str] | None = None,
    ) -> LocalNode:
        # The folder holding hypersweep first: workers import the driver's copy, not another install.
        own = str(Path(hypersweep.__file__).resolve().parent.parent)
        pythonpath = os.pathsep.join([own, *import_roots, os.environ.get("PYTHONPATH", "")])
        extra = {**(worker_env or {}), "PYTHONPATH": pythonpath.strip(os.pathsep)}
        # The node's own complaints, shown if it fails to start; open as long as the node runs.
        errors = tempfile.TemporaryFile()  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "hypersweep.ray_node", json.dumps(_local_system_config(preload))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            env={**os.environ, **extra},
            # A session of its own: Ctrl-C at the terminal is the driver's alone, and a node
            # stopped while it starts ends whole, the processes its raylet started included.
            start_new_session=True,
        )
        return cls(process, errors, extra)

    def address(self) -> str:
        """The node's GCS address, once it runs.

        A node that cannot start (an unwritable Ray temp folder, a full disk) is ``ConfigError``:
        one line naming Ray's own reason, exit 2, with the node's processes gone. Where this Ray
        lacks what the node is started with, ``ray_private.Missing`` names it (the node is gone
        then too): Ray is to be started the public way."""
        if self._address is None:
            assert self._process.stdout is not None
            ready, _, _ = select.select([self._process.stdout], [], [], _START_TIMEOUT_S)
            line = self._process.stdout.readline().decode().strip() if ready else ""
            if line.startswith(_NO_NODE):
                self.stop()
                raise ray_private.Missing(line.removeprefix(_NO_NODE))
            if not line:
                reason = _last_line(self._complaints()) or f"no address within {_START_TIMEOUT_S:g} s"
                self.stop()
                raise ConfigError("", "", f"local Ray did not start: {reason}")
            self._address = line
        return self._address

    def stop(self) -> None:
        """End the node and every process it started (idempotent)."""
        if self._process.poll() is None:
            if self._address is None:
                # Still starting (bad input was found meanwhile): nothing to keep, no need to
                # wait seconds for its start to finish first.
                self._kill_group()
            else:
                self._process.terminate()  # its handler stops the node's processes, the Ray way
        if self._process.stdin is not None and not self._process.stdin.closed:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        try:
            self._process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._kill_group()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._errors.close()

    @property
    def pid(self) -> int:
        return self._process.pid

    def _kill_group(self) -> None:
        """SIGKILL to every process of the node's session (Ray's workers make process groups of
        their own in it). Called only while the session's leader is not yet reaped, so its id
        cannot have been reused."""
        for pid in _session_members(self._process.pid) or [-self._process.pid]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)  # -pid: the leader's group, where /proc is missing

    def _complaints(self) -> str:
        self._errors.seek(0)
        return self._errors.read().decode(errors="replace")


def _session_members(session: int) -> list[int]:
    """Processes of a session, from /proc (empty where there is none)."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # after "pid (comm)": state, ppid, pgrp, session
            members.append(int(entry.name))
    return members


def _local_system_config(preload: Sequence[str]) -> dict[str, Any]:
    """Ray's settings for a local node: it starts one worker per CPU as soon as it runs, before
    any driver joins; those workers import ``preload`` and stay alive until the trials come.

    By default Ray starts its workers when the first driver joins, and the trials wait for their
    imports (torch, Ray Tune: ~5 s of CPU each). Started with the node, they import while the
    command line is still importing the same modules itself; the driver's job takes them over.

    A prestarted worker counts as idle from the moment it registers, while it is still importing,
    and Ray ends idle workers after one second whenever it counts more workers than CPUs. On a
    2-core machine both prestarted workers ended so ("idle for a long time"), 6 s after start and
    before the first trial, in 2 of ~15 sweeps, and in 4 of 9 when they imported more; the trials
    then waited for fresh workers to import everything again (a 32-trial benchmark took 27-34 s
    instead of 20). Kept idle for a minute, they live to take the trials.
    """
    return {
        "preload_python_modules": list(preload),
        "idle_worker_killing_time_threshold_ms": _IDLE_WORKER_MS,
        "enable_worker_prestart": True,
    }


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def main() -> NoReturn:
    system_config = json.loads(sys.argv[1])
    # Ctrl-C is the driver's to handle (it stops the node): never ours, even when run by hand.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # The node's processes inherit our stdout: pointed elsewhere, they never hold (or fill) the
    # driver's pipe, which then reads one line and its end.
    address_out = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    logging.getLogger("ray").setLevel(logging.ERROR)
    try:
        node = ray_private.start_node(system_config)
    except ray_private.Missing as missing:
        _answer(address_out, f"{_NO_NODE}{missing}")  # the driver starts Ray the public way
        os._exit(0)
    try:
        _answer(address_out, node.address)
        sys.stdin.buffer.read()  # returns when the driver is gone
    finally:
        ray_private.stop_node(node)
        # Nothing left to flush: skip the interpreter's teardown of Ray's modules (~0.3 s).
        os._exit(0)


def _answer(out: IO[str], line: str) -> None:
    out.write(line + "\n")
    out.close()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # through main's finally: the node's processes are stopped


if __name__ == "__main__":
    main()
