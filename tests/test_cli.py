"""The command line as a user meets it: exit codes, one-line errors, nothing written on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch

from hypersweep import cluster
from hypersweep.config import load_sweep
from hypersweep.manifest import FORMAT, MANIFEST
from tests.conftest import DEFAULT_SWEEP, ROOT, hypersweep


def _no_trace(result) -> None:
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_validate_accepts_the_default_sweep(tmp_path: Path) -> None:
    result = hypersweep("validate", str(DEFAULT_SWEEP), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ok:" in result.stdout and "lr, optimizer, momentum" in result.stdout
    assert list(tmp_path.iterdir()) == []  # validate starts and writes nothing


def test_misspelled_key_exits_2_with_one_line(tmp_path: Path) -> None:
    sweep = tmp_path / "typo.yaml"
    sweep.write_text(DEFAULT_SWEEP.read_text().replace("num_samples:", "num_sample:"))
    result = hypersweep("run", str(sweep), cwd=tmp_path)
    assert result.returncode == 2
    _no_trace(result)
    assert result.stderr.startswith(f"error: {sweep}: num_sample: unknown key (did you mean 'num_samples'?)")
    assert [p.name for p in tmp_path.iterdir()] == ["typo.yaml"]  # nothing written


def test_unknown_flag_exits_2_with_one_line(tmp_path: Path) -> None:
    result = hypersweep("run", str(DEFAULT_SWEEP), "--num-sample", "3", cwd=tmp_path)
    assert result.returncode == 2
    _no_trace(result)
    assert "--num-sample" in result.stderr and "--num-samples" in result.stderr


def test_experiment_that_does_not_import_exits_2(tmp_path: Path) -> None:
    result = hypersweep(
        "validate", str(DEFAULT_SWEEP), "--set", "experiment=experiments.nope:Model", cwd=tmp_path
    )
    assert result.returncode == 2
    _no_trace(result)
    assert ": experiment: cannot import 'experiments.nope'" in result.stderr


def test_unknown_metric_exits_2(tmp_path: Path) -> None:
    result = hypersweep("validate", str(DEFAULT_SWEEP), "--set", "metric=val_acc", cwd=tmp_path)
    assert result.returncode == 2
    _no_trace(result)
    assert ": metric: 'val_acc' is not reported" in result.stderr


def test_best_of_an_unknown_store_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    result = hypersweep("best", "nope", "--tracking-uri", f"sqlite:///{tmp_path}/none.db", cwd=tmp_path)
    assert result.returncode == 2
    _no_trace(result)
    assert list(tmp_path.iterdir()) == []


def test_unknown_optimizer_in_the_space_exits_2(tmp_path: Path) -> None:
    sweep = tmp_path / "opt.yaml"
    sweep.write_text(
        "name: t\nexperiment: tests.toy:ToyRegression\n"
        "search_space: {optimizer: {type: choice, values: [adam, adamm]}}\n"
    )
    result = hypersweep("validate", str(sweep), cwd=ROOT)
    assert result.returncode == 2
    _no_trace(result)
    assert "optimizer: 'adamm' is not one of sgd, momentum, nesterov" in result.stderr
    assert "(did you mean 'adam'?)" in result.stderr


def test_only_the_process_command_line_skips_the_final_collections(monkeypatch) -> None:
    """The command line's own process freezes its objects for a quick exit (2.2-2.5 s less after a
    sweep, measured); a caller that runs ``main`` in its own process keeps its garbage collector."""
    import gc

    from hypersweep.cli import main

    gc.unfreeze()
    main(["validate", str(DEFAULT_SWEEP)])
    assert gc.get_freeze_count() == 0
    monkeypatch.setattr("sys.argv", ["hypersweep", "validate", str(DEFAULT_SWEEP)])
    try:
        main()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def _processes_with(marker: str) -> list[str]:
    """Command lines of live processes whose environment holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "environ").read_bytes():
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def _run_marked(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[Any, str]:
    """`hypersweep` in a subprocess whose every descendant carries a mark in its environment."""
    mark = uuid.uuid4().hex
    full = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full.update(env or {}, HYPERSWEEP_TEST_MARK=mark)
    result = subprocess.run(
        [sys.executable, "-m", "hypersweep", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return result, mark


def _assert_none_left(mark: str) -> None:
    deadline = time.monotonic() + 1  # a killed process takes a moment to go (a node that kept
    # starting would take seconds, then stop by itself: too late)
    while _processes_with(f"HYPERSWEEP_TEST_MARK={mark}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_with(f"HYPERSWEEP_TEST_MARK={mark}") == []


def test_run_with_bad_input_found_after_ray_started_leaves_no_ray_process(tmp_path: Path) -> None:
    """`run` starts local Ray before it imports the experiment. An experiment that does not
    import is still one line and exit 2, and the Ray it started is gone when the command ends."""
    bad = "experiment=experiments.nope:M"
    result, mark = _run_marked("run", str(DEFAULT_SWEEP), "--set", bad, cwd=tmp_path)
    assert result.returncode == 2
    _no_trace(result)
    assert ": experiment: cannot import 'experiments.nope'" in result.stderr
    assert list(tmp_path.iterdir()) == []
    _assert_none_left(mark)


def test_local_ray_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    """Ray's temp folder cannot be made (RAY_TMPDIR below a file): Ray's reason in one line,
    exit 2, nothing written."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    (tmp_path / "a-file").write_text("")
    missing = tmp_path / "a-file" / "ray"
    env = {"RAY_TMPDIR": str(missing)}
    result, mark = _run_marked("run", str(DEFAULT_SWEEP), cwd=cwd, env=env)
    assert result.returncode == 2
    _no_trace(result)
    assert result.stderr.startswith("error: local Ray did not start: ")
    assert str(missing) in result.stderr
    assert list(cwd.iterdir()) == []
    _assert_none_left(mark)


def test_a_tracking_store_mlflow_cannot_open_is_one_line(tmp_path: Path) -> None:
    """Found only when the writer process opens the store, after Ray started: MLflow's reason in
    one line, exit 2, nothing written, nothing left running."""
    result, mark = _run_marked("run", str(DEFAULT_SWEEP), "--tracking-uri", "bogus://x", cwd=tmp_path)
    assert result.returncode == 2
    _no_trace(result)
    assert ": tracking_uri: MLflow cannot open bogus://x: " in result.stderr
    assert "unsupported URI 'bogus://x'" in result.stderr
    assert list(tmp_path.iterdir()) == []
    _assert_none_left(mark)


def test_run_refuses_a_model_no_trial_could_build_before_any_run(tmp_path: Path) -> None:
    result, mark = _run_marked("run", str(DEFAULT_SWEEP), "--set", "fixed.activation=swish", cwd=tmp_path)
    assert result.returncode == 2
    _no_trace(result)
    assert ": experiment: building the model failed with " in result.stderr
    assert list(tmp_path.iterdir()) == []  # no store, no sweep folder: no run was made
    _assert_none_left(mark)


def test_resume_without_tune_state_is_one_line_and_leaves_no_ray_process(tmp_path: Path) -> None:
    """`resume` starts local Ray right after reading the manifest; a sweep Tune saved nothing
    for is still one line and exit 2, with that Ray gone."""
    folder = tmp_path / "runs" / "early-20260101-000000-abcd"
    folder.mkdir(parents=True)
    spec = load_sweep(DEFAULT_SWEEP).resolved()
    manifest: dict[str, Any] = {"format": FORMAT, "sweep_id": folder.name, "roots": []}
    manifest["source"] = str(DEFAULT_SWEEP)
    manifest |= {"address": None, "tracking_uri": f"sqlite:///{tmp_path}/m.db", "spec": spec}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    result, mark = _run_marked("resume", str(folder), cwd=tmp_path)
    assert result.returncode == 2
    _no_trace(result)
    assert "Ray Tune saved no state for this sweep yet" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    _assert_none_left(mark)


@pytest.mark.parametrize(
    ("args", "end"),
    [
        (
            ["--num-samples", "0"],
            "num_samples: Input should be greater than or equal to 1 (from --num-samples 0)",
        ),
        (
            ["--set", "search_space.lr.low=-1"],
            "search_space.lr.low: Input should be greater than 0 (from --set search_space.lr.low=-1)",
        ),
        (
            ["--cpus-per-trial", "4096", "--max-concurrent", "2"],
            "resources.cpus_per_trial: a trial asks for 4096 CPU and 0 GPU but the largest node has"
            f" {cluster.probe(None).cpus:g} CPU and {torch.cuda.device_count()} GPU"
            " (from --cpus-per-trial 4096)",
        ),
        (
            # Shortened and contradicted on the command line: an error (a shortened sweep alone
            # brings the file's grace period within, see test_config).
            ["--shared-storage", "--set", "max_epochs=1", "--set", "scheduler.grace_period=2"],
            "scheduler.grace_period: 2 exceeds max_epochs (1) (from --set scheduler.grace_period=2)",
        ),
    ],
)
def test_an_error_about_a_value_from_the_command_line_names_the_argument(
    args: list[str], end: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The line names the sweep file and the key, and the argument that set the value: the file
    may not hold the value at fault. A value the file holds blames nothing else."""
    from hypersweep.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["validate", str(DEFAULT_SWEEP), *args])
    line = capsys.readouterr().err.strip()
    assert exit_.value.code == 2
    assert line == f"error: {DEFAULT_SWEEP}: {end}"
