"""The dashboard in a real browser (headless Debian Chromium through dash's testing Browser).

Needs ``chromium`` and ``chromium-driver`` (Debian packages: /usr/bin/chromium,
/usr/bin/chromedriver). Skipped without them, failed without them when ``$CI`` is set.

One test walks every page against a store made by a real small search (with CLI queries and
three monitoring reports of the library's, two of them alerting on a drifted stream), watches a
new trial appear without a reload, submits a prediction with valid and invalid rows, finds them
in the query log beside the CLI's, reads the Monitoring page's alerts, and checks the browser
console stayed free of errors. With ``TCR_SCREENSHOTS=DIR`` it saves a full-page screenshot of
every page there (``docs/screenshots`` holds the committed ones:
``TCR_SCREENSHOTS=docs/screenshots pytest -m browser tests/test_dashboard_browser.py``).
"""

from __future__ import annotations

import base64
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from dashboard_fixtures import (
    MAX_EVALS,
    REQUESTS,
    STREAM_ROWS,
    UNSEEN_V_BETA,
    SearchStore,
    monitored_copy,
)
from werkzeug.serving import make_server

from dashboard.app import create_app
from dashboard.client import chromium_binary, chromium_options
from dashboard.pages import PAGES
from tcr_pipeline.store import new_attempt_id, now
from tcr_pipeline.store.querylog import QUERY_LOG_ENV

CHROMIUM = chromium_binary()
CHROMEDRIVER = "chromedriver"
INSTALL_HINT = "apt-get install chromium chromium-driver"
WIDTH = 1400
# each page by the name its screenshot takes ("class-balance"), at the path its module declares
PATHS = {page.NAME.lower().replace(" ", "-"): page.PATH for page in PAGES}
READY = {  # what each page shows once it has loaded
    "overview": "#overview-runs-table",
    "training": "#training-curves .main-svg",
    "trials": "#trials-grid .ag-row",
    "class-balance": "#balance-epitope-auc .main-svg",
    "models": "#models-registry-table .ag-row",
    "predict": "#predict-model",
    "queries": "#queries-log-table .ag-row",
    "monitoring": "#monitoring-drift .main-svg",
}
CLI_ROWS = 3 * STREAM_ROWS  # the monitoring rounds' queries, logged before the test starts
INVALID_ROWS = (
    # line 12: a digit and an X in CDR3β (not in the encoder's alphabet)
    "CAVNAPTGTASKLTF,CASSX1F,TRAV8-1*01,TRBV19*01,TRAJ44*01,TRBJ2-7*01,GILGFVFTL,,HLA-A*02:01,",
    # line 13: two fields short
    "CAVNAPTGTASKLTF,CASSMRSAVEQYF,TRAV8-1*01,TRBV19*01,TRAJ44*01,TRBJ2-7*01,GILGFVFTL,",
    # line 14: no epitope
    "CAVNAPTGTASKLTF,CASSMRSAVEQYF,TRAV8-1*01,TRBV19*01,TRAJ44*01,TRBJ2-7*01,,,HLA-A*02:01,",
)


def browser_unavailable_reason() -> str | None:
    """Why no browser test can run here, or None."""
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} ({INSTALL_HINT}, or set TCR_CHROMIUM)"
    if shutil.which(CHROMEDRIVER) is None:
        return f"no chromedriver on PATH ({INSTALL_HINT})"
    return None


def require_browser() -> None:
    """Skip without Chromium, or fail when ``$CI`` is set: CI must run the browser tests."""
    reason = browser_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}: CI must run the browser tests, not skip them", pytrace=False)
    pytest.skip(reason)


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """The app's Flask server on a free loopback port, in a thread, for the duration."""
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """dash.testing's Browser on headless Chromium."""
    require_browser()
    from dash.testing.browser import Browser

    options = chromium_options(tmp_path / "chromium-profile")
    with Browser(
        browser="Chrome",
        headless=False,  # --headless=new is among the flags
        options=[options],
        download_path=str(tmp_path / "downloads"),
        percy_run=False,
        wait_timeout=60,
    ) as chrome:
        yield chrome


def screenshot(chrome: Any, name: str) -> None:
    """A full-page PNG into $TCR_SCREENSHOTS, when set (Chromium's DevTools capture)."""
    directory = os.environ.get("TCR_SCREENSHOTS")
    if not directory:
        return
    driver = chrome.driver
    time.sleep(1.0)  # let plotly finish drawing
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    time.sleep(0.5)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture
def monitored(search_store: SearchStore, tmp_path: Path) -> SearchStore:
    """A copy of the search store with CLI queries and three monitoring reports (two alerting)."""
    return monitored_copy(search_store, tmp_path / "monitored")


def add_finished_trial(search: SearchStore, trial_id: int) -> None:
    """What a running search does next: one more trial finishes (a copy of trial 0's record)."""
    store = search.store
    template = search.trials[0]
    store.write_trial(
        template.model_copy(
            update={"trial_id": trial_id, "attempt": new_attempt_id(), "started": now(), "finished": now()}
        )
    )


def grid_rows(chrome: Any, grid_id: str) -> list[dict[str, Any]]:
    """The rows a grid displays, in display order (after its sort and filter), through AG Grid's
    own API as dash-ag-grid exposes it; none while the grid is not ready."""
    rows = chrome.driver.execute_script(
        """
        let api;
        try { api = dash_ag_grid.getApi(arguments[0]); } catch (e) { return null; }
        const rows = [];
        api.forEachNodeAfterFilterAndSort(node => rows.push(node.data));
        return rows;
        """,
        grid_id,
    )
    return rows or []


def grid_cells(chrome: Any, grid_id: str, column: str) -> list[str]:
    """The text of one column's rendered cells, top to bottom (what a reader sees)."""
    cells = chrome.find_elements(f"#{grid_id} .ag-row [col-id='{column}']")
    rows = [
        (int(cell.find_element_by_xpath("./ancestor::div[@row-index]").get_attribute("row-index")), cell.text)
        for cell in cells
    ]
    return [text for _, text in sorted(rows)]


def wait_until(condition: Any, timeout: float = 30, message: str = "") -> None:
    """Poll ``condition`` until it is true (the grid updates asynchronously)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {message}")
        time.sleep(0.2)


def navigate(chrome: Any, page: str) -> None:
    """Follow the navigation link (a client-side page change, no reload) and wait for the page."""
    chrome.find_element(f"a[href='{PATHS[page]}']").click()
    chrome.wait_for_element(READY[page], timeout=60)


Shown = str | tuple[str, str]


def expect(chrome: Any, *shown: Shown) -> None:
    """Wait for each of ``shown``: a selector (the element is there) or (selector, text it contains)."""
    for item in shown:
        if isinstance(item, str):
            chrome.wait_for_element(item)
        else:
            chrome.wait_for_contains_text(*item)


def visit(chrome: Any, page: str, *shown: Shown) -> None:
    """Navigate to ``page``, wait for everything it must show, keep a screenshot."""
    navigate(chrome, page)
    expect(chrome, *shown)
    screenshot(chrome, page)


@pytest.mark.browser
def test_every_page_a_prediction_and_the_query_log(
    browser: Any,
    monitored: SearchStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(QUERY_LOG_ENV, raising=False)
    copied_store = monitored
    chrome = browser
    app = create_app(copied_store.root, refresh_ms=700, torch_threads=None)
    with serve(app) as url:
        chrome.server_url = url
        chrome.driver.get(url + "/")

        # Overview: the run, its progress, the promoted model
        chrome.wait_for_contains_text("#overview-runs-table", copied_store.run_id, timeout=60)
        chrome.wait_for_contains_text("#overview-runs-table", f"4/{MAX_EVALS}")
        chrome.wait_for_contains_text("#overview-best-card", "nothing (the first model)")
        current = copied_store.store.load_registry().current
        assert current is not None
        chrome.wait_for_contains_text("#overview-best-card", current)
        chrome.wait_for_contains_text("#overview-reference", "the k-mer baseline on test mean_epitope_auc")
        chrome.wait_for_contains_text("#overview-reference", "always negative")
        screenshot(chrome, "overview")

        # the search goes on: a new trial appears without a reload
        add_finished_trial(copied_store, 4)
        chrome.wait_for_contains_text("#overview-runs-table", f"5/{MAX_EVALS}", timeout=30)

        visit(
            chrome,
            "training",
            ("#training-summary", f"5/{MAX_EVALS} trials finished"),
            "#training-progress .main-svg",
            "#training-hyperparameters .main-svg",
        )

        chrome.find_element("#training-options input[value='log']").click()
        chrome.wait_for_contains_text("#training-curves", "log scale")
        chrome.wait_for_contains_text("#training-curves", "binary cross-entropy")

        visit(
            chrome,
            "class-balance",
            "#balance-splits .main-svg",
            "#balance-sampler .main-svg",
            ("#balance-facts-table", "recall on positives"),
            ("#balance-epitope-auc", "n+ ="),
            ("#balance-epitope-auc", "epitopes without an AUC"),
        )
        visit(
            chrome,
            "models",
            ("#models-registry-table", "in use"),
            ("#models-registry-table", current),
            "#models-details-body .main-svg",
            ("#models-reference", "k-mer baseline"),
            ("#models-reference", "always negative"),
            ("#models-epitope-auc", "n+ ="),
        )

        # Predict: ten example rows from the test split, three bad rows after them
        navigate(chrome, "predict")
        chrome.wait_for_contains_text("#predict-model", current)
        chrome.find_element("#predict-example").click()
        chrome.wait_for_contains_text("#predict-input", "CDR3_alpha,CDR3_beta")
        textarea = chrome.find_element("#predict-input")
        example = textarea.get_attribute("value")
        assert len(example.strip().splitlines()) == 11
        from selenium.webdriver.common.keys import Keys

        textarea.click()
        textarea.send_keys(Keys.CONTROL, Keys.END)
        textarea.send_keys("\n".join(INVALID_ROWS) + "\n")
        chrome.find_element("#predict-submit").click()
        chrome.wait_for_element("#predict-table", timeout=60)
        chrome.wait_for_contains_text("#predict-summary", "10 of 13 rows scored")
        wait_until(lambda: len(grid_rows(chrome, "predict-table")) == 13, message="13 answered rows")
        rows = grid_rows(chrome, "predict-table")
        for row in rows[:10]:
            assert float(row["score"]) >= 0.0
            assert row["binding"] in ("yes", "no")
            assert row["message"] == "ok"
            assert "warning" in row  # the column is there, empty or filled by the library
        messages = {r["line"]: r["message"] for r in rows[10:]}
        assert "CDR3_beta" in messages[12]
        assert "line 12" in messages[12]
        assert "expected 10 fields, found 8" in messages[13]
        assert "Epitope: empty value" in messages[14]
        assert all(r["score"] is None and r["binding"] == "" for r in rows[10:])  # no score for invalid rows
        assert "Epitope: empty value" in " ".join(grid_cells(chrome, "predict-table", "message"))
        screenshot(chrome, "predict")

        navigate(chrome, "queries")
        chrome.wait_for_contains_text("#queries-position", f"of {CLI_ROWS + 13:,}")
        wait_until(lambda: len(grid_rows(chrome, "queries-log-table")) == 25, message="a page of 25")
        log_rows = grid_rows(chrome, "queries-log-table")
        newest = log_rows[:13]  # the prediction just made, then the CLI's queries (predict --log)
        assert sum(r["valid"] == "invalid" for r in newest) == 3
        assert all(r["source"] == "dashboard" and r["model"] == current for r in newest)
        assert all(r["source"] == "cli" for r in log_rows[13:])
        assert any("expected 10 fields" in r["error"] for r in newest)
        # each input field its own column, as the user typed it
        example_first = example.strip().splitlines()[1].split(",")
        assert newest[-1]["in:CDR3_alpha"] == example_first[0]
        assert grid_cells(chrome, "queries-log-table", "in:Epitope")[12] == example_first[6]
        screenshot(chrome, "queries")

        # Monitoring: the library's reports, the drifted stream's alerts, health, data versions
        visit(
            chrome,
            "monitoring",
            ("#monitoring-current-status", "alert"),
            ("#monitoring-current-status", "4 alert(s)"),
            ("#monitoring-alerts-table", "V_beta unseen rate"),
            ("#monitoring-alerts-table", UNSEEN_V_BETA),
            ("#monitoring-alerts-table", "CDR3_beta length KS"),
            "#monitoring-health .main-svg",
            ("#monitoring-health-facts", f"{STREAM_ROWS}"),
            ("#monitoring-health-facts", f"{REQUESTS}"),
            ("#monitoring-versions-table", current),
            ("#monitoring-versions-table", "in use"),
            ("#monitoring-drift", "PSI (categories) per feature"),
        )
        assert len(chrome.find_elements("#monitoring-alerts-table tbody tr.alert")) == 4
        chrome.select_dcc_dropdown("#monitoring-statistic", value="CDR3 length KS")
        chrome.wait_for_contains_text("#monitoring-drift", "CDR3 length KS per feature")

        assert chrome.get_logs() == [], "the browser console has errors"


@pytest.mark.browser
def test_the_trials_grid_sorts_filters_exports_and_compares(
    browser: Any, copied_store: SearchStore, tmp_path: Path
) -> None:
    chrome = browser
    for trial_id in (4, 5):  # six trials: enough for the importance
        add_finished_trial(copied_store, trial_id)
    app = create_app(copied_store.root, refresh_ms=700, torch_threads=None)
    records = {t.trial_id: t for t in copied_store.store.list_trials(copied_store.run_id)}
    with serve(app) as url:
        chrome.server_url = url
        chrome.driver.get(url + "/trials")
        chrome.wait_for_contains_text("#trials-count", "6 trials in 1 run(s)", timeout=60)
        wait_until(lambda: len(grid_rows(chrome, "trials-grid")) == 6, message="six rows")

        # sort: a click on the objective's header sorts ascending, a second descending
        header = "#trials-grid .ag-header-cell[col-id='objective'] .ag-header-cell-label"
        chrome.find_element(header).click()
        objectives = sorted(t.objective for t in records.values() if t.objective is not None)

        def shown_objectives() -> list[float]:
            return [r["objective"] for r in grid_rows(chrome, "trials-grid")]

        wait_until(lambda: shown_objectives() == pytest.approx(objectives, rel=1e-5), message="ascending")
        chrome.find_element(header).click()
        wait_until(
            lambda: shown_objectives() == pytest.approx(objectives[::-1], rel=1e-5), message="descending"
        )
        shown = [float(c) for c in grid_cells(chrome, "trials-grid", "objective")]
        assert shown == pytest.approx(objectives[::-1], abs=1e-4)  # what is drawn, rounded

        # filter: the number filter under the trial header keeps trial 2 only
        column = chrome.find_element("#trials-grid .ag-header-cell[col-id='trial']")
        index = column.get_attribute("aria-colindex")
        box = chrome.find_element(f"#trials-grid .ag-floating-filter[aria-colindex='{index}'] input")
        box.send_keys("2")
        wait_until(lambda: [r["trial"] for r in grid_rows(chrome, "trials-grid")] == [2], message="filtered")

        # CSV: the grid's own export, of the rows as filtered
        downloads = tmp_path / "downloads"
        chrome.find_element("#trials-csv").click()
        wait_until(lambda: (downloads / "trials.csv").is_file(), message="trials.csv downloaded")
        time.sleep(0.5)
        import pandas as pd

        exported = pd.read_csv(downloads / "trials.csv")
        assert list(exported["trial"]) == [2]
        assert exported.loc[0, "objective"] == pytest.approx(records[2].objective, rel=1e-5)
        assert "lr" in exported.columns  # the hyperparameters, by their names
        from selenium.webdriver.common.keys import Keys

        box.send_keys(Keys.BACKSPACE)
        wait_until(lambda: len(grid_rows(chrome, "trials-grid")) == 6, message="filter cleared")

        # pin: the chosen column moves to the pinned area on the left
        chrome.select_dcc_dropdown("#trials-pin", value="param:lr")
        chrome.wait_for_element("#trials-grid .ag-pinned-left-header [col-id='param:lr']")
        chrome.driver.switch_to.active_element.send_keys(Keys.ESCAPE)  # close the multi-select list
        wait_until(
            lambda: not [e for e in chrome.driver.find_elements("css selector", ".dash-dropdown-option")
                         if e.is_displayed()],
            message="the pin list closed",
        )  # fmt: skip

        # select two trials: their curves, test metrics and the run's baseline side by side
        for trial_id in (0, 3):
            row_id = f"{copied_store.run_id}/000{trial_id}"
            row = f"#trials-grid .ag-row[row-id='{row_id}']"
            chrome.find_element(f"{row} .ag-selection-checkbox input").click()
        chrome.wait_for_contains_text("#trials-selected", "2 trial(s) selected from 1 run(s)")
        chrome.wait_for_contains_text("#trials-compare-metrics", f"k-mer baseline ({copied_store.run_id})")
        chrome.wait_for_element("#trials-compare-curves .main-svg")
        baseline = copied_store.store.load_baseline(copied_store.run_id)
        assert baseline is not None
        compared = {r["metric"]: r for r in grid_rows(chrome, "trials-compare-grid")}
        assert compared["precision"][f"baseline {copied_store.run_id}"] == pytest.approx(
            baseline["test"]["precision"]
        )
        assert compared["roc_auc"]["always negative"] == 0.5
        assert compared["precision"][f"{copied_store.run_id}/0003"] == pytest.approx(
            records[3].test_metrics["precision"]
        )

        # the selection survives a refresh that brings a new trial
        add_finished_trial(copied_store, 6)
        chrome.wait_for_contains_text("#trials-count", "7 trials in 1 run(s)", timeout=30)
        # the new trial arrives as a one-row transaction; the grid keeps its rows and selection
        wait_until(lambda: len(grid_rows(chrome, "trials-grid")) == 7, message="seven rows")
        assert chrome.find_element("#trials-grid .ag-pinned-left-header [col-id='param:lr']")  # pin kept
        chrome.wait_for_contains_text("#trials-selected", "2 trial(s) selected")

        chrome.wait_for_element("#trials-parallel .main-svg")
        chrome.wait_for_contains_text("#trials-importance", "hyperparameter importance (7 trials")
        screenshot(chrome, "trials")
        assert chrome.get_logs() == [], "the browser console has errors"


# The skip/fail decision itself, without a browser ---------------------------------------------


def test_without_chromium_the_browser_test_skips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(f"{__name__}.CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium chromium-driver"):
        require_browser()


def test_without_chromium_in_ci_the_browser_test_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(f"{__name__}.CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI must run the browser tests"):
        require_browser()


def test_without_chromedriver_the_browser_test_skips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "chromium"
    fake.write_text("")
    monkeypatch.setattr(f"{__name__}.CHROMIUM", str(fake))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromedriver on PATH"):
        require_browser()
