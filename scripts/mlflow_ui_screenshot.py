"""The picture in docs/mlflow-ui.png: a sweep and its trials in the MLflow UI, taken with Chromium.

    python scripts/mlflow_ui_screenshot.py UI_URL TRACKING_URI OUT.png [--experiment NAME]

UI_URL is a running UI (``hypersweep ui``) on the store TRACKING_URI names; the newest sweep of
the experiment is opened, its trials shown and the columns that compare them picked. Written
for MLflow 3.17's UI (its component ids); another version may need other selectors.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from mlflow.tracking import MlflowClient
from playwright.sync_api import Page, sync_playwright

SHOWN = ("best_val_loss", "lr", "optimizer", "batch_size", "dropout", "hypersweep.status")
HIDDEN = ("Dataset", "Source", "Models")


def toggle_column(page: Page, name: str) -> None:
    """Tick or untick one column in the runs table's column picker (matched by its whole name)."""
    page.get_by_role("button", name="Columns").click()
    page.get_by_placeholder("Search columns").fill(name)
    time.sleep(0.7)  # the picker filters as it is typed into
    nodes = page.locator('[data-testid="column-selector-tree"] .du-bois-light-tree-treenode')
    node = nodes.filter(has_text=re.compile(f"^{re.escape(name)}$")).first
    node.locator(".du-bois-light-tree-checkbox").click()
    page.keyboard.press("Escape")
    time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("tracking_uri")
    parser.add_argument("out", type=Path)
    parser.add_argument("--experiment", default="breast-cancer-mlp")
    args = parser.parse_args()
    client = MlflowClient(tracking_uri=args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    assert experiment is not None, f"no experiment {args.experiment} at {args.tracking_uri}"
    sweep = client.search_runs(
        [experiment.experiment_id], "tags.`hypersweep.role` = 'sweep'", order_by=["start_time DESC"]
    )[0]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 600})
            page.goto(f"{args.url}/#/experiments/{experiment.experiment_id}/runs")
            page.get_by_text(str(sweep.info.run_name)).first.wait_for(timeout=60_000)
            page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]').click()
            page.locator('[data-component-id="mlflow_header.toggle_sidebar_button"]').click()
            for name in (*HIDDEN, *SHOWN):
                toggle_column(page, name)
            # The sweep's trials are nested under its run: its expander shows them.
            page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
            time.sleep(2)
            page.screenshot(path=str(args.out))
        finally:
            browser.close()


if __name__ == "__main__":
    main()
