"""The tracking store, opened and written by a process of its own.

On a SQLite store MLflow spends ~50 ms of Python (SQLAlchemy) per trial's run: create it, one
``log_batch``, end it. In the driver that work takes turns with Ray Tune's loop for the GIL, so a
sweep of small trials runs at the pace of both added together. From a child process it runs on
another core beside the loop; the recorder's writer thread only waits on a pipe.

The child is forked before Ray starts, so it begins with MLflow already imported, and it is the
only process of the sweep that opens the store. A fresh interpreter would spend ~3.5 s of CPU
importing MLflow, and the driver as much again importing SQLAlchemy's store: on a small machine
that competes with Ray and the workers starting (measured in benchmarks/).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ErrorCode
from mlflow.tracking import MlflowClient

from hypersweep.tracking.template import seed_store

_CLOSE_TIMEOUT_S = 30.0


class ProcessClient:
    """MlflowClient's methods, run by a forked child process, one request at a time.

    Create it before Ray starts in this process, and before this process opens the same store:
    a forked copy of a process running Ray is unsafe, and so is a SQLite connection used on both
    sides of a fork (MLflow keeps its stores, connections included, per URI). Forking, not
    spawning: a spawned child re-imports the caller's main module, which a script without a
    ``__main__`` guard would not survive, and MLflow from scratch. The child opens the store at
    once; ``ready`` waits for that and raises what opening it raised.
    """

    def __init__(self, uri: str) -> None:
        ours, theirs = socket.socketpair()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            ours.close()
            _child(theirs, uri)
        theirs.close()
        self._pid = pid
        self._conn = Connection(ours.detach())
        self._lock = threading.Lock()
        self._opened = False
        self._closed = False
        self.made_store = False  # the child made the store's file (a new SQLite store): see ready

    def ready(self) -> None:
        """Wait until the child has the store open (made, if new: then ``made_store`` is True)."""
        with self._lock:
            self._await_open()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or not callable(getattr(MlflowClient, name, None)):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._call(name, args, kwargs)

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self._lock:
            self._await_open()
            return self._exchange((method, args, kwargs))

    def _await_open(self) -> None:
        if not self._opened:
            self.made_store = bool(self._exchange(None))
            self._opened = True

    def _exchange(self, request: Any) -> Any:
        """Send ``request`` (None: only read the answer to opening the store) and read the answer."""
        try:
            if request is not None:
                self._conn.send(request)
            status, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise OSError(f"the MLflow writer process stopped ({type(exc).__name__})") from None
        if status == "ok":
            return value
        if status == "mlflow":  # its error code tells a refused write from an outage
            message, code = value if isinstance(value, tuple) else (value, "INTERNAL_ERROR")
            raise MlflowException(message, error_code=ErrorCode.Value(code))
        raise OSError(value)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):  # already gone
                self._conn.send(None)
            self._conn.close()
            _reap(self._pid, _CLOSE_TIMEOUT_S)


def _reap(pid: int, timeout: float) -> None:
    """Wait for the child to exit; kill it if it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _child(sock: socket.socket, uri: str) -> NoReturn:
    """The forked child's whole life: serve, then leave without the parent's exit handlers."""
    code = 0
    try:
        # Ctrl-C reaches the whole process group; the driver handles it and still writes the
        # sweep's end through this process.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _serve(Connection(sock.detach()), uri)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the driver closed its end without waiting for an answer: it gave up the sweep
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _serve(conn: Connection, uri: str) -> None:
    """One MlflowClient on a tuned SQLite store (or any other), serving the driver. Whether the
    store opened is the first answer: an error opening it goes back to the driver as one."""
    with _sqlite_tuned():
        opened = _answer(_open, uri)
        conn.send(("ok", opened[1][1]) if opened[0] == "ok" else opened)
        if opened[0] == "ok":
            _requests(conn, opened[1][0])


def _open(uri: str) -> tuple[MlflowClient, bool]:
    """The store's client, and whether this process made the store's file."""
    made = seed_store(uri)
    client = MlflowClient(tracking_uri=uri)
    client.search_experiments(max_results=1)  # makes (migrates) a new store, reads an old one
    return client, made


@contextlib.contextmanager
def _sqlite_tuned() -> Iterator[None]:
    """A SQLite store in write-ahead-log mode, synced at checkpoints, not at every commit.

    MLflow commits each call; with SQLite's defaults (a rollback journal, ``synchronous=FULL``)
    every commit creates, syncs and deletes a journal file: ~45 ms of CPU per trial's run here,
    ~33 ms in WAL mode (benchmarks/). WAL also lets readers (the MLflow UI during a sweep) read
    while this process writes instead of finding the database locked; a crash loses nothing
    that was committed. The mode stays with the file; closing the connections at the end folds
    the log back into the database file and removes it.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    opened: list[sqlite3.Connection] = []

    def tune(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")
            opened.append(dbapi_connection)

    event.listen(Engine, "connect", tune)
    try:
        yield
    finally:
        for connection in opened:
            with contextlib.suppress(sqlite3.Error):
                connection.close()


def _requests(conn: Connection, client: MlflowClient) -> None:
    """Serve requests until None or EOF."""
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        method, args, kwargs = request
        conn.send(_answer(getattr(client, method), *args, **kwargs))


def _answer(call: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    try:
        result = call(*args, **kwargs)
    except MlflowException as exc:
        return ("mlflow", (str(exc), exc.error_code))
    except Exception as exc:
        return ("error", f"{type(exc).__name__}: {exc}")
    return ("ok", result)  # MLflow's entities pickle whole
