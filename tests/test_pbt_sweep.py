"""A population-based training sweep end to end: the CLI on local Ray, read back from a real MLflow
SQLite store: one child run per member, the mutated keys per epoch, the exploits with their
donors, and the best trial's schedule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hypersweep.cli import main
from tests.conftest import ROOT, hypersweep
from tests.mlflow_store import StoredSweep, read_sweep

pytestmark = pytest.mark.slow

# Learning rates from useless to good: the bottom half of the population has members to copy.
SWEEP = """\
name: toy-pbt
experiment: tests.toy:ToyRegression
search_space:
  lr: {type: loguniform, low: 1.0e-4, high: 0.5}
  optimizer: sgd
  dropout: {type: uniform, low: 0.0, high: 0.3}
metric: val_loss
max_epochs: 6
num_samples: 4
scheduler: {type: pbt, perturbation_interval: 2, quantile_fraction: 0.5}
search: {seed: 3}
training: {patience: null}
"""


def _artifact(stored: StoredSweep, run_id: str, name: str) -> Any:
    return json.loads(Path(stored.client.download_artifacts(run_id, name)).read_text())


@pytest.fixture(scope="module")
def pbt_sweep(tmp_path_factory: pytest.TempPathFactory) -> StoredSweep:
    cwd = tmp_path_factory.mktemp("pbt")
    (cwd / "sweep.yaml").write_text(SWEEP)
    uri = f"sqlite:///{cwd}/x.db"
    # From the project root, where tests.toy imports (as a user's sweep finds its package).
    result = hypersweep(
        "run", str(cwd / "sweep.yaml"), "--tracking-uri", uri, "--storage", str(cwd / "runs"), cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return read_sweep(uri, "toy-pbt")


def test_one_child_run_per_member_each_with_its_schedule_per_epoch(pbt_sweep: StoredSweep) -> None:
    stored = pbt_sweep
    assert len(stored.children) == 4
    assert len({stored.tag(c, "trial_id") for c in stored.children}) == 4
    for child in stored.children:
        for key in ("hp/lr", "hp/dropout"):
            steps = [step for step, _ in stored.history(child, key)]
            # An exploit may continue from a donor's later epoch: steps skip, never repeat.
            assert steps == sorted(set(steps)) and steps[0] == 1 and steps[-1] == 6, (key, steps)
        first_lr = stored.history(child, "hp/lr")[0][1]
        assert first_lr == pytest.approx(float(child.data.params["lr"]))


def test_each_exploit_names_its_donor_on_both_runs_and_on_the_parent(pbt_sweep: StoredSweep) -> None:
    stored = pbt_sweep
    runs = {stored.tag(c, "trial_id"): c for c in stored.children}
    lineage = _artifact(stored, stored.parent.info.run_id, "pbt_lineage.json")["exploits"]
    assert lineage, "no member copied another"
    for exploit in lineage:
        recipient, donor = runs[exploit["trial_id"]], runs[exploit["donor_trial_id"]]
        assert exploit["trial_id"] != exploit["donor_trial_id"]
        assert (exploit["run_id"], exploit["donor_run_id"]) == (recipient.info.run_id, donor.info.run_id)
        assert exploit["epoch"] % 2 == 0 and exploit["from_epoch"] % 2 == 0
        assert set(exploit["old"]) == set(exploit["new"]) == {"lr", "dropout"}
        assert 0.0 <= exploit["new"]["dropout"] <= 0.3  # perturbed within the space
        own = _artifact(stored, recipient.info.run_id, "lineage.json")["exploits"]
        assert exploit in own
        assert stored.tag(recipient, "pbt.donor") in runs
    last = {e["trial_id"]: e for e in lineage}
    for trial_id, exploit in last.items():
        assert stored.tag(runs[trial_id], "pbt.exploits") == str(
            sum(e["trial_id"] == trial_id for e in lineage)
        )
        assert stored.history(runs[trial_id], "hp/lr")[-1][1] == pytest.approx(exploit["new"]["lr"])


def test_the_report_draws_the_schedules_and_lists_every_exploit(pbt_sweep: StoredSweep) -> None:
    stored = pbt_sweep
    parent = stored.parent.info.run_id
    names = {a.path for a in stored.client.list_artifacts(parent, "report")}
    assert "report/schedules.png" in names
    page = Path(stored.client.download_artifacts(parent, "report/report.html")).read_text()
    lineage = _artifact(stored, parent, "pbt_lineage.json")["exploits"]
    table = page.split('<table id="lineage">', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 1 + len(lineage)  # the head and one row per exploit


def test_the_best_trials_weights_and_whole_schedule_are_on_the_parent(pbt_sweep: StoredSweep) -> None:
    stored = pbt_sweep
    parent = stored.parent.info.run_id
    best = stored.parent.data.tags["hypersweep.best_trial"]
    names = {a.path for a in stored.client.list_artifacts(parent)}
    assert {"best_model", "best_schedule.json", "pbt_lineage.json"} <= names
    schedule = _artifact(stored, parent, "best_schedule.json")
    assert schedule["trial_id"] == best
    assert [e["epoch"] for e in schedule["epochs"]] == [1, 2, 3, 4, 5, 6]
    best_run = next(c for c in stored.children if stored.tag(c, "trial_id") == best)
    # Its last epochs are its own; earlier ones may be a donor's, from before it copied them.
    assert schedule["epochs"][-1]["lr"] == pytest.approx(stored.history(best_run, "hp/lr")[-1][1])
    # Its configuration is what its final weights trained with: its last exploit's, if any.
    copied = [
        e["config"]
        for e in _artifact(stored, parent, "pbt_lineage.json")["exploits"]
        if e["trial_id"] == best
    ]
    config = _artifact(stored, parent, "best_config.json")
    assert config["lr"] == pytest.approx(schedule["epochs"][-1]["lr"])
    if copied:
        assert config == copied[-1]


def test_replay_refuses_a_pbt_sweep_in_one_line(pbt_sweep: StoredSweep, capsys) -> None:
    uri = pbt_sweep.client.tracking_uri
    with pytest.raises(SystemExit) as exit_:
        main(["replay", "toy-pbt", "--tracking-uri", uri])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "ran pbt: its trials changed hyperparameters while they trained" in err


def test_validate_names_the_keys_pbt_will_mutate(tmp_path: Path) -> None:
    sweep = str(ROOT / "experiments" / "breast_cancer_mlp.yaml")
    result = hypersweep("validate", sweep, "--scheduler", "pb2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("; pb2 mutating lr, dropout")


def test_validate_refuses_what_pbt_cannot_do_in_one_line(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "bad.yaml"
    sweep.write_text(SWEEP.replace("quantile_fraction: 0.5", "mutations: [lr, optimizer]"))
    with pytest.raises(SystemExit) as exit_:
        main(["validate", str(sweep)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.strip() == (
        f"error: {sweep}: scheduler.mutations.optimizer: the optimizer type cannot change "
        "mid-trial: the copied optimizer state (momentum buffers, Adam's moments) belongs to one type"
    )


def test_a_shipped_sweep_runs_with_pbt_from_the_command_line(tmp_path: Path) -> None:
    """``--scheduler pbt`` on a sweep file written for ASHA: PBT's defaults mutate the space's
    continuous keys the trainer can change, and the interval fits in a shortened sweep."""
    uri = f"sqlite:///{tmp_path}/x.db"
    result = hypersweep(
        *("run", str(ROOT / "experiments" / "digits_cnn.yaml"), "--scheduler", "pbt"),
        *("--num-samples", "4", "--max-epochs", "4", "--tracking-uri", uri, "--storage", str(tmp_path / "r")),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "note: scheduler.perturbation_interval 4 -> 2" in result.stderr
    assert "random population, pbt mutating lr, dropout" in result.stdout
    stored = read_sweep(uri, "digits-cnn")
    assert len(stored.children) == 4
    for child in stored.children:
        assert [step for step, _ in stored.history(child, "hp/dropout")][-1] == 4
    schedule = _artifact(stored, stored.parent.info.run_id, "best_schedule.json")
    assert [sorted(e) for e in schedule["epochs"]] == [["dropout", "epoch", "lr"]] * 4


def test_pb2_trains_the_population_with_values_within_the_space(tmp_path: Path) -> None:
    """PB2 (Ray's GP bandit picks the new values): same population, same records; its values
    stay within the space's ranges, which Ray's explore does not ensure by itself."""
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    uri = f"sqlite:///{tmp_path}/x.db"
    args = ("--scheduler", "pb2", "--tracking-uri", uri, "--storage", str(tmp_path / "r"))
    result = hypersweep("run", str(tmp_path / "sweep.yaml"), *args, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "random population, pb2 mutating lr, dropout" in result.stdout
    stored = read_sweep(uri, "toy-pbt")
    assert len(stored.children) == 4
    for child in stored.children:
        lrs = [value for _, value in stored.history(child, "hp/lr")]
        assert len(lrs) >= 3 and all(1e-4 <= lr <= 0.5 for lr in lrs), lrs
        assert all(0.0 <= p <= 0.3 for _, p in stored.history(child, "hp/dropout"))
