"""Trial -> MLflow run id, from the driver to the workers: a function trial's own MLflow calls
land in the trial's run (``function_trial``).

The driver's recorder creates a trial's run when Tune starts the trial, in its writer thread,
while the worker may already be running the function. So the driver publishes each run id on a
small named actor of the sweep (no CPU reserved) and a worker that needs one asks it, waiting a
moment if the run is not made yet. Made only for sweeps of functions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import ray


@ray.remote(num_cpus=0)
class _Board:
    def __init__(self) -> None:
        self._ids: dict[str, str] = {}

    def put(self, ids: dict[str, str]) -> None:
        self._ids.update(ids)

    def get(self, trial_id: str) -> str | None:
        return self._ids.get(trial_id)


class RunBoard:
    """The driver's end: ``publish`` the run ids the recorder knows; ``close`` at the sweep's end."""

    def __init__(self, sweep_id: str) -> None:
        self.name = board_name(sweep_id)
        self._actor = _Board.options(name=self.name, get_if_exists=True).remote()  # type: ignore[attr-defined]
        self._published: dict[str, str] = {}

    def publish(self, ids: Mapping[str, str]) -> None:
        """Send the ids not sent yet (one message; the driver does not wait for it)."""
        new = {tid: rid for tid, rid in ids.items() if rid and self._published.get(tid) != rid}
        if new:
            self._actor.put.remote(new)
            self._published.update(new)

    def close(self) -> None:
        ray.kill(self._actor)


def board_name(sweep_id: str) -> str:
    return f"hypersweep-runs-{sweep_id}"


def run_id_of(name: str, trial_id: str, *, timeout_s: float) -> str | None:
    """The worker's end: the run id of ``trial_id`` from board ``name``; None if none in time."""
    try:
        board = ray.get_actor(name)
    except ValueError:  # no board: the sweep's driver made none
        return None
    deadline, pause = time.monotonic() + timeout_s, 0.02
    while True:
        run_id = str(ray.get(board.get.remote(trial_id)) or "")
        if run_id or time.monotonic() > deadline:
            return run_id or None
        time.sleep(pause)
        pause = min(pause * 2, 0.5)
