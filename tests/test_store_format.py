"""The store's format: a store written before ``format_version`` existed keeps reading, every field.

``tests/data/store-format-1`` was written by the code of commit 06f2827 (``make_store_format_1.py``
beside it): a completed run with two successful trials, a failed one (with its traceback) and
one still running, its k-mer baseline, a registry of two models with two promotions (the second
with a bootstrap interval) and a comparison, a query log of five rows, and model cards (weights
left out). The raw JSON is read here with ``json`` alone, so the expected values never come from
the code under test.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from dashboard.data import Dashboard, model_files
from tcr_pipeline.bundle import load_card
from tcr_pipeline.errors import InputError
from tcr_pipeline.store import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    Registry,
    RunManifest,
    Store,
    StoreReader,
    TrialRecord,
    best_trial,
    check_store,
    count_queries,
    parse_record,
    read_format_1,
    read_queries,
    read_record,
    summarize_run,
)

FIXTURE = Path(__file__).parent / "data" / "store-format-1"
RUN_ID = "20261101-120000-abcdef"
# fields a format-1 record may lack (declared since, empty by default); a successful trial had no
# traceback, and `batch` and `device` came with format 2
ADDED: dict[type, tuple[str, ...]] = {TrialRecord: ("traceback", "batch", "device")}


@pytest.fixture
def old_store(tmp_path: Path) -> Store:
    """A private copy of the format-1 store (opening its query log adds SQLite's WAL files)."""
    shutil.copytree(FIXTURE, tmp_path / "store")
    return Store(tmp_path / "store")


def raw(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def trial_files(root: Path) -> list[Path]:
    return sorted((root / "runs" / RUN_ID / "trials").glob("*/*/trial.json"))


def undeclared(record: BaseModel) -> list[str]:
    """Fields a record (or a record inside it) holds without declaring them."""
    found = [f"{type(record).__name__}.{name}" for name in record.model_extra or {}]
    for name in type(record).model_fields:
        value = getattr(record, name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, BaseModel):
                found += undeclared(item)
    return found


def test_the_fixture_is_format_1() -> None:
    files = [FIXTURE / "registry.json", FIXTURE / "runs" / RUN_ID / MANIFEST_FILE, *trial_files(FIXTURE)]
    assert len(files) == 6
    assert all("format_version" not in raw(f) for f in files)


@pytest.mark.parametrize(
    ("relative", "kind"),
    [
        ("registry.json", Registry),
        (f"runs/{RUN_ID}/manifest.json", RunManifest),
        *((str(p.relative_to(FIXTURE)), TrialRecord) for p in trial_files(FIXTURE)),
    ],
)
def test_every_format_1_record_reads_with_every_field_declared_and_unchanged(
    old_store: Store, relative: str, kind: type[RunManifest | TrialRecord | Registry]
) -> None:
    path = old_store.root / relative
    record = read_record(path, kind)
    assert record is not None
    assert record.format_version == 1
    assert undeclared(record) == []
    # every value comes back as it was written: nothing dropped, nothing defaulted over; what
    # format 1 did not write (fields declared since) is empty
    written, dumped = raw(path), record.model_dump(mode="json", exclude={"format_version"})
    assert {k: v for k, v in dumped.items() if k in written} == written
    added = {k: v for k, v in dumped.items() if k not in written}
    assert set(added) <= set(ADDED.get(kind, ()))
    assert all(v is None for v in added.values())


def test_the_run_its_trials_and_their_documented_fields(old_store: Store) -> None:
    [manifest] = old_store.list_runs()
    written = raw(FIXTURE / "runs" / RUN_ID / MANIFEST_FILE)
    assert manifest.run_id == RUN_ID
    assert manifest.status == "completed"
    assert manifest.prepared_dir == written["prepared_dir"]
    assert manifest.prepared_dir
    trials = old_store.list_trials(RUN_ID)
    assert [(t.trial_id, t.status) for t in trials] == [(0, "ok"), (1, "ok"), (2, "failed"), (3, "running")]
    failed = trials[2]
    assert failed.error is not None
    assert failed.error.startswith("ValidationError")
    assert failed.traceback is not None
    assert failed.traceback.startswith("Traceback (most recent call last)")
    assert all(t.batch is None and t.device is None for t in trials)  # fields added in format 2
    assert old_store.load_baseline(RUN_ID) == raw(FIXTURE / "runs" / RUN_ID / "baseline.json")
    assert check_store(old_store) == []


def test_the_registry_promotions_comparisons_and_model_cards(old_store: Store) -> None:
    registry = old_store.load_registry()
    written = raw(FIXTURE / "registry.json")
    assert [m.model_id for m in registry.models] == [f"{RUN_ID}/0000", f"{RUN_ID}/0001"]
    assert registry.current == written["current"]
    first, second = registry.history
    assert (first.replaced, first.interval) == (None, None)
    assert second.replaced == first.model_id
    assert second.interval is not None
    assert set(second.interval) >= {"metric", "delta", "low", "high", "resamples"}
    assert [c.candidate for c in registry.comparisons] == [second.model_id]
    for entry in registry.models:
        card = load_card(old_store.root / entry.path)
        assert card.data_sha256 == entry.data_sha256
        files = model_files(old_store, entry)
        assert files.missing == ("weights.pt",)  # left out of the fixture: the card is enough here
    assert old_store.resolve_model("best") == old_store.root / registry.models[1].path


def test_the_query_log_reads(old_store: Store) -> None:
    assert count_queries(old_store.root) == 5
    queries = read_queries(old_store.root, limit=10)
    assert [q.row for q in queries] == [6, 5, 4, 3, 2]
    assert {q.model_id for q in queries} == {raw(FIXTURE / "registry.json")["current"]}
    assert all(q.source == "cli" and q.latency_ms == 1.5 for q in queries)
    assert all(q.valid == ("score" in q.output) for q in queries)


def test_the_format_1_reader_is_explicit_and_rewriting_writes_the_current_format(old_store: Store) -> None:
    path = old_store.run_dir(RUN_ID) / MANIFEST_FILE
    as_current = RunManifest.model_validate_json(path.read_bytes())
    assert as_current.format_version == FORMAT_VERSION  # what a reader without the format step would say
    assert read_format_1(as_current).format_version == 1
    assert parse_record(path.read_bytes(), RunManifest, path).format_version == 1
    manifest = old_store.load_manifest(RUN_ID)
    assert manifest is not None
    old_store.write_manifest(manifest)
    assert raw(path)["format_version"] == FORMAT_VERSION == 2
    rewritten = old_store.load_manifest(RUN_ID)
    assert rewritten == manifest.model_copy(update={"format_version": FORMAT_VERSION})


def test_a_record_of_a_newer_format_is_refused_as_damage(old_store: Store) -> None:
    path = old_store.run_dir(RUN_ID) / MANIFEST_FILE
    path.write_text(json.dumps({**raw(path), "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(InputError, match=f"format {FORMAT_VERSION + 1}, newer than this"):
        old_store.load_manifest(RUN_ID)
    assert old_store.list_runs() == []
    [damage] = check_store(old_store)
    assert damage.path == path
    assert damage.run_id == RUN_ID


def test_the_dashboard_reader_gives_the_same_runs_trials_and_summaries(old_store: Store) -> None:
    reader = StoreReader(old_store, min_interval=0)
    assert reader.runs() == old_store.list_runs()
    assert reader.trials(RUN_ID) == old_store.list_trials(RUN_ID)
    assert reader.registry() == old_store.load_registry()
    assert reader.problems == {}
    [manifest] = reader.runs()
    summary = summarize_run(manifest, reader.trials(RUN_ID))
    assert summary == summarize_run(manifest, old_store.list_trials(RUN_ID))
    objectives = {raw(f)["trial_id"]: raw(f)["objective"] for f in trial_files(FIXTURE)}
    best_id = max((t for t, o in objectives.items() if o is not None), key=lambda t: objectives[t])
    assert (summary.done, summary.ok, summary.failed, summary.running) == (3, 2, 1, 1)
    assert summary.best_trial is not None
    assert summary.best_trial.trial_id == best_id
    assert summary.best == objectives[best_id]
    assert best_trial(reader.trials(RUN_ID)) == summary.best_trial


def test_the_dashboard_says_why_the_runs_prepared_data_is_missing(old_store: Store) -> None:
    ctx = Dashboard.open(old_store.root)
    prepared, why = ctx.prepared_for_run(RUN_ID)
    assert prepared is None
    assert raw(FIXTURE / "runs" / RUN_ID / MANIFEST_FILE)["prepared_dir"] in why
    assert "is not on this machine" in why


def test_the_deployment_report_reads_the_run_and_the_best_model(old_store: Store) -> None:
    spec = importlib.util.spec_from_file_location(
        "deployments_run", Path(__file__).parents[1] / "deployments" / "run.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = sys.modules.get(spec.name) or importlib.util.module_from_spec(spec)
    if spec.name not in sys.modules:
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    run_line, model_line = module.store_lines(str(old_store.root), RUN_ID, completed=True)
    best = summarize_run(raw_manifest(old_store), old_store.list_trials(RUN_ID)).best_trial
    assert best is not None
    assert "completed, 3/6 trials finished (2 ok)" in run_line
    assert f"(trial {best.trial_id})" in run_line
    assert raw(FIXTURE / "registry.json")["current"] in model_line


def raw_manifest(store: Store) -> RunManifest:
    manifest = store.load_manifest(RUN_ID)
    assert manifest is not None
    return manifest
