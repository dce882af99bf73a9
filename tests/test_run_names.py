"""Trial runs are named for people (``07 adam lr=0.023 bs=16``), numbered in the order trials
started, the number kept across a resume; the trial id stays a tag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hypersweep.run_names import MAX_LENGTH, RunNames, fit, number_in, short
from hypersweep.tracking import EARLIER_TRIAL_ID, TRIAL_ID, SweepRecorder
from hypersweep.tracking.state import StateJournal
from tests.mlflow_store import read_sweep

SWEPT = ("lr", "optimizer", "momentum", "dropout", "batch_size")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.023456, "0.023"),
        (0.5, "0.5"),
        (0.95, "0.95"),
        (1.2e-5, "1.2e-5"),
        (1e-5, "1e-5"),
        (123.4, "120"),
        (3.0, "3"),
        (16, "16"),
        (True, "true"),
        ([64, 32], "64x32"),
        ("adam", "adam"),
        (float("nan"), "nan"),
    ],
)
def test_values_are_short(value: object, text: str) -> None:
    assert short(value) == text


def test_a_name_is_the_number_then_the_words_then_the_swept_numbers_abbreviated() -> None:
    names = RunNames(SWEPT)
    config = {"lr": 0.02345, "optimizer": "adam", "dropout": 0.125, "batch_size": 16, "hidden": [32, 16]}
    assert names.name(7, "60281afd", config) == "07 adam lr=0.023 drop=0.12 bs=16"
    # A conditional parameter is there only when it was sampled; fixed keys never are.
    momentum = {**config, "optimizer": "momentum", "momentum": 0.9}
    assert names.name(12, "x", momentum) == "12 momentum lr=0.023 mom=0.9 drop=0.12 bs=16"


def test_the_number_is_as_wide_as_the_sweeps_trial_count() -> None:
    assert RunNames.of_sweep(["lr"], 8).name(3, "t", {"lr": 0.1}) == "03 lr=0.1"
    assert RunNames.of_sweep(["lr"], 500).name(3, "t", {"lr": 0.1}) == "003 lr=0.1"


def test_without_swept_parameters_the_trial_id_follows_the_number() -> None:
    assert RunNames().name(1, "60281afd", {"lr": 0.1}) == "01 60281afd"


def test_a_long_name_keeps_whole_parts_under_mlflows_limit() -> None:
    swept = tuple(f"param_{i}" for i in range(60))
    name = RunNames(swept).name(1, "t", {key: 0.5 for key in swept})
    assert len(name) <= MAX_LENGTH and name.endswith(" …")
    assert all(part.endswith("=0.5") for part in name.split()[1:-1])
    long_word = RunNames(("kind",)).name(2, "t", {"kind": "k" * 5000})
    assert len(long_word) < 50 and long_word.startswith("02 kkk") and long_word.endswith("…")
    assert fit(["x" * 300]) == "x" * MAX_LENGTH


def test_the_number_is_read_back_only_from_a_readable_name() -> None:
    assert number_in("07 adam lr=0.023") == 7
    assert number_in("60281123") == 0  # a trial id (a version that named runs so) may be all digits
    assert number_in("60281afd") == 0


def _recorder(uri: str, state: Path) -> SweepRecorder:
    return SweepRecorder(
        tracking_uri=uri, metric="val_loss", mode="min", state_file=state, names=RunNames(SWEPT)
    )


def test_runs_are_named_in_start_order_and_resume_numbers_on(tmp_path: Path) -> None:
    uri, state = f"sqlite:///{tmp_path}/m.db", tmp_path / "state.jsonl"
    before = _recorder(uri, state)
    before.start_sweep(name="names", sweep_id="s1", settings={})
    before.trial_started("ta", {"lr": 0.1, "optimizer": "sgd", "hidden": [8]})
    before.trial_started("tb", {"lr": 0.003, "optimizer": "adam", "hidden": [8]})
    before.suspend()
    after = _recorder(uri, state)
    after.resume()
    after.trial_started("tb", {"lr": 0.003, "optimizer": "adam", "hidden": [8]})  # reattached
    after.trial_started("tc", {"lr": 0.05, "optimizer": "adam", "hidden": [8]})
    after.flush(force=True)
    stored = read_sweep(uri, "names")
    names = {c.data.tags[TRIAL_ID]: c.info.run_name for c in stored.children}
    assert names == {"ta": "01 sgd lr=0.1", "tb": "02 adam lr=0.003", "tc": "03 adam lr=0.05"}


def test_a_journal_saved_before_numbers_still_resumes(tmp_path: Path) -> None:
    uri, state = f"sqlite:///{tmp_path}/m.db", tmp_path / "state.jsonl"
    before = _recorder(uri, state)
    before.start_sweep(name="old", sweep_id="s1", settings={})
    before.trial_started("ta", {"lr": 0.1, "optimizer": "sgd"})
    before.suspend()
    # As an earlier version saved it: no number, the run named by its trial id.
    journal = StateJournal(state)
    saved = journal.state()
    trial = saved["trials"]["ta"]
    del trial["number"]
    head = {k: v for k, v in saved.items() if k != "trials"}
    journal.save(head, [("ta", json.dumps(trial))])
    after = _recorder(uri, state)
    after.resume()
    after.trial_started("tb", {"lr": 0.2, "optimizer": "adam"})
    after.flush(force=True)
    names = {c.data.tags[TRIAL_ID]: c.info.run_name for c in read_sweep(uri, "old").children}
    assert names["tb"] == "02 adam lr=0.2"  # numbered after the trial already there


def test_a_trial_taking_over_a_lost_trials_run_keeps_its_number_and_name(tmp_path: Path) -> None:
    uri, state = f"sqlite:///{tmp_path}/m.db", tmp_path / "state.jsonl"
    before = _recorder(uri, state)
    before.start_sweep(name="lost", sweep_id="s1", settings={})
    before.trial_started("ta", {"lr": 0.1, "optimizer": "sgd"})
    before.trial_started("lost", {"lr": 0.3, "optimizer": "adam"})
    before.suspend()
    after = _recorder(uri, state)
    after.resume()
    assert after.adopt_lost("again", {"lr": 0.3, "optimizer": "adam"}, {"ta", "again"}) == "lost"
    after.trial_started("again", {"lr": 0.3, "optimizer": "adam"})
    after.trial_started("new", {"lr": 0.01, "optimizer": "sgd"})
    after.flush(force=True)
    children = read_sweep(uri, "lost").children
    by_id = {c.data.tags[TRIAL_ID]: c for c in children}
    assert by_id["again"].info.run_name == "02 adam lr=0.3"
    assert by_id["again"].data.tags[EARLIER_TRIAL_ID] == "lost"
    assert by_id["new"].info.run_name == "03 sgd lr=0.01"
    assert len(children) == 3
