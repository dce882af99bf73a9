"""Replay tables: full learning curves of many configurations, recorded with hypersweep itself.

``python -m benchmarks.tables record [--only diabetes_mlp,...] [--trials 200]`` runs, for each
shipped sweep, a FIFO random sweep of ``--trials`` configurations from its own search space, every
trial to max_epochs (patience off; the divergence guard stays, so a diverging rate ends where it
diverged, as in any real sweep), into a fresh SQLite store, and exports from MLflow to
``benchmarks/tables/<sweep>.json`` (the format of ``hypersweep.tracking.curves``: per trial its
configuration, metric and val_loss per epoch, epoch times; the sweep's cost per trial).

The search benchmark (``benchmarks.search``) replays these without training anything.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hypersweep.config import load_sweep
from hypersweep.tracking.curves import read_table

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
    """A finished FIFO sweep in MLflow -> a replay table (``hypersweep.tracking.curves``)."""
    spec = load_sweep(sweep_file)
    table = read_table(spec.name, tracking_uri=uri)
    table["sweep"] = sweep_file.name
    return table


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
