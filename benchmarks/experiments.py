"""The shipped sweeps, each run as a user would: ``python -m benchmarks.experiments``
(``make bench-experiments``). Their table of results in docs/experiments.md comes from here.

Each sweep file runs with its own settings (``--set``/flags may shorten them) through the real CLI
into a fresh SQLite store, and the result is read back from MLflow: the best trial's metric (the
parent's ``best_<metric>``), how the trials ended, the epochs trained against the budget, and the
sweep's wall time. Results: benchmarks/results/experiments.{md,json} (``--out`` another folder).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "experiments").glob("*.yaml")) + sorted((ROOT / "examples").glob("*/*.yaml"))


def run_one(path: Path, extra: list[str], folder: Path) -> dict[str, Any]:
    """Run one sweep file through the CLI in ``folder``; what MLflow holds of it afterwards."""
    uri = f"sqlite:///{folder}/mlflow.db"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "hypersweep", "run", str(path), "--tracking-uri", uri, *extra],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{path.name} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return {"sweep": path.name, "process_s": round(wall, 1), **read_back(uri)}


def read_back(uri: str) -> dict[str, Any]:
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=10_000)
    (parent,) = [r for r in runs if r.data.tags.get("hypersweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    (metric,) = [k.removeprefix("best_") for k in parent.data.metrics if k.startswith("best_")]
    epochs = sum(len(client.get_metric_history(c.info.run_id, "train_loss")) for c in children)
    params = parent.data.params
    ends = Counter(c.data.tags.get("hypersweep.stop_reason", "?") for c in children)
    return {
        "metric": metric,
        "mode": params.get("mode", "min"),
        "best": parent.data.metrics[f"best_{metric}"],
        "trials": len(children),
        "stop_reasons": dict(sorted(ends.items())),
        "epochs_trained": epochs,
        "epochs_budget": int(params["num_samples"]) * int(params["max_epochs"]),
        "sweep_s": round(
            (parent.info.end_time - parent.info.start_time) / 1000 if parent.info.end_time else 0.0, 1
        ),
    }


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        f"Made by `{command}` on {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "| sweep | best | trials | ended by | epochs trained / budget | sweep (s) | process (s) |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        ends = ", ".join(f"{k} {v}" for k, v in r["stop_reasons"].items())
        lines.append(
            f"| `{r['sweep']}` | {r['metric']} {r['best']:.4g} | {r['trials']} | {ends} "
            f"| {r['epochs_trained']} / {r['epochs_budget']} | {r['sweep_s']} | {r['process_s']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated sweep file stems (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("extra", nargs="*", help="passed to every `hypersweep run` (after --)")
    args = parser.parse_args(argv)
    chosen = [p for p in SWEEPS if not args.only or p.stem in args.only.split(",")]
    rows = []
    for path in chosen:
        with tempfile.TemporaryDirectory(prefix="hypersweep-exp-") as folder:
            row = run_one(path, list(args.extra), Path(folder))
        print(f"  {row['sweep']:24s} {row['metric']} {row['best']:.4g} ({row['sweep_s']} s)", flush=True)
        rows.append(row)
    command = "python -m benchmarks.experiments " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "experiments.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "experiments.md").write_text(markdown(rows, command.strip()))


if __name__ == "__main__":
    main()
