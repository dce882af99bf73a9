"""Imported last by each worker Ray prestarts locally (``preload_python_modules``): by then the
worker has imported the trial's modules, and it says so with a file named by its pid in the folder
the driver named (see ``cluster.await_workers``). Nothing happens outside such a worker."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

READY_DIR_ENV = "HYPERSWEEP_WORKERS_READY_DIR"

_folder = os.environ.get(READY_DIR_ENV)
if _folder:
    with contextlib.suppress(OSError):  # the sweep is over and its folder gone: nobody waits
        (Path(_folder) / str(os.getpid())).touch()
