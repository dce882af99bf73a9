"""The report's one HTML page: its charts inline (base64 PNG), its styles and its one script in
the page, so the file opens offline, alone or in the MLflow UI's artifact view.

The MLflow UI (3.17) shows an HTML artifact in an ``<iframe sandbox="allow-scripts">`` loaded
from a ``blob:`` URL. No link in such a frame may navigate the UI's page, whatever its target
(Chromium refuses: "sandboxed, but the flag of 'allow-top-navigation' ... is not set"); a
Ctrl+click or middle-click opens it in a new tab all the same. So each run's link gets the UI's
own address from the frame (``document.referrer``: the page that made the blob) and the page
says to Ctrl+click. Opened as a file, the links go to the tracking server's UI, or to
``hypersweep ui``'s default address for a local store.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from hypersweep.tracking.report_data import SweepRecord, TrialRecord

DEFAULT_UI = "http://127.0.0.1:5000/"  # where `hypersweep ui` serves a local store by default

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1060px; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; } h2 { font-size: 1.1em; margin: 1.6em 0 0.3em; }
.facts { line-height: 1.6; } .how { color: #555; font-size: 0.92em; margin-top: 0.2em; }
img.chart { max-width: 100%; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { padding: 3px 8px; text-align: right; }
th { border-bottom: 1px solid #999; } tr:nth-child(even) td { background: #f4f4f4; }
td.name, th.name { text-align: left; } .note { color: #555; font-size: 0.9em; }
"""

# Inside the MLflow UI (a sandboxed blob: frame) the UI's address is the page that made the blob.
_SCRIPT = """
(function () {
  if (location.protocol !== "blob:") return;
  var root = document.referrer || new URL(location.href.slice(5)).origin + "/";
  root = root.slice(0, root.lastIndexOf("/") + 1);
  document.querySelectorAll("a.run").forEach(function (a) {
    a.href = root + a.getAttribute("data-run");
  });
  document.getElementById("ui-note").hidden = false;
})();
"""

# (section id, title, how to read it)
_SECTIONS = [
    (
        "curves",
        "Learning curves",
        "Each line is a trial's {metric} per epoch, coloured by how it ended. Dashed lines are the "
        "epochs at which the scheduler compared the trials (ASHA's rungs): a trial that ends on one "
        "scored worse there than most of the trials that reached it.",
    ),
    (
        "best_so_far",
        "Best so far",
        "The best {metric} found so far against the epochs all trials trained together (left) and "
        "against the time since the sweep started (right). A curve still falling at its end says "
        "more trials would likely have found better; a long flat tail says the search had settled.",
    ),
    (
        "parallel_coordinates",
        "Parameters against the result",
        "One line per trial through the values of its parameters, coloured by its result (darker "
        "is better); parameters that only some trials have (conditional ones) show those trials. "
        "Where the best lines bunch on an axis, that range is the one to keep.",
    ),
    (
        "importance",
        "Parameter importance",
        "How much of the spread of the trials' results each parameter explains (fANOVA over the "
        "trials with a finite result; trials the scheduler stopped count with their result when "
        "stopped). Narrow the important ones in a follow-up sweep; the unimportant ones can be fixed.",
    ),
]


def page(
    record: SweepRecord,
    *,
    metrics: dict[str, float],
    top: list[TrialRecord],
    importances: dict[str, float],
    charts: dict[str, str],
    scored: int,
) -> str:
    """The whole page. ``charts``: section id -> base64 PNG (a missing one says why);
    ``scored``: the trials with a finite result (what importance was computed on)."""
    parts = [_head(record), _facts(record, metrics, top, importances)]
    for key, title, how in _SECTIONS:
        parts.append(_section(key, title, how.format(metric=record.metric), charts.get(key), scored))
    if "schedules" in charts or record.lineage:
        parts.append(_lineage(record, charts.get("schedules")))
    parts.append(_table(record, top))
    parts.append(
        f'<p class="note">Made from MLflow by hypersweep, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. '
        "The same charts are PNG files beside this page.</p>"
        f"<script>{_SCRIPT}</script></body></html>"
    )
    return "\n".join(parts)


def _head(record: SweepRecord) -> str:
    title = html.escape(f"sweep {record.sweep_id}")
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body>\n<h1>Sweep {html.escape(record.sweep_id)}</h1>"
    )


def _facts(
    record: SweepRecord, metrics: dict[str, float], top: list[TrialRecord], importances: dict[str, float]
) -> str:
    counts = Counter(t.status for t in record.trials)
    by_status = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    best = f"best {_number(top[0].result)} (trial {html.escape(top[0].name)})" if top else "no finite result"
    important = ", ".join(f"{html.escape(k)} {v:.0%}" for k, v in importances.items()) or (
        "too few trials with a result to tell"
    )
    lines = [
        f"metric <b>{html.escape(record.metric)}</b> ({record.mode}) · {len(record.trials)} trials: "
        f"{by_status} · {best}",
        f"epochs trained: {metrics['epochs_trained']:.0f} of a budget of {metrics['epochs_budget']:.0f} "
        f"({record.num_samples} trials x {record.max_epochs} epochs): "
        f"<b>{metrics['compute_saved']:.0%} of the compute saved</b> by stopping trials early",
        f"importance: {important}",
    ]
    return '<p class="facts" id="facts">' + "<br>".join(lines) + "</p>"


def _section(key: str, title: str, how: str, chart: str | None, scored: int) -> str:
    if chart is None:
        body = f'<p class="note">Not drawn: only {scored} trial(s) with a finite result.</p>'
    else:
        source = f"data:image/png;base64,{chart}"
        body = f'<img class="chart" id="chart-{key}" alt="{html.escape(title)}" src="{source}">'
    return f'<section id="{key}"><h2>{title}</h2>{body}<p class="how">{html.escape(how)}</p></section>'


def _lineage(record: SweepRecord, chart: str | None) -> str:
    """PBT: the schedules chart and one row per exploit: who copied whom, when, with what."""
    names = {t.trial_id: t.name for t in record.trials}
    head = "".join(f"<th>{h}</th>" for h in ("epoch", "member", "copied", "from epoch", "changes"))
    rows = []
    for e in record.lineage:
        changes = ", ".join(
            f"{html.escape(k)} {_value(e['old'].get(k))} → {_value(v)}" for k, v in e["new"].items()
        )
        who, donor = (
            names.get(e["trial_id"], e["trial_id"]),
            names.get(e["donor_trial_id"], e["donor_trial_id"]),
        )
        rows.append(
            f"<tr><td>{e['epoch']}</td><td>{html.escape(who)}</td><td>{html.escape(donor)}</td>"
            f"<td>{e['from_epoch']}</td><td>{changes}</td></tr>"
        )
    table = f'<table id="lineage"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    image = f'<img class="chart" id="chart-schedules" alt="schedules" src="data:image/png;base64,{chart}">'
    how = (
        "Population-based training: each line is a member's value of a key it changed, per epoch; a "
        "dotted line is an exploit, from the donor's value at the epoch it was copied to the "
        "member's first value after it. The table lists every exploit (old → new values)."
    )
    body = (image if chart else "") + (table if rows else '<p class="note">No member copied another.</p>')
    title = "<h2>Schedules and lineage</h2>"
    return f'<section id="lineage-section">{title}{body}<p class="how">{how}</p></section>'


def _table(record: SweepRecord, top: list[TrialRecord]) -> str:
    names = [n for n, entry in record.search_space.items() if isinstance(entry, dict) and "type" in entry]
    head = ["#", "trial", record.metric, "status", "epochs", *names, "MLflow run"]
    cells = "".join(f'<th class="{"name" if h == "trial" else ""}">{html.escape(h)}</th>' for h in head)
    rows = [_row(i, trial, names, record) for i, trial in enumerate(top, start=1)]
    root = record.ui_root or DEFAULT_UI
    note = (
        '<p class="note" id="ui-note" hidden>The MLflow UI shows this page in a sandbox that no link '
        "may leave: Ctrl+click (or middle-click) a run to open it in a new tab.</p>"
    )
    where = "" if record.ui_root else f" Opened as a file, the links assume the UI at {html.escape(root)}."
    return (
        f'<section id="top"><h2>Top {len(top)} trials</h2><table id="top-trials"><thead><tr>{cells}'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>{note}"
        f'<p class="note">Each row links to the trial\'s run in the MLflow UI.{where}</p></section>'
    )


def _row(rank: int, trial: TrialRecord, names: list[str], record: SweepRecord) -> str:
    path = f"#/experiments/{record.experiment_id}/runs/{trial.run_id}"
    link = (
        f'<a class="run" target="_top" data-run="{html.escape(path)}" '
        f'href="{html.escape((record.ui_root or DEFAULT_UI) + path)}">{html.escape(trial.run_id[:8])}</a>'
    )
    values = [_value(trial.config.get(n)) for n in names]
    cells = [str(rank), trial.name, _number(trial.result), trial.status, str(trial.epochs_trained), *values]
    tds = "".join(
        f'<td class="{"name" if i == 1 else ""}">{html.escape(c)}</td>' for i, c in enumerate(cells)
    )
    return f"<tr>{tds}<td>{link}</td></tr>"


def _value(value: Any) -> str:
    if value is None:
        return ""  # a conditional parameter this trial did not have
    return _number(value) if isinstance(value, float) else str(value)


def _number(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)
