"""The compact live view of a running sweep (rich), fed by the tuning loop. No Ray, no MLflow."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from hypersweep import scoring
from hypersweep.redaction import redact_settings


class Progress:
    """Counts trials by state and keeps the best value; one status line on a terminal.

    Off a terminal (CI, pipes) it prints one line per finished trial instead of redrawing.
    """

    def __init__(self, *, total: int, metric: str, mode: str, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.total, self.metric, self.mode = total, metric, mode
        self.running: set[str] = set()
        self.finished: Counter[str] = Counter()
        self.best: tuple[float, str] | None = None
        self.started = time.monotonic()
        self._live: Live | None = None

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            self._live = Live(self._line(), console=self.console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None
        if exc[0] is None or self.running or self.finished:
            # Bad input stopped the sweep before any trial: its one error line stands alone.
            self.console.print(self._line())

    def trial_started(self, trial_id: str) -> None:
        self.running.add(trial_id)
        self._refresh()

    def trial_result(
        self, trial_id: str, result: Mapping[str, Any], *, epochs: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        """One report: ``epochs`` are the epochs it carries (the best may be any of them)."""
        for epoch in epochs or [result]:
            value = epoch.get(self.metric)
            if epoch.get("stop_reason") == "diverged" or not isinstance(value, int | float):
                continue
            if math.isfinite(value) and self._better(float(value), trial_id):
                self.best = (float(value), trial_id)
        self._refresh()

    def trial_finished(self, trial_id: str, *, status: str, epochs: int) -> None:
        self.running.discard(trial_id)
        self.finished[status] += 1
        if self._live is None:
            done = sum(self.finished.values())
            self.console.print(f"[{done}/{self.total}] {trial_id}: {status} after {epochs} epoch(s)")
        self._refresh()

    def note(self, line: str) -> None:
        """A line of its own above the status line (what the sweep starts with)."""
        self.console.print(line)

    def trial_retried(self, trial_id: str, error: str, *, checkpointed: bool = True) -> None:
        where = "its last checkpoint" if checkpointed else "the start (no checkpoint yet)"
        self.console.print(f"{trial_id}: {error}; retrying from {where}")

    def _better(self, value: float, trial_id: str) -> bool:
        if self.best is None:
            return True
        return scoring.rank(value, trial_id, self.mode) < scoring.rank(*self.best, self.mode)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._line())

    def _line(self) -> Text:
        done = sum(self.finished.values())
        parts = [f"trials {done}/{self.total} finished", f"{len(self.running)} running"]
        parts += [f"{n} {status}" for status, n in sorted(self.finished.items())]
        if self.best is not None:
            parts.append(f"best {self.metric} {self.best[0]:.4g} ({self.best[1]})")
        parts.append(f"{time.monotonic() - self.started:.0f}s")
        return Text(" · ".join(parts))


def replay_table(table: Mapping[str, Any], outcomes: Sequence[Any], *, seeds: int) -> Any:
    """``hypersweep replay``'s table: one row per setting, medians over ``seeds`` replays."""
    from rich.table import Table

    metric = table["metric"]
    view = Table(title=f"replays of {table['sweep']}: median of {seeds} seeds each", title_justify="left")
    for column in ("scheduler", "grace", "factor", "search", f"best {metric}", "epochs", "sim. time"):
        view.add_column(
            column, justify="left" if column in ("scheduler", "search") else "right", no_wrap=True
        )
    for o in outcomes:
        s = o.setting.scheduler
        numbers = [f"{o.best:.4g}", f"{o.epochs:.0f}", f"{o.seconds:.0f} s"]
        if o.guessed:  # never a guess: say what is missing instead
            numbers = [f"not exact: {o.guessed}/{seeds}", "", ""]
        view.add_row(
            s.type,
            "" if s.type == "fifo" else str(s.grace_period),
            f"{s.reduction_factor:g}" if s.type in ("asha", "hyperband") else "",
            o.setting.search,
            *numbers,
        )
    return view


def print_report(out: Console, summary: Any, *, error: str = "") -> None:
    """The end of a sweep's summary (``report.ReportSummary``): its best trials, the parameters
    that mattered most, and the compute early stopping saved; or why there is no report. Off a
    terminal (a log) the table is not wrapped to 80 columns: a trial's config stays on its line."""
    if error:
        out.print(f"[yellow]warning: no sweep report: {escape(error)}[/]")
    if summary is None:
        return
    from rich import box
    from rich.table import Table

    top = summary.top[:5]
    view = Table(
        title=f"top {len(top)} trials by {summary.metric}", title_justify="left", box=box.SIMPLE_HEAD
    )
    for column in ("#", "trial", summary.metric, "status", "epochs", "config"):
        view.add_column(column, justify="left" if column in ("trial", "status", "config") else "right")
    for rank, trial in enumerate(top, start=1):
        config = "  ".join(f"{k}={_brief(v)}" for k, v in sorted(trial.config.items()))
        view.add_row(
            str(rank), trial.name, f"{trial.result:.5g}", trial.status, str(trial.epochs_trained), config
        )
    (out if out.is_terminal else Console(file=out.file, width=200, highlight=False)).print(view)
    first = list(summary.importances.items())[:3]
    important = ", ".join(f"{name} {share:.0%}" for name, share in first) or "too few trials with a result"
    out.print(f"most important parameters: {important}")
    out.print(
        f"compute saved by stopping early: {summary.compute_saved:.0%} "
        f"({summary.epochs_trained} of {summary.epochs_budget} epochs trained)"
    )
    out.print(f"report: {summary.location} ({summary.seconds:.1f} s)")


def _brief(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_outcome(out: Console, spec: Any, outcome: Any) -> None:
    """The summary of a finished sweep (``tuning.SweepOutcome``), as `run` and `resume` print it."""

    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome.statuses.items()))
    out.print(
        f"trials: {sum(outcome.statuses.values())} ({counts})  wall {outcome.wall_seconds:.1f} s, "
        f"trial time {outcome.trial_seconds:.1f} s"
    )
    if outcome.cpu_fallbacks:
        out.print(
            f"[yellow]warning: {outcome.cpu_fallbacks} trial(s) asked for a GPU, found no CUDA device and"
            " trained on the CPU (tag hypersweep.device=cpu-fallback)[/]"
        )
    if outcome.first_error:
        out.print(f"[red]first trial error:[/] {outcome.first_error}")
    if outcome.tune_log:  # Tune's own warnings and errors, kept off the terminal
        out.print(f"[yellow]{escape(outcome.tune_log)}[/]")
    if outcome.dropped:
        out.print(
            f"[yellow]warning: MLflow refused {outcome.dropped} write(s), each named in its run's tag "
            f"hypersweep.dropped; the first: {escape(outcome.first_dropped)}[/]"
        )
    if outcome.best is None:
        out.print("[red]no trial finished with a valid result[/]")
    else:
        best = outcome.best
        out.print(f"best trial [bold]{best.trial_id}[/]: {spec.metric} = {best.value:.5g}")
        shown = redact_settings(best.config)  # the sweep's fixed values ride along: a token
        out.print("  config: " + "  ".join(f"{k}={_short(v)}" for k, v in sorted(shown.items())))
        out.print(f"  MLflow run: {best.run_id}")
    print_report(out, outcome.report, error=outcome.report_error)
    out.print(f"sweep id: {outcome.sweep_id}  parent run: {outcome.parent_run_id}")
    out.print(f"trial state: {outcome.storage_path}")
    out.print(f"compare the runs: hypersweep ui --tracking-uri {outcome.tracking_uri}")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
