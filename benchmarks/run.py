"""hypersweep's performance benchmark: ``python -m benchmarks.run`` (or ``make bench``).

Everything is measured side by side in one run on the same machine, each contender in its own
process, and reported as ratios, so that a shared, noisy machine moves all numbers together:

1. N trials x E epochs of the breast-cancer MLP, FIFO, 2 at a time, the same configurations for
   every contender: (a) ideal: a plain 2-process pool, data loaded once per process; (b) hypersweep;
   (c) a plain Ray Tune + OptunaSearch script on defaults; (d) Optuna in-process with n_jobs=2.
   Also hypersweep and the pool at 3N trials for the marginal cost per trial, and hypersweep with
   tracking off at 3N, where the recorder's cost per trial shows through the start-up.
2. Platform time per trial of a trivial trainable at 100 and 1,000 trials, and the driver's peak
   memory at 1,000 trials.
3. MLflow: one request per value vs hypersweep's batched recorder, same values, same store.

Results: benchmarks/results/latest.json and latest.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.mlflow_logging import compare_logging

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def contender(name: str, trials: int, epochs: int) -> dict[str, Any]:
    """Run one contender in a fresh process; returns its JSON line."""
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.contenders",
            name,
            "--trials",
            str(trials),
            "--epochs",
            str(epochs),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("BENCH "))
    result["process_s"] = time.perf_counter() - started
    print(f"  {name:22s} {trials:5d} trials x {epochs:2d} epochs: {result['wall_s']:7.1f} s", flush=True)
    return result


# Measured in interleaved rounds, so that a burst of load from elsewhere on a shared machine
# falls on every contender alike; each is reported by its median round.
REPEATED = (
    ("ideal", "ideal", False),
    ("hypersweep", "hypersweep", False),
    ("ideal_big", "ideal", True),
    ("hypersweep_big", "hypersweep", True),
    # Tracking is compared at 3N: its cost is per trial, and at N the start-up (the same with
    # and without it) and the noise hide it.
    ("hypersweep_untracked_big", "hypersweep_untracked", True),
)
MEDIAN_KEYS = ("wall_s", "sweep_s", "trial_s", "process_s", "peak_rss_mb")


def measure(
    trials: int, epochs: int, big: int, trivial: tuple[int, int], log_values: int, *, rounds: int
) -> dict[str, Any]:
    print(f"workload: {trials} trials x {epochs} epochs, FIFO, 2 at a time, {rounds} round(s)", flush=True)
    samples: dict[str, list[dict[str, Any]]] = {key: [] for key, _, _ in REPEATED}
    for _ in range(rounds):
        for key, name, is_big in REPEATED:
            samples[key].append(contender(name, big if is_big else trials, epochs))
    runs: dict[str, Any] = {key: median_run(found) for key, found in samples.items()}
    for name in ("ray_tune_defaults", "optuna_threads"):
        runs[name] = contender(name, trials, epochs)
    for n in trivial:
        runs[f"trivial_{n}"] = contender("hypersweep_trivial", n, 1)
    runs["mlflow_logging"] = compare_logging(log_values)
    return {
        "trials": trials,
        "big": big,
        "epochs": epochs,
        "trivial": list(trivial),
        "rounds": rounds,
        "runs": runs,
    }


def median_run(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """One contender's rounds as one result: the median of each time, every round's wall and
    sweep kept, and the worst of the checks (trials finished, same configurations)."""
    result = dict(samples[0])
    for key in MEDIAN_KEYS:
        if key in result:
            result[key] = statistics.median(s[key] for s in samples)
    if "finished" in result:
        result["finished"] = min(s["finished"] for s in samples)
    if result.get("same_configs") is not None:
        result["same_configs"] = all(s["same_configs"] for s in samples)
    result["rounds_wall_s"] = [s["wall_s"] for s in samples]
    result["rounds_sweep_s"] = [s["sweep_s"] for s in samples]
    return result


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    r = data["runs"]
    ideal, hs = r["ideal"]["wall_s"], r["hypersweep"]
    startup = hs["wall_s"] - hs["sweep_s"]
    small, big = data["trivial"]
    per_trial = {n: 1000 * r[f"trivial_{n}"]["sweep_s"] / n for n in (small, big)}
    return {
        "hypersweep / ideal (whole run)": hs["wall_s"] / ideal,
        "hypersweep sweep / ideal (start-up excluded)": hs["sweep_s"] / ideal,
        "marginal cost per trial, hypersweep / ideal": (r["hypersweep_big"]["sweep_s"] - hs["sweep_s"])
        / (r["ideal_big"]["wall_s"] - ideal),
        f"tracking on / off (sweep, {data['big']} trials)": r["hypersweep_big"]["sweep_s"]
        / r["hypersweep_untracked_big"]["sweep_s"],
        **per_round(r),
        "ray tune defaults / ideal": r["ray_tune_defaults"]["wall_s"] / ideal,
        "optuna n_jobs=2 / ideal": r["optuna_threads"]["wall_s"] / ideal,
        "hypersweep start-up (s)": startup,
        f"platform ms per trial at {small} trials": per_trial[small],
        f"platform ms per trial at {big} trials": per_trial[big],
        # Flat means the 900 trials between the two runs cost what a trial costs on average.
        f"platform ms per trial, marginal from {small} to {big}": 1000
        * (r[f"trivial_{big}"]["sweep_s"] - r[f"trivial_{small}"]["sweep_s"])
        / (big - small),
        f"driver peak RSS at {big} trials (MB)": r[f"trivial_{big}"]["peak_rss_mb"],
        "MLflow per-value / hypersweep batched": r["mlflow_logging"]["ratio"],
        "same configurations as ideal": hs.get("same_configs"),
    }


def per_round(r: dict[str, Any]) -> dict[str, str]:
    """The two noisiest ratios within each round: a round's contenders share its load."""
    keys = ("hypersweep", "hypersweep_big", "hypersweep_untracked_big")
    hs, hb, off = (r[k]["rounds_sweep_s"] for k in keys)
    ideal, ib = (r[k]["rounds_wall_s"] for k in ("ideal", "ideal_big"))
    marginal = [(b - a) / (d - c) for a, b, c, d in zip(hs, hb, ideal, ib, strict=True)]
    on_off = [a / b for a, b in zip(hb, off, strict=True)]
    return {
        "marginal cost per trial, each round": ", ".join(f"{x:.2f}" for x in marginal),
        "tracking on / off (sweep), each round": ", ".join(f"{x:.2f}" for x in on_off),
    }


def markdown(data: dict[str, Any], summary: dict[str, Any]) -> str:
    r = data["runs"]
    n, big, e = data["trials"], data["big"], data["epochs"]
    rows = [
        ("ideal: 2-process pool", r["ideal"], n),
        ("hypersweep", r["hypersweep"], n),
        ("Ray Tune + OptunaSearch defaults", r["ray_tune_defaults"], n),
        ("Optuna in-process, n_jobs=2", r["optuna_threads"], n),
        ("ideal: 2-process pool", r["ideal_big"], big),
        ("hypersweep", r["hypersweep_big"], big),
        ("hypersweep, tracking off", r["hypersweep_untracked_big"], big),
    ]
    ideal = r["ideal"]["wall_s"]
    lines = [
        f"# hypersweep benchmark ({time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, "
        f"{platform.processor() or platform.machine()})",
        "",
        f"Breast-cancer MLP, {e} epochs per trial, FIFO, 2 trials at a time, same configurations."
        f" Pools and hypersweep: the median of {data['rounds']} interleaved rounds.",
        "",
        "| contender | trials | wall (s) | sweep, start-up excluded (s) | wall / ideal | rounds' walls (s) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, run, trials in rows:
        base = ideal if trials == n else r["ideal_big"]["wall_s"]
        ratio = run["wall_s"] / base
        walls = ", ".join(f"{w:.1f}" for w in run.get("rounds_wall_s", [run["wall_s"]]))
        lines.append(
            f"| {label} | {trials} | {run['wall_s']:.1f} | {run['sweep_s']:.1f} | {ratio:.2f} | {walls} |"
        )
    lines += ["", "| measure | value |", "|---|---:|"]
    for key, value in summary.items():
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {text} |")
    log = r["mlflow_logging"]
    lines += [
        "",
        f"MLflow: {log['values']} metric values to a SQLite store: one request per value "
        f"{log['per_value_s']:.1f} s, hypersweep's batched recorder {log['batched_s']:.2f} s.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=20)
    # Two rounds keep the whole command (install included) near 15 minutes on 2 cores.
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the pools and hypersweep")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        data = measure(2, 1, 4, (4, 8), 160, rounds=1)
    else:
        # 3N, not 2N: the marginal cost is a difference of two walls, each a few tenths of a
        # second noisy; twice the trials between them halve the noise in the ratio.
        data = measure(args.trials, args.epochs, 3 * args.trials, (100, 1000), 2000, rounds=args.rounds)
    summary = summarize(data)
    report = markdown(data, summary)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "quick" if args.quick else "latest"
    (args.out / f"{stem}.json").write_text(json.dumps({**data, "summary": summary}, indent=2))
    (args.out / f"{stem}.md").write_text(report)
    print("\n" + report)


if __name__ == "__main__":
    main()
