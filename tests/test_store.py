"""The result store: typed records, atomic writes under concurrency, attempt selection."""

from __future__ import annotations

import multiprocessing
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tcr_pipeline.errors import InputError
from tcr_pipeline.store import Registry, RegistryEntry, RunManifest, Store, TrialRecord, now

WRITERS = 4
TRIALS_PER_WRITER = 15
REWRITES = 6


def _write_trials(root: str, writer: int) -> None:
    """Write trial records, each rewritten several times with a growing (large) history."""
    store = Store(root)
    for i in range(TRIALS_PER_WRITER):
        trial_id = writer * TRIALS_PER_WRITER + i
        record = TrialRecord(run_id="r", trial_id=trial_id, attempt=f"writer{writer}")
        for epoch in range(REWRITES):
            history = [{"epoch": e, "train_loss": 0.5, "val_loss": 0.6} for e in range(epoch * 200)]
            status = "ok" if epoch == REWRITES - 1 else "running"
            store.write_trial(
                record.model_copy(update={"history": history, "status": status, "objective": 1.0})
            )


def test_concurrent_writers_never_expose_a_partial_record(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write_manifest(RunManifest(run_id="r", max_evals=WRITERS * TRIALS_PER_WRITER, parallelism=WRITERS))
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_trials, args=(str(tmp_path), w)) for w in range(WRITERS)]
    for process in writers:
        process.start()
    reads = 0
    seen_partial_history = 0
    while any(p.is_alive() for p in writers):
        for record in store.list_trials("r"):  # raises InputError on a corrupt record
            assert record.history == [] or record.history[-1]["epoch"] == len(record.history) - 1
            seen_partial_history += len(record.history) % 200 != 0
        reads += 1
    for process in writers:
        process.join()
        assert process.exitcode == 0
    assert reads > 0
    assert seen_partial_history == 0
    final = store.list_trials("r")
    assert len(final) == WRITERS * TRIALS_PER_WRITER
    assert all(r.status == "ok" and len(r.history) == (REWRITES - 1) * 200 for r in final)
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary file left behind


def test_first_finished_attempt_counts(tmp_path: Path) -> None:
    store = Store(tmp_path)
    start = now()
    late = TrialRecord(run_id="r", trial_id=0, attempt="b", status="ok", objective=2.0,
                       finished=start + timedelta(seconds=5))  # fmt: skip
    early = TrialRecord(run_id="r", trial_id=0, attempt="a", status="ok", objective=1.0,
                        finished=start + timedelta(seconds=1))  # fmt: skip
    dead = TrialRecord(run_id="r", trial_id=0, attempt="c", status="running")
    for record in (late, dead, early):
        store.write_trial(record)
    assert store.finished_trial("r", 0).attempt == "a"
    assert [t.attempt for t in store.list_trials("r")] == ["a"]


def test_running_attempt_is_listed_until_one_finishes(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write_trial(TrialRecord(run_id="r", trial_id=3, attempt="x"))
    assert store.finished_trial("r", 3) is None
    [listed] = store.list_trials("r")
    assert listed.status == "running"
    assert not listed.done
    assert listed.loss == float("inf")


def test_registry_round_trip_and_model_resolution(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(InputError, match="no promoted model"):
        store.resolve_model("best")
    entry = RegistryEntry(model_id="r/0001", run_id="r", trial_id=1, path="runs/r/trials/0001/a/model",
                          objective=3.5, objective_name="paper")  # fmt: skip
    with store.registry_lock():
        store.save_registry(Registry(models=[entry], current="r/0001"))
    assert store.load_registry().current_entry == entry
    assert store.resolve_model("best") == tmp_path / entry.path
    assert store.resolve_model("r/0001") == tmp_path / entry.path
    assert store.resolve_model("some/dir") == Path("some/dir")


def test_a_corrupt_record_is_an_input_error_naming_the_file(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write_manifest(RunManifest(run_id="r", max_evals=1, parallelism=1))
    path = store.run_dir("r") / "manifest.json"
    path.write_text('{"run_id": 5}')
    with pytest.raises(InputError, match=r"manifest\.json"):
        store.load_manifest("r")


def test_runs_are_listed_oldest_first(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write_manifest(RunManifest(run_id="b", max_evals=1, parallelism=1))
    time.sleep(0.01)
    store.write_manifest(RunManifest(run_id="a", max_evals=1, parallelism=1))
    assert [m.run_id for m in store.list_runs()] == ["b", "a"]
