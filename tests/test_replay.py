"""Replays: Ray's schedulers and the platform's searcher on recorded curves, and ``hypersweep replay``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from hypersweep.cli import main
from hypersweep.config import SchedulerSpec, build_spec
from hypersweep.replay import Setting, Table, replay
from hypersweep.tracking import SweepRecorder

EPOCHS = 9
_START_MS = 1_800_000_000_000  # the made-up epochs' timestamps: 100 ms apart
SPACE = {"lr": {"type": "loguniform", "low": 1e-4, "high": 1.0}}


def _loss(lr: float, epoch: int) -> float:
    """A made-up learning curve: best near lr = 1e-2, improving with every epoch."""
    return (math.log10(lr) + 2) ** 2 + 1.0 / epoch


def _table(trials: int = 40, cut_at: int | None = None) -> dict[str, Any]:
    """A replay table of ``trials`` learning rates; with ``cut_at``, every other curve ends there
    as ASHA had stopped it."""
    rows = []
    for i in range(trials):
        lr = 10 ** (-4 + 4 * i / (trials - 1))
        epochs = cut_at if cut_at and i % 2 else EPOCHS
        curve = [_loss(lr, e) for e in range(1, epochs + 1)]
        reason = "asha" if epochs < EPOCHS else "completed"
        rows.append(
            {
                "config": {"lr": lr},
                "curve": curve,
                "times": [0.1] * epochs,
                "diverged": False,
                "stop_reason": reason,
            }
        )
    return {
        "sweep": "made-up",
        "metric": "val_loss",
        "mode": "min",
        "max_epochs": EPOCHS,
        "search_space": SPACE,
        "overhead_s": 0.5,
        "trials": rows,
    }


def _setting(kind: str, search: str = "random", **more: Any) -> Setting:
    scheduler = SchedulerSpec.model_validate({"type": kind, "grace_period": 1, "reduction_factor": 3})
    return Setting(scheduler, search, num_samples=30, **more)


def test_fifo_trains_every_trial_to_the_end_and_asha_stops_some_with_rays_own_scheduler() -> None:
    table = Table.from_json(_table())
    fifo, asha = replay(table, _setting("fifo")), replay(table, _setting("asha"))
    assert fifo.epochs[-1] == 30 * EPOCHS and fifo.stopped == 0
    assert asha.stopped > 0 and asha.epochs[-1] < fifo.epochs[-1]
    # Same seed, same random proposals: ASHA keeps the best configuration to its end.
    assert asha.best[-1] == fifo.best[-1]
    # Simulated time: 2 workers, 0.1 s epochs, 0.5 s start-up per trial.
    assert fifo.times[-1] == pytest.approx((30 * EPOCHS * 0.1 + 30 * 0.5) / 2, rel=0.05)
    assert replay(table, _setting("asha")) == asha  # seeded: a replay is repeatable


def test_tpe_told_the_truth_and_told_as_ray_does_both_search() -> None:
    table = Table.from_json(_table())
    for told in ("truth", "ray"):
        trace = replay(table, _setting("asha", "optuna", told=told))
        assert trace.best[-1] < _loss(1e-4, EPOCHS)  # better than the worst rate
        assert all(a >= b for a, b in zip(trace.best, trace.best[1:], strict=False))


def test_a_trial_that_would_train_past_a_cut_curve_is_counted_as_guessed() -> None:
    table = Table.from_json(_table(cut_at=3))
    assert replay(table, _setting("fifo")).guessed > 0  # FIFO trains every cut curve past epoch 3
    assert replay(table, _setting("asha")).guessed <= replay(table, _setting("fifo")).guessed
    # A curve its own patience ended is whole for a replay with that patience, not for one without.
    data = _table(cut_at=3)
    for row in data["trials"]:
        row["stop_reason"] = "patience" if len(row["curve"]) < EPOCHS else row["stop_reason"]
    assert replay(Table.from_json(data), _setting("fifo")).guessed > 0


def _record(uri: str, name: str, table: dict[str, Any], scheduler: str = "fifo") -> None:
    """A finished sweep in MLflow holding ``table``'s curves, written as a real sweep writes."""
    spec = build_spec(
        {
            "name": name,
            "experiment": "tests.toy:ToyRegression",
            "search_space": SPACE,
            "max_epochs": EPOCHS,
            "num_samples": len(table["trials"]),
            "scheduler": {"type": scheduler},
            "search": {"type": "random"},
        },
        Path("made-up.yaml"),
    )
    recorder = SweepRecorder(tracking_uri=uri, metric="val_loss", mode="min")
    recorder.start_sweep(name=name, sweep_id=f"{name}-1", settings=spec.resolved())
    for i, row in enumerate(table["trials"]):
        tid = f"t{i:03d}"
        recorder.trial_started(tid, row["config"])
        epochs = [
            {
                "epoch": e,
                "val_loss": v,
                "train_loss": v,
                "epoch_time_ms": 1_800_000_000_000 + 100 * (i * 20 + e),
            }
            for e, v in enumerate(row["curve"], start=1)
        ]
        recorder.trial_result(tid, epochs[-1], epochs=epochs)
        reason = row["stop_reason"]
        recorder.trial_finished(
            tid, status="completed" if reason == "completed" else "early_stopped", stop_reason=reason
        )
    recorder.finish_sweep(best_weights=None, failed=False)


def _replay(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(["replay", *args])
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(exit_.value.code or 0), captured.out, captured.err


def test_replay_of_a_fifo_sweep_prints_a_row_per_setting(tmp_path: Path, capsys) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    _record(uri, "fifo-sweep", _table(trials=24))
    code, out, err = _replay(
        capsys, "fifo-sweep", "--tracking-uri", uri, "--grace-period", "1,2,4", "--reduction-factor", "2,3,4"
    )
    assert code == 0, err
    assert "24 trials recorded, 0 cut short" in out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == 9 + 1  # 3 x 3 ASHA settings, and FIFO once
    assert "not exact" not in out


def test_replay_of_an_asha_sweep_names_what_it_cannot_replay(tmp_path: Path, capsys) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    _record(uri, "asha-sweep", _table(trials=24, cut_at=3), scheduler="asha")
    code, out, err = _replay(capsys, "asha-sweep", "--tracking-uri", uri, "--scheduler", "fifo")
    assert code == 0, err
    assert "12 cut short by its scheduler" in out
    assert "not exact: 5/5" in out and "a FIFO sweep replays every setting exactly" in out


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["nope"], "error: SWEEP: no sweep 'nope' in "),
        (["few"], "error: SWEEP: sweep 'few-1' has 3 finished trials; a replay needs 8"),
        (["many", "--grace-period", "0"], "error: --grace-period: epochs must lie in 1..9 (max_epochs)"),
        (
            ["many", "--scheduler", "asha,pbt"],
            "error: --scheduler: 'asha,pbt': choose from asha, fifo, hyperband",
        ),
        (["many", "--reduction-factor", "x"], "error: --reduction-factor: 'x' is not a comma-separated list"),
    ],
)
def test_replay_refuses_bad_input_in_one_line(tmp_path: Path, capsys, args: list[str], line: str) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    _record(uri, "few", _table(trials=3))
    _record(uri, "many", _table(trials=10))
    code, _, err = _replay(capsys, *args, "--tracking-uri", uri)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith(line), err
