"""Replay tables: full learning curves of many configurations, recorded with hypersweep itself.

``python -m benchmarks.tables record [--only diabetes_mlp,...] [--trials 200]`` runs, for each
shipped sweep, a FIFO random sweep of ``--trials`` configurations from its own search space, every
trial to max_epochs (patience off; the divergence guard stays, so a diverging rate ends where it
diverged, as in any real sweep), into a fresh SQLite store, and exports from MLflow to
``benchmarks/tables/<sweep>.json``:

* per trial: its configuration (typed), the sweep's metric and val_loss (what patience watches)
  per epoch, each epoch's wall time
  (from the epoch timestamps MLflow keeps) and whether it diverged;
* per table: the metric, mode, max_epochs, the search space, and the per-trial overhead of the
  real sweep (a trial's start to its first epoch's end, less that epoch's own time; median).

The search benchmark (``benchmarks.search``) replays these without training anything.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from hypersweep.config import load_sweep

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "benchmarks" / "tables"
SWEEPS = {p.stem: p for p in sorted((ROOT / "experiments").glob("*.yaml"))}
DEFAULT_TABLES = ("breast_cancer_mlp", "diabetes_mlp", "sunspots_rnn", "digits_cnn")


def record(name: str, trials: int, out: Path = TABLES) -> Path:
    """Run the recording sweep of one shipped sweep file and export its table."""
    path = SWEEPS[name]
    with tempfile.TemporaryDirectory(prefix="hypersweep-table-") as folder:
        uri = f"sqlite:///{folder}/mlflow.db"
        command = [
            *(sys.executable, "-m", "hypersweep", "run", str(path), "--tracking-uri", uri),
            *("--storage", f"{folder}/runs", "--num-samples", str(trials)),
            *("--scheduler", "fifo", "--search", "random", "--seed", "0"),
            *("--set", "training.patience=null", "--set", "training.seed=0"),
        ]
        started = time.perf_counter()
        proc = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{name}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
        table = export(uri, path)
    table["recorded"] = {
        "command": "python -m benchmarks.tables record --only " + name + f" --trials {trials}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}.json"
    target.write_text(json.dumps(table, separators=(",", ":")) + "\n")
    return target


def export(uri: str, sweep_file: Path) -> dict[str, Any]:
    """A finished FIFO sweep in MLflow -> a replay table (see the module's docstring)."""
    spec = load_sweep(sweep_file)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(spec.name)
    assert experiment is not None, f"no experiment {spec.name} in {uri}"
    found = client.search_runs([experiment.experiment_id], max_results=10_000)
    runs = [r for r in found if r.data.tags.get("hypersweep.role") == "trial"]
    (parent,) = [r for r in found if r.data.tags.get("hypersweep.role") == "sweep"]
    rows: list[dict[str, Any]] = []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        history = sorted(client.get_metric_history(run.info.run_id, spec.metric), key=lambda m: m.step)
        losses = sorted(client.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)
        stamps = [run.info.start_time] + [m.timestamp for m in losses]
        times = [max(0.0, (b - a) / 1000) for a, b in itertools.pairwise(stamps)]
        if len(times) > 1:
            times[0] = statistics.median(times[1:])  # the first epoch's own time, start-up apart
        diverged = run.data.tags.get("hypersweep.status") == "diverged"
        trained = range(1, len(losses) - diverged + 1)  # the diverged epoch has no result (see scoring)
        by_step = {m.step: m.value for m in history}
        val_loss = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_loss")}
        rows.append(
            {
                "config": {k: _typed(v) for k, v in run.data.params.items() if k in spec.search_space.names},
                "curve": [by_step.get(step) for step in trained],
                "val_loss": [val_loss.get(step) for step in trained],  # what patience watches
                "times": [round(t, 4) for t in times],
                "diverged": diverged,
            }
        )
    return {
        "sweep": sweep_file.name,
        "metric": spec.metric,
        "mode": spec.mode,
        "max_epochs": spec.max_epochs,
        "search_space": spec.search_space.as_dict(),
        **_overhead(parent, runs, rows),
        "trials": rows,
    }


def _overhead(parent: Any, runs: list[Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The platform's cost per trial in the real sweep: its wall time times the trials it ran at
    once, less the epochs' own times, per trial (start-up, scheduling, reports, checkpoints)."""
    edges = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs])
    workers = max(itertools.accumulate(step for _, step in edges))
    wall = (max(r.info.end_time for r in runs) - parent.info.start_time) / 1000
    trained = sum(sum(row["times"]) for row in rows)
    return {"workers": workers, "overhead_s": round(max(0.0, (wall * workers - trained) / len(rows)), 4)}


def _typed(text: str) -> Any:
    """A param as MLflow holds it (strings as they are, other values as JSON) -> its value."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def load_table(name: str, folder: Path = TABLES) -> dict[str, Any]:
    table: dict[str, Any] = json.loads((folder / f"{name}.json").read_text())
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Record the search benchmark's replay tables.")
    parser.add_argument("command", choices=["record"])
    parser.add_argument("--only", default=",".join(DEFAULT_TABLES), help="comma-separated sweep stems")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--out", type=Path, default=TABLES)
    args = parser.parse_args(argv)
    for name in args.only.split(","):
        target = record(name, args.trials, args.out)
        table = load_table(name, args.out)
        print(
            f"  {name}: {len(table['trials'])} trials -> {target} ({table['recorded']['wall_s']} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
