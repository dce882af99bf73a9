"""The documented cluster recipe, run as written on a machine that has never seen Ray.

The bash block under "## A Ray cluster" is read from docs/cluster.md (the README links to it) and
its commands run in one bash (``set -e``: every line must succeed), with ``HOME`` an empty folder
(no ``~/.ray/auth_token``) and the working folder a fresh copy of the project's ``experiments/``
and ``search_spaces/``, so the relative paths of the recipe (``experiments/...``, ``./runs``,
``mlflow.db``) resolve there.

What differs from a user's terminal, and why:
- the ports: 6379 and 5001 become free ports, so the test meets no other Ray or MLflow here;
- ``RAY_TMPDIR``: the nodes keep their sessions (and Ray's "latest cluster" address file, which a
  plain ``ray.init()`` elsewhere on this machine would follow) in the test's folder, not /tmp/ray;
- the stop lines are not run: ``ray stop`` ends every Ray node on the machine, other people's
  too, and ``kill %mlflow`` needs an interactive shell's job control (in a script it signals the
  ``mlflow`` process alone, not its uvicorn workers and job consumers). Instead every process the
  block starts carries an environment marker, and the test ends exactly those.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.mlflow_store import read_sweep
from tests.ray_cluster import free_port, stop_tagged

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

_BLOCK_TIMEOUT_S = 780


RECIPE_PAGE = ROOT / "docs" / "cluster.md"


def cluster_recipe_block() -> str:
    text = RECIPE_PAGE.read_text()
    section = text.split("\n## A Ray cluster\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"^```bash\n(.*?)^```", section, re.S | re.M)
    assert match, f"no bash block under '## A Ray cluster' in {RECIPE_PAGE}"
    return match.group(1)


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comment lines and blank lines left out."""
    joined = re.sub(r"\\\n\s*", "", block)
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def split_at_sweep(lines: list[str]) -> tuple[list[str], list[str]]:
    """(the lines up to and including the sweep, the stop lines after it)."""
    sweep = [i for i, line in enumerate(lines) if "hypersweep run " in line]
    assert len(sweep) == 1, lines
    return lines[: sweep[0] + 1], lines[sweep[0] + 1 :]


def test_the_block_is_read_whole() -> None:
    run, stop = split_at_sweep(commands(cluster_recipe_block()))
    assert run[0] == "export RAY_AUTH_MODE=token"
    assert "--address 127.0.0.1:6379" in run[-1] and "--tracking-uri http://127.0.0.1:5001" in run[-1]
    # After the sweep only the stop lines, which the test replaces (see above); ray stop among them.
    assert all(line.startswith(("kill ", "ray stop")) for line in stop), stop
    assert any(line.split("#")[0].split() == ["ray", "stop"] for line in stop), stop


@dataclass
class Tag:
    marker: str  # KEY=VALUE in the environment of every process the block starts
    ray_tmp: Path  # RAY_TMPDIR


@pytest.fixture
def tag() -> Iterator[Tag]:
    """At the end the processes that carry the marker, and only those, are stopped, whether the
    test passed or not; then the nodes' temp folder goes."""
    # Ray's socket paths must stay short (108 bytes): a folder directly under the system temp.
    tag = Tag(f"HYPERSWEEP_README_RECIPE={secrets.token_hex(8)}", Path(tempfile.mkdtemp(prefix="rt-")))
    try:
        yield tag
    finally:
        left = stop_tagged(tag.marker)
        shutil.rmtree(tag.ray_tmp, ignore_errors=True)
    assert not left, f"processes of the recipe still alive: {sorted(left)}"


def test_the_cluster_recipe_runs_on_a_fresh_machine(tag: Tag, tmp_path: Path) -> None:
    run, _ = split_at_sweep(commands(cluster_recipe_block()))
    ray_port, mlflow_port = free_port(), free_port()
    script = "\n".join(
        re.sub(r"\b5001\b", str(mlflow_port), re.sub(r"\b6379\b", str(ray_port), line)) for line in run
    )
    (tmp_path / "recipe.sh").write_text(script + "\n")
    home, work = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    for folder in ("experiments", "search_spaces"):
        shutil.copytree(ROOT / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    key, value = tag.marker.split("=", 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(
        {key: value},
        HOME=str(home),
        RAY_TMPDIR=str(tag.ray_tmp),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        # The `hypersweep` command imports this checkout's package.
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "platform"), env.get("PYTHONPATH")])),
    )
    log = tmp_path / "recipe.log"
    started = time.monotonic()
    with log.open("wb") as out:
        # Output to a file: the servers the block leaves running hold it open after bash ends.
        result = subprocess.run(
            ["bash", "-ex", str(tmp_path / "recipe.sh")],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=_BLOCK_TIMEOUT_S,
            check=False,
        )
    output = log.read_text(errors="replace")
    took = time.monotonic() - started
    assert result.returncode == 0, f"the recipe failed after {took:.0f} s:\n{output[-6000:]}"
    # The head started with token authentication on, with the token the block made in the empty HOME.
    assert "Token authentication is disabled" not in output
    token = home / ".ray" / "auth_token"
    assert token.is_file() and token.read_text().strip()
    # MLflow at the server holds the sweep: its parent run and 4 finished trials nested in it.
    stored = read_sweep(f"http://127.0.0.1:{mlflow_port}", "breast-cancer-mlp")
    assert len(stored.children) == 4
    parent_id = stored.parent.info.run_id
    assert all(c.data.tags["mlflow.parentRunId"] == parent_id for c in stored.children)
    assert all(run.info.status == "FINISHED" for run in [stored.parent, *stored.children])
    assert all(len(stored.history(c)) <= 3 for c in stored.children)
    assert (work / "runs").is_dir()
