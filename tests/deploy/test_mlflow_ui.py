"""What a person sees in the MLflow UI, checked in a real browser: Playwright drives Debian's
`chromium` (headless) against a real `mlflow server` on loopback holding a tiny real sweep (two
fine-tuning cells through `run_sweep`, then `build_report`).

It walks the README's "Comparing runs in the MLflow UI": the link histoclr prints opens the
experiment on its runs table (not the GenAI overview); expanding the parent shows the cells, and the
columns `init`, `freeze`, `label_fraction`, `val_aji` and `best_val_dice` can be added; the compare
page of the two cells shows the param they differ in (and only it with "Show diff only"); the
parent's report artifacts (`summary.md`, a plot) open. Screenshots go to tmp, or to the folder in
``HISTOCLR_UI_SCREENSHOTS`` (``HISTOCLR_UI_SCREENSHOTS=docs/img`` refreshes the README's).

`make test` installs Debian's chromium when it can (`make chromium`); Playwright's own browser
download is not used. Without chromium or Playwright the test is skipped, and fails when `CI` is set.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ENV = "HISTOCLR_CHROMIUM"            # a chromium binary to use instead of Debian's
SCREENSHOTS_ENV = "HISTOCLR_UI_SCREENSHOTS"
TIMEOUT_MS = 60_000                           # the first page load compiles a large JS bundle


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so this test must run: {reason}")
    pytest.skip(reason)


def _chromium() -> str:
    for exe in (os.environ.get(CHROMIUM_ENV), "/usr/bin/chromium", shutil.which("chromium"),
                shutil.which("chromium-browser")):
        if exe and Path(exe).is_file() and os.access(exe, os.X_OK):
            return exe
    _unavailable("Debian's chromium not found (run `make chromium` as root or with passwordless sudo, "
                 f"or `sudo apt-get install chromium`, or set {CHROMIUM_ENV})")


def _sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the Python package `playwright` is not installed (it is in the dev extra: make setup)")
    return sync_playwright


@pytest.fixture
def browser_tools():
    """``(sync_playwright, chromium executable)``; skip (fail on CI) before any work when missing."""
    return _sync_playwright(), _chromium()


@pytest.fixture
def ui_sweep(browser_tools, tmp_path, launch_mlflow_server, _mlflow_template_db):
    """``(server url, experiment id, parent run id, {freeze: child run id})`` of a tiny real sweep."""
    from histoclr.ablation.report import build_report
    from histoclr.ablation.sweep import run_sweep
    from histoclr.config import load_config
    from histoclr.config.ablation import AblationConfig
    from histoclr.seg.synthetic import write_synthetic_pairs
    from histoclr.tracking import child_runs

    pairs = write_synthetic_pairs(tmp_path / "data", n=3, size=64)
    ft = {"pairs": str(pairs), "data_root": str(tmp_path / "data"),
          "model": {"encoder": "resnet18", "decoder_channels": 16},
          "data": {"mpp": None, "crop_size": 64}, "postprocess": {"tune": False},
          "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2, "overlays": 0, "val_batch_size": 2}}
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(ft))
    sweep = {"experiment": "ui-ablation", "sweep_name": "ui-sweep", "finetune_config": str(tmp_path / "ft.yaml"),
             "inits": ["random"], "freezes": ["none", "layer1-2"], "label_fractions": [1.0], "seeds": [0],
             "out_dir": str(tmp_path / "ablation"), "classical_baseline": False}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    (tmp_path / "server").mkdir()
    shutil.copy(_mlflow_template_db, tmp_path / "server" / "backend.db")   # migrated already: a faster start
    t0 = time.time()
    with launch_mlflow_server(tmp_path / "server", f"sqlite:///{tmp_path / 'server' / 'backend.db'}") as url:
        print(f"mlflow server up after {time.time() - t0:.0f} s")
        res = run_sweep(load_config(AblationConfig, tmp_path / "sweep.yaml"), tracking_uri=url, echo=lambda s: None)
        assert len(res.finished) == 2, res
        build_report(tmp_path / "report", parent_run_id=res.parent_run_id, tracking_uri=url)
        print(f"sweep and report logged after {time.time() - t0:.0f} s")
        cells = {r.data.params["freeze"]: r.info.run_id for r in child_runs(res.parent_run_id, url)}
        yield url, res.experiment_id, res.parent_run_id, cells


def _screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "screenshots")
    folder = folder if folder.is_absolute() else REPO / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.slow
def test_a_sweep_as_a_person_sees_it_in_the_mlflow_ui(browser_tools, ui_sweep, tmp_path):
    from mlflow.tracking import MlflowClient

    from histoclr.tracking import EXPERIMENT_KIND_TAG, TRAINING_KIND, runs_link

    url, exp_id, parent_id, cells = ui_sweep
    sync_playwright, chromium = browser_tools
    shots = _screenshot_dir(tmp_path)
    assert MlflowClient(url).get_experiment(exp_id).tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    link = runs_link("ui-ablation", url).split(": ", 1)[1]      # what ablate / report / ui print
    assert link == f"{url}/#/experiments/{exp_id}/runs?workflowType=machine_learning"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 800})
            page.set_default_timeout(TIMEOUT_MS)

            # 1. the printed link opens the runs table of the model-training view
            page.goto(link)
            page.get_by_text("ui-sweep", exact=True).wait_for()
            assert "/runs" in page.url and "workflowType=machine_learning" in page.url
            assert page.get_by_role("heading", name="Runs").is_visible()
            assert page.get_by_text("Token Usage").count() == 0        # not the GenAI overview
            close = page.get_by_role("button", name="Close")           # the assistant side panel
            if close.count():
                close.first.click()

            # 2. expand the parent: its cells; add the compared columns
            parent_cell = page.locator("[col-id='attributes.`Run Name`']").filter(has_text="ui-sweep")
            parent_cell.locator("button").first.click()
            for freeze in cells:
                page.get_by_text(f"init=random freeze={freeze} labels=100% seed=0", exact=True).wait_for()
            page.get_by_role("button", name="Columns").click()
            wanted = ("init", "freeze", "label_fraction", "val_aji", "best_val_dice")
            for name in ("Dataset", "Source", "Models", *wanted):      # room for them: off with three
                page.locator(".du-bois-light-tree-treenode").filter(
                    has=page.locator(f"span[title='{name}']")).locator(".du-bois-light-tree-checkbox").click()
            page.keyboard.press("Escape")
            for name in wanted:
                page.get_by_role("columnheader", name=name, exact=True).first.wait_for()
            for freeze in cells:      # the cells' values are in those columns
                assert page.locator("[col-id*='freeze']").filter(has_text=freeze).count() >= 1
            assert page.locator("[col-id*='label_fraction']").filter(has_text="1.0").count() == 2
            box = page.locator("[role=columnheader][col-id='attributes.`Run Name`']").first.bounding_box()
            if box:                   # widen the run names for the screenshot, dragging the header's edge
                x, y = box["x"] + box["width"] - 2, box["y"] + box["height"] / 2
                page.mouse.move(x - 20, y)
                page.mouse.move(x, y)
                page.mouse.down()
                page.mouse.move(x + 160, y, steps=8)
                page.mouse.up()
            page.screenshot(path=str(shots / "mlflow_ui_runs.png"))

            # 3. the compare page of the two cells: the param they differ in
            page.goto(f"{url}/#/compare-runs?runs={json.dumps(list(cells.values()))}"
                      f"&experiments={json.dumps([exp_id])}&workflowType=machine_learning")
            page.get_by_text("Comparing 2 Runs").wait_for()
            # the param rows by their exact key (the run names contain "init=" and "freeze=" too)
            freeze_rows = page.locator("tr").filter(has=page.get_by_text("freeze", exact=True))
            init_rows = page.locator("tr").filter(has=page.get_by_text("init", exact=True))
            assert freeze_rows.count() == 1 and init_rows.count() == 1
            assert "none" in freeze_rows.first.inner_text() and "layer1-2" in freeze_rows.first.inner_text()
            page.get_by_text("Show diff only").first.click()      # the Parameters table's switch
            init_rows.first.wait_for(state="hidden")              # the same in both runs: hidden
            assert freeze_rows.count() == 1 and freeze_rows.first.is_visible()   # they differ: kept
            assert "layer1-2" in freeze_rows.first.inner_text()
            page.screenshot(path=str(shots / "mlflow_ui_compare.png"), full_page=True)

            # 4. the parent's report artifacts open
            page.goto(f"{url}/#/experiments/{exp_id}/runs/{parent_id}/artifacts?workflowType=machine_learning")
            page.get_by_text("report", exact=True).first.click()
            page.get_by_text("summary.md", exact=True).click()
            page.get_by_text("val AJI", exact=True).wait_for()
            page.screenshot(path=str(shots / "mlflow_ui_report.png"))
            page.get_by_text("aji_vs_budget.png", exact=True).click()
            page.get_by_text("report/aji_vs_budget.png", exact=True).wait_for()   # the preview title
            page.wait_for_function("() => [...document.images].some(i => i.complete && i.naturalWidth >= 400)")
            page.screenshot(path=str(shots / "mlflow_ui_plot.png"))
        except Exception:
            page.screenshot(path=str(shots / "mlflow_ui_failure.png"))      # what the browser showed
            raise
        finally:
            browser.close()
    assert all((shots / f"mlflow_ui_{n}.png").stat().st_size > 0 for n in ("runs", "compare", "report", "plot"))
