"""A real multi-node Ray cluster and a real MLflow server on 127.0.0.1, for the cluster tests.

Every node is its own ``ray start --block`` process with its own ports (chosen free, never the
defaults others on the machine use) and a dedicated temp dir. Token authentication is on, with a
token made for this cluster alone and passed in the environment (``~/.ray/auth_token`` is never
read or written). Stopping ends exactly the processes of this cluster: those whose environment
carries its token, plus the process trees of its ``ray start`` commands; ``ray stop`` is never
used because it would end every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
_START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_range(size: int) -> tuple[int, int]:
    """A block of free ports below Linux's ephemeral range (32768+), above Ray's default worker ports."""
    for _ in range(200):
        low = random.randrange(20000, 32000 - size)
        if all(_port_is_free(p) for p in range(low, low + size)):
            return low, low + size - 1
    raise RuntimeError("no free port range")


@dataclass
class LocalRayCluster:
    root: Path
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    port: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_env(self) -> dict[str, str]:
        """What a client of this cluster needs: token mode and this cluster's token."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_TRACKING"))}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_USAGE_STATS_ENABLED="0")
        return env

    def _node_env(self) -> dict[str, str]:
        # No PYTHONPATH: the workers get the project's code only through the job's runtime env.
        env = self.client_env()
        env.pop("PYTHONPATH", None)
        return env

    def _node_ports(self) -> list[str]:
        low, high = free_range(24)
        return [
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--min-worker-port={low}",
            f"--max-worker-port={high}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]

    def _start(self, name: str, args: list[str]) -> None:
        log = (self.root / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", *args, *self._node_ports()],
            cwd=self.root,
            env=self._node_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        self._wait_started(name, proc)

    def _wait_started(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        log = self.root / f"{name}.log"
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if "Ray runtime started" in text:
                return
            if proc.poll() is not None:
                raise RuntimeError(f"ray node {name} exited:\n{text[-3000:]}")
            time.sleep(0.5)
        raise RuntimeError(f"ray node {name} did not start in {_START_TIMEOUT_S:g} s")

    def start(self, *, head_cpus: int, workers: list[tuple[int, int]]) -> None:
        """A head (CPUs only) and one worker node per (cpus, gpus), started one after another."""
        self.port = free_port()
        self._start(
            "head",
            [
                "--head",
                f"--port={self.port}",
                f"--num-cpus={head_cpus}",
                "--num-gpus=0",
                "--include-dashboard=false",
                f"--temp-dir={self.root / 'ray'}",
            ],
        )
        for i, (cpus, gpus) in enumerate(workers):
            self._start(
                f"worker{i}", [f"--address={self.address}", f"--num-cpus={cpus}", f"--num-gpus={gpus}"]
            )

    def stop(self) -> None:
        stop_tagged(f"RAY_AUTH_TOKEN={self.token}", roots={p.pid for p in self.procs})
        for proc in self.procs:
            proc.wait(timeout=10)


def stop_tagged(marker: str, roots: set[int] | None = None) -> set[int]:
    """End the processes whose environment holds ``marker`` (``KEY=VALUE``, inherited by everything
    they start, daemons included) and the process trees of ``roots``: SIGTERM, SIGKILL after 10 s.
    Processes started meanwhile (Ray restarting a worker) carry the marker too, so this repeats
    until none is left, at most three rounds. Returns the tagged processes still alive (none)."""

    def tagged() -> set[int]:
        pids = {p for p in _descendants(roots or set()) | _pids_with_env(marker) if _alive(p)}
        pids.discard(os.getpid())
        return pids

    for _ in range(3):
        pids = tagged()
        if not pids:
            break
        _signal(pids, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.3)
        _signal({p for p in pids if _alive(p)}, signal.SIGKILL)
        time.sleep(0.5)
    return tagged()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(roots: set[int]) -> set[int]:
    tree, found, todo = _children(), set(roots), list(roots)
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _pids_with_env(marker: str) -> set[int]:
    needle = marker.encode() + b"\0"
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _signal(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


@dataclass
class MlflowServer:
    """``mlflow server`` on 127.0.0.1: SQLite backend, artifacts proxied (``--serve-artifacts``)."""

    root: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    def start(self) -> None:
        self.port = free_port()
        self.artifacts.mkdir(parents=True, exist_ok=True)
        log = (self.root / "mlflow.log").open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--serve-artifacts",
                "--artifacts-destination",
                str(self.artifacts),
                "--workers",
                "1",
            ],
            cwd=self.root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mlflow server exited: " + (self.root / "mlflow.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not start")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
