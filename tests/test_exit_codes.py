"""Exit codes tell a sweep without a valid trial (1) from bad input (2) and from a crash of
hypersweep itself (3); `run` and `resume` alike, and `--help` says so. (`run` of a sweep whose
every trial fails, exit 1: test_chaos.py; bad input, exit 2: test_bad_input.py.)"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from hypersweep.cli import EXIT_CRASH, EXIT_NO_VALID_TRIAL, main
from tests.chaos_tools import chaos_sweep
from tests.conftest import DEFAULT_SWEEP, ROOT, hypersweep
from tests.mlflow_store import read_sweep

_CRASH = re.compile(r"error: hypersweep crashed: RuntimeError: injected driver fault \(traceback: (\S+)\)")


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("injected driver fault")


def _crash_line(err: str) -> Path:
    """The one line a crash prints (nothing else on stderr names it); the file it names."""
    assert "Traceback" not in err, err
    (line,) = [line for line in err.splitlines() if "crashed" in line]
    found = _CRASH.fullmatch(line)
    assert found, line
    return Path(found.group(1))


@pytest.mark.parametrize("command", [[], ["run"], ["resume"]])
def test_help_lists_the_exit_codes(command: list[str]) -> None:
    out = hypersweep(*command, "--help", cwd=ROOT).stdout
    assert "Exit codes:" in out
    for code, words in [("0", "done"), ("1", "no trial produced a valid result"), ("2", "bad input")]:
        assert re.search(rf"^\s+{code}\s+.*{words}", out, re.M), out
    assert re.search(r"^\s+3\s+hypersweep itself crashed", out, re.M), out
    assert re.search(r"^\s+130\s+interrupted", out, re.M), out


def test_a_crash_outside_a_sweep_is_one_line_exit_3_and_a_traceback_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Something unexpected while validating (the cluster probe raises): no sweep folder yet, so
    the traceback goes to the temporary folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr("hypersweep.cluster.probe", _boom)
    with pytest.raises(SystemExit) as exit_:
        main(["validate", str(DEFAULT_SWEEP)])
    assert exit_.value.code == EXIT_CRASH == 3
    report = _crash_line(capsys.readouterr().err)
    assert report.parent == tmp_path and report.name.startswith("hypersweep-crash-")
    text = report.read_text()
    assert text.startswith("Traceback") and "in validate" in text and "injected driver fault" in text


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_driver_crash_exits_3_in_run_and_resume_and_resume_then_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The driver raises after Tune's fit (while settling the trials' ends): exit 3, one line, the
    traceback in the sweep's folder; the sweep stays resumable. Every trial failed, so the
    resume that gets through exits 1, as `run` would have."""
    monkeypatch.chdir(ROOT)  # the sweep's workers import tests.chaos from the working directory
    sweep = chaos_sweep(tmp_path, samples=2, epochs=2, fault="raise", fault_epoch=1, fault_attempts=99)
    storage = tmp_path / "runs"
    uri = f"sqlite:///{tmp_path}/x.db"
    run = ["run", str(sweep), "--tracking-uri", uri, "--storage", str(storage)]
    with monkeypatch.context() as patch:
        patch.setattr("hypersweep.tuning._settle", _boom)
        with pytest.raises(SystemExit) as exit_:
            main([*run, "--set", "training.max_failures=0"])
        assert exit_.value.code == EXIT_CRASH
        (folder,) = storage.iterdir()
        report = _crash_line(capsys.readouterr().err)
        assert report.parent == folder and report.name.startswith("crash-")
        assert "in _fit" in report.read_text() and "injected driver fault" in report.read_text()
        assert read_sweep(uri, "chaos").parent.info.status == "KILLED"  # resumable, as after Ctrl-C
        with pytest.raises(SystemExit) as exit_:
            main(["resume", str(folder)])
        assert exit_.value.code == EXIT_CRASH
        assert _crash_line(capsys.readouterr().err).parent == folder
        assert len(list(folder.glob("crash-*.txt"))) == 2
    with pytest.raises(SystemExit) as exit_:
        main(["resume", str(folder)])
    out, err = capsys.readouterr()
    assert exit_.value.code == EXIT_NO_VALID_TRIAL, out + err
    assert "no trial finished with a valid result" in out and "crashed" not in err
