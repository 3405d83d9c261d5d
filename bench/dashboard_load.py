#!/usr/bin/env python
"""Dashboard server time on a large synthetic store, against reading the whole store naively.

1. Builds a synthetic store: one run of ``--trials`` (default 1,000) trials × ``--epochs``
   (default 25) epochs of history, written with :class:`tcr_pipeline.store.Store`, with the
   shipped data prepared (default params) beside it and a real trained model bundle (the default
   ``medium`` model, one epoch) registered as the top three and promoted.
2. **First load** of every page: a fresh app (``create_app``: empty store-reader, model and
   prepared-data caches), then every request a browser's first visit makes of the server — the
   index, the layout, the callback list, the router and each callback the page fires on load
   (``dashboard.client.DashClient``, Flask's test client, so the time is the server's whole work:
   routing, callbacks, JSON; no network, no browser rendering). Median over ``--repeats``. The
   process has run ``figures.warm_up`` first, as ``tcr-pipeline dashboard`` does in a thread at
   start-up; the very first request of a process without it is timed once on its own
   (``process_start`` in the JSON).
3. **Refresh when ``--new`` (default 10) new trials land**: on a warm app with the page open,
   the new trial records are written, then the refresh tick and every callback the changed
   ``store-version`` triggers are timed.
4. The same with a **naive reader** that re-reads the whole store through ``Store`` on every
   call (``list_runs``, ``list_trials``, ``load_registry``) and reports a change on every tick.
5. **Bytes of a cold first load** of every page (``--transfer``, on by default when Chromium is
   installed): a fresh headless Chromium (empty profile, cache disabled) opens the page on a
   served dashboard and every byte it receives is summed from the browser's Resource Timing
   entries (``transferSize``: on the wire, headers included, after compression), once the
   page's content has drawn and no request has started or finished for 2 s. The
   server is in its steady state: each script bundle already compressed at brotli's best (a
   first visit has triggered it and the benchmark waits for it).
6. **Prediction latency**: the Predict page's callback for a 10-row query (server time over
   HTTP, and the parse + predict part the query log records), model already loaded.
7. **CLI throughput**: ``tcr-pipeline predict`` on ``--cli-rows`` (default 100,000) rows sampled
   from the shipped data, in a subprocess (wall time, interpreter start included), and the cost of
   logging those rows to the query log (``tcr_pipeline.store.querylog.log_prediction``, what
   ``predict --log`` adds).

Run ``python bench/dashboard_load.py --help``; see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dash
import numpy as np
import pandas as pd
import plotly
from harness import load_at_start, machine_info, results_header, write_results
from rich.console import Console
from rich.table import Table

from dashboard import figures
from dashboard.app import create_app
from dashboard.client import DashClient, chromium_options
from dashboard.data import Dashboard
from dashboard.pages import PAGES as DASHBOARD_PAGES
from tcr_pipeline.bundle import load_bundle, predict_file
from tcr_pipeline.config import EvaluateParams, PrepareParams, TrainParams
from tcr_pipeline.prepare import prepare_dataset
from tcr_pipeline.recipe import fit_and_save
from tcr_pipeline.store import (
    Promotion,
    Registry,
    RegistryEntry,
    RunManifest,
    Store,
    TrialRecord,
    model_id_of,
    now,
)
from tcr_pipeline.store.querylog import QUERY_LOG_ENV, log_prediction

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RAW = ROOT / "data" / "raw" / "viral_pairs.csv"
DEFAULT_OUT = ROOT / "bench" / "results" / "dashboard.json"
RUN_ID = "20261101-000000-bench0"
# every page the dashboard registers, in navigation order: {"overview": "/", ...}
PAGES = {page.NAME.lower(): page.PATH for page in DASHBOARD_PAGES}
TARGET_FIRST_LOAD_S = 1.5
TARGET_REFRESH_S = 0.2
TARGET_PREDICT_S = 0.05
TARGET_COLD_LOAD_BYTES = 1_500_000
PAGE_READY = {  # what shows that a page has drawn its content
    "/": "#overview-runs-table",
    "/training": "#training-curves .main-svg",
    "/trials": "#trials-parallel .main-svg",
    "/balance": "#balance-epitope-auc .main-svg",
    "/models": "#models-details-body .main-svg",
    "/predict": "#predict-model",
    "/queries": "#queries-position",
    "/monitoring": "#monitoring-status",
}

console = Console(width=None if sys.stdout.isatty() else 170)


# ----------------------------------------------------------------------------- the synthetic store


def _history(rng: np.random.Generator, epochs: int, quality: float) -> list[dict[str, float]]:
    rows = []
    for epoch in range(1, epochs + 1):
        progress = 1 - math.exp(-epoch / 6)
        rows.append(
            {
                "epoch": float(epoch),
                "train_loss": float(0.7 - 0.4 * progress * quality + rng.normal(0, 0.01)),
                "val_loss": float(0.7 - 0.3 * progress * quality + rng.normal(0, 0.02)),
                "seconds": float(rng.uniform(0.5, 3)),
                "rows_per_second": float(rng.uniform(2e4, 8e4)),
                "val_accuracy": float(0.8 + 0.1 * progress * quality),
                "val_precision": float(0.1 + 0.3 * progress * quality),
                "val_recall": float(0.3 + 0.4 * progress * quality),
                "val_roc_auc": float(0.6 + 0.25 * progress * quality),
                "val_mean_epitope_auc": float(0.55 + 0.2 * progress * quality),
                "val_paper_objective": float(2 + 6 * progress * quality),
            }
        )
    return rows


def _metrics(template: dict[str, float], rng: np.random.Generator, quality: float) -> dict[str, float]:
    """A real model's metrics, scaled by the trial's made-up quality (counts kept as they are)."""
    counts = ("n", "tn", "fp", "fn", "tp")
    scaled = {k: v if k in counts else float(v) * (0.7 + 0.3 * quality) for k, v in template.items()}
    scaled["roc_auc"] = float(0.6 + 0.25 * quality + rng.normal(0, 0.01))
    return scaled


def synthetic_trial(
    trial_id: int, rng: np.random.Generator, epochs: int, metrics: dict[str, dict[str, float]]
) -> TrialRecord:
    """A finished trial with ``epochs`` of history and metrics shaped like real ones."""
    kind = str(rng.choice(["small", "medium", "large"]))
    quality = float(rng.uniform(0.2, 1.0))
    started = now()
    return TrialRecord(
        run_id=RUN_ID,
        trial_id=trial_id,
        attempt=f"bench-{trial_id}-0",
        status="ok",
        params={"epochs": int(rng.integers(5, 26)), "lr": float(rng.uniform(0.001, 0.1)), "model.kind": kind},
        hyperopt_vals={"epochs": [0.0], "lr": [0.0], "model.kind": [0]},
        objective=float(2 + 6 * quality),
        history=_history(rng, epochs, quality),
        val_metrics=_metrics(metrics["val"], rng, quality),
        test_metrics=_metrics(metrics["test"], rng, quality),
        started=started,
        finished=started,
        seconds=60.0,
        train_seconds=55.0,
        data_sha256="0" * 64,
    )


def build_store(root: Path, raw: Path, trials: int, epochs: int, new: int) -> dict[str, Any]:
    """The synthetic store, its prepared data and a real model bundle; returns what was built."""
    started = time.perf_counter()
    store = Store(root / "store")
    prepared_dir = root / "prepared"
    prepared = prepare_dataset(raw, PrepareParams(), prepared_dir)
    train = TrainParams(epochs=1, device="cpu")
    evaluate = EvaluateParams()
    fitted = fit_and_save(prepared, train, evaluate, root / "model")
    metrics = fitted.metrics
    store.write_manifest(
        RunManifest(
            run_id=RUN_ID,
            max_evals=trials + new,
            parallelism=8,
            objective="paper",
            params={"train": train.model_dump(mode="json")},
            search_space={
                "model.kind": {"choice": ["small", "medium", "large"]},
                "lr": {"uniform": [0.001, 0.1]},
                "epochs": {"integer": [5, 25]},
            },
            data_path=str(raw),
            data_sha256=prepared.data_sha256,
            prepared_dir=str(prepared_dir),
        )
    )
    rng = np.random.default_rng(0)
    records = []
    for trial_id in range(trials):
        record = synthetic_trial(trial_id, rng, epochs, metrics).model_copy(
            update={"data_sha256": prepared.data_sha256}
        )
        store.write_trial(record)
        records.append(record)
    top = sorted(records, key=lambda r: -(r.objective or 0))[:3]
    entries = []
    for record in top:
        shutil.copytree(root / "model", store.model_dir(record))
        entries.append(
            RegistryEntry(
                model_id=model_id_of(RUN_ID, record.trial_id),
                run_id=RUN_ID,
                trial_id=record.trial_id,
                path=str(store.model_dir(record).relative_to(store.root)),
                objective=float(record.objective or 0),
                objective_name="paper",
                params=record.params,
                val_metrics=metrics["val"],
                test_metrics=metrics["test"],
                data_sha256=prepared.data_sha256,
                trained=record.finished,
            )
        )
    store.save_registry(
        Registry(
            models=entries,
            current=entries[0].model_id,
            history=[
                Promotion(
                    model_id=entries[0].model_id,
                    replaced=None,
                    reason="first model",
                    objective=entries[0].objective,
                )
            ],
        )
    )
    size = sum(p.stat().st_size for p in (root / "store").rglob("trial.json"))
    return {
        "store": str(store.root),
        "trials": trials,
        "epochs": epochs,
        "trial_json_bytes": size,
        "bundle": str(store.root / entries[0].path),
        "seconds_to_build": time.perf_counter() - started,
        "template": records[0],
    }


def add_trials(store: Store, template: TrialRecord, start: int, count: int) -> None:
    """``count`` new finished trials, as a search running on would write them."""
    for trial_id in range(start, start + count):
        store.write_trial(
            template.model_copy(update={"trial_id": trial_id, "attempt": f"bench-{trial_id}-new"})
        )


# ----------------------------------------------------------------------------- the naive reader


class NaiveReader:
    """What the dashboard would do without its cache: read the whole store through ``Store`` on
    every call, and call every tick a change."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.version = 0
        self.min_interval = 0.0
        self.problems: dict[str, str] = {}

    def refresh(self, force: bool = False) -> int:
        for manifest in self.store.list_runs():
            self.store.list_trials(manifest.run_id)
        self.store.load_registry()
        self.version += 1
        return self.version

    def runs(self) -> list[RunManifest]:
        return self.store.list_runs()

    def manifest(self, run_id: str) -> RunManifest | None:
        return self.store.load_manifest(run_id)

    def trials(self, run_id: str) -> list[TrialRecord]:
        return self.store.list_trials(run_id)

    def registry(self) -> Registry:
        return self.store.load_registry()


def make_app(store_root: Path, naive: bool) -> tuple[Any, Dashboard]:
    app = create_app(store_root)
    ctx: Dashboard = app.server.config["tcr_dashboard"]
    if naive:
        ctx.reader = NaiveReader(ctx.store)  # type: ignore[assignment]
    return app, ctx


# ----------------------------------------------------------------------------- measurements


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "p95": ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)],
        "n": len(ordered),
    }


def first_load(store_root: Path, path: str, naive: bool) -> float:
    """Server seconds for a browser's first visit to ``path`` on a freshly started dashboard."""
    app, _ = make_app(store_root, naive)
    client = DashClient(app)
    started = time.perf_counter()
    client.load()
    client.open_page(path)
    return time.perf_counter() - started


def refresh_after_new_trials(
    store_root: Path, path: str, naive: bool, template: TrialRecord, first_new: int, count: int
) -> tuple[float, float]:
    """Server seconds of the refresh tick plus the redraw it triggers, after ``count`` new trials;
    and of a tick when nothing changed."""
    app, ctx = make_app(store_root, naive)
    client = DashClient(app)
    client.load()
    values = client.open_page(path)
    tick = {**values, "refresh-interval.n_intervals": 1}
    # the reader looks at the disk at most every min_interval (0.5 s); ticks come every 5 s
    time.sleep(ctx.reader.min_interval)
    started = time.perf_counter()
    client.propagate(dict(tick), {"refresh-interval.n_intervals"})
    idle = time.perf_counter() - started
    add_trials(Store(store_root), template, first_new, count)
    time.sleep(ctx.reader.min_interval)
    started = time.perf_counter()
    client.propagate(dict(tick), {"refresh-interval.n_intervals"})
    return time.perf_counter() - started, idle


def remove_trials(store_root: Path, first: int, count: int) -> None:
    store = Store(store_root)
    for trial_id in range(first, first + count):
        shutil.rmtree(store.run_dir(RUN_ID) / "trials" / f"{trial_id:04d}", ignore_errors=True)


def prediction_latency(store_root: Path, repeats: int) -> dict[str, Any]:
    """The Predict callback for 10 rows: server seconds over HTTP and the logged parse + predict time."""
    app, ctx = make_app(store_root, naive=False)
    client = DashClient(app)
    client.load()
    values = client.open_page("/predict")
    model = values["predict-model.value"]
    text = client.call("predict-input.value", {"predict-example.n_clicks": 1, "predict-model.value": model})[
        "predict-input.value"
    ]
    request = {"predict-submit.n_clicks": 1, "predict-input.value": text, "predict-model.value": model}
    started = time.perf_counter()
    client.call("predict-results.children", request)  # the first query loads the model
    cold = time.perf_counter() - started
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        client.call("predict-results.children", request)
        seconds.append(time.perf_counter() - started)
    logged = [q.latency_ms / 1000 for q in ctx.queries.read(0, 10 * repeats) if q.latency_ms is not None]
    per_request = logged[::10]
    return {
        "rows": 10,
        "first_query_s": cold,
        "http_server_s": _summary(seconds),
        "parse_and_predict_s": _summary(per_request),
        "model_loads": ctx.models.loads,
    }


def _chromium(profile: Path) -> Any:
    """A fresh headless Chromium, its cache disabled (selenium, as the browser tests)."""
    from selenium import webdriver
    from selenium.webdriver.common.desired_capabilities import DesiredCapabilities

    options = chromium_options(profile)
    driver = webdriver.Chrome(options=options, desired_capabilities=DesiredCapabilities.CHROME.copy())
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    return driver


RESOURCES_JS = """
return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))
    .map(e => [e.name, e.transferSize, e.decodedBodySize, e.responseEnd > 0]);
"""


def _page_bytes(url: str, ready: str, profile: Path, quiet_s: float = 2.0) -> dict[str, Any]:
    """Bytes a cold browser receives to show ``url``: on the wire and decoded, per resource kind.

    From the browser's Resource Timing entries (``transferSize``: on the wire, headers included,
    after compression; ``decodedBodySize``), once the page's content has drawn and no request
    has started or finished for ``quiet_s`` seconds.
    """
    driver = _chromium(profile)
    try:
        driver.set_script_timeout(30)
        driver.execute_script("performance.setResourceTimingBufferSize(10000)")
        driver.get(url)
        driver.execute_script("performance.setResourceTimingBufferSize(10000)")
        deadline = time.monotonic() + 180
        drawn = False
        last: Any = None
        quiet_since = time.monotonic()
        entries: list[Any] = []
        while time.monotonic() < deadline:
            entries = driver.execute_script(RESOURCES_JS)
            state = [(e[0], e[3]) for e in entries]
            if state != last:
                last, quiet_since = state, time.monotonic()
            drawn = drawn or bool(driver.find_elements_by_css_selector(ready))
            if drawn and all(e[3] for e in entries) and time.monotonic() - quiet_since > quiet_s:
                break
            time.sleep(0.25)
        kinds: dict[str, int] = {}
        for address, size, _, _ in entries:
            kind = (
                "plotly.js"
                if "plotly.min.js" in address
                else "ag-grid"
                if "dash_ag_grid" in address
                else "other scripts"
                if address.split("?")[0].endswith(".js")
                else "callbacks and layout"
                if "/_dash-" in address
                else "index and other"
            )
            kinds[kind] = kinds.get(kind, 0) + int(size)
        return {
            "wire_bytes": sum(int(e[1]) for e in entries),
            "decoded_bytes": sum(int(e[2]) for e in entries),
            "requests": len(entries),
            "by_kind": kinds,
            "drawn": drawn,
        }
    finally:
        driver.quit()


def _has_chromium() -> bool:
    return Path(os.environ.get("TCR_CHROMIUM", "/usr/bin/chromium")).is_file() and bool(
        shutil.which("chromedriver")
    )


def transfer_bytes(store_root: Path, paths: dict[str, str], workdir: Path) -> dict[str, Any]:
    """Bytes of a cold first load of each page, on a served dashboard in its steady state."""
    import threading

    from werkzeug.serving import make_server

    app = create_app(store_root, best_compression=True)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        out: dict[str, Any] = {}
        first = True
        for page, path in paths.items():
            ready = PAGE_READY.get(path, "#_pages_content")
            if first:  # the server's first visitor: bundles compressed quickly, then best in the background
                out["_first_visitor_" + page] = _page_bytes(url + path, ready, workdir / "warm-profile")
                first = False
            measured = _page_bytes(url + path, ready, workdir / f"profile-{page}")  # wakes async chunks
            app.server.config["tcr_bundles"].wait()
            measured = _page_bytes(url + path, ready, workdir / f"profile-{page}-2")
            out[page] = measured
            console.log(
                f"{page:14s} cold load {measured['wire_bytes'] / 1e6:.2f} MB on the wire "
                f"({measured['decoded_bytes'] / 1e6:.2f} MB decoded, {measured['requests']} requests): "
                + ", ".join(f"{k} {v / 1e3:.0f} kB" for k, v in sorted(measured["by_kind"].items()))
            )
        return out
    finally:
        server.shutdown()
        thread.join(timeout=10)


def cli_throughput(raw: Path, bundle: Path, rows: int, repeats: int, workdir: Path) -> dict[str, Any]:
    """``tcr-pipeline predict`` on ``rows`` rows in a subprocess, and the query-log cost of them."""
    frame = pd.read_csv(raw, dtype=str, keep_default_na=False)
    sample = frame.sample(n=rows, replace=True, random_state=0)
    source = workdir / f"pairs_{rows}.csv"
    sample.to_csv(source, index=False)
    script = Path(sys.executable).with_name("tcr-pipeline")  # the installed console script
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "tcr_cli"]
    command = [
        *launcher,
        "predict",
        str(source),
        "-o",
        str(workdir / "scored.csv"),
        "--model",
        str(bundle),
    ]
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
        walls.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    started = time.perf_counter()
    startup = subprocess.run([sys.executable, "-c", "import tcr_cli.main"], cwd=workdir)
    import_s = time.perf_counter() - started
    assert startup.returncode == 0
    bundle_obj = load_bundle(bundle)
    started = time.perf_counter()
    predict_file(bundle_obj, source, workdir / "scored_in_process.csv")
    in_process = time.perf_counter() - started
    result = pd.read_csv(workdir / "scored_in_process.csv", dtype=str, keep_default_na=False)
    log_root = workdir / "log-store"
    started = time.perf_counter()
    log_prediction(log_root, "bench/0000", result, source="cli", latency_ms=in_process * 1000)
    log_s = time.perf_counter() - started
    wall = statistics.median(walls)
    return {
        "rows": rows,
        "command": " ".join(command),
        "wall_s": _summary(walls),
        "rows_per_s_wall": rows / wall,
        "interpreter_and_imports_s": import_s,
        "predict_file_in_process_s": in_process,
        "rows_per_s_in_process": rows / in_process,
        "query_log_write_s": log_s,
        "query_log_rows_per_s": rows / log_s,
        "query_log_bytes": sum(p.stat().st_size for p in log_root.iterdir()),
    }


# ----------------------------------------------------------------------------- output


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


def _spread(summary: dict[str, float]) -> str:
    return f"{_ms(summary['median'])} ({_ms(summary['min'])}–{_ms(summary['max'])})"


def print_pages(rows: list[dict[str, Any]]) -> None:
    table = Table(title="server time per page (ms, median of repeats; min–max)")
    for column in (
        "page",
        "first load",
        "naive first load",
        "refresh +new trials",
        "naive refresh",
        "idle tick",
        "naive idle tick",
    ):
        table.add_column(column, justify="left" if column == "page" else "right")

    def naive(row: dict[str, Any], key: str) -> str:  # absent with --no-naive
        return _ms(row["naive"][key]["median"]) if "naive" in row else "–"

    for r in rows:
        table.add_row(
            r["page"],
            _spread(r["ours"]["first_load"]),
            naive(r, "first_load"),
            _spread(r["ours"]["refresh"]),
            naive(r, "refresh"),
            _ms(r["ours"]["idle_tick"]["median"]),
            naive(r, "idle_tick"),
        )
    console.print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--trials", type=int, default=1000, help="trials in the synthetic store (default 1000)"
    )
    parser.add_argument("--epochs", type=int, default=25, help="epochs of history per trial (default 25)")
    parser.add_argument("--new", type=int, default=10, help="trials that land before a refresh (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each page measurement (default 3)")
    parser.add_argument("--predict-repeats", type=int, default=50, help="10-row queries timed (default 50)")
    parser.add_argument(
        "--cli-rows", type=int, default=100_000, help="rows for the CLI throughput (default 100000)"
    )
    parser.add_argument("--cli-repeats", type=int, default=3, help="CLI runs (default 3)")
    parser.add_argument(
        "--pages", default=",".join(PAGES), help=f"pages to time, comma-separated, of: {', '.join(PAGES)}"
    )
    parser.add_argument("--no-naive", action="store_true", help="skip the naive reader")
    parser.add_argument(
        "--transfer",
        choices=["auto", "yes", "no"],
        default="auto",
        help="measure the bytes of a cold first load in Chromium (default auto: when it is installed)",
    )
    parser.add_argument(
        "--only-transfer", action="store_true", help="measure only the bytes of a cold first load"
    )
    parser.add_argument("--raw", type=Path, default=DEFAULT_RAW, help="raw CSV to prepare and sample")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results JSON (default {DEFAULT_OUT})")
    parser.add_argument("--keep", type=Path, default=None, help="build the store here and keep it")
    parser.add_argument("--quick", action="store_true", help="smoke test: 100 trials, 1 repeat, 10k CLI rows")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.repeats, args.predict_repeats, args.cli_rows, args.cli_repeats = (
            100,
            1,
            10,
            10_000,
            1,
        )
    args.pages = [p.strip() for p in args.pages.split(",") if p.strip()]
    unknown = set(args.pages) - set(PAGES)
    if unknown:
        parser.error(f"unknown page(s) {sorted(unknown)}; choose from {list(PAGES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.pop(QUERY_LOG_ENV, None)
    started = time.perf_counter()
    load_before = load_at_start(console.print)
    info = machine_info(dash=dash.__version__, plotly=plotly.__version__)
    console.print(f"[bold]machine[/bold]: {info}")
    root = args.keep or Path(tempfile.mkdtemp(prefix="tcr-dash-bench-"))
    try:
        built = build_store(root, args.raw, args.trials, args.epochs, args.new)
        template: TrialRecord = built.pop("template")
        store_root = Path(built["store"])
        megabytes = built["trial_json_bytes"] / 1e6
        console.log(
            f"store: {args.trials} trials × {args.epochs} epochs, {megabytes:.1f} MB of trial.json, "
            f"built in {built['seconds_to_build']:.0f} s"
        )
        transfer: dict[str, Any] | None = None
        if args.transfer == "yes" or args.only_transfer or (args.transfer == "auto" and _has_chromium()):
            transfer = transfer_bytes(store_root, {p: PAGES[p] for p in args.pages}, root)
        elif args.transfer == "auto":
            console.log("no Chromium: the bytes of a cold first load are not measured (--transfer yes)")
        rows: list[dict[str, Any]] = []
        predict: dict[str, Any] = {}
        cli: dict[str, Any] = {}
        startup: dict[str, Any] = {}
        if not args.only_transfer:
            # The very first request of this process pays plotly's lazy imports; `tcr-pipeline
            # dashboard` pays them at start-up instead (dashboard.app.run starts figures.warm_up in a
            # thread). Time both once, then the pages on a server that has started that way.
            first_path = PAGES[args.pages[0]]
            cold = first_load(store_root, first_path, naive=False)
            warm_started = time.perf_counter()
            figures.warm_up()
            startup = {
                "first_page": args.pages[0],
                "process_cold_first_load_s": cold,
                "figures_warm_up_s": time.perf_counter() - warm_started,
            }
            console.log(
                f"process-cold first load of {args.pages[0]!r}: {_ms(cold)} ms; figures.warm_up "
                f"(the server's start-up thread) {_ms(startup['figures_warm_up_s'])} ms"
            )
            readers = ["ours"] if args.no_naive else ["ours", "naive"]
            rows = []
            for page in args.pages:
                path = PAGES[page]
                row: dict[str, Any] = {"page": page, "path": path}
                for reader in readers:
                    naive = reader == "naive"
                    loads = [first_load(store_root, path, naive) for _ in range(args.repeats)]
                    refreshes, idles = [], []
                    for _ in range(args.repeats):
                        refresh, idle = refresh_after_new_trials(
                            store_root, path, naive, template, args.trials, args.new
                        )
                        remove_trials(store_root, args.trials, args.new)
                        refreshes.append(refresh)
                        idles.append(idle)
                    row[reader] = {
                        "first_load": _summary(loads),
                        "refresh": _summary(refreshes),
                        "idle_tick": _summary(idles),
                    }
                    console.log(
                        f"{page:14s} {reader:5s} first load {_ms(statistics.median(loads))} ms, "
                        f"refresh {_ms(statistics.median(refreshes))} ms, "
                        f"idle tick {_ms(statistics.median(idles))} ms"
                    )
                rows.append(row)
            predict = prediction_latency(store_root, args.predict_repeats)
            console.log(
                f"10-row query: server {_ms(predict['http_server_s']['median'])} ms median "
                f"(p95 {_ms(predict['http_server_s']['p95'])}), "
                f"parse+predict {_ms(predict['parse_and_predict_s']['median'])} ms"
            )
            cli = cli_throughput(args.raw, Path(built["bundle"]), args.cli_rows, args.cli_repeats, root)
            console.log(
                f"CLI predict {args.cli_rows:,} rows: {cli['wall_s']['median']:.1f} s wall "
                f"({cli['rows_per_s_wall']:,.0f} rows/s), "
                f"in-process {cli['rows_per_s_in_process']:,.0f} rows/s, "
                f"query log {cli['query_log_rows_per_s']:,.0f} rows/s"
            )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    verdicts: dict[str, bool] = {}
    if rows:
        print_pages(rows)
        worst_load = max(r["ours"]["first_load"]["median"] for r in rows)
        worst_refresh = max(r["ours"]["refresh"]["median"] for r in rows)
        verdicts = {
            "first_load_under_1.5s": worst_load < TARGET_FIRST_LOAD_S,
            "refresh_under_200ms": worst_refresh < TARGET_REFRESH_S,
            "predict_10_rows_under_50ms": predict["http_server_s"]["median"] < TARGET_PREDICT_S,
        }
    if transfer:
        pages_only = {k: v for k, v in transfer.items() if not k.startswith("_")}
        heaviest = max(pages_only, key=lambda k: pages_only[k]["wire_bytes"])
        transfer["heaviest"] = {"page": heaviest, "wire_bytes": pages_only[heaviest]["wire_bytes"]}
        verdicts["cold_load_under_1.5MB"] = pages_only[heaviest]["wire_bytes"] <= TARGET_COLD_LOAD_BYTES
        console.print(
            f"heaviest cold first load: {heaviest} "
            f"{pages_only[heaviest]['wire_bytes'] / 1e6:.2f} MB on the wire"
        )
    console.print(f"targets: {verdicts}")
    results = {
        **results_header("dashboard", info, args),
        "store": built,
        "process_start": startup,
        "pages": rows,
        "predict_10_rows": predict,
        "cli_predict": cli,
        "cold_load_bytes": transfer,
        "targets": verdicts,
    }
    write_results(args.out, results, load_before, started, console.print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
