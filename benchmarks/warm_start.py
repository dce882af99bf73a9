"""Does a warm start pay? ``python -m benchmarks.warm_start`` (``make bench-warm-start``).

Replayed (``hypersweep.replay``: Ray's ASHA and the platform's searcher, simulated time) on the
recorded tables in ``benchmarks/tables/``, per table and seed:

1. sweep A: the platform's default search (TPE + the sweep file's ASHA), ``--first`` trials, over
   the whole table;
2. the follow-up a user narrows after A (``narrowed``): each range cut to what A's best quarter of
   trials used, widened a little (x/÷2 on a log scale, a tenth of the range otherwise); each choice
   to the values those trials took; parameters of dropped choices out. B can only train the
   recorded configurations inside that space: the table is cut to them;
3. sweep B, ``--follow-up`` trials, twice with the same seed: cold (an empty study) and warm (A's
   trials that fit B's space, through the platform's own filter, ``warm_start.seeds``).

Measure: how many trials B starts before its best reaches A's best (B's goal: at least the first
sweep's result, now in a smaller space), per seed; a seed that never gets there within the budget
counts as never. Reported per table: the median over seeds of cold and warm, the share of seeds
that got there, and the median of the per-seed ratio cold / warm (never: the budget + 1).
Results: ``benchmarks/results/warm_start.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.search import CONTENDERS, OURS, RESULTS, SEED_BASE, _table, setting_for
from benchmarks.tables import DEFAULT_TABLES, TABLES
from hypersweep import scoring
from hypersweep.replay import Table, Trace, replay
from hypersweep.search_space import Choice, IntParam, LogUniform, SearchSpace, Uniform, parse_search_space
from hypersweep.warm_start import Earlier, fit, from_study, seeds

_TOP = 0.25  # the share of A's trials a user narrows around


def trained(table: Table, trace: Trace) -> list[Earlier]:
    """Sweep A's trials with a result, as a real sweep records them: each with the configuration
    it trained (the recorded one its proposal was replayed as) and what its study was told."""
    assert trace.study is not None
    return [
        replace(e, params=table.curves[trace.curves[int(e.trial_id)]].config)
        for e in from_study(trace.study, "a")
    ]


def narrowed(space: SearchSpace, earlier: list[Earlier], mode: str) -> SearchSpace:
    """The space a user would sweep next: around the best quarter of the ``earlier`` trials."""
    sign = 1 if mode == "min" else -1
    finished = [t for t in earlier if t.value is not None and math.isfinite(t.value)]
    top = sorted(finished, key=lambda t: sign * (t.value or 0.0))[: max(4, int(len(finished) * _TOP))]
    out: dict[str, Any] = {}
    for name, entry in space.entries:
        if not isinstance(entry, LogUniform | Uniform | IntParam | Choice):
            out[name] = entry
            continue
        values = [t.params[name] for t in top if name in t.params]
        when = _kept_condition(entry.when, out)
        if values and when is not None:
            out[name] = {**_cut(entry, values), **({"when": when} if when else {})}
    return parse_search_space(out, "narrowed")


def _kept_condition(when: dict[str, list[Any]] | None, kept: dict[str, Any]) -> dict[str, list[Any]] | None:
    """The condition on the choices still there; None when it can never hold any more."""
    if not when:
        return {}
    out = {}
    for parent, allowed in when.items():
        values = kept.get(parent, {}).get("values", [])
        still = [v for v in allowed if v in values]
        if not still:
            return None
        out[parent] = still
    return out


def _cut(entry: Any, values: list[Any]) -> dict[str, Any]:
    if isinstance(entry, Choice):
        return {"type": "choice", "values": [v for v in entry.values if v in values]}
    low, high = min(values), max(values)
    if isinstance(entry, LogUniform):
        return {"type": "loguniform", "low": max(entry.low, low / 2), "high": min(entry.high, high * 2)}
    pad = (entry.high - entry.low) / 10
    if isinstance(entry, IntParam):
        pad = max(entry.step, int(pad))
        return {"type": "int", "low": max(entry.low, low - pad), "high": min(entry.high, high + pad)}
    return {"type": "uniform", "low": max(entry.low, low - pad), "high": min(entry.high, high + pad)}


def inside(table: Table, space: SearchSpace) -> Table:
    """The table's recorded configurations that lie in ``space``: all that B can train."""
    curves = tuple(c for c in table.curves if fit(c.config, space, {}))
    return replace(table, space=space, curves=curves)


def trials_to(trace: Trace, target: float, mode: str, slack: float = 0.0) -> float:
    """Trials started when the sweep's best first reached ``target`` (or came within ``slack`` of
    it, relative); inf if it never did."""
    goal = target + (1 if mode == "min" else -1) * slack * abs(target)
    for trials, best in zip(trace.trials, trace.best, strict=True):
        if not math.isnan(best) and scoring.better(best, goal, mode) == best:
            return float(trials)
    return math.inf


def one(name: str, seed: int, first: int, follow_up: int) -> dict[str, Any]:
    """Sweep A, then B cold and warm, on table ``name`` with sampler seed ``seed``."""
    table = _table(name)
    ours = next(c for c in CONTENDERS if c.name == OURS)
    setting = setting_for(name, ours, first, SEED_BASE + seed)
    a = replay(table, setting)
    target, earlier = a.best[-1], trained(table, a)
    space = narrowed(table.space, earlier, table.mode)
    b_table = inside(table, space)
    warm, outside = seeds(earlier, space, {})
    b = replace(setting, num_samples=follow_up)
    cold_trace, warm_trace = replay(b_table, b), replay(b_table, replace(b, warm=tuple(warm)))
    return {
        "table": name,
        "seed": seed,
        "a_best": target,
        "b_configurations": len(b_table.curves),
        "seeded": len(warm),
        "outside": outside,
        "cold": trials_to(cold_trace, target, table.mode),
        "warm": trials_to(warm_trace, target, table.mode),
        "cold_1%": trials_to(cold_trace, target, table.mode, 0.01),
        "warm_1%": trials_to(warm_trace, target, table.mode, 0.01),
        "cold_best": cold_trace.best[-1],
        "warm_best": warm_trace.best[-1],
    }


def summarise(runs: list[dict[str, Any]], follow_up: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["table"] for r in runs):
        mine = [r for r in runs if r["table"] == name]
        out[name] = {
            "seeds": len(mine),
            "exact": _race(mine, "", follow_up),
            "within_1%": _race(mine, "_1%", follow_up),
            "median_seeded": statistics.median(r["seeded"] for r in mine),
            "median_outside": statistics.median(r["outside"] for r in mine),
            "median_b_configurations": statistics.median(r["b_configurations"] for r in mine),
        }
    return out


def _race(runs: list[dict[str, Any]], suffix: str, follow_up: int) -> dict[str, Any]:
    """Cold against warm to one target (``suffix``: its keys in ``runs``)."""
    cold = [r["cold" + suffix] for r in runs]
    warm = [r["warm" + suffix] for r in runs]
    capped = [(min(c, follow_up + 1), min(w, follow_up + 1)) for c, w in zip(cold, warm, strict=True)]
    return {
        "median_trials_cold": statistics.median(cold),
        "median_trials_warm": statistics.median(warm),
        "reached_cold": sum(map(math.isfinite, cold)) / len(runs),
        "reached_warm": sum(map(math.isfinite, warm)) / len(runs),
        "median_ratio": statistics.median(c / w for c, w in capped),
        "warm_faster": sum(w < c for c, w in capped) / len(runs),
        "warm_slower": sum(w > c for c, w in capped) / len(runs),
    }


def markdown(summary: dict[str, Any], args: argparse.Namespace, command: str, took: float) -> str:
    lines = [
        f"Made by `{command}` in {took:.0f} s on {time.strftime('%Y-%m-%d %H:%M')}: {args.seeds} seeds "
        f"per table; sweep A {args.first} trials (TPE + ASHA, the platform's default) on the whole "
        f"table, then the narrowed follow-up B, {args.follow_up} trials, cold and warm-started from A; "
        "2 trials at once, simulated from the recorded tables.",
        "",
        "Trials = trials B started until its best reached A's best, or came within 1% of it (median "
        f"over seeds; never = not within {args.follow_up}). Ratio = median over seeds of cold / warm "
        f"(never counted as {args.follow_up + 1}). Faster / slower = share of seeds where warm got "
        "there in fewer / more trials than cold. Seeded = A's trials that fit B's space (median), "
        "outside = those that did not; B's space holds the recorded configurations counted last.",
    ]
    for target in ("exact", "within_1%"):
        lines += ["", f"**{'A' if target == 'exact' else 'within 1% of A'}'s best**", ""]
        lines += [
            "| table | trials cold | trials warm | reached cold / warm | ratio | faster / slower "
            "| seeded (outside) | configurations in B's space |",
            "|---|---:|---:|---|---:|---|---|---:|",
        ]
        for name, s in summary.items():
            r = s[target]
            lines.append(
                f"| {name} | {_trials(r['median_trials_cold'])} | {_trials(r['median_trials_warm'])} "
                f"| {r['reached_cold']:.0%} / {r['reached_warm']:.0%} | {r['median_ratio']:.2f}x "
                f"| {r['warm_faster']:.0%} / {r['warm_slower']:.0%} "
                f"| {s['median_seeded']:.0f} ({s['median_outside']:.0f}) "
                f"| {s['median_b_configurations']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def _trials(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:g}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Warm start against cold start on the recorded tables.")
    parser.add_argument("--tables", default=",".join(DEFAULT_TABLES))
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--first", type=int, default=32, help="trials of sweep A")
    parser.add_argument("--follow-up", type=int, default=32, help="trials of sweep B")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    tables = [t for t in args.tables.split(",") if (TABLES / f"{t}.json").is_file()]
    if not tables:
        raise SystemExit(f"error: no replay tables in {TABLES}: python -m benchmarks.tables record")
    started = time.perf_counter()
    runs = [one(t, seed, args.first, args.follow_up) for t in tables for seed in range(args.seeds)]
    took = time.perf_counter() - started
    summary = summarise(runs, args.follow_up)
    command = " ".join(["python -m benchmarks.warm_start", *(sys.argv[1:] if argv is None else argv)])
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"summary": summary, "settings": {k: str(v) for k, v in vars(args).items()}, "runs": runs}
    (args.out / "warm_start.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(summary, args, command, took)
    (args.out / "warm_start.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
