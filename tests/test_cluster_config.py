"""cluster.yaml is a config `ray up` accepts: checked with Ray's own schema and defaults."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    return data


def test_ray_accepts_the_cluster_config(raw) -> None:
    # What `ray up` does before it touches the cloud: merge the provider's defaults, then validate
    # against ray/autoscaler/ray-schema.json (raises on an unknown or mistyped key).
    validate_config(prepare_config(raw))


def test_a_typo_is_rejected_by_the_same_check(raw) -> None:
    broken = {**raw, "max_worker": 3}
    with pytest.raises(Exception, match="max_worker"):
        validate_config(prepare_config(broken))


def test_cpu_head_and_autoscaling_gpu_workers(raw) -> None:
    types = raw["available_node_types"]
    assert raw["provider"]["type"] == "aws"
    assert types[raw["head_node_type"]]["resources"] == {"CPU": 0}
    gpu = types["gpu"]
    assert gpu["min_workers"] == 0 < gpu["max_workers"]
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))


def test_every_ray_process_uses_token_auth(raw) -> None:
    commands = raw["head_start_ray_commands"] + raw["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in commands if "ray st" in c)
    assert raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_services_stay_inside_the_cluster(raw) -> None:
    head_start = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    mlflow = " ".join(raw["head_setup_commands"])
    assert re.search(r"mlflow server --host \$IP ", mlflow) and "0.0.0.0" not in mlflow
    assert "--serve-artifacts --artifacts-destination s3://" in mlflow
    assert "postgresql://" in mlflow
    assert raw["provider"]["security_group"]["IpPermissions"] == []


def test_setup_installs_the_project_on_every_node(raw) -> None:
    assert raw["file_mounts"]["~/hypersweep"] == "."
    assert any("pip install" in c and "-e ~/hypersweep" in c for c in raw["setup_commands"])
