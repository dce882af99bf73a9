"""Helpers for the fault tests: sweep files for the chaos experiment, a real MLflow server, the
counts every fault test asserts, and killing a process tree by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import ROOT
from tests.mlflow_store import read_sweep

NAME = "chaos"


def chaos_sweep(
    folder: Path, *, samples: int, epochs: int, every_epoch: bool = True, **fixed: object
) -> Path:
    """A sweep of tests.chaos:ChaosToy; ``fixed`` holds its fault settings. ``every_epoch``: each
    epoch reports and checkpoints; otherwise the shipped defaults (batched reports, a checkpoint
    at most every 10 s)."""
    faults = folder / "faults"
    faults.mkdir(exist_ok=True)
    items = {"fault_dir": str(faults), "batch_size": 64, **fixed}
    text = (
        f"name: {NAME}\nexperiment: tests.chaos:ChaosToy\n"
        "search_space: {lr: {type: loguniform, low: 0.001, high: 0.05}}\n"
        f"fixed: {{{', '.join(f'{k}: {v}' for k, v in items.items())}}}\n"
        f"max_epochs: {epochs}\nnum_samples: {samples}\n"
        "scheduler: {type: fifo}\n"
        # Every epoch reports and checkpoints: the tests count evaluations to tell a resume from a
        # checkpoint from a restart at epoch 0.
        + (
            "training: {patience: null, report_every_s: 0, checkpoint_every_s: 0}\n"
            if every_epoch
            else "training: {patience: null}\n"
        )
        + "resources: {cpus_per_trial: 1, max_concurrent: 2}\n"
    )
    path = folder / "chaos.yaml"
    path.write_text(text)
    return path


def cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The CLI as a background process (run from the project root so tests.chaos imports)."""
    full = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | (env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "hypersweep", *args],
        cwd=cwd,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass
class Counts:
    trials: int  # child runs
    trial_ids: int  # distinct hypersweep.trial_id
    running: int  # runs (parent included) left RUNNING
    duplicated_steps: int  # (run, metric, step) logged more than once
    statuses: Counter[str]

    def row(self) -> str:
        return f"{self.trials} child runs, {self.duplicated_steps} duplicated steps, {self.running} RUNNING"


def counts(uri: str) -> Counts:
    stored = read_sweep(uri, NAME)
    duplicated = 0
    for child in stored.children:
        for key in ("train_loss", "val_loss", "val_mae"):
            steps = [m.step for m in stored.client.get_metric_history(child.info.run_id, key)]
            duplicated += len(steps) - len(set(steps))
    runs = [stored.parent, *stored.children]
    return Counts(
        trials=len(stored.children),
        trial_ids=len({c.data.tags["hypersweep.trial_id"] for c in stored.children}),
        running=sum(r.info.status == "RUNNING" for r in runs),
        duplicated_steps=duplicated,
        statuses=Counter(stored.tag(c, "status") or "" for c in stored.children),
    )


def steps(uri: str, key: str = "val_loss") -> list[list[int]]:
    stored = read_sweep(uri, NAME)
    return [[s for s, _ in stored.history(c, key)] for c in stored.children]


def evals_per_trial(folder: Path) -> list[int]:
    """'eval' lines per trial written by the chaos experiment (one per evaluation)."""
    return sorted(p.read_text().split().count("eval") for p in (folder / "faults").glob("*.log"))


def builds_per_trial(folder: Path) -> list[int]:
    return sorted(p.read_text().split().count("build") for p in (folder / "faults").glob("*.log"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(db: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """A real `mlflow server` on 127.0.0.1:port with a SQLite backend; returns once it answers."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            *extra,
        ],
        cwd=db.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its workers form one group: stopping it stops them all
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}") from None
            time.sleep(0.5)
    stop_group(proc.pid)
    raise RuntimeError("mlflow server did not start")


def stop_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (a server started with start_new_session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (Ray's raylet, GCS and workers under a driver), from /proc."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = (task / "children").read_text().split() if (task / "children").exists() else []
            for child in map(int, children):
                out.append(child)
                todo.append(child)
    return out


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def kill_driver(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a sweep's driver, then what it started (Ray's processes, the tracking writer), as
    a machine losing the driver's process tree would."""
    tree = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    kill_all(tree)


def client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri)
