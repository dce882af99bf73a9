"""Population-based training against ASHA + TPE on one experiment: ``python -m benchmarks.pbt``
(``make bench-pbt``).

Real sweeps, not replays: PBT changes a trial's hyperparameters while it trains, which no
recorded table holds. Both contenders run ``experiments/digits_cnn.yaml`` through the CLI into a
fresh SQLite store, per seed (the searcher's or the population's; the data split and the weights'
initialisation stay those of ``training.seed`` 0 for all), on about the same epoch budget:

* pbt: 8 members x 12 epochs (96 epochs), perturbation every 3 epochs, the default mutations
  (lr and dropout), the default quantile (0.25) and resampling (0.25), no patience;
* asha+tpe: the platform's default search and the sweep file's ASHA (grace period 2, reduction
  factor 3, patience 4), 18 trials of up to 12 epochs: ASHA trains 4 to 7 epochs per trial
  (TPE and patience vary it), so the table gives the epochs each contender used.

Both optimise val_loss (the file's val_accuracy saturates on 360 validation digits: ties in
steps of 1/360). Measured from what MLflow holds afterwards: the best trial's val_loss (the
parent's ``best_val_loss``), the epochs the trials logged (a PBT member that copies a donor that is
behind trains epochs again that its run does not log twice: its true count is a little higher),
and the sweep's process time. Results: ``benchmarks/results/pbt.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.experiments import ROOT, run_one

SWEEP = ROOT / "experiments" / "digits_cnn.yaml"
CONTENDERS: dict[str, list[str]] = {
    "pbt": [
        *("--scheduler", "pbt", "--num-samples", "8", "--max-epochs", "12"),
        *("--set", "scheduler.perturbation_interval=3", "--set", "training.patience=null"),
    ],
    "asha+tpe": ["--scheduler", "asha", "--search", "optuna", "--num-samples", "18", "--max-epochs", "12"],
}
# val_loss, not the file's val_accuracy: on 360 validation digits accuracy saturates near 0.98,
# where the contenders tie in steps of 1/360.
SHARED = ["--set", "metric=val_loss", "--set", "mode=min", "--set", "training.seed=0"]
RESULTS = ROOT / "benchmarks" / "results"


def run(seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    for seed in seeds:
        for name, args in CONTENDERS.items():
            with tempfile.TemporaryDirectory(prefix="bench-pbt-") as folder:
                extra = [*args, *SHARED, "--seed", str(seed)]
                extra += ["--storage", str(Path(folder) / "runs")]
                row = run_one(SWEEP, extra, Path(folder))
            rows.append({"contender": name, "seed": seed, **row})
            epochs, seconds = row["epochs_trained"], row["process_s"]
            print(f"seed {seed} {name}: best {row['best']:.4f}, {epochs} epochs, {seconds} s")
    return rows


def markdown(rows: list[dict[str, Any]], seconds: float, command: str) -> str:
    lines = [
        f"Made by `{command}` in {seconds:.0f} s on "
        f"{time.strftime('%Y-%m-%d %H:%M')}: experiments/digits_cnn.yaml, 2 CPU cores, one run per "
        "contender and seed (see the module's docstring for the settings).",
        "",
        "| contender | seed | best val_loss | trials | epochs logged | process s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['contender']} | {r['seed']} | {r['best']:.4f} | {r['trials']} | {r['epochs_trained']} "
            f"| {r['process_s']} |"
        )
    lines += ["", "| contender | median best val_loss | median epochs logged | median process s |"]
    lines.append("|---|---:|---:|---:|")
    for name in CONTENDERS:
        mine = [r for r in rows if r["contender"] == name]
        best = statistics.median(r["best"] for r in mine)
        epochs = statistics.median(r["epochs_trained"] for r in mine)
        wall = statistics.median(r["process_s"] for r in mine)
        lines.append(f"| {name} | {best:.4f} | {epochs:g} | {wall:g} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", choices=sorted(CONTENDERS), help="run one contender")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.only:
        for name in [n for n in CONTENDERS if n != args.only]:
            del CONTENDERS[name]
    rows = run(args.seeds)
    seconds = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pbt.json").write_text(json.dumps(rows, indent=1) + "\n")
    command = " ".join(["python -m benchmarks.pbt", *(argv if argv is not None else sys.argv[1:])])
    (args.out / "pbt.md").write_text(markdown(rows, seconds, command))
    print(f"wrote {args.out / 'pbt.md'}")


if __name__ == "__main__":
    main()
