"""MLflow's writes from a process of their own.

On a SQLite store MLflow spends ~50 ms of Python (SQLAlchemy) per trial's run: create it, one
``log_batch``, end it. In the driver that work takes turns with Ray Tune's loop for the GIL, so a
sweep of small trials runs at the pace of both added together. From a child process it runs on
another core beside the loop; the recorder's writer thread only waits on a pipe.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from types import SimpleNamespace
from typing import Any

from mlflow.exceptions import MlflowException

# What SweepRecorder's flush calls; everything else stays on the driver's own client.
METHODS = frozenset({"create_run", "log_batch", "set_terminated", "update_run"})
_CLOSE_TIMEOUT_S = 30.0


class ProcessClient:
    """Those MlflowClient methods, run by a child process (one request at a time).

    The child is a plain ``python -m hypersweep.tracking.process`` talking over a socket pair, not
    a multiprocessing child: spawning one re-imports the caller's main module, which a script
    without a ``__main__`` guard would not survive, and forking a process running Ray is unsafe.
    """

    def __init__(self, uri: str) -> None:
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "hypersweep.tracking.process", str(theirs.fileno()), uri],
            pass_fds=[theirs.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self._conn = Connection(ours.detach())
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name not in METHODS:
            raise AttributeError(name)
        return lambda *args, **kwargs: self._call(name, args, kwargs)

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self._lock:
            try:
                self._conn.send((method, args, kwargs))
                status, value = self._conn.recv()
            except (EOFError, OSError) as exc:
                raise OSError(f"the MLflow writer process stopped ({type(exc).__name__})") from None
        if status == "ok":
            return value
        raise MlflowException(value) if status == "mlflow" else OSError(value)

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(OSError):  # already gone
                self._conn.send(None)
            try:
                self._process.wait(_CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._conn.close()


def _serve(conn: Connection, uri: str) -> None:
    """The child: one MlflowClient, requests in order until None or the pipe closes."""
    from mlflow.tracking import MlflowClient

    from hypersweep import tracking  # noqa: F401  # the same MLflow settings as the driver

    client = MlflowClient(tracking_uri=uri)
    client.search_experiments(max_results=1)  # open the store now, while the sweep starts
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        method, args, kwargs = request
        try:
            result = getattr(client, method)(*args, **kwargs)
        except MlflowException as exc:
            conn.send(("mlflow", str(exc)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        else:
            conn.send(("ok", _portable(result)))


def _portable(result: Any) -> Any:
    """What the recorder reads of a result (a created run's id): no MLflow entity crosses over."""
    info = getattr(result, "info", None)
    if info is None:
        return None
    return SimpleNamespace(info=SimpleNamespace(run_id=info.run_id))


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])), sys.argv[2])
