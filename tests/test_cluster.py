"""A real multi-node Ray cluster (a head and two worker nodes that declare one GPU each, token
authentication on) and a real ``mlflow server`` with proxied artifacts, all on 127.0.0.1.

This machine has no GPU: the worker nodes *declare* one, so Ray schedules 0.5-GPU trials two per
worker node, and the trials meet the no-CUDA case that the fallback / refusal paths handle.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import DEFAULT_SWEEP, ROOT
from tests.mlflow_store import read_sweep
from tests.ray_cluster import LocalRayCluster, MlflowServer

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    cluster = LocalRayCluster(tmp_path_factory.mktemp("ray"))
    try:
        cluster.start(head_cpus=1, workers=[(2, 1), (2, 1)])
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def run_cli(
    cluster: LocalRayCluster,
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    sweep: Path = DEFAULT_SWEEP,
):
    return subprocess.run(
        [sys.executable, "-m", "hypersweep", "run", str(sweep), *args],
        cwd=cwd,
        env=env if env is not None else cluster.client_env(),
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )


def sweep_args(cluster: LocalRayCluster, server: MlflowServer, storage: Path, name: str) -> list[str]:
    return [
        "--address", cluster.address,
        "--tracking-uri", server.uri,
        "--storage", str(storage),
        "--set", f"name={name}",
        "--scheduler", "fifo",
        "--cpus-per-trial", "1",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def gpu_sweep(ray_cluster: LocalRayCluster, mlflow_server: MlflowServer, tmp_path_factory):
    """The default sweep on the cluster: 4 trials of 0.5 GPU, CPU fallback allowed.

    The nodes run without PYTHONPATH from a folder without the project: the trials can import
    this checkout's hypersweep and the experiments package only through the runtime env.
    """
    cwd = tmp_path_factory.mktemp("driver")
    result = run_cli(
        ray_cluster,
        *sweep_args(ray_cluster, mlflow_server, cwd / "shared", "cluster-gpu"),
        "--shared-storage",
        "--gpus-per-trial", "0.5",
        "--num-samples", "4",
        "--max-epochs", "3",
        "--set", "resources.allow_cpu_fallback=true",
        cwd=cwd,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result, read_sweep(mlflow_server.uri, "cluster-gpu"), cwd


def test_every_trial_is_nested_in_the_tracking_server(gpu_sweep) -> None:
    _, stored, _ = gpu_sweep
    assert len(stored.children) == 4
    parent_id = stored.parent.info.run_id
    assert all(c.data.tags["mlflow.parentRunId"] == parent_id for c in stored.children)
    assert all(c.info.status == "FINISHED" for c in [stored.parent, *stored.children])
    assert all(len(stored.history(c)) == 3 for c in stored.children)


def test_half_gpu_trials_spread_over_both_gpu_nodes(gpu_sweep) -> None:
    _, stored, _ = gpu_sweep
    per_node = Counter(stored.tag(c, "node_id") for c in stored.children)
    # The head declares no GPU: every trial ran on one of the two worker nodes, and both were used.
    assert None not in per_node
    assert len(per_node) == 2, per_node


def test_cpu_fallback_is_tagged_and_warned(gpu_sweep) -> None:
    result, stored, _ = gpu_sweep
    assert {stored.tag(c, "device") for c in stored.children} == {"cpu-fallback"}
    assert "4 trial(s) asked for a GPU" in result.stdout


def test_best_model_is_downloadable_through_the_server(gpu_sweep, mlflow_server, tmp_path) -> None:
    _, stored, _ = gpu_sweep
    local = mlflow.artifacts.download_artifacts(
        run_id=stored.parent.info.run_id,
        artifact_path="best_model/model.pt",
        tracking_uri=mlflow_server.uri,
        dst_path=str(tmp_path),
    )
    state = torch.load(local, weights_only=True)
    assert state and all(isinstance(t, torch.Tensor) for t in state.values())
    # Proxied: the file went through the server into its artifact destination.
    assert list(mlflow_server.artifacts.rglob("best_model/model.pt"))


def test_gpu_trial_without_cuda_fails_clearly(ray_cluster, mlflow_server, tmp_path) -> None:
    result = run_cli(
        ray_cluster,
        *sweep_args(ray_cluster, mlflow_server, tmp_path / "shared", "cluster-nocuda"),
        "--shared-storage",
        "--gpus-per-trial", "0.5",
        "--num-samples", "2",
        "--max-epochs", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no CUDA device" in result.stdout and "allow_cpu_fallback" in result.stdout
    stored = read_sweep(mlflow_server.uri, "cluster-nocuda")
    assert [stored.tag(c, "status") for c in stored.children] == ["failed", "failed"]
    assert all("no CUDA device" in (stored.tag(c, "error") or "") for c in stored.children)


def _no_experiment(server: MlflowServer, name: str) -> bool:
    return MlflowClient(tracking_uri=server.uri).get_experiment_by_name(name) is None


def test_node_local_storage_on_a_multi_node_cluster_is_refused(ray_cluster, mlflow_server, tmp_path) -> None:
    result = run_cli(
        ray_cluster, *sweep_args(ray_cluster, mlflow_server, tmp_path / "x", "pf-storage"), cwd=tmp_path
    )
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("error: ") and ": storage: the cluster has 3 nodes" in line
    assert _no_experiment(mlflow_server, "pf-storage") and not (tmp_path / "x").exists()


def test_a_gpu_request_no_node_can_hold_is_refused(ray_cluster, mlflow_server, tmp_path) -> None:
    args = sweep_args(ray_cluster, mlflow_server, tmp_path / "x", "pf-gpus")
    result = run_cli(ray_cluster, *args, "--shared-storage", "--gpus-per-trial", "2", cwd=tmp_path)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert line.endswith(
        ": resources.gpus_per_trial: a trial asks for 1 CPU and 2 GPU but the largest node"
        " has 2 CPU and 1 GPU (from --gpus-per-trial 2)"
    )
    assert _no_experiment(mlflow_server, "pf-gpus")


def test_validate_reads_the_clusters_nodes_and_joins_nothing_for_good(ray_cluster, tmp_path) -> None:
    def validate(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "hypersweep", "validate", str(DEFAULT_SWEEP), *args]
        env = ray_cluster.client_env()
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    base = ("--address", ray_cluster.address, "--cpus-per-trial", "1", "--gpus-per-trial", "0.5")
    ok = validate(*base, "--shared-storage")
    assert ok.returncode == 0, ok.stderr
    assert "4 trial(s) at once on 3 node(s) at" in ok.stdout and "(5 CPU, 2 GPU)" in ok.stdout
    local_storage = validate(*base)
    assert local_storage.returncode == 2 and ": storage: the cluster has 3 nodes" in local_storage.stderr
    too_big = validate(*base, "--shared-storage", "--gpus-per-trial", "2")
    assert too_big.returncode == 2
    assert too_big.stderr.strip().endswith("largest node has 2 CPU and 1 GPU (from --gpus-per-trial 2)")
    assert list(tmp_path.iterdir()) == []


def test_joining_without_the_token_is_one_clear_line(ray_cluster, mlflow_server, tmp_path) -> None:
    env = ray_cluster.client_env()
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 32)  # the wrong token
    args = sweep_args(ray_cluster, mlflow_server, tmp_path / "x", "pf-token")
    result = run_cli(ray_cluster, *args, "--shared-storage", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: --address: {ray_cluster.address}: cannot join")
    assert _no_experiment(mlflow_server, "pf-token")


def test_a_training_function_sweeps_with_asha_on_the_cluster(ray_cluster, mlflow_server, tmp_path) -> None:
    """The own-loop example (a plain function, imported on the nodes through the runtime env
    from the sweep file's folder) with ASHA: one nested run per trial, some stopped early."""
    example = Path(__file__).resolve().parents[1] / "examples" / "own_loop" / "own_loop.yaml"
    args = sweep_args(ray_cluster, mlflow_server, tmp_path / "shared", "cluster-own-loop")
    args[args.index("fifo")] = "asha"
    result = run_cli(
        ray_cluster,
        *args,
        *("--shared-storage", "--num-samples", "6", "--max-epochs", "6"),
        cwd=tmp_path,
        sweep=example,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    stored = read_sweep(mlflow_server.uri, "cluster-own-loop")
    assert len(stored.children) == 6
    assert all(c.data.tags["mlflow.parentRunId"] == stored.parent.info.run_id for c in stored.children)
    statuses = Counter(stored.tag(c, "status") for c in stored.children)
    assert statuses["early_stopped"] >= 1 and statuses["completed"] >= 1, statuses
    assert all(stored.history(c, "val_accuracy") for c in stored.children)
    assert all(stored.tag(c, "node_id") for c in stored.children)


def test_mlflow_calls_inside_a_function_reach_the_trials_run_from_any_node(
    ray_cluster, mlflow_server, tmp_path
) -> None:
    root = Path(__file__).resolve().parents[1]
    sweep = tmp_path / "fn.yaml"
    sweep.write_text(
        "name: cluster-fn-mlflow\nexperiment: tests.function_mlflow:logs_itself\n"
        "search_space: {lr: {type: loguniform, low: 0.001, high: 0.1}}\n"
        "max_epochs: 2\nnum_samples: 3\ntraining: {patience: null}\n"
    )
    args = sweep_args(ray_cluster, mlflow_server, tmp_path / "shared", "cluster-fn-mlflow")
    result = run_cli(ray_cluster, *args, "--shared-storage", cwd=root, sweep=sweep)
    assert result.returncode == 0, result.stdout + result.stderr
    stored = read_sweep(mlflow_server.uri, "cluster-fn-mlflow")
    assert len(stored.children) == 3
    for child in stored.children:
        assert child.data.params["own_param"] == "set by the loop"
        assert [step for step, _ in stored.history(child, "own_metric")] == [0, 1, 2]  # before, after


def test_a_pbt_sweep_copies_weights_between_nodes(ray_cluster, mlflow_server, tmp_path) -> None:
    """``--scheduler pbt`` on the digits CNN's sweep file, on the cluster: members on different
    nodes, a donor's checkpoint read from the shared storage by whichever node runs the member
    that copies it."""
    args = sweep_args(ray_cluster, mlflow_server, tmp_path / "shared", "cluster-pbt")
    args[args.index("fifo")] = "pbt"
    result = run_cli(
        ray_cluster,
        *args,
        "--shared-storage",
        *("--num-samples", "4", "--max-epochs", "6", "--set", "scheduler.perturbation_interval=2"),
        *("--set", "scheduler.quantile_fraction=0.5", "--set", "training.patience=null"),
        cwd=tmp_path,
        sweep=ROOT / "experiments" / "digits_cnn.yaml",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    stored = read_sweep(mlflow_server.uri, "cluster-pbt")
    assert len(stored.children) == 4
    assert len({stored.tag(c, "node_id") for c in stored.children}) >= 2
    assert all(stored.history(c, "hp/lr")[-1][0] == 6 for c in stored.children)
    names = {a.path for a in stored.client.list_artifacts(stored.parent.info.run_id)}
    assert {"best_model", "best_schedule.json"} <= names
