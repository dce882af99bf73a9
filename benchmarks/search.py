"""What the search buys: ``python -m benchmarks.search`` (``make bench-search``).

Every contender is replayed (``hypersweep.replay``: Ray's schedulers and the platform's searcher,
simulated time) on the recorded tables in ``benchmarks/tables/`` (``benchmarks.tables record``
makes them), ``--seeds`` times at each budget of ``--budgets`` trials, 2 trials at once as on
this machine. The schedulers use each sweep file's own settings (grace period, reduction factor,
patience).

Measures (``benchmarks/results/search.{md,json,png}``):

* *regret* of a sweep = how far its best result is from the table's best, relative to the
  table's best: ``|best - table best| / |table best|``; "within 1%" means regret <= 0.01;
* at each budget: the interquartile mean (IQM) of the regret over seeds, with a 95% bootstrap
  interval, and the success rate (seeds within 1% and within 5%);
* anytime, at the largest budget: simulated seconds and epochs to reach within 1% / 5%, median
  over seeds (a seed that never gets there counts as never), and the speed-up against random
  search with FIFO (its median over ours);
* a PNG of the IQM regret against simulated time and against epochs, per table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.tables import DEFAULT_TABLES, SWEEPS, TABLES, load_table
from hypersweep.config import SchedulerSpec, load_sweep
from hypersweep.replay import Setting, Table, Trace, replay

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ANCHOR = "random + FIFO"
OURS = "TPE + ASHA (hypersweep)"
TARGETS = (0.01, 0.05)
SEED_BASE = 1000


@dataclass(frozen=True)
class Contender:
    name: str
    search: str
    scheduler: str  # fifo | asha | hyperband
    told: str = "truth"  # truth: hypersweep's searcher and results; ray: a plain Ray Tune script
    startup: str = "10"  # TPE's random start-up trials: a number, or "scaled" (scaled_startup)
    group: bool = False


CONTENDERS = (
    Contender(ANCHOR, "random", "fifo"),
    Contender("random + ASHA", "random", "asha"),
    Contender("TPE + FIFO", "optuna", "fifo"),
    Contender("TPE + ASHA as Ray ships it", "optuna", "asha", told="ray"),
    Contender(OURS, "optuna", "asha"),
    Contender("TPE + ASHA, start-up scaled", "optuna", "asha", startup="scaled"),
    Contender("TPE + ASHA, grouped", "optuna", "asha", group=True),
    Contender("TPE + Hyperband", "optuna", "hyperband"),
)


def _startup(contender: Contender, num_samples: int) -> int:
    return scaled_startup(num_samples) if contender.startup == "scaled" else int(contender.startup)


def scaled_startup(num_samples: int) -> int:
    """A quarter of the trials, 4 to 10: with 16 trials Optuna's 10 would leave 6 guided."""
    return min(10, max(4, num_samples // 4))


def setting_for(table_name: str, contender: Contender, num_samples: int, seed: int) -> Setting:
    """The contender with the sweep file's own scheduler settings and patience."""
    spec = load_sweep(SWEEPS[table_name])
    scheduler: SchedulerSpec = replace_scheduler(spec.scheduler, contender.scheduler)
    return Setting(
        scheduler=scheduler,
        search=contender.search,
        told=contender.told,
        num_samples=num_samples,
        workers=2,
        patience=spec.training.patience,
        seed=seed,
        startup_trials=scaled_startup(num_samples)
        if contender.startup == "scaled"
        else int(contender.startup),
        group=contender.group,
    )


def replace_scheduler(base: SchedulerSpec, kind: str) -> SchedulerSpec:
    return base.model_copy(update={"type": kind})


def _one(job: tuple[str, Contender, int, int]) -> dict[str, Any]:
    """One replay (in a worker process): the trace, thinned to what the report reads."""
    table_name, contender, budget, seed = job
    table = _table(table_name)
    # Seeds from 1000 on: the tables were recorded by a random sampler with seed 0, which a
    # contender's seed 0 would replay exactly.
    trace = replay(table, setting_for(table_name, contender, budget, SEED_BASE + seed))
    return {"table": table_name, "contender": contender.name, "budget": budget, "seed": seed, **_thin(trace)}


_TABLE_CACHE: dict[str, Table] = {}


def _table(name: str) -> Table:
    if name not in _TABLE_CACHE:
        _TABLE_CACHE[name] = Table.from_json(load_table(name))
    return _TABLE_CACHE[name]


def _thin(trace: Trace) -> dict[str, Any]:
    """The points where the best changed, and the end."""
    keep = [i for i in range(len(trace.best)) if i == 0 or trace.best[i] != trace.best[i - 1]]
    keep.append(len(trace.best) - 1)
    return {
        "times": [round(trace.times[i], 3) for i in keep],
        "epochs": [trace.epochs[i] for i in keep],
        "best": [trace.best[i] for i in keep],
        "stopped": trace.stopped,
    }


def regret(value: float, best: float) -> float:
    if math.isnan(value):
        return math.inf
    return abs(value - best) / max(abs(best), 1e-12)


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle half (robust to a few runs stuck far off)."""
    ordered = sorted(values)
    n = len(ordered)
    middle = ordered[n // 4 : n - n // 4] or ordered
    return float(np.mean(middle))


def bootstrap(values: Sequence[float], *, rounds: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the IQM by resampling seeds."""
    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=float)
    stats = [iqm(rng.choice(data, size=len(data), replace=True).tolist()) for _ in range(rounds)]
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def time_to(run: dict[str, Any], best: float, target: float, axis: str) -> float:
    """Simulated seconds (``axis`` times) or epochs until the run's best is within ``target``."""
    for where, value in zip(run[axis], run["best"], strict=True):
        if regret(value, best) <= target:
            return float(where)
    return math.inf


def summarise(runs: list[dict[str, Any]], tables: list[str], budgets: list[int]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in tables:
        best = _table(name).best()
        per: dict[str, Any] = {}
        for contender in CONTENDERS:
            mine = [r for r in runs if r["table"] == name and r["contender"] == contender.name]
            per[contender.name] = _contender_summary(mine, best, budgets)
        for numbers in per.values():
            for target in TARGETS:
                for axis in ("times", "epochs"):
                    key = f"{axis}_to_{target:g}"
                    numbers[f"speedup_{axis}_{target:g}"] = _ratio(per[ANCHOR][key], numbers[key])
        summary[name] = {"table_best": best, "contenders": per}
    return summary


def _contender_summary(runs: list[dict[str, Any]], best: float, budgets: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"budgets": {}}
    for budget in budgets:
        finals = [regret(r["best"][-1], best) for r in runs if r["budget"] == budget]
        low, high = bootstrap(finals)
        out["budgets"][budget] = {
            "iqm_regret": iqm(finals),
            "ci": [low, high],
            **{f"success_{t:g}": sum(f <= t for f in finals) / len(finals) for t in TARGETS},
            "epochs": statistics.median(r["epochs"][-1] for r in runs if r["budget"] == budget),
        }
    largest = [r for r in runs if r["budget"] == max(budgets)]
    for target in TARGETS:
        for axis in ("times", "epochs"):
            out[f"{axis}_to_{target:g}"] = statistics.median(time_to(r, best, target, axis) for r in largest)
    return out


def _ratio(anchor: float, ours: float) -> float:
    if math.isinf(ours):
        return 0.0
    return math.inf if math.isinf(anchor) else anchor / ours


def markdown(summary: dict[str, Any], budgets: list[int], seeds: int, command: str, took: float) -> str:
    lines = [
        f"Made by `{command}` in {took:.0f} s on {time.strftime('%Y-%m-%d %H:%M')}: {seeds} seeds per "
        f"contender and budget, 2 trials at once, simulated time from the recorded tables.",
        "",
        "Regret = |best - table best| / |table best|. IQM over seeds [95% bootstrap interval]; "
        "success = share of seeds within 1% / 5%. Speed-up = random + FIFO's median simulated time "
        "(epochs) to reach within 1% of the table's best, over the contender's; 0 = median never got "
        "there; inf = random + FIFO's median never did.",
    ]
    for name, data in summary.items():
        lines += ["", f"### {name} (table best {data['table_best']:.4g})", ""]
        head = " | ".join(f"{b} trials" for b in budgets)
        lines += [f"| contender | {head} | speed-up to 1% (time / epochs) | to 5% |"]
        lines += ["|---|" + "---|" * len(budgets) + "---|---|"]
        for contender, numbers in data["contenders"].items():
            cells = []
            for budget in budgets:
                b = numbers["budgets"][budget]
                cells.append(
                    f"{b['iqm_regret']:.3f} [{b['ci'][0]:.3f}, {b['ci'][1]:.3f}] {b['success_0.01']:.0%}"
                )
            speed = [_speedups(numbers, t) for t in TARGETS]
            lines.append(f"| {contender} | {' | '.join(cells)} | {speed[0]} | {speed[1]} |")
    return "\n".join(lines) + "\n"


def _speedups(numbers: dict[str, Any], target: float) -> str:
    return f"{numbers[f'speedup_times_{target:g}']:.2f}x / {numbers[f'speedup_epochs_{target:g}']:.2f}x"


def plot(runs: list[dict[str, Any]], tables: list[str], budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(tables), figsize=(4.5 * len(tables), 7), squeeze=False)
    for column, name in enumerate(tables):
        best = _table(name).best()
        for row, axis in enumerate(("times", "epochs")):
            ax = axes[row][column]
            mine = [r for r in runs if r["table"] == name and r["budget"] == budget]
            end = max(r[axis][-1] for r in mine)
            grid = np.linspace(0, end, 200)
            for contender in CONTENDERS:
                traces = [r for r in mine if r["contender"] == contender.name]
                curve = [iqm([_at(r, axis, x, best) for r in traces]) for x in grid]
                ax.plot(grid, curve, label=contender.name)
            ax.set_yscale("log")
            ax.set_xlabel("simulated seconds" if axis == "times" else "epochs trained")
            ax.set_ylabel("IQM regret")
            ax.set_title(f"{name}, {budget} trials")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _at(run: dict[str, Any], axis: str, x: float, best: float) -> float:
    """The run's regret at ``x`` (a step function); 1.0 before its first result."""
    value = 1.0
    for where, found in zip(run[axis], run["best"], strict=True):
        if where > x:
            break
        value = min(regret(found, best), 1.0)
    return max(value, 1e-6)


VALIDATED = ("random + ASHA", OURS)


def validate(runs: list[dict[str, Any]], table_name: str, budget: int, seeds: int) -> list[dict[str, Any]]:
    """Real sweeps (``hypersweep run``, the table's data seed, sampler seeds 0..seeds-1) of two
    contenders, against the spread of their replays: does the simulator tell the truth?"""
    from benchmarks.experiments import run_one

    out = []
    for contender in (c for c in CONTENDERS if c.name in VALIDATED):
        simulated = [
            r
            for r in runs
            if (r["table"], r["contender"], r["budget"]) == (table_name, contender.name, budget)
        ]
        for seed in range(seeds):
            args = ["--num-samples", str(budget), "--scheduler", contender.scheduler]
            args += ["--search", contender.search, "--seed", str(seed), "--set", "training.seed=0"]
            with tempfile.TemporaryDirectory(prefix="hypersweep-validate-") as folder:
                real = run_one(SWEEPS[table_name], args, Path(folder))
            out.append(_against(contender.name, seed, real, simulated))
            print(f"  validation: {contender.name}, seed {seed}: {out[-1]}", flush=True)
    return out


def _against(name: str, seed: int, real: dict[str, Any], simulated: list[dict[str, Any]]) -> dict[str, Any]:
    bests = sorted(r["best"][-1] for r in simulated)
    epochs = sorted(r["epochs"][-1] for r in simulated)
    inside = bests[0] <= real["best"] <= bests[-1] and epochs[0] <= real["epochs_trained"] <= epochs[-1]
    return {
        "contender": name,
        "seed": seed,
        "real_best": real["best"],
        "real_epochs": real["epochs_trained"],
        "sim_best": [bests[0], bests[-1]],
        "sim_epochs": [epochs[0], epochs[-1]],
        "inside": inside,
    }


def validation_markdown(rows: list[dict[str, Any]], table_name: str, budget: int) -> str:
    lines = [
        "",
        f"### Validation: real sweeps of {table_name}, {budget} trials, against their replays",
        "",
        "| contender | sampler seed | real best | replays' best | real epochs | replays' epochs | inside |",
        "|---|---:|---:|---|---:|---|---|",
    ]
    for r in rows:
        best = f"{r['sim_best'][0]:.4g}..{r['sim_best'][1]:.4g}"
        epochs = f"{r['sim_epochs'][0]}..{r['sim_epochs'][1]}"
        lines.append(
            f"| {r['contender']} | {r['seed']} | {r['real_best']:.4g} | {best} | {r['real_epochs']} "
            f"| {epochs} | {'yes' if r['inside'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Search quality on the recorded tables.")
    parser.add_argument("--tables", default=",".join(DEFAULT_TABLES))
    parser.add_argument("--budgets", default="16,32,64,128")
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--validate", type=int, default=3, help="real sweeps per validated contender")
    args = parser.parse_args(argv)
    tables = [t for t in args.tables.split(",") if (TABLES / f"{t}.json").is_file()]
    if not tables:
        raise SystemExit(f"error: no replay tables in {TABLES}: python -m benchmarks.tables record")
    budgets = [int(b) for b in args.budgets.split(",")]
    jobs = [(t, c, b, s) for t in tables for c in CONTENDERS for b in budgets for s in range(args.seeds)]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        runs = list(pool.map(_one, jobs, chunksize=4))
    took = time.perf_counter() - started
    summary = summarise(runs, tables, budgets)
    checked, budget = tables[0], min(32, max(budgets))
    validation = validate(runs, checked, budget, args.validate) if args.validate else []
    command = " ".join(["python -m benchmarks.search", *(sys.argv[1:] if argv is None else argv)])
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"summary": summary, "seeds": args.seeds, "budgets": budgets, "validation": validation}
    (args.out / "search.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(summary, budgets, args.seeds, command, took)
    if validation:
        text += validation_markdown(validation, checked, budget)
    (args.out / "search.md").write_text(text)
    plot(runs, tables, max(budgets), args.out / "search.png")
    print(text)


if __name__ == "__main__":
    main()
