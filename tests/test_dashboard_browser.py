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
from dashboard_fixtures import MAX_EVALS, REQUESTS, STREAM_ROWS, UNSEEN_V_BETA, SearchStore, monitored_copy
from werkzeug.serving import make_server

from dashboard.app import create_app
from tcr_pipeline.querylog import QUERY_LOG_ENV
from tcr_pipeline.store import new_attempt_id, now

CHROMIUM = os.environ.get("TCR_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = "chromedriver"
INSTALL_HINT = "apt-get install chromium chromium-driver"
# Chromium as root needs --no-sandbox; the rest keep it from calling out of a closed network.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--window-size=1400,1000",
)
WIDTH = 1400
PAGES = {
    "overview": ("/", "#overview-runs-table"),
    "training": ("/training", "#training-curves .main-svg"),
    "class-balance": ("/balance", "#balance-epitope-auc .main-svg"),
    "models": ("/models", "#models-registry-table"),
    "predict": ("/predict", "#predict-model"),
    "queries": ("/queries", "#queries-table"),
    "monitoring": ("/monitoring", "#monitoring-drift .main-svg"),
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
    from selenium import webdriver
    from selenium.webdriver.remote.remote_connection import RemoteConnection

    # selenium 3.141 (what dash[testing] allows with urllib3 2) passes urllib3 an object() as its
    # default timeout, which urllib3 2 rejects; a number works.
    RemoteConnection.set_timeout(120)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
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


def navigate(chrome: Any, page: str) -> None:
    """Follow the navigation link (a client-side page change, no reload) and wait for the page."""
    path, ready = PAGES[page]
    chrome.find_element(f"a[href='{path}']").click()
    chrome.wait_for_element(ready, timeout=60)


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
        screenshot(chrome, "overview")

        # the search goes on: a new trial appears without a reload
        add_finished_trial(copied_store, 4)
        chrome.wait_for_contains_text("#overview-runs-table", f"5/{MAX_EVALS}", timeout=30)

        navigate(chrome, "training")
        chrome.wait_for_contains_text("#training-summary", f"5/{MAX_EVALS} trials finished")
        chrome.wait_for_element("#training-progress .main-svg")
        chrome.wait_for_element("#training-hyperparameters .main-svg")
        screenshot(chrome, "training")

        navigate(chrome, "class-balance")
        chrome.wait_for_element("#balance-splits .main-svg")
        chrome.wait_for_element("#balance-sampler .main-svg")
        chrome.wait_for_contains_text("#balance-facts-table", "recall on positives")
        screenshot(chrome, "class-balance")

        navigate(chrome, "models")
        chrome.wait_for_contains_text("#models-registry-table", "in use")
        chrome.wait_for_contains_text("#models-registry-table", current)
        chrome.wait_for_element("#models-details-body .main-svg")
        screenshot(chrome, "models")

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
        rows = chrome.find_elements("#predict-table tbody tr")
        assert len(rows) == 13
        cells = [[td.text for td in row.find_elements_by_tag_name("td")] for row in rows]
        for _line, *_, score, binding, message in cells[:10]:
            assert float(score) >= 0.0
            assert binding in ("yes", "no")
            assert message == "ok"
        messages = {int(c[0]): c[-1] for c in cells[10:]}
        assert "CDR3_beta" in messages[12]
        assert "line 12" in messages[12]
        assert "expected 10 fields, found 8" in messages[13]
        assert "Epitope: empty value" in messages[14]
        assert all(c[-3] == "" and c[-2] == "" for c in cells[10:])  # no score for invalid rows
        screenshot(chrome, "predict")

        navigate(chrome, "queries")
        chrome.wait_for_contains_text("#queries-position", f"of {CLI_ROWS + 13:,}")
        log_rows = chrome.find_elements("#queries-log-table tbody tr")
        assert len(log_rows) == 25
        texts = [row.text for row in log_rows]
        newest = texts[:13]  # the prediction just made, then the CLI's queries (predict --log)
        assert sum("invalid" in t for t in newest) == 3
        assert all("dashboard" in t and current in t for t in newest)
        assert all(" cli " in f" {t} " and "dashboard" not in t for t in texts[13:])
        assert "expected 10 fields" in chrome.find_element("#queries-log-table").text
        screenshot(chrome, "queries")

        # Monitoring: the library's reports, the drifted stream's alerts, health, data versions
        navigate(chrome, "monitoring")
        chrome.wait_for_contains_text("#monitoring-current-status", "alert")
        chrome.wait_for_contains_text("#monitoring-current-status", "4 alert(s)")
        chrome.wait_for_contains_text("#monitoring-alerts-table", "V_beta unseen rate")
        chrome.wait_for_contains_text("#monitoring-alerts-table", UNSEEN_V_BETA)
        chrome.wait_for_contains_text("#monitoring-alerts-table", "CDR3_beta length KS")
        assert len(chrome.find_elements("#monitoring-alerts-table tbody tr.alert")) == 3
        chrome.wait_for_element("#monitoring-health .main-svg")
        chrome.wait_for_contains_text("#monitoring-health-facts", f"{STREAM_ROWS}")
        chrome.wait_for_contains_text("#monitoring-health-facts", f"{REQUESTS}")
        chrome.wait_for_contains_text("#monitoring-versions-table", current)
        chrome.wait_for_contains_text("#monitoring-versions-table", "in use")
        chrome.wait_for_contains_text("#monitoring-drift", "PSI (categories) per feature")
        screenshot(chrome, "monitoring")
        chrome.select_dcc_dropdown("#monitoring-statistic", value="CDR3 length KS")
        chrome.wait_for_contains_text("#monitoring-drift", "CDR3 length KS per feature")

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
