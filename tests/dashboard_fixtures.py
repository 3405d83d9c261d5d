"""A store made by a real small search, for the dashboard tests (``from dashboard_fixtures import …``).

The search is the library's own, without Prefect: hyperopt TPE suggests each trial
(:class:`tcr_pipeline.search.SearchDriver`), :func:`tcr_pipeline.trials.run_trial` trains and
records it, then :func:`register_top` and :func:`promote_best` fill the registry, exactly as the
search flow does after its trials; the run's k-mer baseline is written as the flow's baseline task
writes it. Small data (120 TCRs × 14 epitopes), a small model, 2–4 epochs:
a few seconds on two cores.

:func:`monitored_copy` adds what monitoring leaves: CLI queries in the store's query log and
three hourly reports of :func:`tcr_pipeline.monitoring.monitor_store` over them, the first on a
stream drawn from the training split, the next two on drifted streams (alerts).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tcr_pipeline.alerts import send_alerts
from tcr_pipeline.baseline import evaluate_baseline
from tcr_pipeline.bundle import load_bundle, predict_frame
from tcr_pipeline.config import (
    AlertParams,
    Dimension,
    EvaluateParams,
    ModelParams,
    MonitorParams,
    PrepareParams,
    SearchParams,
    TrainParams,
)
from tcr_pipeline.data import load_pairs, tcr_keys
from tcr_pipeline.monitoring import monitor_store
from tcr_pipeline.prepare import prepare_dataset
from tcr_pipeline.promotion import promote_best, register_top
from tcr_pipeline.search import SearchDriver
from tcr_pipeline.splits import split_pairs
from tcr_pipeline.store import MonitoringReport, RunManifest, Store, TrialRecord, now, write_report
from tcr_pipeline.store.querylog import QueryLog, queries_from_result, query_log_path
from tcr_pipeline.trials import run_trial

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw" / "viral_pairs.csv"
RUN_ID = "20261101-120000-abcdef"
SEARCH_TRIALS = 4
MAX_EVALS = 6  # more than were run: the run looks like a search still going
STREAM_ROWS = 300  # CLI queries per monitoring report
REQUESTS = 6  # … sent as this many requests
UNSEEN_V_BETA = "TRBV99-9*01"


@dataclass(frozen=True)
class SearchStore:
    """A store after a small search: its root, run, prepared data and the trial records."""

    root: Path
    run_id: str
    prepared_dir: Path
    trials: list[TrialRecord]

    @property
    def store(self) -> Store:
        return Store(self.root)


def small_prepared(directory: Path, tcrs: int = 120) -> Path:
    """The first ``tcrs`` TCRs of the shipped data (all 14 rows each), prepared (one-hot, TCR split)."""
    frame = pd.read_csv(RAW, dtype=str, keep_default_na=False)
    keys = tcr_keys(frame)
    chosen = sorted(keys.unique())[:tcrs]
    directory.mkdir(parents=True, exist_ok=True)
    frame[keys.isin(chosen)].to_csv(directory / "small.csv", index=False)
    prepare_dataset(directory / "small.csv", PrepareParams(), directory / "prepared")
    return directory / "prepared"


def run_small_search(root: Path, prepared_dir: Path, trials: int = SEARCH_TRIALS) -> SearchStore:
    """Run ``trials`` TPE trials into a store at ``root``, register the top three, promote the best."""
    from tcr_pipeline.prepare import load_prepared

    store = Store(root)
    prepared = load_prepared(prepared_dir)
    search = SearchParams(
        max_evals=MAX_EVALS,
        parallelism=1,
        n_startup=2,
        space={
            "model.kind": Dimension(choice=["small"]),
            "lr": Dimension(uniform=(0.005, 0.05)),
            "epochs": Dimension(integer=(2, 4)),
        },
    )
    train = TrainParams(model=ModelParams(kind="small", small_widths=(32, 16)), batch_size=256, device="cpu")
    evaluate = EvaluateParams()
    manifest = RunManifest(
        run_id=RUN_ID,
        max_evals=MAX_EVALS,
        parallelism=1,
        objective=evaluate.objective,
        params={"train": train.model_dump(mode="json")},
        search_space={k: v.model_dump(exclude_none=True) for k, v in search.space.items()},
        git_commit="0123456789abcdef",
        git_dirty=False,
        data_path=str(prepared.meta.get("raw", "")),
        data_sha256=prepared.data_sha256,
        dvc_md5="d41d8cd98f00b204e9800998ecf8427e",
        prepared_dir=str(prepared_dir),
    )
    store.write_manifest(manifest)
    # the search flow's baseline task: the k-mer baseline on the run's own split
    pairs = load_pairs(prepared_dir.parent / "small.csv")
    baseline = evaluate_baseline(pairs, split_pairs(pairs, PrepareParams()), evaluate.threshold)
    store.write_baseline(RUN_ID, baseline)
    driver = SearchDriver(search)
    records = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model trains faster on one thread, far faster on a busy machine
    try:
        for _ in range(trials):
            trial_id, vals, hyperparams = driver.suggest()
            record = run_trial(store, RUN_ID, trial_id, vals, hyperparams, prepared_dir, train, evaluate)
            assert record.status == "ok", record.error
            driver.finish(record)
            records.append(record)
        entries = register_top(store, RUN_ID, 3, evaluate.objective, prepared)
        promote_best(store, entries, prepared, evaluate)
    finally:
        torch.set_num_threads(threads)
    return SearchStore(root=root, run_id=RUN_ID, prepared_dir=prepared_dir, trials=records)


def finish_run(search: SearchStore) -> None:
    """Mark the run completed, as the flow does at its end."""
    store = search.store
    manifest = store.load_manifest(search.run_id)
    assert manifest is not None
    store.write_manifest(manifest.model_copy(update={"status": "completed", "finished": now()}))


@pytest.fixture(scope="session")
def search_store(tmp_path_factory: pytest.TempPathFactory) -> SearchStore:
    """A store made by a real small search (still ``running``: 4 of 6 trials). Do not modify:
    copy it first (``copied_store``)."""
    base = tmp_path_factory.mktemp("dashboard-search")
    return run_small_search(base / "store", small_prepared(base / "data"))


@pytest.fixture
def copied_store(search_store: SearchStore, tmp_path: Path) -> SearchStore:
    """A private copy of the search store (same prepared data), free to modify."""
    root = tmp_path / "store"
    shutil.copytree(search_store.root, root)
    return SearchStore(root, search_store.run_id, search_store.prepared_dir, search_store.trials)


# ---------------------------------------------------------------------------------------------
# Monitoring: queries through the real query log, reports from the library
# ---------------------------------------------------------------------------------------------


def training_rows(search: SearchStore) -> pd.DataFrame:
    """The training split of the search's data, as the CSV's strings (what users would ask)."""
    raw = search.prepared_dir.parent / "small.csv"
    split = split_pairs(load_pairs(raw), PrepareParams())
    strings = pd.read_csv(raw, dtype=str, keep_default_na=False)
    return strings[split == 0].drop(columns=["Label"]).reset_index(drop=True)


def drifted(stream: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A third of the receptors carry a TRBV gene never seen in training, every CDR3β is two
    residues longer, and one in twenty 23 longer (beyond the encoder's 30-residue frame: invalid rows)."""
    stream = stream.copy()
    rng = np.random.default_rng(seed)
    stream.loc[rng.random(len(stream)) < 0.3, "V_beta"] = UNSEEN_V_BETA
    insert = np.where(rng.random(len(stream)) < 0.05, "GS" * 11 + "G", "GS")
    stream["CDR3_beta"] = stream["CDR3_beta"].str[:3] + insert + stream["CDR3_beta"].str[3:]
    return stream


def add_monitoring_reports(search: SearchStore) -> list[MonitoringReport]:
    """Three hourly rounds of ``predict --log``-style CLI queries, each followed by a monitoring
    report with its alerts delivered to the log channel: a stream drawn from the training split,
    then two drifted streams (the second report's alerts carry the first's ``since``)."""
    store = search.store
    model_id = store.load_registry().current
    assert model_id is not None
    bundle = load_bundle(store.resolve_model("best"))
    train = training_rows(search)
    log = QueryLog(query_log_path(store.root))
    params = MonitorParams(window=STREAM_ROWS)
    start = now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    reports = []
    for hour, seed in enumerate((10, 11, 12)):
        stream = train.sample(STREAM_ROWS, replace=True, random_state=seed).reset_index(drop=True)
        if hour:
            stream = drifted(stream, seed)
        result = predict_frame(bundle, stream, "cli")
        for i, rows in enumerate(np.array_split(np.arange(len(result)), REQUESTS)):
            at = start + timedelta(hours=hour, minutes=5 + 8 * i)
            log.log(queries_from_result(result.iloc[rows]), model_id, "cli", 4.0 + 3 * i + hour, time=at)
        report = monitor_store(store, params, at=start + timedelta(hours=hour + 1))
        deliveries = send_alerts(report, AlertParams())
        report = report.model_copy(update={"deliveries": deliveries})
        write_report(store, report)
        reports.append(report)
    return reports


_MONITORED: dict[Path, Path] = {}


def monitored_copy(search: SearchStore, root: Path) -> SearchStore:
    """A copy at ``root`` of the search store with the monitoring rounds added (built once per
    session, beside the search store)."""
    built = _MONITORED.get(search.root)
    if built is None:
        built = search.root.parent / "monitored-store"
        shutil.copytree(search.root, built)
        add_monitoring_reports(SearchStore(built, search.run_id, search.prepared_dir, search.trials))
        _MONITORED[search.root] = built
    shutil.copytree(built, root)
    return SearchStore(root, search.run_id, search.prepared_dir, search.trials)
