"""Monitoring: synthetic query streams against a real model's training data.

A stream drawn from the training split raises no alert; streams with a shifted epitope mix,
unseen V genes and longer CDR3s each raise an alert naming that feature. The model is trained
in-process on 200 TCRs of the shipped data, its store laid out as a search leaves it, and every
stream goes through the real query log.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_alerts import Webhook, webhook  # noqa: F401  (a real HTTP server on 127.0.0.1)

from dashboard.tables import alert_table, drift_table, health_table
from tcr_pipeline.alerts import WEBHOOK_ENV
from tcr_pipeline.bundle import load_bundle, predict_frame
from tcr_pipeline.config import EvaluateParams, ModelParams, MonitorParams, PrepareParams, TrainParams
from tcr_pipeline.data import TCR_COLUMNS, load_pairs
from tcr_pipeline.dataversion import DataVersion, data_version, stamp_data_version
from tcr_pipeline.errors import InputError
from tcr_pipeline.files import sha256_file
from tcr_pipeline.monitoring import (
    build_report,
    carry_since,
    monitor_store,
    recent_queries,
    reference_profile,
    save_reference,
)
from tcr_pipeline.prepare import prepare_dataset
from tcr_pipeline.recipe import fit_and_save
from tcr_pipeline.splits import split_pairs
from tcr_pipeline.store import (
    Check,
    MonitoringReport,
    Registry,
    RegistryEntry,
    RunManifest,
    Store,
    TrialRecord,
    data_versions,
    latest_report,
    list_reports,
    write_report,
)
from tcr_pipeline.store.querylog import QUERY_LOG_ENV, NewQuery, QueryLog, log_prediction, query_log_path

# ruff: noqa: F811  (webhook, imported from test_alerts, is a parameter here)

MODEL_ID = "run-1/0000"
STREAM_ROWS = 600
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_log_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(QUERY_LOG_ENV, raising=False)


@dataclass(frozen=True)
class Monitored:
    """``root/store``: a store whose current model was trained on ``raw`` (prepared in ``root/prepared``)."""

    root: Path
    raw: Path
    train: pd.DataFrame  # the training split, as the CSV's strings
    test: pd.DataFrame


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory, shipped_csv: Path) -> Monitored:
    """200 TCRs (2,800 rows) of the shipped data, a small model, a store with it promoted."""
    root = tmp_path_factory.mktemp("monitored")
    table = pd.read_csv(shipped_csv, dtype=str, keep_default_na=False)
    tcr = table.groupby(list(TCR_COLUMNS), sort=True).ngroup().to_numpy()
    chosen = np.random.default_rng(0).choice(tcr.max() + 1, 200, replace=False)
    raw = root / "pairs.csv"
    table[np.isin(tcr, chosen)].to_csv(raw, index=False)
    prepare = PrepareParams()
    prepared = prepare_dataset(raw, prepare, root / "prepared")
    train = TrainParams(
        model=ModelParams(kind="small", small_widths=(32, 16)), epochs=3, batch_size=256, seed=0
    )
    store = Store(root / "store")
    record = TrialRecord(run_id="run-1", trial_id=0, attempt="host-1-abc", status="ok")
    cpu = train.model_copy(update={"device": "cpu"})
    fit_and_save(prepared, cpu, EvaluateParams(), store.model_dir(record), splits=("val",))
    store.write_manifest(
        RunManifest(
            run_id="run-1",
            max_evals=1,
            parallelism=1,
            data_path=str(raw),
            data_sha256=prepared.data_sha256,
            dvc_md5="0" * 32,
            prepared_dir=str(root / "prepared"),
        )
    )
    entry = RegistryEntry(
        model_id=MODEL_ID,
        run_id="run-1",
        trial_id=0,
        path=str(store.model_dir(record).relative_to(store.root)),
        objective=1.0,
        objective_name="paper",
        data_sha256=prepared.data_sha256,
        dvc_md5="0" * 32,
    )
    # registered as register_top does: its reference profile is saved beside it first
    save_reference(store, entry, prepared)
    store.save_registry(Registry(models=[entry], current=MODEL_ID))
    split = split_pairs(load_pairs(raw), prepare)
    strings = pd.read_csv(raw, dtype=str, keep_default_na=False)
    return Monitored(
        root,
        raw,
        strings[split == 0].reset_index(drop=True),
        strings[split == 2].reset_index(drop=True),
    )


@pytest.fixture
def store(monitored: Monitored, tmp_path: Path) -> Store:
    """A private copy of the monitored store (model, its reference profile, registry; empty log)."""
    shutil.copytree(monitored.root / "store", tmp_path / "store")
    return Store(tmp_path / "store")


def log_stream(store: Store, frame: pd.DataFrame, requests: int = 10, latency_ms: float = 5.0) -> None:
    """Score ``frame`` with the current model and log it as ``requests`` requests, as users would."""
    result = predict_frame(load_bundle(store.resolve_model("best")), frame)
    for rows in np.array_split(np.arange(len(result)), requests):
        log_prediction(store.root, MODEL_ID, result.iloc[rows], source="cli", latency_ms=latency_ms)


def from_training(train: pd.DataFrame, seed: int, n: int = STREAM_ROWS) -> pd.DataFrame:
    """``n`` rows drawn with replacement from the training split: the training distribution."""
    return train.sample(n, replace=True, random_state=seed).reset_index(drop=True)


def shifted_epitopes(train: pd.DataFrame) -> pd.DataFrame:
    """Only three of the fourteen epitopes are asked about."""
    three = sorted(train["Epitope"].unique())[:3]
    return from_training(train[train["Epitope"].isin(three)], seed=1)


def unseen_v_genes(train: pd.DataFrame) -> pd.DataFrame:
    """A third of the receptors carry a TRBV gene the model never saw (a valid row: <unk> slot)."""
    stream = from_training(train, seed=2)
    mask = np.random.default_rng(2).random(len(stream)) < 0.3
    stream.loc[mask, "V_beta"] = "TRBV99-9*01"
    return stream


def longer_cdr3_beta(train: pd.DataFrame) -> pd.DataFrame:
    """Every CDR3β two residues longer (those beyond the encoder's maximum become invalid rows)."""
    stream = from_training(train, seed=3)
    stream["CDR3_beta"] = stream["CDR3_beta"].str[:3] + "GS" + stream["CDR3_beta"].str[3:]
    return stream


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_a_stream_from_the_training_distribution_raises_no_alert(
    store: Store, monitored: Monitored, seed: int
) -> None:
    log_stream(store, from_training(monitored.train, seed))
    report = monitor_store(store, MonitorParams())
    assert report.status == "healthy", [c.message for c in report.alerts]
    assert report.exit_code == 0
    assert report.window.rows == STREAM_ROWS
    assert report.window.scored == STREAM_ROWS
    assert report.window.tcrs > 100  # receptor features are counted per distinct TCR
    names = {c.name for c in report.checks}
    for feature in ("Epitope", "MHC", "V_alpha", "V_beta", "J_alpha", "J_beta"):
        assert {f"input.{feature}.psi", f"input.{feature}.unseen"} <= names
    for feature in ("CDR3_alpha", "CDR3_beta"):
        assert {f"input.{feature}.length_ks", f"input.{feature}.unseen_length"} <= names
    assert {"prediction.score.ks", "prediction.positive_rate.delta", "health.invalid_rate.rate"} <= names
    assert all(c.value is not None for c in report.checks)


DRIFTS: list[tuple[str, Callable[[pd.DataFrame], pd.DataFrame], str, set[str]]] = [
    # (id, stream, the check that must alert, the input features allowed to alert)
    # each epitope has one MHC, so the MHC mix moves with the epitope mix
    ("epitope-mix", shifted_epitopes, "input.Epitope.psi", {"Epitope", "MHC"}),
    ("unseen-v-genes", unseen_v_genes, "input.V_beta.unseen", {"V_beta"}),
    ("longer-cdr3-beta", longer_cdr3_beta, "input.CDR3_beta.length_ks", {"CDR3_beta"}),
]


@pytest.mark.parametrize(("make", "expected", "allowed"), [d[1:] for d in DRIFTS], ids=[d[0] for d in DRIFTS])
def test_a_drifted_stream_raises_an_alert_naming_the_feature(
    store: Store,
    monitored: Monitored,
    make: Callable[[pd.DataFrame], pd.DataFrame],
    expected: str,
    allowed: set[str],
) -> None:
    log_stream(store, make(monitored.train))
    report = monitor_store(store, MonitorParams(), at=T0)
    assert report.status == "alert"
    assert report.exit_code == 1
    check = report.check(expected)
    assert check is not None
    assert check.crossed, check.message
    assert check.since == T0
    assert check.value is not None
    assert check.excess > 0
    assert check.feature in check.message
    assert "since 2026-11-23 08:00:00 UTC" in check.message
    alerted_inputs = {c.feature for c in report.alerts if c.group == "input"}
    assert check.feature in alerted_inputs
    assert alerted_inputs <= allowed, [c.message for c in report.alerts]


def test_the_alert_says_what_crossed_by_how_much(store: Store, monitored: Monitored) -> None:
    log_stream(store, unseen_v_genes(monitored.train))
    report = monitor_store(store, MonitorParams(), at=T0)
    unseen = report.check("input.V_beta.unseen")
    assert unseen is not None
    assert unseen.value == pytest.approx(unseen.excess + 0.05)
    assert "TRBV99-9*01" in unseen.detail
    assert unseen.message.startswith(f"V_beta unseen rate {unseen.value:.3g} > 0.05 (by {unseen.excess:.3g})")
    shift = report.check("input.V_beta.psi")
    assert shift is not None
    assert shift.crossed
    assert shift.p_value is not None
    assert shift.p_value < 0.01
    assert "<unseen>" in shift.detail  # the largest shift: the unseen bucket


def test_longer_cdr3s_are_scored_and_seen_as_unseen_lengths(store: Store, monitored: Monitored) -> None:
    log_stream(store, longer_cdr3_beta(monitored.train))
    report = monitor_store(store, MonitorParams())
    ks = report.check("input.CDR3_beta.length_ks")
    assert ks is not None
    assert ks.extra["mean_recent"] == pytest.approx(ks.extra["mean_reference"] + 2, abs=0.3)
    assert report.check("input.CDR3_alpha.length_ks").crossed is False  # type: ignore[union-attr]
    # the aligned encoding's 30-residue frame scores them (the old encoders refused them), but
    # lengths the model never saw in training are counted
    assert report.health.invalid == 0
    unseen = report.check("input.CDR3_beta.unseen_length")
    assert unseen is not None
    assert unseen.value is not None
    assert unseen.value > 0
    assert unseen.detail.endswith(": 20, 21")  # two residues past the training data's longest


# ---------------------------------------------------------------------------------------------
# Reports in the store, "since", the window
# ---------------------------------------------------------------------------------------------


def test_reports_are_written_and_an_alert_keeps_its_first_time(store: Store, monitored: Monitored) -> None:
    log_stream(store, shifted_epitopes(monitored.train))
    first = monitor_store(store, MonitorParams(), at=T0)
    write_report(store, first)
    second = monitor_store(store, MonitorParams(), at=T0 + timedelta(hours=1))
    path = write_report(store, second)
    assert path == store.root / "monitoring" / "20261123-090000-000000.json"
    assert [r.name for r in list_reports(store)] == [first.name, second.name]
    assert latest_report(store) == second
    epitope = second.check("input.Epitope.psi")
    assert epitope is not None
    assert epitope.since == T0  # crossed in both reports: since the first
    assert MonitoringReport.model_validate_json(path.read_text()) == second
    assert not list(path.parent.glob(".*.tmp"))


def test_since_restarts_after_a_report_below_the_threshold_or_a_new_model() -> None:
    def check(crossed: bool, since: datetime | None = None, group: str = "input") -> Check:
        return Check(
            name=f"{group}.x.psi", group=group, feature="x", statistic="psi", value=1.0 if crossed else 0.0,
            threshold=0.5, crossed=crossed, since=since,
        )  # fmt: skip

    def report(at: datetime, model: str, *checks: Check) -> MonitoringReport:
        return MonitoringReport(
            name="r", created=at, status="alert", model_id=model, data_sha256="", checks=list(checks)
        )

    t1, t2, t3 = T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    crossed = [check(True)]
    assert carry_since(crossed, [], "m", t3)[0].since == t3
    assert carry_since(crossed, [report(t1, "m", check(True, t1))], "m", t3)[0].since == t1
    # below the threshold at t2: the run of crossings starts again
    history = [report(t1, "m", check(True, t1)), report(t2, "m", check(False))]
    assert carry_since(crossed, history, "m", t3)[0].since == t3
    # a report without the check (e.g. no labels that time) does not break the run
    assert carry_since(crossed, [report(t1, "m", check(True, t1)), report(t2, "m")], "m", t3)[0].since == t1
    # a new model: drift starts over, service health does not
    assert carry_since(crossed, [report(t1, "old", check(True, t1))], "m", t3)[0].since == t3
    health = [check(True, group="health")]
    assert carry_since(health, [report(t1, "old", check(True, t1, "health"))], "m", t3)[0].since == t1
    assert carry_since([check(False)], [report(t1, "m", check(True, t1))], "m", t3)[0].since is None


def test_too_few_queries_is_not_an_alert(store: Store, monitored: Monitored) -> None:
    log_stream(store, shifted_epitopes(monitored.train).head(20), requests=2)
    report = monitor_store(store, MonitorParams(min_queries=50))
    assert report.status == "insufficient_data"
    assert report.exit_code == 0
    assert not [c for c in report.checks if c.group == "input"]
    assert "20 logged rows" in report.notes[0]


def test_the_window_is_the_last_n_rows_and_the_last_hours(store: Store, monitored: Monitored) -> None:
    log = QueryLog(query_log_path(store.root))
    rows = [NewQuery(row=2, valid=True, input={"Epitope": "GILGFVFTL"}, output={})]
    for hours in (30, 20, 3, 2, 1):
        log.log(rows, MODEL_ID, "cli", latency_ms=1.0, time=T0 - timedelta(hours=hours))
    assert len(recent_queries(store.root, 3)) == 3
    assert [q.time for q in recent_queries(store.root, 10, since=T0 - timedelta(hours=4))] == [
        T0 - timedelta(hours=h) for h in (3, 2, 1)
    ]
    assert recent_queries(store.root, 10)[0].time == T0 - timedelta(hours=30)  # oldest first


def test_invalid_rows_and_slow_requests_are_health_alerts(store: Store, monitored: Monitored) -> None:
    stream = from_training(monitored.train, seed=5)
    stream.loc[: len(stream) // 4, "CDR3_alpha"] = "CAVX1F"
    log_stream(store, stream, latency_ms=5000.0)
    report = monitor_store(store, MonitorParams())
    invalid = report.check("health.invalid_rate.rate")
    latency = report.check("health.latency.p95_ms")
    assert invalid is not None
    assert latency is not None
    assert invalid.crossed
    assert invalid.value == pytest.approx(151 / 600)
    assert "CDR3_alpha 151" in invalid.detail
    assert latency.crossed
    assert latency.value == 5000.0
    assert report.health.requests == 10
    residues = report.check("input.CDR3_alpha.unseen_residue")
    assert residues is not None
    assert residues.crossed
    assert "1" in residues.detail
    assert "X" in residues.detail


# ---------------------------------------------------------------------------------------------
# Concept drift: labelled data
# ---------------------------------------------------------------------------------------------


def test_labels_like_the_test_split_show_no_concept_drift(
    store: Store, monitored: Monitored, tmp_path: Path
) -> None:
    monitored.test.to_csv(tmp_path / "labelled.csv", index=False)
    log_stream(store, from_training(monitored.train, 10))
    report = monitor_store(store, MonitorParams(), labels=tmp_path / "labelled.csv")
    assert report.labels is not None
    assert report.labels.rows == len(monitored.test)
    assert report.labels.metrics["average_precision"] == pytest.approx(
        report.labels.test_metrics["average_precision"]
    )
    concept = [c for c in report.checks if c.group == "concept"]
    assert [c.feature for c in concept] == ["average_precision", "mean_epitope_auc"]
    assert not any(c.crossed for c in concept)


def test_labels_that_no_longer_match_the_model_are_concept_drift(
    store: Store, monitored: Monitored, tmp_path: Path
) -> None:
    shuffled = monitored.test.copy()  # labels no longer follow the pairs: what bound no longer binds
    shuffled["Label"] = np.random.default_rng(0).permutation(shuffled["Label"].to_numpy())
    shuffled.to_csv(tmp_path / "labelled.csv", index=False)
    report = monitor_store(store, MonitorParams(min_queries=1), labels=tmp_path / "labelled.csv")
    drop = report.check("concept.average_precision.drop")
    assert drop is not None
    assert drop.crossed
    assert report.status == "alert"
    assert drop.value == pytest.approx(drop.extra["test"] - drop.extra["labelled"])
    assert "on the new labels" in drop.message


# ---------------------------------------------------------------------------------------------
# What the dashboard reads
# ---------------------------------------------------------------------------------------------


def test_tables_for_the_dashboard(store: Store, monitored: Monitored) -> None:
    log_stream(store, unseen_v_genes(monitored.train))
    for hours in (0, 1):
        write_report(store, monitor_store(store, MonitorParams(), at=T0 + timedelta(hours=hours)))
    reports = list_reports(store)
    drift = drift_table(reports)
    assert set(drift["report"]) == {r.name for r in reports}
    v_beta = drift[(drift["name"] == "input.V_beta.unseen")].sort_values("created")
    assert list(v_beta["crossed"]) == [True, True]
    assert list(v_beta["since"]) == [T0, T0]
    alerts = alert_table(reports)
    assert alerts["created"].is_monotonic_decreasing
    assert "input.V_beta.unseen" in set(alerts["name"])
    assert alerts["message"].str.contains("since").all()
    health = health_table(reports)
    assert list(health["queries"]) == [STREAM_ROWS, STREAM_ROWS]
    assert list(health["status"]) == ["alert", "alert"]
    versions = data_versions(store)
    assert versions.to_dict("records")[0] | {"trained": None, "promoted": None} == {
        "model_id": MODEL_ID,
        "current": True,
        "promoted": None,
        "objective": 1.0,
        "trained": None,
        "data_sha256": sha256_file(monitored.raw),
        "dvc_md5": "0" * 32,
        "data_path": str(monitored.raw),
    }
    empty = Store(store.root / "nothing")
    assert list_reports(empty) == []
    assert drift_table([]).empty
    assert alert_table([]).empty


def test_build_report_is_pure_and_reports_what_it_saw(store: Store, monitored: Monitored) -> None:
    log_stream(store, from_training(monitored.train, 1))
    full = monitor_store(store, MonitorParams(), at=T0)
    registry = store.load_registry()
    entry = registry.current_entry
    assert entry is not None
    again = build_report(
        entry=entry,
        reference=reference_profile(store, entry, load_bundle(store.root / entry.path)),
        queries=recent_queries(store.root, 1000),
        scores=np.zeros(0),  # no scores: prediction drift not assessed
        params=MonitorParams(),
        at=T0,
    )
    assert again.check("prediction.score.ks") is None
    assert any("prediction drift not assessed" in n for n in again.notes)
    assert again.check("input.Epitope.psi") == full.check("input.Epitope.psi")
    assert full.params["window"] == 1000
    assert "alerts" not in full.params  # channel settings (a webhook URL) stay out of reports


# ---------------------------------------------------------------------------------------------
# Data versions
# ---------------------------------------------------------------------------------------------


def test_data_version_reads_the_dvc_file_and_stamps_the_registry(store: Store, monitored: Monitored) -> None:
    import hashlib

    md5 = hashlib.md5(monitored.raw.read_bytes()).hexdigest()
    dvc_file = Path(f"{monitored.raw}.dvc")
    dvc_file.write_text(f"outs:\n- md5: {md5}\n  size: 1\n  hash: md5\n  path: {monitored.raw.name}\n")
    try:
        version = data_version(monitored.raw)
    finally:
        dvc_file.unlink()
    assert version.tracked
    assert version.current
    assert version.dvc_md5 == md5
    assert version.sha256 == sha256_file(monitored.raw)
    assert stamp_data_version(store, "run-1", version) == 1
    assert store.load_registry().models[0].dvc_md5 == md5
    assert store.load_manifest("run-1").dvc_md5 == md5  # type: ignore[union-attr]
    assert stamp_data_version(store, "run-1", version) == 0  # already recorded
    stale = DataVersion(path="x.csv", sha256=version.sha256, md5=md5, dvc_md5="f" * 32)
    with pytest.raises(InputError, match="DVC records md5"):
        stamp_data_version(store, "run-1", stale)
    untracked = data_version(monitored.raw, lock=monitored.root / "no-dvc.lock")
    assert not untracked.tracked
    with pytest.raises(InputError, match="no such data file"):
        data_version(monitored.root / "absent.csv")


# ---------------------------------------------------------------------------------------------
# The Prefect flow
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_monitor_flow_writes_the_report_and_posts_the_alert(
    prefect_api: str, store: Store, monitored: Monitored, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.monitor import monitor_flow

    monkeypatch.setenv(WEBHOOK_ENV, webhook.url)
    log_stream(store, unseen_v_genes(monitored.train))
    outcome = monitor_flow(store=str(store.root), params_file=None)
    assert outcome["status"] == "alert"
    assert any(m.startswith("V_beta unseen rate") for m in outcome["alerts"])
    report = latest_report(store)
    assert report is not None
    assert str(store.root / "monitoring" / f"{report.name}.json") == outcome["report"]
    assert report.exit_code == 1
    assert [(d.channel, d.ok) for d in report.deliveries] == [("log", True), ("webhook", True)]
    [post] = webhook.posts
    assert "input.V_beta.unseen" in [a["check"] for a in post["body"]["alerts"]]
    assert post["body"]["report"] == report.name


def test_the_monitor_command_exits_0_when_healthy_and_1_on_an_alert(
    prefect_api: str, store: Store, monitored: Monitored, tmp_path: Path
) -> None:
    from cli_fixtures import invoke_main

    log_stream(store, from_training(monitored.train, seed=10))
    healthy = invoke_main(["monitor", "--store", store.root], tmp_path)
    assert healthy.code == 0, healthy.output
    assert healthy.stdout.startswith("healthy: 0 alert(s), report ")
    report = healthy.stdout.split("report ", 1)[1].split()[0]
    assert Path(report).is_file()

    log_stream(store, unseen_v_genes(monitored.train))  # the window is now half drifted
    drifted = invoke_main(["monitor", "--store", store.root, "--window", STREAM_ROWS], tmp_path)
    assert drifted.code == 1, drifted.output
    assert drifted.stdout.startswith("alert: ")
    assert "  ALERT V_beta unseen rate" in drifted.stdout


def test_the_monitor_command_refuses_a_store_without_a_model(prefect_api: str, tmp_path: Path) -> None:
    from cli_fixtures import invoke_main

    result = invoke_main(["monitor", "--store", tmp_path / "empty"], tmp_path)
    assert result.code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
