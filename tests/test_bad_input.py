"""Bad input through the real CLI: exit 2, one line naming file and key, nothing written."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from hypersweep.cli import main
from tests.conftest import DEFAULT_SWEEP, ROOT, hypersweep

BASE = (
    "name: t\nexperiment: tests.toy:ToyRegression\n"
    "search_space: {lr: {type: loguniform, low: 0.001, high: 0.1}}\n"
)

# Training functions (function trials) that cannot work.
_LOOPS = """
import hypersweep

def one_argument(config):
    pass

@hypersweep.reports("val_mae")
def reports_val_mae(config, trial):
    pass
"""

_KEEPS_A_LOCK = """
import threading
from tests.toy import ToyRegression

class KeepsALock(ToyRegression):
    def load_data(self, *, seed):
        self.lock = threading.Lock()
        return super().load_data(seed=seed)
"""


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("name: [unclosed\n", ": line 2: invalid YAML"),
        ("", ": must be a non-empty mapping"),
        ("- a\n", ": must be a non-empty mapping"),
        (BASE + "num_sample: 3\n", ": num_sample: unknown key (did you mean 'num_samples'?)"),
        (BASE + "max_epochs: ten\n", ": max_epochs: "),
        (BASE + "training: {max_failures: -1}\n", ": training.max_failures: "),
        (BASE + "fixed: {dropout: 1.0}\n", ": fixed.dropout: dropout must be at least 0 and below 1"),
        (BASE + "fixed: {batch_size: 0}\n", ": fixed.batch_size: batch_size must be a positive integer"),
        (
            BASE.replace("{lr:", "{dropout: {type: uniform, low: 0.1, high: 1.5}, lr:"),
            ": search_space.dropout.high: dropout must be at least 0 and below 1",
        ),
        (
            BASE.replace("{lr:", "{batch_size: {type: choice, values: [32, -8]}, lr:"),
            ": search_space.batch_size.values: batch_size must be a positive integer",
        ),
        (BASE + "resources: {gpus_per_trial: -1}\n", ": resources.gpus_per_trial: "),
        (BASE + "max_epochs: 2\nscheduler: {grace_period: 3}\n", ": scheduler.grace_period: 3 exceeds"),
        (BASE + "scheduler: {type: hyperbnd}\n", ": scheduler.type: "),
        (BASE + "metric: val_loss\nmode: max\n", ": mode: max with metric val_loss: a loss is minimised"),
        (BASE + "search: {type: grid}\n", ": search.type: "),
        (
            BASE + "max_epochs: 4\nscheduler: {type: pbt, perturbation_interval: 4}\n",
            ": scheduler.perturbation_interval: 4 is not below max_epochs (4): no trial would ever copy",
        ),
        (
            BASE + "num_samples: 3\nscheduler: {type: pbt, perturbation_interval: 2}\n",
            ": num_samples: 3 is too small a population for pbt: at least 4",
        ),
        (
            BASE + "scheduler: {type: pbt, mutations: [dropout]}\n",
            ": scheduler.mutations.dropout: is not a key of the search space",
        ),
        (
            BASE + "fixed: {optimizer: sgd}\nscheduler: {type: pbt, mutations: [optimizer]}\n",
            ": scheduler.mutations.optimizer: is fixed, not in the search space",
        ),
        (
            BASE.replace("{lr:", "{optimizer: {type: choice, values: [sgd, adam]}, lr:")
            + "scheduler: {type: pbt, mutations: [lr, optimizer]}\n",
            ": scheduler.mutations.optimizer: the optimizer type cannot change mid-trial",
        ),
        (
            BASE.replace("{lr:", "{batch_size: {type: choice, values: [8, 16]}, lr:")
            + "scheduler: {type: pb2, mutations: [lr, batch_size]}\n",
            ": scheduler.mutations.batch_size: is a choice: pb2 models ranges only",
        ),
        (
            BASE.replace("{lr:", "{width: {type: choice, values: [8, 16]}, lr:")
            + "scheduler: {type: pbt, mutations: [width]}\n",
            ": scheduler.mutations.width: the trainer cannot change width mid-trial (it shapes the model)",
        ),
        (BASE.replace("tests.toy:", "broken_syntax:"), ": experiment: 'broken_syntax' has a syntax error"),
        (
            BASE.replace("tests.toy:", "raises_on_import:"),
            ": experiment: importing 'raises_on_import' failed",
        ),
        (
            BASE.replace("tests.toy:ToyRegression", "loops:one_argument"),
            ": experiment: 'one_argument' in 'loops' cannot be called as train(config, trial): "
            "it takes (config)",
        ),
        (
            BASE.replace("tests.toy:ToyRegression", "loops:reports_val_mae")
            + "metric: val_accuracy\nmode: max\n",
            ": metric: 'val_accuracy' is not reported; known: train_loss, val_loss, val_mae",
        ),
        (
            BASE.replace("tests.toy:ToyRegression", "loops:reports_val_mae") + "training: {amp: true}\n",
            ": training.amp: the generic loop's setting; a training function does this in its own loop",
        ),
        (
            BASE.replace("tests.toy:ToyRegression", "loops:reports_val_mae")
            + "num_samples: 4\nmax_epochs: 6\nscheduler: {type: pbt, perturbation_interval: 2}\n",
            ": scheduler.type: pbt needs the generic loop (it changes lr and dropout mid-trial)",
        ),
        (
            BASE.replace("tests.toy:ToyRegression", "loops:no_such_loop"),
            ": experiment: 'no_such_loop' in 'loops' is not found",
        ),
        (
            BASE.replace("tests.toy:ToyRegression", "keeps_a_lock:KeepsALock"),
            ": experiment: KeepsALock cannot be sent to the workers after load_data (TypeError: ",
        ),
    ],
)
def test_each_bad_input_is_one_line_exit_2_nothing_written(
    tmp_path: Path, text: str, where: str, monkeypatch, capsys
) -> None:
    (tmp_path / "pkg").mkdir()
    sweep = tmp_path / "pkg" / "bad.yaml"
    sweep.write_text(text)
    (tmp_path / "broken_syntax.py").write_text("def f(:\n")  # experiments that fail on import
    (tmp_path / "raises_on_import.py").write_text("raise RuntimeError('no GPU driver')\n")
    (tmp_path / "keeps_a_lock.py").write_text(_KEEPS_A_LOCK)  # state the workers could not get
    (tmp_path / "loops.py").write_text(_LOOPS)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:  # the CLI's own entry point, in this process
        main(["run", str(sweep), "--tracking-uri", f"sqlite:///{tmp_path}/x.db"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {sweep}{where}"), err
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "__pycache__" not in str(p))
    assert after == [p for p in before if "__pycache__" not in str(p)]  # no db, no runs folder


@pytest.mark.parametrize(
    ("flag", "value", "where"),
    [
        ("--storage", "a-file/runs", ": storage: no sweep folder can be made in "),
        ("--tracking-uri", "sqlite:///a-file/x.db", ": tracking_uri: no SQLite store can be made at "),
        ("--tracking-uri", "sqlite:///a-folder", ": tracking_uri: no SQLite store can be made at "),
    ],
)
def test_a_path_that_cannot_be_made_is_one_line_before_anything_starts(
    tmp_path: Path, flag: str, value: str, where: str, monkeypatch, capsys
) -> None:
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-folder").mkdir()
    monkeypatch.chdir(tmp_path)
    uri = ["--tracking-uri", f"sqlite:///{tmp_path}/x.db"] if flag == "--storage" else []
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(DEFAULT_SWEEP), flag, value, *uri])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert where in err and ("is a file, not a folder" in err or "is a folder" in err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "a-folder"]


def test_best_with_a_store_it_cannot_read_is_one_line(tmp_path: Path) -> None:
    for uri, why in [("http://127.0.0.1:1", "no MLflow server answers"), ("bogus://x", "unsupported URI")]:
        result = hypersweep("best", "some-sweep", "--tracking-uri", uri, cwd=tmp_path)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("error: tracking_uri: ") and why in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_ui_refuses_a_bad_port_a_taken_port_and_a_missing_store(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "m.db"
    sqlite3.connect(store).close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cases = [
            (["--port", "99999", "--tracking-uri", f"sqlite:///{store}"], "error: command line: "),
            (["--port", port, "--tracking-uri", f"sqlite:///{store}"], "error: --port: cannot listen on "),
            # MLflow would make an empty store and show it
            (["--tracking-uri", "sqlite:///none.db"], "error: --tracking-uri: no MLflow store at none.db"),
        ]
        for args, line in cases:
            with pytest.raises(SystemExit) as exit_:
                main(["ui", *args])
            err = capsys.readouterr().err
            assert exit_.value.code == 2 and err.startswith(line) and len(err.splitlines()) == 1, err
    assert [p.name for p in tmp_path.iterdir()] == ["m.db"]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("fixed.activation=swish", "ValueError: activation: 'swish' is not one of relu, tanh"),
        ("search_space.beta1.high=1.5", "beta1=1.5, dropout=0.5, batch_size=128: ValueError: Invalid beta"),
        ("fixed.weight_decay=-1", "ValueError: Invalid weight_decay value: -1"),
        ("fixed.hidden_sizes=32", "TypeError: 'int' object is not iterable"),
    ],
)
def test_validate_builds_the_model_of_every_choice_and_range_end(
    tmp_path: Path, value: str, why: str, monkeypatch, capsys
) -> None:
    """A value no trial could train with: found by validate (and by run before Ray's trials),
    not by every trial failing after its retries."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["validate", str(DEFAULT_SWEEP), "--set", value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {DEFAULT_SWEEP}: experiment: building the model failed with ")
    assert why in err
    assert list(tmp_path.iterdir()) == []


def test_missing_sweep_file_and_unknown_flag(tmp_path: Path) -> None:
    missing = hypersweep("run", "absent.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip() == "error: absent.yaml: file not found"
    flag = hypersweep("run", str(DEFAULT_SWEEP), "--max-epoch", "3", cwd=tmp_path)
    assert flag.returncode == 2 and flag.stderr.startswith("error: command line: ")
    assert list(tmp_path.iterdir()) == []


def test_ui_binds_loopback_by_default_and_warns_when_exposed(tmp_path: Path) -> None:
    from tests.chaos_tools import free_port

    # --help shows the defaults without starting a server.
    result = hypersweep("ui", "--help", cwd=ROOT)
    assert "127.0.0.1" in result.stdout
    port = str(free_port())
    sqlite3.connect(tmp_path / "x.db").close()  # the UI shows an existing store only
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "hypersweep", "ui", "--host", "0.0.0.0", "--port", port,
         "--tracking-uri", f"sqlite:///{tmp_path}/x.db"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        first = proc.stderr.readline() if proc.stderr else ""
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert "warning: the MLflow UI on 0.0.0.0 is reachable by anyone" in first
