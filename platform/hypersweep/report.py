"""The sweep report: one self-contained ``report.html`` and its charts as PNGs, made from what
MLflow holds of a sweep (``tracking.report_data``), and the sweep's figures as the parent run's
metrics. Made at the end of every sweep (``at_sweep_end``), or again by ``hypersweep report``.

What it shows, and how to read it: docs/report.md. The figures:

* ``epochs_trained``: the epochs all trials trained, the epoch a trial diverged in included;
* ``epochs_budget``: ``num_samples * max_epochs``, what the sweep would train with no early stop;
* ``compute_saved``: ``1 - epochs_trained / epochs_budget``, what early stopping spared;
* ``importance_<param>``: each parameter's importance (``importance``), summing to 1.
"""

from __future__ import annotations

import base64
import contextlib
import math
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypersweep import report_html
from hypersweep.errors import ConfigError, first_line, folder_problem
from hypersweep.importance import importances, results_study
from hypersweep.redaction import redact
from hypersweep.search_space import parse_search_space
from hypersweep.tracking.report_data import (
    REPORT_DIR,
    SweepRecord,
    TrialRecord,
    log_report,
    open_sweep,
    read_record,
    refused_as_bad_input,
)

HTML = "report.html"
TOP_TRIALS = 10  # rows of the report's table (the terminal shows the first 5)


@dataclass(frozen=True)
class Built:
    """What ``build`` made besides its files."""

    metrics: dict[str, float]  # the parent run's (see the module)
    top: list[TrialRecord]  # best first
    importances: dict[str, float]  # most important first


@dataclass(frozen=True)
class ReportSummary:
    """What the terminal shows of a report, and where the report went."""

    metric: str
    mode: str
    top: list[TrialRecord]  # best first
    importances: dict[str, float]  # most important first
    epochs_trained: int
    epochs_budget: int
    compute_saved: float
    location: str  # "report/report.html on run <id>", or the file written
    seconds: float  # the time it took to make and log


def figures(record: SweepRecord, found: dict[str, float]) -> dict[str, float]:
    """The parent run's metrics (see the module)."""
    trained = sum(t.epochs_trained for t in record.trials)
    budget = record.num_samples * record.max_epochs
    out = {
        "epochs_trained": float(trained),
        "epochs_budget": float(budget),
        "compute_saved": 1.0 - trained / budget if budget else 0.0,
    }
    out.update({f"importance_{name}": value for name, value in found.items()})
    return out


def build(record: SweepRecord, out: Path) -> Built:
    """Write ``report.html`` and the PNGs into ``out``."""
    from hypersweep import report_charts  # matplotlib: imported by the commands that draw

    space = parse_search_space(record.search_space, "")
    study = results_study(space, [(t.config, t.result) for t in record.trials], mode=record.mode)
    found = importances(study)
    scored = len(study.trials)
    charts = {
        "curves": report_charts.curves(record),
        "best_so_far": report_charts.best_so_far(record),
        "parallel_coordinates": report_charts.parallel(study, record.metric),
        "importance": report_charts.importance(found, trials=scored, metric=record.metric),
        "schedules": report_charts.schedules(record),  # PBT sweeps only
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, data in charts.items():
        if data is not None:
            (out / f"{name}.png").write_bytes(data)
    top = top_trials(record, TOP_TRIALS)
    metrics = figures(record, found)
    inline = {name: base64.b64encode(data).decode() for name, data in charts.items() if data is not None}
    page = report_html.page(record, metrics=metrics, top=top, importances=found, charts=inline, scored=scored)
    (out / HTML).write_text(page, encoding="utf-8")
    return Built(metrics, top, found)


def top_trials(record: SweepRecord, count: int) -> list[TrialRecord]:
    """The ``count`` best trials by their result, best first."""
    ranked = [t for t in record.trials if math.isfinite(t.result)]
    ranked.sort(key=lambda t: t.result if record.mode == "min" else -t.result)
    return ranked[:count]


def _summary(record: SweepRecord, made: Built, location: str, started: float) -> ReportSummary:
    return ReportSummary(
        metric=record.metric,
        mode=record.mode,
        top=made.top,
        importances=made.importances,
        epochs_trained=int(made.metrics["epochs_trained"]),
        epochs_budget=int(made.metrics["epochs_budget"]),
        compute_saved=made.metrics["compute_saved"],
        location=location,
        seconds=time.monotonic() - started,
    )


def log_to_run(client: Any, record: SweepRecord, started: float) -> ReportSummary:
    """Make the report in a temporary folder and log it to the sweep's parent run."""
    with tempfile.TemporaryDirectory(prefix="hypersweep-report-") as tmp:
        made = build(record, Path(tmp))
        log_report(client, record.parent_run_id, Path(tmp), made.metrics)
    where = f"{REPORT_DIR}/{HTML} on run {record.parent_run_id}"
    return _summary(record, made, where, started)


def import_charts_meanwhile() -> None:
    """Import what drawing takes (matplotlib, Optuna's plots: ~0.7 s of CPU, half the report's
    cost) in a thread of its own, while the sweep waits for Ray to start, not after its last
    trial. Not waited for: an import still running then is finished by the report's own."""
    threading.Thread(target=_import_charts, name="hypersweep-report-imports", daemon=True).start()


def _import_charts() -> None:
    with contextlib.suppress(Exception):  # the report says what failed, when it is made
        import optuna.visualization.matplotlib  # noqa: F401

        import hypersweep.report_charts  # noqa: F401


def at_sweep_end(client: Any, parent_run_id: str, tracking_uri: str) -> tuple[ReportSummary | None, str]:
    """The report of the sweep that just ended, logged to its parent run through the sweep's
    own tracking client: (summary, '') or (None, why not). It never raises: the sweep is done
    and recorded whatever happens here."""
    started = time.monotonic()
    try:
        record = read_record(client, client.get_run(parent_run_id), tracking_uri=tracking_uri)
        return log_to_run(client, record, started), ""
    except Exception as exc:  # a report is a view of the sweep: never its failure
        return None, redact(f"{type(exc).__name__}: {first_line(exc)}")  # shown on the terminal


def rebuild(ref: str, *, tracking_uri: str, out: Path | None = None) -> ReportSummary:
    """``hypersweep report``: the report of sweep ``ref`` (id or name), from MLflow alone, logged
    to its parent run, or written into ``out`` instead. ConfigError for an unknown sweep, an
    unreachable store or an ``out`` that cannot be written."""
    started = time.monotonic()
    if out is not None and (problem := folder_problem(out)) is not None:
        raise ConfigError("", "--out", problem)
    client, parent = open_sweep(ref, tracking_uri=tracking_uri)
    with refused_as_bad_input(tracking_uri):
        record = read_record(client, parent, tracking_uri=tracking_uri)
        if out is None:
            return log_to_run(client, record, started)
    return _summary(record, build(record, out), str(out / HTML), started)
