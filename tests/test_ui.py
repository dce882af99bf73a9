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


def test_ui_shows_the_sweep_report_on_the_parent_run(swept, ui_server: str, tmp_path: Path) -> None:
    """The parent run's report/report.html, opened in the UI's artifact view (a sandboxed frame):
    its charts are drawn, its table holds the top trials, and each run's link is the UI's own."""
    cwd, uri = swept
    os.chdir(cwd)
    stored = read_sweep(uri, "breast-cancer-mlp")
    parent, experiment = stored.parent, stored.parent.info.experiment_id
    scored = [c for c in stored.children if "best_val_loss" in c.data.metrics]
    best = min(scored, key=lambda c: c.data.metrics["best_val_loss"])
    # Curves and best-so-far always; parallel coordinates with a result; importance with 5.
    charts = 2 + bool(scored) + any(k.startswith("importance_") for k in parent.data.metrics)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{ui_server}/#/experiments/{experiment}/runs/{parent.info.run_id}/artifacts")
            page.get_by_text("report", exact=True).first.click(timeout=60_000)
            page.get_by_text("report.html", exact=True).first.click(timeout=30_000)
            report = page.frame_locator("iframe.mlflow-html-iframe")
            rows = report.locator("#top-trials tbody tr")
            rows.first.wait_for(timeout=30_000)
            widths = report.locator("img.chart").evaluate_all("images => images.map(i => i.naturalWidth)")
            assert len(widths) == charts and all(w >= 600 for w in widths), widths
            assert rows.count() == min(10, len(scored))
            link = report.locator("a.run").first.get_attribute("href")
            assert link == f"{ui_server}/#/experiments/{experiment}/runs/{best.info.run_id}"
            assert report.locator("#ui-note").is_visible()  # how to open a run from the sandbox
            page.locator("iframe.mlflow-html-iframe").screenshot(path=str(tmp_path / "report.png"))
            page.screenshot(path=str(tmp_path / "report-in-ui.png"))
        finally:
            browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000
