"""Ray's private internals, each behind its fallback: a Ray that lacks one still runs the sweep,
after one warning line that names what it lacks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray

from hypersweep import cluster, ray_node, ray_private
from tests.chaos_tools import cli
from tests.conftest import DEFAULT_SWEEP
from tests.mlflow_store import read_sweep

# Loaded at start-up by every Python process that has its folder on PYTHONPATH; it acts in the
# local node's process only, whose Ray then lacks ray._private.node.Node as a newer Ray might:
# the module imports, the class is gone. Ray's other processes are left alone.
_NODE_GONE = """
import importlib.machinery
import sys


class _WithoutNode:
    def find_spec(self, name, path, target=None):
        if name != "ray._private.node":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def run_then_drop(module):
            run(module)
            del module.Node

        spec.loader.exec_module = run_then_drop
        return spec


if "hypersweep.ray_node" in sys.orig_argv:
    sys.meta_path.insert(0, _WithoutNode())
"""


@pytest.fixture
def warned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees its own warnings: none printed yet in this process."""
    monkeypatch.setattr(ray_private, "_warned", set())


@pytest.mark.slow
def test_a_ray_without_its_private_node_runs_the_sweep_on_public_ray_init(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_NODE_GONE)
    pythonpath = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    uri = f"sqlite:///{tmp_path}/x.db"
    args = ["--num-samples", "3", "--max-epochs", "2", "--scheduler", "fifo", "--search", "random"]
    proc = cli(
        *("run", str(DEFAULT_SWEEP), *args, "--tracking-uri", uri, "--storage", str(tmp_path / "runs")),
        cwd=tmp_path,
        env={"PYTHONPATH": pythonpath},
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert warnings == [
        f"warning: this Ray ({ray.__version__}) lacks ray._private.node.Node as hypersweep starts it"
        " (ImportError: cannot import name 'Node' from 'ray._private.node');"
        " starting Ray with the public ray.init (slower start)"
    ], err
    stored = read_sweep(uri, "breast-cancer-mlp")
    assert len(stored.children) == 3
    assert all(c.info.status == "FINISHED" for c in [stored.parent, *stored.children])
    assert all([s for s, _ in stored.history(c)] == [1, 2] for c in stored.children)


@pytest.mark.slow
def test_a_setting_this_ray_does_not_know_is_named_and_the_node_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ray's GCS refuses a ``_system_config`` key it does not know and exits; the node's
    process finds the key in its log and answers with it instead of an address."""
    # Ray waits this long for the port of a GCS that exited at once (its default: 30 s).
    monkeypatch.setenv("RAY_gcs_server_port_wait_time_s", "3")
    known = ray_node._local_system_config
    monkeypatch.setattr(
        ray_node, "_local_system_config", lambda preload: {**known(preload), "hypersweep_no_such_key": 1}
    )
    node = ray_node.LocalNode.start(import_roots=[])
    with pytest.raises(ray_private.Missing, match=r"^the system setting hypersweep_no_such_key$"):
        node.address()
    assert ray_node._session_members(node.pid) == []


def test_tune_actor_env_left_as_is_where_tune_keeps_it_elsewhere(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], warned: None
) -> None:
    from ray.tune.execution import class_cache

    monkeypatch.delattr(class_cache, "ENV_VARS_TO_PROPAGATE")
    defaults = dict(class_cache.DEFAULT_ENV_VARS)
    for _ in range(2):
        with ray_private.actors_inherit_env():
            assert defaults == class_cache.DEFAULT_ENV_VARS  # untouched: neither is cleared
    assert capsys.readouterr().err == (
        f"warning: this Ray ({ray.__version__}) lacks ray.tune.execution.class_cache's defaults"
        " (AttributeError: module 'ray.tune.execution.class_cache' has no attribute"
        " 'ENV_VARS_TO_PROPAGATE'); trial actors start fresh workers\n"
    )


def test_cpus_are_counted_without_rays_counter(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], warned: None
) -> None:
    import ray._private.utils

    monkeypatch.delattr(ray._private.utils, "get_num_cpus")
    cores = len(os.sched_getaffinity(0))
    assert ray_private.num_cpus() == cores
    assert cluster.probe(None).cpus == cores  # what validate counts
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"warning: this Ray ({ray.__version__}) lacks ray._private.utils.get_num_cpus")
