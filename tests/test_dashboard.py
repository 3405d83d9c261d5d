"""The dashboard without a browser: the incremental store reader, the caches, the figure builders,
each page's callback functions called as plain functions, and the app over HTTP (Flask's test
client, the same requests a browser sends)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from dash.development.base_component import Component
from dashboard_fixtures import (
    MAX_EVALS,
    STREAM_ROWS,
    UNSEEN_V_BETA,
    SearchStore,
    drifted,
    finish_run,
    monitored_copy,
    training_rows,
)

from dashboard import figures
from dashboard.app import create_app
from dashboard.auth import (
    AuthConfigError,
    enable_basic_auth,
    hash_password,
    load_credentials,
    parse_credentials,
)
from dashboard.client import DashClient
from dashboard.components import model_options
from dashboard.data import Dashboard
from dashboard.pages import balance, models, monitoring, overview, predict, queries, training, trials
from dashboard.prediction import Limits, TableError, parse_table
from dashboard.tables import alert_table, drift_table, health_table
from tcr_pipeline.bundle import load_bundle, predict_frame
from tcr_pipeline.config import MonitorParams
from tcr_pipeline.data import COLUMNS, load_pairs
from tcr_pipeline.genes import normalise_gene
from tcr_pipeline.monitoring import monitor_store
from tcr_pipeline.store import (
    MonitoringReport,
    Promotion,
    Store,
    StoreReader,
    TrialRecord,
    counted_attempt,
    data_versions,
    list_reports,
    new_attempt_id,
    now,
    write_report,
)
from tcr_pipeline.store.querylog import QUERY_LOG_ENV, log_prediction
from tcr_pipeline.store.run_data import epitope_counts, epitope_positives, example_rows, sampler_counts


@pytest.fixture(autouse=True)
def _query_log_in_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(QUERY_LOG_ENV, raising=False)


@pytest.fixture(autouse=True)
def _torch_threads_restored() -> Iterator[None]:
    """create_app sets torch's thread count for its process; other tests must not inherit it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def text_of(node: Any) -> str:
    """Every string in a component tree, space-separated (what a reader of the page sees)."""
    if isinstance(node, Component):
        node = node.to_plotly_json()
    if isinstance(node, dict):
        return " ".join(text_of(v) for k, v in node.items() if k not in ("type", "namespace"))
    if isinstance(node, (list, tuple)):
        return " ".join(text_of(v) for v in node)
    return "" if node is None else str(node)


def new_trial(search: SearchStore, trial_id: int, **changes: Any) -> TrialRecord:
    """A copy of trial 0's record as another trial (a new attempt), written to the store."""
    record = search.trials[0].model_copy(
        update={
            "trial_id": trial_id,
            "attempt": new_attempt_id(),
            "started": now(),
            "finished": now(),
            **changes,
        }
    )
    search.store.write_trial(record)
    return record


@pytest.fixture
def monitored(search_store: SearchStore, tmp_path: Path) -> SearchStore:
    """A copy of the search store with 900 logged CLI queries and three hourly monitoring reports
    (healthy, then two alerting on a drifted stream)."""
    return monitored_copy(search_store, tmp_path / "monitored")


def dashboard(search: SearchStore) -> Dashboard:
    ctx = Dashboard.open(search.root)
    ctx.reader.min_interval = 0.0  # every read refreshes: tests change the store between calls
    return ctx


def fresh_client(root: Path) -> DashClient:
    """An HTTP client of a new app over ``root``, loaded, whose every read refreshes the store."""
    app = create_app(root)
    app.server.config["tcr_dashboard"].reader.min_interval = 0
    client = DashClient(app)
    client.load()
    return client


# ---------------------------------------------------------------------------------------------
# The store reader: same answers as the store, reading only what changed
# ---------------------------------------------------------------------------------------------


def test_the_reader_agrees_with_the_store(search_store: SearchStore) -> None:
    store = search_store.store
    reader = StoreReader(store, min_interval=0)
    assert [m.run_id for m in reader.runs()] == [m.run_id for m in store.list_runs()]
    assert reader.trials(search_store.run_id) == store.list_trials(search_store.run_id)
    assert reader.registry() == store.load_registry()
    assert reader.problems == {}


def test_a_refresh_reads_only_new_and_changed_records(copied_store: SearchStore) -> None:
    store = copied_store.store
    reader = StoreReader(store, min_interval=0)
    first = reader.refresh()
    assert reader.stats.records_read == 1 + 1 + 4  # registry, manifest, four trials
    assert reader.refresh() == first  # nothing changed: same version, nothing read
    assert reader.stats.records_read == 6

    for trial_id in (4, 5, 6):
        new_trial(copied_store, trial_id)
    running = new_trial(copied_store, 7, status="running", finished=None, objective=None)
    version = reader.refresh()
    assert version > first
    assert reader.stats.records_read == 6 + 4
    assert [t.trial_id for t in reader.trials(copied_store.run_id)] == list(range(8))

    # only the running trial is looked at again; when it finishes, only it is read
    reader.refresh()
    assert reader.stats.records_read == 10
    store.write_trial(running.model_copy(update={"status": "ok", "objective": 1.0, "finished": now()}))
    reader.refresh()
    assert reader.stats.records_read == 11
    assert reader.trials(copied_store.run_id) == store.list_trials(copied_store.run_id)


def test_a_late_attempt_of_a_finished_trial_is_not_counted(copied_store: SearchStore) -> None:
    store = copied_store.store
    reader = StoreReader(store, min_interval=0)
    reader.refresh()
    late = copied_store.trials[1].model_copy(
        update={"attempt": new_attempt_id(), "objective": 99.0, "started": now(), "finished": now()}
    )
    store.write_trial(late)
    reader.refresh()
    assert reader.trials(copied_store.run_id) == store.list_trials(copied_store.run_id)
    assert max(t.objective or 0 for t in reader.trials(copied_store.run_id)) < 99


def test_a_finished_run_is_not_rescanned_until_its_manifest_changes(copied_store: SearchStore) -> None:
    finish_run(copied_store)
    reader = StoreReader(copied_store.store, min_interval=0)
    reader.refresh()
    before = reader.stats.records_read
    new_trial(copied_store, 9)  # a stray writer after the end: not looked for
    reader.refresh()
    assert reader.stats.records_read == before
    manifest = copied_store.store.load_manifest(copied_store.run_id)
    assert manifest is not None
    copied_store.store.write_manifest(manifest.model_copy(update={"status": "running"}))  # resumed
    reader.refresh()
    assert 9 in [t.trial_id for t in reader.trials(copied_store.run_id)]


def test_an_unreadable_record_is_reported_and_skipped(copied_store: SearchStore) -> None:
    broken = copied_store.store.attempt_dir(copied_store.run_id, 7, "broken") / "trial.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"run_id": "r"}')
    ctx = dashboard(copied_store)
    runs, _ = overview.overview_content(ctx)
    assert "Files skipped" in text_of(runs)
    assert "0007/broken/trial.json" in text_of(runs)
    assert [t.trial_id for t in ctx.reader.trials(copied_store.run_id)] == [0, 1, 2, 3]
    assert ctx.reader.stats.unreadable == 1
    ctx.reader.refresh()
    assert ctx.reader.stats.unreadable == 1  # not parsed again until it changes


def test_refreshes_closer_than_the_interval_read_nothing(copied_store: SearchStore) -> None:
    reader = StoreReader(copied_store.store, min_interval=60)
    version = reader.refresh()
    new_trial(copied_store, 4)
    assert reader.refresh() == version
    assert reader.refresh(force=True) > version


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        ([], None),
        # only running attempts: the latest started stands for the trial
        ([("a", "running", 0, None), ("b", "running", 5, None)], "b"),
        # a finished attempt beats a later running one
        ([("a", "ok", 0, 10), ("b", "running", 20, None)], "a"),
        # of two finished, the first to finish counts, even if it started later
        ([("a", "ok", 0, 30), ("b", "failed", 5, 20)], "b"),
        # a tie in finishing time: the attempt name decides, as in the store
        ([("b", "ok", 0, 10), ("a", "ok", 0, 10)], "a"),
    ],
)
def test_the_counted_attempt_follows_the_store_rule(
    tmp_path: Path, attempts: list[tuple[str, str, int, int | None]], expected: str | None
) -> None:
    store = Store(tmp_path)
    base = now()
    records = []
    for name, status, started, finished in attempts:
        record = TrialRecord(
            run_id="r",
            trial_id=0,
            attempt=name,
            status=status,  # type: ignore[arg-type]
            started=base + pd.Timedelta(seconds=started),
            finished=None if finished is None else base + pd.Timedelta(seconds=finished),
        )
        store.write_trial(record)
        records.append(record)
    chosen = counted_attempt(records)
    assert (chosen.attempt if chosen else None) == expected
    assert [t.attempt for t in store.list_trials("r")] == ([expected] if expected else [])


# ---------------------------------------------------------------------------------------------
# Models and prepared data: loaded once
# ---------------------------------------------------------------------------------------------


def test_the_best_model_is_loaded_once_and_again_after_a_promotion(copied_store: SearchStore) -> None:
    ctx = dashboard(copied_store)
    best = ctx.entry(None)
    assert best is not None
    first = ctx.models.get(best)
    assert ctx.models.get(ctx.entry(None)) is first  # type: ignore[arg-type]
    assert ctx.models.loads == 1

    store = copied_store.store
    with store.registry_lock():
        registry = store.load_registry()
        other = next(m for m in registry.models if m.model_id != registry.current)
        registry.history.append(
            Promotion(
                model_id=other.model_id, replaced=registry.current, reason="test", objective=other.objective
            )
        )
        registry.current = other.model_id
        store.save_registry(registry)
    promoted = ctx.entry(None)
    assert promoted is not None
    assert promoted.model_id == other.model_id
    assert ctx.models.get(promoted) is not first
    assert ctx.models.loads == 2


def test_example_rows_are_decoded_test_rows(search_store: SearchStore) -> None:
    ctx = dashboard(search_store)
    entry = ctx.entry(None)
    assert entry is not None
    prepared, why = ctx.prepared_for(entry)
    assert prepared is not None, why
    rows = example_rows(prepared, 10, seed=1)
    assert list(rows.columns) == list(COLUMNS)
    assert len(rows) == 10
    source = load_pairs(search_store.prepared_dir.parent / "small.csv")
    for column in ("V_alpha", "V_beta", "J_alpha", "J_beta"):  # decoded genes are IMGT-normalised
        source[column] = [normalise_gene(name)[0] for name in source[column]]
    keys = ["CDR3_alpha", "CDR3_beta", "V_alpha", "V_beta", "J_alpha", "J_beta", "Epitope", "MHC"]
    merged = rows.drop(columns=["clone_id"]).astype({"Label": int}).merge(source, on=[*keys, "Label"])
    assert len(merged) == 10  # every decoded row is a real row of the data, with its label
    assert set(example_rows(prepared, 10, seed=2).index) == set(range(10))


def test_missing_prepared_data_is_explained(copied_store: SearchStore) -> None:
    store = copied_store.store
    manifest = store.load_manifest(copied_store.run_id)
    assert manifest is not None
    store.write_manifest(manifest.model_copy(update={"prepared_dir": "/nowhere/prepared"}))
    ctx = dashboard(copied_store)
    entry = ctx.entry(None)
    assert entry is not None
    prepared, why = ctx.prepared_for(entry)
    assert prepared is None
    assert "/nowhere/prepared" in why
    text, problem = predict.example_text(ctx, None)
    assert text is None
    assert "not on this machine" in text_of(problem)


def test_class_tables_count_every_row(search_store: SearchStore) -> None:
    from tcr_pipeline.prepare import load_prepared

    prepared = load_prepared(search_store.prepared_dir)
    counts = epitope_counts(prepared)
    assert counts["positive"].sum() + counts["negative"].sum() == len(prepared.labels)
    per_split = counts.groupby("split")[["positive", "negative"]].sum().to_dict("index")
    assert per_split == prepared.meta["class_counts"]
    sampled = sampler_counts(prepared, balanced=True, seed=0)
    train = len(prepared.rows("train"))
    assert sampled["split_rows"].sum() == train
    assert sampled["drawn"].sum() == train
    drawn = sampled.groupby("label")["drawn"].sum()
    assert abs(drawn["positive"] / train - 0.5) < 0.1  # balanced: about half positives
    uniform = sampler_counts(prepared, balanced=False)
    assert (uniform["drawn"] == uniform["split_rows"]).all()


# ---------------------------------------------------------------------------------------------
# Figures: plain data in, figures out
# ---------------------------------------------------------------------------------------------

HISTORY = [
    {"epoch": 1.0, "train_loss": 0.7, "val_loss": 0.6, "val_roc_auc": 0.7},
    {"epoch": 2.0, "train_loss": 0.5, "val_loss": math.nan, "val_roc_auc": 0.8},
]


def test_training_curves_overlay_trials() -> None:
    fig = figures.training_curves({"trial 0": HISTORY, "trial 1": HISTORY[:1]}, "val_roc_auc")
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert len(lines) == 6  # val loss, train loss, metric per trial
    assert fig.data[0].y[0] == 0.6
    assert math.isnan(fig.data[0].y[1])  # a gap in the line, not a crash
    assert fig.data[2].xaxis == "x2"
    json.dumps(fig.to_plotly_json(), default=str)
    assert "no per-epoch history" in str(figures.training_curves({}, "val_roc_auc").layout.annotations)


def test_training_curves_star_the_best_epoch_and_name_their_units() -> None:
    history = [
        {"epoch": 1.0, "train_loss": 0.7, "val_loss": 0.6, "val_roc_auc": 0.7},
        {"epoch": 2.0, "train_loss": 0.5, "val_loss": 0.4, "val_roc_auc": 0.9},
        {"epoch": 3.0, "train_loss": 0.3, "val_loss": 0.5, "val_roc_auc": 0.8},
    ]
    fig = figures.training_curves({"t": history}, "val_roc_auc", log_y=True)
    stars = {t.xaxis: (t.x[0], t.y[0]) for t in fig.data if t.mode == "markers"}
    assert stars == {"x": (2.0, 0.4), "x2": (2.0, 0.9)}  # lowest loss, highest AUC
    assert fig.layout.yaxis.type == "log"
    assert "binary cross-entropy" in fig.layout.yaxis.title.text
    assert "log scale" in fig.layout.yaxis.title.text
    assert "ROC-AUC" in fig.layout.yaxis2.title.text
    assert fig.layout.yaxis2.type != "log"  # metrics stay linear
    linear = figures.training_curves({"t": history}, "val_roc_auc")
    assert linear.layout.yaxis.type != "log"
    assert figures.best_epoch([{"val_loss": math.nan}], "val_loss") is None


def test_search_progress_draws_the_best_so_far_line() -> None:
    frame = pd.DataFrame(
        {
            "trial_id": [0, 1, 2, 3, 4],
            "status": ["ok", "failed", "ok", "ok", "running"],
            "objective": [1.0, math.nan, 3.0, 2.0, math.nan],
        }
    )
    fig = figures.search_progress(frame, "paper")
    points, best, failed = fig.data
    assert list(points.x) == [0, 2, 3]
    assert list(best.x) == [0, 1, 2, 3]
    assert list(best.y) == [1.0, 1.0, 3.0, 3.0]
    assert list(failed.x) == [1]
    assert "4 finished" in fig.layout.title.text


def test_hyperparameter_panels_handle_numbers_and_categories() -> None:
    frame = pd.DataFrame(
        {
            "trial_id": [0, 1, 2],
            "objective": [1.0, 2.0, math.nan],
            "lr": [0.01, 0.02, 0.03],
            "kind": ["a", "b", "a"],
        }
    )
    fig = figures.hyperparameter_effects(frame, ["lr", "kind", "absent"], "paper")
    assert len(fig.data) == 2
    assert list(fig.data[0].x) == [0.01, 0.02]
    assert list(fig.layout.xaxis2.ticktext) == ["a", "b"]
    empty = figures.hyperparameter_effects(frame.iloc[2:], ["lr"], "paper")
    assert "no successful trials" in str(empty.layout.annotations)


@pytest.mark.parametrize(
    "build",
    [
        lambda: figures.class_counts(
            {"train": {"positive": 3, "negative": 7}, "val": {"positive": 1, "negative": 0}}
        ),
        lambda: figures.epitope_counts(
            pd.DataFrame(
                {"epitope": ["A", "B"], "split": ["train", "test"], "positive": [1, 2], "negative": [3, 4]}
            )
        ),
        lambda: figures.sampler_composition(
            pd.DataFrame(
                {
                    "epitope": ["A", "A"],
                    "label": ["positive", "negative"],
                    "split_rows": [1, 9],
                    "drawn": [5, 5],
                    "distinct": [1, 4],
                }
            ),
            balanced=True,
        ),
        lambda: figures.positive_ratio([{"split": "val", "predicted": 30, "actual": 10}]),
        lambda: figures.confusion_matrix([[5, 1], [2, 3]], "test"),
        lambda: figures.epitope_auc({"A": 0.6, "B": 0.9}, "test"),
    ],
)
def test_balance_figures_build_and_serialise(build: Any) -> None:
    fig = build()
    assert isinstance(fig, go.Figure)
    assert fig.data
    json.dumps(fig.to_plotly_json(), default=str)


def test_balance_figures_without_data_say_so() -> None:
    assert "no data" in str(
        figures.epitope_counts(pd.DataFrame(columns=["epitope", "split", "positive", "negative"])).layout
    )
    assert figures.confusion_matrix([], "test").layout.annotations
    assert "both classes" in str(figures.epitope_auc({}, "val").layout.annotations)
    assert figures.class_counts({}).layout.annotations


def test_a_confusion_matrix_shows_the_counts() -> None:
    fig = figures.confusion_matrix([[129, 27], [4, 8]], "test")
    assert [list(row) for row in fig.data[0].text] == [["TN 129", "FP 27"], ["FN 4", "TP 8"]]


# ---------------------------------------------------------------------------------------------
# Pages: their callback functions as plain functions
# ---------------------------------------------------------------------------------------------


def test_overview_lists_runs_and_the_best_model_card(search_store: SearchStore) -> None:
    ctx = dashboard(search_store)
    runs, best = overview.overview_content(ctx)
    runs_text, best_text = text_of(runs), text_of(best)
    assert search_store.run_id in runs_text
    assert f"4/{MAX_EVALS}" in runs_text
    assert "running" in runs_text
    registry = search_store.store.load_registry()
    entry = registry.current_entry
    assert entry is not None
    for expected in (
        entry.model_id,
        "small: 3 linear layers",
        "0123456789abcdef",  # git commit
        entry.data_sha256[:12],
        "d41d8cd98f00b204e9800998ecf8427e",  # dvc md5
        "nothing (the first model)",
        "first model",
        "precision",
        "mean_epitope_auc",
    ):
        assert expected in best_text, expected


def test_overview_of_an_empty_store(tmp_path: Path) -> None:
    runs, best = overview.overview_content(Dashboard.open(tmp_path / "empty"))
    assert "No runs" in text_of(runs)
    assert "No model promoted yet" in text_of(best)
    assert not (tmp_path / "empty").exists()  # reading never creates the store


def test_training_defaults_to_the_newest_run_and_its_best_trials(search_store: SearchStore) -> None:
    ctx = dashboard(search_store)
    _, run_id = training.run_options(ctx.reader.runs(), None)
    assert run_id == search_store.run_id
    assert training.run_options(ctx.reader.runs(), "gone")[1] == search_store.run_id
    trials = ctx.reader.trials(search_store.run_id)
    choices, chosen = training.trial_options(trials, None)
    assert len(choices) == 4
    best = sorted(trials, key=lambda t: -(t.objective or 0))[:3]
    assert chosen == [t.trial_id for t in best]
    assert training.trial_options(trials, [1, 99])[1] == [1]  # a kept selection drops what is gone
    curves = training.curves_figure(trials, chosen, "val_roc_auc")
    assert len([t for t in curves.data if t.mode == "lines+markers"]) == 3 * 3
    progress, effects, summary = training.search_figures(ctx.reader.manifest(run_id or ""), trials)
    assert f"4/{MAX_EVALS} trials finished" in summary
    assert len(progress.data[0].x) == 4
    assert len(effects.data) == 3  # model.kind, lr, epochs


def test_class_balance_for_the_current_model(search_store: SearchStore) -> None:
    ctx = dashboard(search_store)
    registry = ctx.reader.registry()
    options, value = model_options(ctx.ranked_models(), registry.current, None, "in use")
    assert value == registry.current
    assert len(options) == 3
    splits, epitopes, sampler, message = balance.balance_data(ctx, value, "all")
    assert message is None
    assert [t.name for t in splits.data] == ["negative", "positive"]
    assert len(epitopes.data[0].y) == 14  # every epitope
    assert "class-balanced" in sampler.layout.title.text
    facts, ratio, confusion, aucs = balance.model_figures(ctx.entry(value), "test")
    assert "recall on positives" in text_of(facts)
    assert [b.name for b in ratio.data] == ["actual positives", "predicted positives"]
    assert confusion.data[0].type == "heatmap"
    assert aucs.data[0].orientation == "h"


def test_class_balance_before_any_model(copied_store: SearchStore) -> None:
    (copied_store.root / "registry.json").unlink()
    ctx = dashboard(copied_store)
    splits, _, _, message = balance.balance_data(ctx, None, "train")
    assert splits.data  # the latest run's data is shown
    assert message is None
    facts, *_ = balance.model_figures(None, "test")
    assert "No model registered" in text_of(facts)


def test_models_table_shows_use_availability_and_results(copied_store: SearchStore) -> None:
    ctx = dashboard(copied_store)
    registry = ctx.reader.registry()
    missing = next(m for m in registry.models if m.model_id != registry.current)
    (copied_store.root / missing.path / "weights.pt").unlink()
    from dashboard.data import model_files

    files = {e.model_id: model_files(ctx.store, e) for e in registry.models}
    grid = models.models_table(registry, files)
    rows = {r["model"]: r for r in grid.rowData}
    assert [m for m, r in rows.items() if r["in_use"] == "in use"] == [registry.current]
    assert rows[missing.model_id]["files"] == "missing weights.pt"
    assert set(rows) == {m.model_id for m in registry.models}
    objectives = [r["objective"] for r in grid.rowData]
    assert objectives == sorted(objectives, reverse=True)  # best first
    entry = registry.current_entry
    assert entry is not None
    assert rows[entry.model_id]["test:precision"] == entry.test_metrics["precision"]
    details = models.model_details(entry, ctx.models.card(entry), files[entry.model_id])
    assert "paper_objective" in text_of(details)


def test_predict_offers_the_best_first_then_the_top_three(search_store: SearchStore) -> None:
    ctx = dashboard(search_store)
    registry = ctx.reader.registry()
    options, value = model_options(ctx.predict_choices(), registry.current, None, "current best")
    assert value == registry.current
    assert "current best" in options[0]["label"]
    assert len(options) == 3


def test_predict_answers_valid_rows_and_explains_invalid_ones(copied_store: SearchStore) -> None:
    ctx = dashboard(copied_store)
    text, problem = predict.example_text(ctx, None)
    assert problem is None
    assert text is not None
    lines = text.strip().splitlines()
    assert len(lines) == 11
    bad = [
        lines[1].replace(lines[1].split(",")[1], "CASSX1F", 1),  # line 12: bad residues
        ",".join(lines[1].split(",")[:5]),  # line 13: too few fields
    ]
    message, results = predict.predict_text(ctx, "\n".join([*lines, *bad]), None)
    assert "10 of 12 rows scored" in text_of(message)
    body = text_of(results)
    assert "line 12: CDR3_beta" in body
    assert "line 13: expected 10 fields, found 5" in body
    logged = ctx.queries.read(0, 50)
    assert len(logged) == 12
    assert sum(not q.valid for q in logged) == 2
    assert {q.source for q in logged} == {"dashboard"}
    assert {q.model_id for q in logged} == {ctx.reader.registry().current}
    assert all(q.latency_ms is not None and q.latency_ms > 0 for q in logged)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no input"),
        ("CDR3_alpha,CDR3_beta\nA,B\n", "lacks required column(s) V_alpha"),
        (",".join(COLUMNS) + "\n", "no rows after the header"),
        (",".join(COLUMNS) + "\n" + "a,b,c,d,e,f,g,h,i,j\n" * 6, "6 rows; the limit is 5 rows"),
        (",".join(COLUMNS) + "\n" + "x" * 3000, "bytes; the limit is 2,000 bytes"),
    ],
)
def test_a_submission_that_cannot_be_answered_gets_a_message(text: str, message: str) -> None:
    with pytest.raises(TableError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_table(text, Limits(max_rows=5, max_bytes=2000))


def test_an_oversized_submission_is_a_message_not_a_crash(copied_store: SearchStore) -> None:
    ctx = dashboard(copied_store)
    ctx.max_rows = 3
    header = ",".join(COLUMNS)
    message, results = predict.predict_text(ctx, header + "\n" + "a,b,c,d,e,f,g,h,i,j\n" * 4, None)
    assert "the limit is 3 rows" in text_of(message)
    assert results is None
    assert ctx.queries.count() == 0


def test_the_query_log_pages_newest_first(copied_store: SearchStore) -> None:
    ctx = dashboard(copied_store)
    text, _ = predict.example_text(ctx, None, seed=0)
    assert text is not None
    for _ in range(3):
        predict.predict_text(ctx, text, None)
    total = ctx.queries.count()
    assert total == 30
    body, position = queries.queries_table(ctx.queries.read(0, queries.PAGE_SIZE), total, 0)
    assert position == "1–25 of 30 (newest first)"
    assert queries.turn_page(0, total, 1) == 1
    assert queries.turn_page(1, total, 1) == 1  # no page after the last
    assert queries.turn_page(0, total, -1) == 0
    _, position = queries.queries_table(ctx.queries.read(25, queries.PAGE_SIZE), total, 1)
    assert position == "26–30 of 30 (newest first)"
    assert "dashboard" in text_of(body)
    assert "No queries yet" in text_of(queries.queries_table([], 0, 0)[0])


# ---------------------------------------------------------------------------------------------
# Trials, comparison, baselines, warnings
# ---------------------------------------------------------------------------------------------


def test_the_trials_grid_has_every_trial_metric_and_hyperparameter(copied_store: SearchStore) -> None:
    ctx = dashboard(copied_store)
    rows, columns, pins, count, empty = trials.grid_content(ctx, ["objective"])
    assert count == "4 trials in 1 run(s)"
    assert empty is None
    records = {t.trial_id: t for t in ctx.reader.trials(copied_store.run_id)}
    assert sorted(r["trial"] for r in rows) == sorted(records)
    row = next(r for r in rows if r["trial"] == 0)
    trial = records[0]
    assert row["key"] == f"{copied_store.run_id}/0000"
    assert row["objective"] == pytest.approx(trial.objective, rel=1e-5)  # 6 significant digits
    assert row["param:lr"] == pytest.approx(trial.params["lr"], rel=1e-5)
    for name, value in trial.test_metrics.items():  # every metric, per-epitope AUCs included
        expected = pytest.approx(value, rel=1e-5) if math.isfinite(value) else None
        assert row[f"test:{name}"] == expected, name
    assert row["val:precision"] == pytest.approx(trial.val_metrics["precision"], rel=1e-5)
    json.dumps(rows)  # what the grid receives

    by_header = {c.get("headerName"): c for c in columns}
    assert by_header["trial id"]["pinned"] == "left"
    assert by_header["objective"]["pinned"] == "left"  # the chosen pin
    assert by_header["objective"]["filter"] == "agNumberColumnFilter"
    assert {c["headerName"] for c in by_header["hyperparameters"]["children"]} == {
        "model.kind",
        "lr",
        "epochs",
    }
    test_group = by_header["test metrics"]["children"]
    shown = [c["headerName"] for c in test_group if "columnGroupShow" not in c]
    assert shown[:3] == ["accuracy", "precision", "recall"]  # the headline metrics, in order
    assert any(c["headerName"].startswith("epitope_auc/") for c in test_group)  # the rest when opened
    assert {"label": "param:lr", "value": "param:lr"} in pins


def test_a_refresh_sends_the_grid_only_the_trials_that_changed(copied_store: SearchStore) -> None:
    from dash import no_update

    ctx = dashboard(copied_store)
    snapshots = trials.GridSnapshots()
    rows, transaction, columns, _, count, _, sent = trials.grid_update(ctx, snapshots, None, None)
    assert len(rows) == 4  # a new client: everything
    assert transaction is no_update
    assert columns is not no_update
    new_trial(copied_store, 4)
    rows, transaction, columns, _, count, _, sent = trials.grid_update(ctx, snapshots, None, sent)
    assert rows is no_update
    assert [r["trial"] for r in transaction["add"]] == [4]  # one row, not five
    assert transaction["update"] == transaction["remove"] == []
    assert columns is no_update  # same columns: the client keeps its pins, widths and sort
    assert count == "5 trials in 1 run(s)"
    rows, transaction, *_ = trials.grid_update(ctx, snapshots, None, sent)
    assert rows is no_update
    assert transaction is no_update
    assert trials.grid_update(ctx, snapshots, None, 12345)[0] is not no_update  # unknown: everything


def test_comparing_trials_draws_curves_metrics_and_each_runs_baseline(copied_store: SearchStore) -> None:
    ctx = dashboard(copied_store)
    chosen = [
        {"key": f"{copied_store.run_id}/000{i}", "run": copied_store.run_id, "trial": i} for i in (0, 2)
    ]
    curves, metrics, table, summary = trials.compare_content(ctx, chosen, "val_roc_auc", True)
    assert summary == "2 trial(s) selected from 1 run(s)"
    assert curves.layout.yaxis.type == "log"
    bars = [t for t in metrics.data if t.type == "bar"]
    assert [b.name for b in bars] == [c["key"] for c in chosen]
    baseline = copied_store.store.load_baseline(copied_store.run_id)
    assert baseline is not None
    reference_trace = next(t for t in metrics.data if t.type == "scatter")
    assert reference_trace.name == f"k-mer baseline ({copied_store.run_id})"
    assert list(reference_trace.y) == [baseline["test"][m] for m in reference_trace.x]
    rows = {r["metric"]: r for r in table.rowData}
    assert rows["precision"][f"baseline {copied_store.run_id}"] == baseline["test"]["precision"]
    assert rows["roc_auc"]["always negative"] == 0.5
    assert rows["precision"]["always negative"] == 0.0
    nothing = trials.compare_content(ctx, [], "val_roc_auc", False)
    assert nothing[3] == "no trials selected"
    (copied_store.root / "runs" / copied_store.run_id / "baseline.json").unlink()
    assert "no k-mer baseline stored" in trials.compare_content(ctx, chosen, "val_roc_auc", False)[3]


def test_hyperparameter_importance_finds_what_the_objective_depends_on() -> None:
    import numpy as np

    from dashboard.data import hyperparameter_importance

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "lr": rng.uniform(0.001, 0.1, 40),
            "dropout": rng.uniform(0, 0.5, 40),
            "kind": rng.choice(["small", "medium"], 40),
        }
    )
    frame["objective"] = 10 * frame["lr"] + rng.normal(0, 0.01, 40)
    result = hyperparameter_importance(frame, ["lr", "dropout", "kind"])
    ranked = sorted(zip(result.mean, result.names, strict=True), reverse=True)
    assert ranked[0][1] == "lr"
    assert ranked[0][0] > 10 * max(abs(v) for v, _ in ranked[1:])
    assert result.trials == 40
    few = hyperparameter_importance(frame.head(3), ["lr"])
    assert few.names == []
    assert "at least 5 successful trials" in few.reason


def test_a_big_run_updates_its_importance_every_25_trials() -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"trial_id": range(60), "lr": rng.uniform(0, 1, 60)})
    frame["objective"] = frame["lr"] + rng.normal(0, 0.01, 60)
    assert trials.importance_of(frame.head(20), ["lr"]).trials == 20  # small runs: every trial
    assert trials.importance_of(frame.head(49), ["lr"]).trials == 25
    assert trials.importance_of(frame.head(50), ["lr"]).trials == 50
    assert trials.importance_of(frame, ["lr"]).trials == 50  # 60: the first 50 until 75


def test_the_trials_page_draws_parallel_coordinates_and_importance(copied_store: SearchStore) -> None:
    import numpy as np

    ctx = dashboard(copied_store)
    parallel, importance = trials.run_figures(ctx, copied_store.run_id)
    labels = list(parallel.layout.xaxis.ticktext)
    assert labels[-1] == "mean_epitope_auc"  # the run's objective, last
    assert set(labels[:-1]) == {"model.kind", "lr", "epochs"}
    lines = [t for t in parallel.data if t.mode == "lines+markers"]
    assert sum(np.isnan(t.x).sum() for t in lines) == 4  # one line per successful trial
    assert {t.type for t in parallel.data} == {"scatter"}  # cartesian: the bundle served has no parcoords
    assert "4 successful" not in importance.layout.title.text  # 4 trials: too few
    assert "at least 5 successful trials (this run has 4)" in importance.layout.annotations[0].text
    for trial_id in (4, 5):
        new_trial(copied_store, trial_id)
    _, importance = trials.run_figures(ctx, copied_store.run_id)
    assert importance.data[0].type == "bar"
    assert "6 trials" in importance.layout.title.text


def test_always_negative_and_the_reference_rows() -> None:
    from dashboard.data import always_negative, positive_rate, reference

    metrics = {"tp": 3.0, "fn": 2.0, "tn": 90.0, "fp": 5.0, "precision": 0.375, "roc_auc": 0.8}
    assert positive_rate(metrics) == 0.05
    negative = always_negative(0.05)
    assert negative["accuracy"] == 0.95
    assert negative["roc_auc"] == negative["mean_epitope_auc"] == 0.5
    assert negative["precision"] == negative["recall"] == 0.0
    assert negative["average_precision"] == 0.05
    assert "accuracy" not in always_negative(None)  # no counts, no accuracy
    ref = reference("test", metrics, {"test": {"precision": 0.5, "roc_auc": 0.7}})
    rows = {r["metric"]: r for r in ref.rows()}
    assert rows["precision"]["delta"] == pytest.approx(-0.125)
    assert rows["roc_auc"]["delta"] == pytest.approx(0.1)
    assert rows["accuracy"]["model"] is None
    assert reference("test", metrics, None).baseline is None


def test_the_best_model_is_shown_beside_its_baseline_and_the_promotion_interval(
    copied_store: SearchStore,
) -> None:
    ctx = dashboard(copied_store)
    _, best = overview.overview_content(ctx)
    text = text_of(best)
    assert "k-mer baseline" in text
    assert "always negative" in text
    assert "the k-mer baseline on test mean_epitope_auc" in text  # the verdict, on the objective
    assert "interval" not in text.replace("interval (new − old)", "")  # none recorded: none shown
    store = copied_store.store
    registry = store.load_registry()
    interval = {"metric": "mean_epitope_auc", "delta": 0.03, "low": -0.01, "high": 0.07, "resamples": 1000}
    promoted = registry.history[-1].model_copy(update={"interval": interval})
    store.save_registry(registry.model_copy(update={"history": [*registry.history[:-1], promoted]}))
    _, best = overview.overview_content(ctx)
    text = text_of(best)
    assert "Δ mean_epitope_auc = +0.0300 (interval -0.0100 to +0.0700, 1,000 bootstrap resamples)" in text
    assert "Δ mean_epitope_auc +0.0300 [-0.0100, +0.0700] (1,000 resamples)" in text  # promotions table
    (copied_store.root / "runs" / copied_store.run_id / "baseline.json").unlink()
    _, best = overview.overview_content(ctx)
    assert "No k-mer baseline stored for this run" in text_of(best)


def test_a_malformed_promotion_interval_is_ignored() -> None:
    from dashboard.data import promotion_interval
    from tcr_pipeline.store import Promotion

    plain = Promotion(model_id="m", replaced=None, reason="first", objective=1.0)
    assert promotion_interval(plain) is None
    assert promotion_interval(plain.model_copy(update={"interval": {"delta": "x"}})) is None
    assert promotion_interval(plain.model_copy(update={"interval": "0.03"})) is None
    valid = plain.model_copy(update={"interval": {"metric": "m", "delta": 0.1, "low": 0.0, "high": 0.2}})
    assert promotion_interval(valid) == {
        "metric": "m",
        "delta": 0.1,
        "low": 0.0,
        "high": 0.2,
        "resamples": None,
    }


def test_per_epitope_bars_carry_their_positives_and_list_the_rest() -> None:
    fig = figures.epitope_auc({"A": 0.6, "B": 0.9}, "test", {"A": 1, "B": 12, "C": 0})
    assert list(fig.data[0].text) == ["0.600 (n+ = 1)", "0.900 (n+ = 12)"]
    footer = fig.layout.annotations[0].text
    assert "C (0 positives)" in footer
    unknown = figures.epitope_auc({"A": 0.6}, "test", None, "the prepared data is not on this machine")
    assert "positives per epitope unknown: the prepared data is not on this machine" in str(
        unknown.layout.annotations
    )
    none = figures.epitope_auc({}, "test", {"C": 0})
    assert "C (0 positives)" in str(none.layout.annotations)


def test_the_models_page_counts_positives_from_the_prepared_data(copied_store: SearchStore) -> None:
    ctx = dashboard(copied_store)
    entry = ctx.reader.registry().current_entry
    assert entry is not None
    prepared, _ = ctx.prepared_for(entry)
    assert prepared is not None
    from dashboard.data import model_files

    positives = epitope_positives(prepared, "test")
    counts = epitope_counts(prepared)
    assert sum(positives.values()) == counts[counts["split"] == "test"]["positive"].sum()
    assert set(positives) == set(prepared.epitope_names)  # epitopes without positives kept, as 0
    details = models.model_details(
        entry, ctx.models.card(entry), model_files(ctx.store, entry), None, positives
    )
    text = text_of(details)
    assert "n+ = " in text
    assert "No k-mer baseline stored" in text
    interval = {"metric": "mean_epitope_auc", "delta": 0.03, "low": -0.01, "high": 0.07, "resamples": 1000}
    baseline = ctx.baseline(copied_store.run_id)
    with_interval = text_of(
        models.model_details(entry, None, model_files(ctx.store, entry), baseline, positives, "", interval)
    )
    assert "Δ mean_epitope_auc = +0.0300 (interval -0.0100 to +0.0700" in with_interval
    assert "the k-mer baseline on test mean_epitope_auc" in with_interval


def test_the_query_log_shows_each_input_field_as_a_column(copied_store: SearchStore) -> None:
    ctx = dashboard(copied_store)
    text, _ = predict.example_text(ctx, None, seed=0)
    assert text is not None
    predict.predict_text(ctx, text, None)
    grid, _ = queries.queries_table(ctx.queries.read(0, queries.PAGE_SIZE), ctx.queries.count(), 0)
    first = pd.read_csv(__import__("io").StringIO(text), dtype=str, keep_default_na=False).iloc[-1]
    newest = grid.rowData[0]
    for field in ("CDR3_alpha", "CDR3_beta", "V_beta", "Epitope", "MHC"):
        assert newest[f"in:{field}"] == first[field]
    headers = [
        c["headerName"]
        for c in next(c for c in grid.columnDefs if c.get("headerName") == "input")["children"]
    ]
    assert headers[:3] == ["CDR3_alpha", "CDR3_beta", "V_alpha"]
    assert "{" not in json.dumps([r.get("in:CDR3_alpha") for r in grid.rowData])  # no JSON blobs


def test_predict_shows_the_librarys_warnings_highlighted() -> None:
    from dashboard.prediction import Answer, answers_frame

    answers = [
        Answer(2, {"CDR3_beta": "CASSF"}, 0.9, True, "", "V_beta TRBV99-9*01 never seen in training"),
        Answer(3, {"CDR3_beta": "CASSG"}, 0.1, False, ""),
        Answer(4, {}, None, None, "line 4: expected 10 fields, found 8"),
    ]
    frame = answers_frame(answers)
    assert list(frame["warning"]) == ["V_beta TRBV99-9*01 never seen in training", "", ""]
    grid = predict.results_grid(frame)
    warning = next(c for c in grid.columnDefs if c["field"] == "warning")
    assert warning["cellClassRules"] == {"cell-warning": "params.value"}
    assert grid.rowData[0]["score"] == pytest.approx(0.9)
    assert answers[0].as_query().output["warning"].startswith("V_beta")
    assert "warning" not in answers[1].as_query().output


def test_the_query_log_keeps_and_shows_a_rows_warning(tmp_path: Path) -> None:
    from dashboard.prediction import Answer
    from tcr_pipeline.store.querylog import QueryLog

    log = QueryLog(tmp_path / "queries.sqlite")
    answers = [
        Answer(2, {"CDR3_beta": "CASSF"}, 0.9, True, "", "V_beta TRBV99-9*01 never seen in training"),
        Answer(3, {"CDR3_beta": "CASSG"}, 0.1, False, ""),
    ]
    log.log([a.as_query() for a in answers], "m", "dashboard", 1.0)
    grid, _ = queries.queries_table(log.read(0, 25), log.count(), 0)
    by_line = {r["line"]: r for r in grid.rowData}
    assert by_line[2]["warning"] == "V_beta TRBV99-9*01 never seen in training"
    assert by_line[3]["warning"] == ""
    warning = next(c for c in grid.columnDefs if c.get("field") == "warning")
    assert warning["cellClassRules"] == {"cell-warning": "params.value"}


def test_predict_works_with_a_library_without_the_warning_column(copied_store: SearchStore) -> None:
    ctx = dashboard(copied_store)
    text, _ = predict.example_text(ctx, None, seed=0)
    assert text is not None
    _, results = predict.predict_text(ctx, text, None)
    assert results is not None
    fields = [c["field"] for c in results.columnDefs]
    assert "warning" in fields
    if "warning" not in predict_frame(ctx.models.get(ctx.entry(None)), pd.DataFrame(columns=COLUMNS)).columns:
        assert all(r["warning"] == "" for r in results.rowData)


# ---------------------------------------------------------------------------------------------
# The app: built without reading the store, every page served, refresh, login
# ---------------------------------------------------------------------------------------------


def test_building_the_app_and_its_layout_reads_nothing(search_store: SearchStore) -> None:
    app = create_app(search_store.root)
    ctx: Dashboard = app.server.config["tcr_dashboard"]
    client = DashClient(app)
    client.load()  # the index, the shell's layout, the callback list
    assert ctx.reader.stats.refreshes == 0
    assert ctx.models.loads == 0
    client.open_page("/")  # the page's callbacks read the store
    assert ctx.reader.stats.records_read == 6


def test_a_missing_store_is_not_created(tmp_path: Path) -> None:
    client = DashClient(create_app(tmp_path / "store"))
    client.load()
    assert "No runs" in json.dumps(client.open_page("/")["overview-runs.children"])
    assert not (tmp_path / "store").exists()


def test_plotly_js_is_the_cartesian_bundle_and_every_figure_fits_it(search_store: SearchStore) -> None:
    from plotly.offline import get_plotlyjs_version

    from dashboard.transfer import cartesian_plotly

    app = create_app(search_store.root)
    served = app.server.test_client().get(
        "/_dash-component-suites/plotly/package_data/plotly.min.js", headers={"Accept-Encoding": "identity"}
    )
    assert served.status_code == 200
    assert (
        f"plotly.js (cartesian - minified) v{get_plotlyjs_version()}" in served.get_data(as_text=True)[:200]
    )
    assert cartesian_plotly() is not None
    cartesian = {"bar", "box", "contour", "heatmap", "histogram", "histogram2d", "image", "pie", "scatter"}
    import inspect

    builders = [f for name, f in inspect.getmembers(figures, inspect.isfunction) if name in figures.__all__]
    source = "\n".join(inspect.getsource(f) for f in builders)
    used = {name.lower() for name in __import__("re").findall(r"go\.([A-Z][a-z0-9]+)\(", source)} - {"figure"}
    assert used <= cartesian, used - cartesian


def test_responses_are_compressed_and_bundles_cached_for_good(search_store: SearchStore) -> None:
    import re

    import brotli

    app = create_app(search_store.root)
    client = app.server.test_client()
    index = client.get("/", headers={"Accept-Encoding": "br, gzip"})
    assert index.headers["Content-Encoding"] == "br"
    page = brotli.decompress(index.data).decode()
    scripts = re.findall(r'src="([^"]+)"', page)
    assert any("dash_ag_grid" in s for s in scripts)
    assert not any("dash_table" in s for s in scripts)  # no page uses the DataTable
    for src in scripts:
        bundle = client.get(src, headers={"Accept-Encoding": "br, gzip"})
        assert bundle.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert bundle.headers["Content-Encoding"] == "br", src
        plain = client.get(src, headers={"Accept-Encoding": "identity"})
        assert brotli.decompress(bundle.data) == plain.data
        assert "Accept-Encoding" in bundle.headers["Vary"]
    gzipped = client.get(scripts[0], headers={"Accept-Encoding": "gzip"})
    assert gzipped.headers["Content-Encoding"] == "gzip"


def test_every_page_opens_over_http(copied_store: SearchStore) -> None:
    client = DashClient(create_app(copied_store.root))
    client.load()
    expected = {
        "/": ("overview-runs.children", copied_store.run_id),
        "/training": ("training-summary.children", "trials finished"),
        "/balance": ("balance-model-facts.children", "recall on positives"),
        "/models": ("models-table.children", "in use"),
        "/predict": ("predict-model.options", "current best"),
        "/trials": ("trials-count.children", "4 trials in 1 run(s)"),
        "/queries": ("queries-position.children", "no queries"),
        "/monitoring": ("monitoring-status.children", "No monitoring reports yet"),
    }
    for path, (output, text) in expected.items():
        values = client.open_page(path)
        assert text in json.dumps(values[output]), (path, output)


def test_the_refresh_tick_updates_only_when_the_store_changed(copied_store: SearchStore) -> None:
    client = fresh_client(copied_store.root)
    version = client.open_page("/")["store-version.data"]
    assert version > 0
    tick = {"refresh-interval.n_intervals": 1, "store-version.data": version}
    assert client.call("store-version.data", tick) == {}  # nothing new: no update, no redraw
    new_trial(copied_store, 4)
    changed = client.call("store-version.data", tick)
    assert changed["store-version.data"] > version
    values = client.open_page("/")
    assert f"5/{MAX_EVALS}" in json.dumps(values["overview-runs.children"])


def test_a_prediction_over_http_lands_in_the_query_log(copied_store: SearchStore) -> None:
    client = DashClient(create_app(copied_store.root))
    client.load()
    values = client.open_page("/predict")
    model = values["predict-model.value"]
    filled = client.call("predict-input.value", {"predict-example.n_clicks": 1, "predict-model.value": model})
    answered = client.call(
        "predict-results.children",
        {
            "predict-submit.n_clicks": 1,
            "predict-input.value": filled["predict-input.value"],
            "predict-model.value": model,
        },
    )
    assert "10 of 10 rows scored" in json.dumps(answered["predict-message.children"])
    log = client.open_page("/queries")
    assert "1–10 of 10" in log["queries-position.children"]


def test_credentials_come_from_a_file_or_the_environment(tmp_path: Path) -> None:
    assert load_credentials(environ={}) is None
    users = load_credentials(environ={"TCR_DASHBOARD_USERS": "ana:secret1, bo:secret2"})
    assert users is not None
    assert set(users) == {"ana", "bo"}
    assert "secret1" not in users["ana"]  # hashed when read
    path = tmp_path / "users"
    path.write_text(f"# lab members\nana:{hash_password('pw')}\n")
    from_file = load_credentials(environ={"TCR_DASHBOARD_AUTH_FILE": str(path)})
    assert from_file is not None
    assert set(from_file) == {"ana"}
    with pytest.raises(AuthConfigError, match="cannot read"):
        load_credentials(tmp_path / "absent", environ={})
    with pytest.raises(AuthConfigError, match="expected user:password"):
        parse_credentials("no-colon-here", hashed=False)


def test_login_is_required_when_users_are_configured(search_store: SearchStore) -> None:
    import base64

    app = create_app(search_store.root, auth={"ana": hash_password("pw")})
    client = app.server.test_client()

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    refused = client.get("/")
    assert refused.status_code == 401
    assert "Basic" in refused.headers["WWW-Authenticate"]
    assert client.get("/", headers=basic("ana", "wrong")).status_code == 401
    assert client.get("/_dash-layout", headers=basic("bo", "pw")).status_code == 401
    assert client.get("/", headers=basic("ana", "pw")).status_code == 200
    assert client.get("/_dash-layout", headers=basic("ana", "pw")).status_code == 200


def _basic(user: str, password: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_an_empty_password_is_never_accepted(tmp_path: Path) -> None:
    import subprocess
    import sys

    with pytest.raises(ValueError, match="empty password"):
        hash_password("")
    # the command itself, as a user runs it (no terminal: getpass reads stdin)
    result = subprocess.run(
        [sys.executable, "-m", "dashboard.auth", "hash", "bob"],
        input="\n\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "empty password is not allowed" in result.stderr
    assert "bob:" not in result.stdout
    from flask import Flask
    from werkzeug.security import generate_password_hash

    server = Flask("t")
    server.add_url_rule("/", "index", lambda: "ok")
    # even a file holding a hash of the empty password (made by hand) lets nobody in with it
    enable_basic_auth(server, {"bob": generate_password_hash("")})
    client = server.test_client()
    assert client.get("/", headers=_basic("bob", "")).status_code == 401
    assert client.get("/", headers=_basic("bob", "")).status_code == 401  # not cached either


def test_failed_logins_are_rate_limited_per_address() -> None:
    from flask import Flask

    server = Flask("t")
    server.add_url_rule("/", "index", lambda: "ok")
    enable_basic_auth(server, {"u": hash_password("p")}, limit="3 per minute")
    client = server.test_client()
    for _ in range(5):  # the browser's first request carries no credentials: not a failed login
        assert client.get("/").status_code == 401
    assert client.get("/", headers=_basic("u", "p")).status_code == 200
    for _ in range(3):
        assert client.get("/", headers=_basic("u", "wrong")).status_code == 401
    assert client.get("/", headers=_basic("u", "wrong")).status_code == 429
    # past the limit even the right password waits for the window: guessing gains nothing
    assert client.get("/", headers=_basic("u", "p")).status_code == 429
    other = server.test_client()
    other_address = {"REMOTE_ADDR": "10.0.0.2"}
    assert other.get("/", headers=_basic("u", "p"), environ_base=other_address).status_code == 200


def test_basic_auth_guards_any_flask_server() -> None:
    from flask import Flask

    server = Flask("t")
    server.add_url_rule("/", "index", lambda: "ok")
    enable_basic_auth(server, {"u": hash_password("p")})
    assert server.test_client().get("/").status_code == 401


def test_run_binds_to_loopback_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import dash

    from dashboard import app as app_module

    seen: dict[str, Any] = {}
    monkeypatch.setattr(dash.Dash, "run", lambda self, **kwargs: seen.update(kwargs))
    for name in ("TCR_DASHBOARD_USERS", "TCR_DASHBOARD_AUTH_FILE"):
        monkeypatch.delenv(name, raising=False)
    app_module.run(tmp_path / "store")
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8050)
    assert "debug" in seen
    assert os.environ.get("TCR_DASHBOARD_USERS") is None


def test_warming_up_reads_the_store_and_loads_the_best_model(search_store: SearchStore) -> None:
    from dashboard.app import warm_up

    ctx = Dashboard.open(search_store.root)
    warm_up(ctx)
    assert ctx.reader.version > 0
    assert ctx.models.loads == 1


def test_the_app_scores_on_one_torch_thread(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    create_app(tmp_path / "store", torch_threads=None)
    assert torch.get_num_threads() == 2
    create_app(tmp_path / "store")
    assert torch.get_num_threads() == 1


# ---------------------------------------------------------------------------------------------
# Monitoring: reports made by the library from logged queries
# ---------------------------------------------------------------------------------------------


def reports_of(search: SearchStore) -> list[MonitoringReport]:
    return list_reports(search.store)


def test_the_fixture_reports_are_healthy_then_drifted(monitored: SearchStore) -> None:
    reports = reports_of(monitored)
    assert [r.status for r in reports] == ["healthy", "alert", "alert"]
    assert all(r.window.rows == STREAM_ROWS for r in reports)
    crossed = {c.name for c in reports[-1].alerts}
    assert {"input.V_beta.psi", "input.V_beta.unseen", "input.CDR3_beta.length_ks"} <= crossed
    # the last report's alerts began with the one before
    assert {c.since for c in reports[-1].alerts} == {reports[1].created}


def test_drift_over_time_draws_each_feature_with_the_threshold(monitored: SearchStore) -> None:
    drift = drift_table(reports_of(monitored))
    fig = figures.drift_over_time(drift, "psi", "PSI")
    lines = {t.name: t for t in fig.data if t.mode == "lines+markers"}
    assert set(lines) == {"Epitope", "MHC", "V_alpha", "V_beta", "J_alpha", "J_beta"}
    assert all(len(t.x) == 3 for t in lines.values())  # one point per report
    assert lines["V_beta"].y[0] < 0.25 < lines["V_beta"].y[-1]
    crossed = next(t for t in fig.data if t.name == "crossed")
    assert len(crossed.x) == 2  # V_beta in the two drifted reports
    assert [shape.y0 for shape in fig.layout.shapes] == [0.25]
    fig.to_json()


def test_drift_over_time_as_ratios_and_with_a_changed_threshold(monitored: SearchStore) -> None:
    drift = drift_table(reports_of(monitored))
    ratio = figures.drift_over_time(drift, figures.RATIO)
    names = {t.name for t in ratio.data}
    assert {"V_beta psi", "CDR3_beta length_ks", "score ks", "crossed"} <= names
    assert not any("rate" in name.split()[-1] for name in names)  # health has its own figure
    assert [shape.y0 for shape in ratio.layout.shapes] == [1.0]
    drift.loc[drift["report"] == drift["report"].iloc[-1], "threshold"] = 0.5
    changed = figures.drift_over_time(drift, "psi")
    threshold = next(t for t in changed.data if t.name == "threshold")
    assert list(threshold.y) == [0.25, 0.25, 0.5]
    empty = figures.drift_over_time(drift, "drop", "metric drop")
    assert "no metric drop" in empty.layout.annotations[0].text


def test_service_health_draws_three_panels_with_thresholds(monitored: SearchStore) -> None:
    health = health_table(reports_of(monitored))
    fig = figures.service_health(health, {"invalid_rate": 0.1, "latency_p95_ms": 2000})
    assert [t.type for t in fig.data] == ["bar", "scatter", "scatter"]
    assert list(fig.data[0].y) == [STREAM_ROWS] * 3
    assert fig.data[1].y[0] == 0 < fig.data[1].y[-1]  # the drifted streams have invalid rows
    assert [(s.yref, s.y0) for s in fig.layout.shapes] == [("y2", 0.1), ("y3", 2000)]
    fig.to_json()
    assert "no monitoring reports" in figures.service_health(health.iloc[:0], {}).layout.annotations[0].text


def test_the_monitoring_page_shows_status_alerts_health_and_data_versions(monitored: SearchStore) -> None:
    reports = reports_of(monitored)
    versions = data_versions(monitored.store)
    status, options, statistic, alerts, health, facts, versions_div = monitoring.monitoring_content(
        reports, versions, None
    )
    registry = monitored.store.load_registry()
    summary = text_of(status)
    assert "alert" in summary
    assert "4 alert(s)" in summary
    assert registry.current in summary
    assert f"{STREAM_ROWS:,} logged rows" in summary
    values = [o["value"] for o in options]
    assert values[:2] == ["psi", "unseen"]
    assert {"length_ks", "ks", "delta", figures.RATIO} <= set(values)
    assert "rate" not in values  # health checks have their own figure
    assert "p95_ms" not in values
    assert statistic == "psi"  # the newest alert's statistic
    assert monitoring.choose_statistic(options, "length_ks", alert_table(reports)) == "length_ks"
    table_ = alerts.children[0]
    rows = table_.children[1].children
    assert len(rows) == 8  # four checks crossed in each of the two drifted reports
    assert [r.className for r in rows] == ["alert"] * 4 + [""] * 4  # the newest report's stand out
    alert_text = text_of(alerts)
    assert f"{UNSEEN_V_BETA}" in alert_text
    assert "V_beta unseen rate" in alert_text
    assert "since" in alert_text
    assert health.data[0].type == "bar"
    assert "CDR3_beta" in text_of(facts)  # the invalid rows are blamed on the longer CDR3β
    version_text = text_of(versions_div)
    for entry in registry.models:
        assert entry.model_id in version_text
        assert entry.data_sha256[:12] in version_text
    assert "in use" in version_text
    assert "3 (alert" in version_text  # the current model's reports
    drift = monitoring.drift_figure(reports, "length_ks")
    assert {"CDR3_alpha", "CDR3_beta"} <= {t.name for t in drift.data}


def test_the_monitoring_page_without_reports(search_store: SearchStore) -> None:
    versions = pd.DataFrame()
    status, options, statistic, alerts, _, _, versions_div = monitoring.monitoring_content([], versions, None)
    assert "tcr-pipeline monitor" in text_of(status)
    assert options == []
    assert statistic == "psi"
    assert "No alerts" in text_of(alerts)
    assert "No registered models" in text_of(versions_div)
    assert "no monitoring reports" in monitoring.drift_figure([], "psi").layout.annotations[0].text


def test_reports_are_read_once_each(monitored: SearchStore) -> None:
    ctx = dashboard(monitored)
    before = ctx.reports.signature()
    assert len(ctx.reports.reports()) == 3
    assert len(ctx.reports.reports()) == 3
    assert ctx.reports.loads == 3
    report = add_drifted_report(monitored)
    assert ctx.reports.signature() != before
    assert [r.name for r in ctx.reports.reports()][-1] == report.name
    assert ctx.reports.loads == 4
    (monitored.root / "monitoring" / f"{report.name}.json").write_text("{")
    assert len(ctx.reports.reports()) == 3
    assert report.name in ctx.reports.problems


def add_drifted_report(search: SearchStore) -> MonitoringReport:
    """Another round: a drifted stream logged as `predict --log` does, then a report."""
    store = search.store
    stream = drifted(training_rows(search).sample(STREAM_ROWS, replace=True, random_state=20), seed=20)
    result = predict_frame(load_bundle(store.resolve_model("best")), stream)
    registry = store.load_registry()
    assert registry.current is not None
    log_prediction(store.root, registry.current, result, "cli", latency_ms=6.0)
    report = monitor_store(store, MonitorParams(window=STREAM_ROWS))
    write_report(store, report)
    return report


def test_the_monitoring_page_over_http_refreshes_on_a_new_report(monitored: SearchStore) -> None:
    client = fresh_client(monitored.root)
    values = client.open_page("/monitoring")
    assert "4 alert(s)" in json.dumps(values["monitoring-status.children"])
    assert "V_beta unseen rate" in json.dumps(values["monitoring-alerts.children"])
    assert values["monitoring-statistic.value"] == "psi"
    assert len(values["monitoring-drift.figure"]["data"]) >= 6
    tick = {
        "store-version.data": values["store-version.data"],
        "refresh-interval.n_intervals": 1,
        "monitoring-statistic.value": "psi",
        "monitoring-seen.data": values["monitoring-seen.data"],
    }
    assert client.call("monitoring-status.children", tick, ["refresh-interval.n_intervals"]) == {}
    report = add_drifted_report(monitored)
    updated = client.call("monitoring-status.children", tick, ["refresh-interval.n_intervals"])
    assert report.name in json.dumps(updated["monitoring-status.children"])


# ---------------------------------------------------------------------------------------------
# The CLI: `tcr-pipeline dashboard` and `predict --log`
# ---------------------------------------------------------------------------------------------


def test_dashboard_help_lists_its_options(run_cli: Any) -> None:
    result = run_cli("dashboard", "--help")
    assert result.code == 0, result.output
    for option in ("--store", "--host", "--port", "--auth-file"):
        assert option in result.stdout


def test_dashboard_with_a_bad_store_exits_2_with_one_line(run_cli: Any, tmp_path: Path) -> None:
    result = run_cli("dashboard", "--store", tmp_path / "no-such-store")
    assert result.code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'no-such-store'}: no such store directory (pass --store or set TCR_STORE; "
        "`make demo` makes one)"
    ]
    assert not (tmp_path / "no-such-store").exists()
    assert run_cli("dashboard", "--store", tmp_path, "--port", "0").code == 2  # click refuses it


def test_dashboard_serves_the_store_from_the_environment(
    run_cli: Any, search_store: SearchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dashboard import app as app_module

    seen: dict[str, Any] = {}
    monkeypatch.setattr(app_module, "run", lambda store, **kwargs: seen.update(store=store, **kwargs))
    monkeypatch.setenv("TCR_STORE", str(search_store.root))
    result = run_cli("dashboard", "--port", "8061")
    assert result.code == 0, result.output
    assert seen == {"store": search_store.root, "host": "127.0.0.1", "port": 8061, "auth_file": None}


def test_dashboard_with_an_unreadable_login_file_exits_2(
    run_cli: Any, search_store: SearchStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dash

    monkeypatch.setattr(dash.Dash, "run", lambda self, **kwargs: None)
    result = run_cli("dashboard", "--store", search_store.root, "--auth-file", tmp_path / "absent")
    assert result.code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot read" in result.stderr


def test_predict_log_puts_cli_queries_beside_the_dashboards(
    run_cli: Any, copied_store: SearchStore, tmp_path: Path
) -> None:
    rows = training_rows(copied_store).head(5)
    bad = rows.iloc[[0]].assign(CDR3_beta="CASSX1F")
    path = tmp_path / "pairs.csv"
    pd.concat([rows, bad]).to_csv(path, index=False)
    ctx = dashboard(copied_store)
    text, _ = predict.example_text(ctx, None, seed=0)
    assert text is not None
    predict.predict_text(ctx, text, None)  # ten rows from the dashboard first
    result = run_cli("predict", path, "-o", tmp_path / "scores.csv", "--store", copied_store.root, "--log")
    assert result.code == 0, result.output
    assert "logged 6 rows" in result.stdout
    logged = ctx.queries.read(0, 100)
    assert len(logged) == 16
    cli_rows = logged[:6][::-1]
    current = copied_store.store.load_registry().current
    assert {(q.source, q.model_id) for q in cli_rows} == {("cli", current)}
    assert [q.row for q in cli_rows] == [2, 3, 4, 5, 6, 7]
    assert [q.valid for q in cli_rows] == [True] * 5 + [False]
    assert "CDR3_beta" in cli_rows[-1].error
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert [q.output["score"] for q in cli_rows[:5]] == pytest.approx(scores["score"].head(5).tolist())
    assert cli_rows[0].latency_ms is not None
    assert cli_rows[0].input["CDR3_beta"] == rows["CDR3_beta"].iloc[0]
    assert {q.source for q in logged[6:]} == {"dashboard"}


def test_predict_without_log_writes_no_log(run_cli: Any, copied_store: SearchStore, tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    training_rows(copied_store).head(3).to_csv(path, index=False)
    result = run_cli("predict", path, "-o", tmp_path / "scores.csv", "--store", copied_store.root)
    assert result.code == 0, result.output
    assert not (copied_store.root / "queries.sqlite").exists()


def test_predict_log_without_a_store_exits_2(run_cli: Any, copied_store: SearchStore, tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    training_rows(copied_store).head(3).to_csv(path, index=False)
    model = copied_store.store.resolve_model("best")
    output = tmp_path / "scores.csv"
    result = run_cli(
        "predict", path, "-o", output, "--model", model, "--store", tmp_path / "nowhere", "--log"
    )
    assert result.code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "query log" in result.stderr
    assert not output.exists()
    assert not (tmp_path / "nowhere").exists()
