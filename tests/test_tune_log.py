"""Ray Tune's own log: kept in the sweep's folder, off the terminal, named by the summary."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hypersweep import tuning
from hypersweep.config import load_sweep
from hypersweep.tune_log import LOGGERS, TUNE_LOG, kept_in
from tests.chaos_tools import chaos_sweep, cli
from tests.conftest import DEFAULT_SWEEP

# Tune's warning at the end of every sweep, whose result files hypersweep turns off.
NO_RESULT_FILES = (
    "Failed to fetch metrics for 2 trial(s):\n"
    "- trainable_a: FileNotFoundError('Could not fetch metrics for trainable_a: both result.json"
    " and progress.csv were not found at /runs/a')\n"
    "- trainable_b: FileNotFoundError('Could not fetch metrics for trainable_b: both result.json"
    " and progress.csv were not found at /runs/b')"
)


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _state() -> list[tuple[int, list[logging.Handler], bool]]:
    return [(lg.level, list(lg.handlers), lg.propagate) for lg in map(logging.getLogger, LOGGERS)]


def test_tunes_records_go_to_the_file_only_and_are_counted(tmp_path: Path) -> None:
    # Ray's handler on "ray" prints on stderr: whatever reached "ray" would reach the terminal.
    terminal = _Kept()
    logging.getLogger("ray").addHandler(terminal)
    try:
        with kept_in(tmp_path) as log:
            logging.getLogger("ray.tune.tune").info("wrote the experiment state")
            logging.getLogger("ray.tune.execution.experiment_state").warning("snapshot took 40 s")
            failed = logging.getLogger("ray.tune.execution.tune_controller")
            failed.error("Trial task failed for trial t1", exc_info=RuntimeError("injected"))
            logging.getLogger("ray.train._internal.storage").critical("storage is gone")
            logging.getLogger("ray.tune.analysis.experiment_analysis").warning(NO_RESULT_FILES)
    finally:
        logging.getLogger("ray").removeHandler(terminal)
    assert terminal.records == []
    text = (tmp_path / TUNE_LOG).read_text()
    assert "INFO ray.tune.tune: wrote the experiment state" in text
    assert "WARNING ray.tune.execution.experiment_state: snapshot took 40 s" in text
    assert "Trial task failed for trial t1" in text and "RuntimeError: injected" in text
    assert "CRITICAL ray.train._internal.storage: storage is gone" in text
    assert "Failed to fetch metrics" not in text
    assert (log.warnings, log.errors) == (1, 2)
    assert log.note() == f"Tune logged 1 warning, 2 errors: {tmp_path / TUNE_LOG}"


def test_a_fetch_that_failed_for_another_reason_is_kept(tmp_path: Path) -> None:
    other = NO_RESULT_FILES.replace("were not found at /runs/b", "is unreadable: permission denied")
    with kept_in(tmp_path) as log:
        logging.getLogger("ray.tune.analysis.experiment_analysis").warning(other)
    assert "permission denied" in (tmp_path / TUNE_LOG).read_text()
    assert log.note() == f"Tune logged 1 warning: {tmp_path / TUNE_LOG}"


def test_the_loggers_are_as_they_were_afterwards(tmp_path: Path) -> None:
    """A user's handler and level come back; nothing of the sweep's stays behind."""
    mine = _Kept()
    tune_logger = logging.getLogger("ray.tune")
    tune_logger.addHandler(mine)
    tune_logger.setLevel(logging.DEBUG)
    before = _state()
    try:
        with kept_in(tmp_path) as log:
            tune_logger.debug("below the file's level")
        assert _state() == before
        tune_logger.warning("after the sweep")
    finally:
        tune_logger.removeHandler(mine)
        tune_logger.setLevel(logging.NOTSET)
    assert [r.getMessage() for r in mine.records] == ["after the sweep"]
    assert not (tmp_path / TUNE_LOG).exists() and log.note() == ""  # nothing logged, no file


@pytest.mark.slow
def test_a_failed_trials_traceback_is_in_the_sweeps_tune_log_and_the_summary_names_it(
    tmp_path: Path,
) -> None:
    """A trial raises once and is retried: Tune logs the failure (an error, with the worker's
    traceback) into the sweep's folder; the terminal keeps its one line per failure."""
    sweep = chaos_sweep(tmp_path, samples=2, epochs=2, fault="raise", fault_epoch=1)
    uri = f"sqlite:///{tmp_path}/x.db"
    proc = cli("run", str(sweep), "--tracking-uri", uri, "--storage", str(tmp_path / "runs"))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    (folder,) = (tmp_path / "runs").iterdir()
    text = (folder / TUNE_LOG).read_text()
    assert text.count("ERROR ray.tune.execution.tune_controller: Trial task failed for trial") == 2
    assert "RuntimeError: injected fault in attempt 1" in text and "Traceback" in text
    assert f"Tune logged 2 errors: {folder / TUNE_LOG}\n" in out
    assert "Traceback" not in err and "Trial task failed" not in err


@pytest.mark.slow
def test_a_clean_sweep_names_no_log_and_leaves_the_loggers_as_they_were(tmp_path: Path) -> None:
    before = _state()
    spec = load_sweep(
        DEFAULT_SWEEP,
        ["num_samples=2", "max_epochs=2", "scheduler.type=fifo", f"storage={tmp_path / 'runs'}"],
        {"tracking_uri": f"sqlite:///{tmp_path}/x.db"},
    )
    outcome = tuning.run_sweep(spec)
    assert sum(outcome.statuses.values()) == 2 and outcome.best is not None
    assert outcome.tune_log == ""
    assert _state() == before
