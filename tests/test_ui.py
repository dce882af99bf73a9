"""The MLflow UI, opened with `hypersweep ui`, shows a sweep with its nested trials under their
readable names (real Chromium)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.conftest import DEFAULT_SWEEP, hypersweep
from tests.mlflow_store import read_sweep

pytestmark = pytest.mark.slow
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout:.0f} s")


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("ui")
    result = hypersweep("run", str(DEFAULT_SWEEP), "--num-samples", "3", "--max-epochs", "2", cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return cwd, "sqlite:///mlflow.db"  # MLflow's default store, in the working directory


@pytest.fixture
def ui_server(swept: tuple[Path, str]) -> Iterator[str]:
    cwd, _ = swept
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hypersweep", "ui", "--port", str(port)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", timeout=90)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_ui_shows_the_sweep_with_its_trials_nested_under_readable_names(
    swept, ui_server: str, tmp_path: Path
) -> None:
    cwd, uri = swept
    os.chdir(cwd)  # the default store is relative to the working directory
    stored = read_sweep(uri, "breast-cancer-mlp")
    sweep_name = stored.parent.info.run_name
    trial_names = [c.info.run_name for c in stored.children]
    # Readable names: the trial's number, then its swept values (the trial id stays a tag).
    for child in stored.children:
        name, params = child.info.run_name, child.data.params
        assert params["optimizer"] in name.split() and f"lr={float(params['lr']):.2g}" in name, name
        assert stored.tag(child, "trial_id") not in name, name
    assert sorted(name.split()[0] for name in trial_names) == ["01", "02", "03"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(f"{ui_server}/#/experiments/{stored.parent.info.experiment_id}/runs")
            page.get_by_text(sweep_name).first.wait_for(timeout=60_000)
            # Trials are nested under the sweep's run: hidden until its expander is opened.
            assert page.get_by_text(trial_names[0], exact=True).count() == 0
            # MLflow 3.17's runs table: the expander is the icon button in the run-name cell.
            page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
            for name in trial_names:
                page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
            page.screenshot(path=str(tmp_path / "runs.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "runs.png").stat().st_size > 10_000
