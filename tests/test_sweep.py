"""Real sweeps end to end: the CLI on local Ray, read back from a real MLflow SQLite store."""

from __future__ import annotations

import itertools
import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from hypersweep.config import load_sweep
from hypersweep.errors import ConfigError
from hypersweep.manifest import read_manifest, trials_of
from hypersweep.tuning import _Sweep
from tests.conftest import DEFAULT_SWEEP, fifo_sweep, hypersweep
from tests.mlflow_store import read_sweep

pytestmark = pytest.mark.slow
OPTIMIZERS = {"sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad"}


@pytest.fixture(scope="module")
def asha_sweep(tmp_path_factory: pytest.TempPathFactory):
    """8 trials x 6 epochs with an eager ASHA (rungs at 1, 2, 4 epochs) so some trials stop early."""
    cwd = tmp_path_factory.mktemp("asha")
    uri = f"sqlite:///{cwd}/x.db"
    result = hypersweep(
        "run",
        str(DEFAULT_SWEEP),
        "--num-samples",
        "8",
        "--max-epochs",
        "6",
        "--tracking-uri",
        uri,
        "--storage",
        str(cwd / "runs"),
        "--set",
        "scheduler.grace_period=1",
        "--set",
        "scheduler.reduction_factor=2",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return cwd, uri, result, read_sweep(uri, "breast-cancer-mlp")


def test_one_parent_and_one_nested_child_per_trial(asha_sweep) -> None:
    _, _, _, stored = asha_sweep
    assert len(stored.children) == 8
    parent_id = stored.parent.info.run_id
    assert all(c.data.tags["mlflow.parentRunId"] == parent_id for c in stored.children)
    assert len({stored.tag(c, "trial_id") for c in stored.children}) == 8
    assert all(c.info.status == "FINISHED" for c in [stored.parent, *stored.children])
    assert stored.parent.data.params["num_samples"] == "8"
    assert stored.parent.data.params["scheduler.grace_period"] == "1"


def test_child_params_are_the_sampled_config(asha_sweep) -> None:
    _, _, _, stored = asha_sweep
    for child in stored.children:
        p = child.data.params
        assert 1e-4 <= float(p["lr"]) <= 1.0
        assert p["optimizer"] in OPTIMIZERS
        assert ("momentum" in p) == (p["optimizer"] == "momentum")
        assert ("beta1" in p) == (p["optimizer"] in ("adam", "adamw"))
        assert 0.0 <= float(p["dropout"]) <= 0.5
        assert p["batch_size"] in {"16", "32", "64", "128"}
        assert json.loads(p["hidden_sizes"]) == [32, 16]  # the sweep's fixed values ride along


def test_one_val_loss_per_epoch_trained(asha_sweep) -> None:
    _, _, _, stored = asha_sweep
    for child in stored.children:
        steps = [s for s, _ in stored.history(child)]
        assert steps == list(range(1, len(steps) + 1))
        assert [s for s, _ in stored.history(child, "train_loss")] == steps
        assert [s for s, _ in stored.history(child, "val_accuracy")] == steps
        if stored.tag(child, "status") == "completed":
            assert len(steps) == 6


def test_asha_stopped_some_trials_early(asha_sweep) -> None:
    _, _, _, stored = asha_sweep
    stopped = [c for c in stored.children if stored.tag(c, "stop_reason") == "asha"]
    assert stopped, [stored.tag(c, "stop_reason") for c in stored.children]
    for child in stopped:
        assert stored.tag(child, "status") == "early_stopped"
        assert len(stored.history(child)) < 6


def test_parent_records_the_best_child(asha_sweep) -> None:
    _, _, _, stored = asha_sweep
    eligible = [c for c in stored.children if stored.tag(c, "status") not in ("diverged", "failed")]
    best_child = min(eligible, key=lambda c: min(v for _, v in stored.history(c)))
    best_value = min(v for _, v in stored.history(best_child))
    assert math.isclose(stored.parent.data.metrics["best_val_loss"], best_value, rel_tol=1e-9)
    assert stored.parent.data.tags["hypersweep.best_trial"] == stored.tag(best_child, "trial_id")
    assert stored.parent.data.tags["hypersweep.best_run_id"] == best_child.info.run_id


def test_best_weights_are_a_loadable_state_dict(asha_sweep, tmp_path: Path) -> None:
    _, _, _, stored = asha_sweep
    local = stored.client.download_artifacts(stored.parent.info.run_id, "best_model/model.pt", str(tmp_path))
    state = torch.load(local, weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert state["0.weight"].shape == (32, 30)
    sweep_yaml = stored.client.download_artifacts(stored.parent.info.run_id, "sweep.yaml", str(tmp_path))
    assert "search_space:" in Path(sweep_yaml).read_text()


def test_best_command_names_the_best_run(asha_sweep) -> None:
    cwd, uri, _, stored = asha_sweep
    sweep_id = stored.parent.data.tags["hypersweep.sweep_id"]
    for ref in (sweep_id, "breast-cancer-mlp"):
        result = hypersweep("best", ref, "--tracking-uri", uri, cwd=cwd)
        assert result.returncode == 0, result.stderr
        assert stored.parent.data.tags["hypersweep.best_run_id"] in result.stdout


def test_run_prints_a_compact_summary(asha_sweep) -> None:
    _, uri, result, stored = asha_sweep
    assert "best trial" in result.stdout
    assert stored.parent.info.run_id in result.stdout
    assert f"hypersweep ui --tracking-uri {uri}" in result.stdout
    assert len(result.stderr.splitlines()) < 40  # progress lines, not Ray's log flood
    assert "Tune logged" not in result.stdout  # Tune's log holds no warning of a sweep that went well


def test_fifo_runs_two_trials_at_once_and_never_stops_early(tmp_path: Path) -> None:
    result, uri = fifo_sweep(
        DEFAULT_SWEEP, tmp_path, 4, 3, "training.patience=null", "search_space.lr.high=0.1"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    stored = read_sweep(uri, "breast-cancer-mlp")
    assert len(stored.children) == 4
    assert {stored.tag(c, "status") for c in stored.children} <= {"completed", "diverged"}
    spans = sorted((c.info.start_time, c.info.end_time) for c in stored.children)
    overlapping = any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))
    assert overlapping, f"trials never overlapped: {spans}"


def test_sweeps_of_one_name_started_at_once_keep_apart(tmp_path: Path) -> None:
    """Two sweeps of one name started in the same second, sharing storage and tracking store:
    each has its own id, folder, manifest, journal and runs."""
    uri = f"sqlite:///{tmp_path}/x.db"
    args = [*("run", str(DEFAULT_SWEEP), "--num-samples", "3", "--max-epochs", "2"), "--scheduler", "fifo"]
    args += ["--tracking-uri", uri, "--storage", str(tmp_path / "runs")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: hypersweep(*args, cwd=tmp_path), range(2)))
    assert [r.returncode for r in results] == [0, 0], [r.stdout + r.stderr for r in results]
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 2
    ids = {json.loads((f / "hypersweep.json").read_text())["sweep_id"] for f in folders}
    assert ids == {f.name for f in folders}
    assert all(re.fullmatch(r"breast-cancer-mlp-\d{8}-\d{6}-[0-9a-f]{4}", i) for i in ids)
    client = MlflowClient(tracking_uri=uri)
    parents = client.search_runs(
        [client.get_experiment_by_name("breast-cancer-mlp").experiment_id],  # type: ignore[union-attr]
        "tags.`hypersweep.role` = 'sweep'",
    )
    assert {p.data.tags["hypersweep.sweep_id"] for p in parents} == ids
    for parent in parents:
        children = client.search_runs(
            [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
        )
        assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
        # The sweep's journal (what resume reads) names this parent and these runs only.
        folder = tmp_path / "runs" / parent.data.tags["hypersweep.sweep_id"]
        journal = (folder / "hypersweep-tracking.jsonl").read_text()
        entries = [json.loads(line) for line in journal.splitlines()]
        assert {e["head"]["parent_run_id"] for e in entries if "head" in e} == {parent.info.run_id}
        last = {e["trial"]: e["state"] for e in entries if "trial" in e}  # a trial's last line counts
        assert {t["run_id"] for t in last.values()} == {c.info.run_id for c in children}


def test_a_taken_sweep_folder_is_never_shared(tmp_path: Path) -> None:
    spec = load_sweep(DEFAULT_SWEEP, [f"storage={tmp_path}"])
    sweep = _Sweep.new(spec, roots=[], concurrent=1, address=None)
    taken = sweep.folder
    taken.mkdir()
    (taken / "hypersweep.json").write_text("{}")
    sweep._claim_folder()
    assert sweep.folder != taken and sweep.folder.parent == taken.parent
    assert sweep.folder.name == sweep.sweep_id and sweep.folder.is_dir()
    assert not any(sweep.folder.iterdir()) and (taken / "hypersweep.json").read_text() == "{}"


def test_a_sweep_on_a_storage_uri_keeps_its_folder_on_this_disk(tmp_path: Path, monkeypatch) -> None:
    """Tune's state goes to the URI; the manifest and journal, which resume reads, stay here."""
    monkeypatch.chdir(tmp_path)
    spec = load_sweep(DEFAULT_SWEEP, ["storage=s3://bucket/runs/"])
    sweep = _Sweep.new(spec, roots=[], concurrent=1, address=None)
    assert sweep.trials == f"s3://bucket/runs/{sweep.sweep_id}"  # not Path's "s3:/bucket/runs"
    assert sweep.folder == tmp_path / "hypersweep_runs" / sweep.sweep_id
    sweep._claim_folder()
    sweep._write_manifest("sqlite:///mlflow.db")
    folder, manifest = read_manifest(sweep.sweep_id, storage="s3://bucket/runs")
    assert folder == sweep.folder and read_manifest(sweep.sweep_id, storage=None)[0] == folder
    assert trials_of(folder, manifest) == sweep.trials
    assert manifest["spec"]["storage"] == "s3://bucket/runs/"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hypersweep_runs"]  # no "s3:" folder


def test_resume_takes_storage_credentials_again_and_old_manifests_still_resume(tmp_path: Path) -> None:
    folder = tmp_path / "sweep-1"
    secret = {"sweep_id": "sweep-1", "trials": "s3://***@bucket/runs/sweep-1"}
    with pytest.raises(ConfigError, match="pass --storage URI"):
        trials_of(folder, secret)
    given = trials_of(folder, secret, "s3://key:pw@bucket/runs")
    assert given == "s3://key:pw@bucket/runs/sweep-1"
    assert trials_of(folder, {"sweep_id": "sweep-1"}) == str(folder)  # written before "trials"
    assert trials_of(folder, {"sweep_id": "sweep-1"}, str(tmp_path)) == str(folder)
