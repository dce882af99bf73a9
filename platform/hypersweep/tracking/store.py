"""Where a sweep's tracking store is: the URI resolved, a server's health, a SQLite file that
must exist (for commands that read a sweep back)."""

from __future__ import annotations

import base64
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow

from hypersweep.errors import ConfigError, folder_problem
from hypersweep.redaction import redact
from hypersweep.tracking.template import sqlite_path

# The CLI prints its own summary; MLflow would add a "View run" line per run on a tracking server.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# A new SQLite store logs its table creation at INFO: noise in the CLI's output (and in the
# one line a bad-input error must be).
for _name in ("mlflow.store.db.utils", "alembic"):
    logging.getLogger(_name).setLevel(logging.WARNING)

_HEALTH_TIMEOUT_S = 5.0  # MLflow's own retries would take minutes to give up on a dead server


def check_tracking_uri(uri: str, *, source: str) -> None:
    """A SQLite store's file can be made; an MLflow server must answer now, within seconds.
    Both before any run is created (other stores are checked when the sweep opens them)."""
    path = sqlite_path(uri)
    if path is not None and path.name != ":memory:":
        problem = f"{path} is a folder" if path.is_dir() else folder_problem(path.parent)
        if problem is not None:
            raise ConfigError(source, "tracking_uri", f"no SQLite store can be made at {path}: {problem}")
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(_health_request(uri), timeout=_HEALTH_TIMEOUT_S) as response:
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return  # an authenticating server is up; MLflow's client sends the credentials
        problem = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        problem = str(getattr(reason, "strerror", None) or reason)
    raise ConfigError(
        source,
        "tracking_uri",
        f"no MLflow server answers at {redact(uri)} ({problem} within {_HEALTH_TIMEOUT_S:g} s)",
    )


def _health_request(uri: str) -> urllib.request.Request:
    """The server's /health, asked as MLflow's client (requests) would: credentials in the URI
    (``http://user:password@host``) go as basic auth; urllib would take them for the host name."""
    parts = urllib.parse.urlsplit(uri.rstrip("/") + "/health")
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    request = urllib.request.Request(urllib.parse.urlunsplit(bare))
    if parts.username is not None:
        pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    return request


def resolve_tracking_uri(uri: str | None) -> str:
    """The URI in force: the given one, else MLFLOW_TRACKING_URI, else MLflow's default (SQLite)."""
    if uri:
        mlflow.set_tracking_uri(uri)
    return str(mlflow.get_tracking_uri())


def absolute_uri(uri: str) -> str:
    """``uri`` as any process on this machine reads it, whatever its working folder: a SQLite
    store or a plain path given relative to this one (MLflow's default is ``mlflow.db`` here)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path, sep, query = uri.removeprefix("sqlite:///").partition("?")
        if path and path != ":memory:":
            return f"sqlite:///{Path(path).resolve()}{sep}{query}"
    if "://" not in uri and not uri.startswith("file:"):
        return str(Path(uri).resolve())
    return uri


def require_existing_store(uri: str) -> None:
    """Reading from a SQLite store that does not exist would silently create an empty one."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise ConfigError("", "--tracking-uri", f"no MLflow store at {path}")
