"""Preflight: bad cluster addresses, dead tracking servers, impossible resources and node-local
storage end in one line and exit 2 before any MLflow run is created."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from hypersweep import cluster, trial
from hypersweep.cluster import ClusterInfo
from hypersweep.config import ResourcesSpec
from hypersweep.errors import ConfigError
from tests.conftest import DEFAULT_SWEEP, hypersweep
from tests.ray_cluster import free_port


def _one_error_line(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    line: str = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line and line.startswith("error: ")
    return line


def test_unreachable_cluster_address_fails_fast(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = hypersweep("run", str(DEFAULT_SWEEP), "--address", f"127.0.0.1:{port}", cwd=tmp_path, timeout=60)
    line = _one_error_line(result)
    assert line.startswith(f"error: --address: 127.0.0.1:{port}: no Ray cluster reachable")
    assert not (tmp_path / "mlflow.db").exists()


def test_a_malformed_address_is_bad_input() -> None:
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        cluster.check_address("head-node")


def test_dead_tracking_server_fails_in_seconds(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    result = hypersweep("run", str(DEFAULT_SWEEP), "--tracking-uri", uri, cwd=tmp_path, timeout=60)
    line = _one_error_line(result)
    assert f": tracking_uri: no MLflow server answers at {uri}" in line
    assert not (tmp_path / "hypersweep_runs").exists()


@pytest.mark.slow
def test_impossible_resources_are_refused_before_the_parent_run(tmp_path: Path) -> None:
    result = hypersweep("run", str(DEFAULT_SWEEP), "--cpus-per-trial", "64", cwd=tmp_path, timeout=120)
    line = _one_error_line(result)
    assert ": resources.cpus_per_trial: a trial asks for 64 CPU and 0 GPU but the largest node has" in line
    assert not (tmp_path / "mlflow.db").exists()  # no store, no parent run


def test_validate_refuses_impossible_resources_without_starting_ray(tmp_path: Path) -> None:
    result = hypersweep("validate", str(DEFAULT_SWEEP), "--cpus-per-trial", "4096", cwd=tmp_path, timeout=120)
    line = _one_error_line(result)
    assert ": resources.cpus_per_trial: a trial asks for 4096 CPU and 0 GPU but the largest node has" in line
    assert list(tmp_path.iterdir()) == []


def test_this_machine_is_one_node_with_the_cuda_devices_torch_sees() -> None:
    info = cluster.probe(None)  # its CPUs against a started node's: tests/test_local_ray.py
    assert (info.address, info.nodes, info.node_cpus) == (None, 1, (info.cpus,))
    assert info.cpus >= 1 and info.gpus == torch.cuda.device_count()


def _info(nodes: int) -> ClusterInfo:
    return ClusterInfo("x:1", nodes, 4.0 * nodes, 0.0, (4.0,) * nodes, (0.0,) * nodes)


@pytest.mark.parametrize(
    ("storage", "shared", "nodes", "ok"),
    [
        (None, False, 1, True),
        ("/data/runs", False, 1, True),
        (None, False, 2, False),
        ("/data/runs", False, 3, False),
        ("file:///data/runs", False, 3, False),
        ("/nfs/runs", True, 3, True),
        ("s3://bucket/runs", False, 3, True),
        ("gs://bucket/runs", False, 3, True),
    ],
)
def test_multi_node_storage_must_be_shared(storage, shared, nodes, ok) -> None:
    check = lambda: cluster.check_storage(storage, shared=shared, info=_info(nodes), source="s.yaml")  # noqa: E731
    if ok:
        check()
    else:
        with pytest.raises(ConfigError, match="--shared-storage"):
            check()


def test_check_resources_names_the_largest_node() -> None:
    info = ClusterInfo("x:1", 2, 3.0, 1.0, (1.0, 2.0), (0.0, 1.0))
    cluster.check_resources(ResourcesSpec(cpus_per_trial=2, gpus_per_trial=0.5), info, source="s")
    with pytest.raises(ConfigError, match="largest node has 2 CPU and 1 GPU"):
        cluster.check_resources(ResourcesSpec(cpus_per_trial=1, gpus_per_trial=2), info, source="s")


def test_shipped_modules_are_hypersweep_and_the_experiment_package() -> None:
    import experiments.breast_cancer  # noqa: F401  (imported as the driver does)

    paths = cluster.ship_modules(["experiments", "not_imported_anywhere"])
    assert [Path(p).name for p in paths] == ["hypersweep", "experiments"]
    assert all(Path(p).is_dir() for p in paths)
    assert Path(paths[1]) == Path(sys.modules["experiments"].__path__[0]).resolve()


def test_no_cuda_falls_back_only_when_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a node without CUDA
    assert trial._device(0, allow_cpu_fallback=False) == (torch.device("cpu"), "cpu")
    assert trial._device(0.5, allow_cpu_fallback=True) == (torch.device("cpu"), "cpu-fallback")
    with pytest.raises(RuntimeError, match=r"no CUDA device .*allow_cpu_fallback: true"):
        trial._device(0.5, allow_cpu_fallback=False)
