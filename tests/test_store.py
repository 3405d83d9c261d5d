"""The result store: typed records, atomic writes under concurrency, attempt selection."""

from __future__ import annotations

import multiprocessing
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tcr_pipeline.errors import InputError
from tcr_pipeline.store import (
    Registry,
    RegistryEntry,
    RunManifest,
    Store,
    TrialRecord,
    check_run_id,
    check_store,
    mark_stale,
    now,
)

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


# ---- damage: one bad record never takes the store down -------------------------------------------


def _two_trials(store: Store) -> None:
    store.write_manifest(RunManifest(run_id="r", max_evals=2, parallelism=1, status="completed"))
    for trial_id in range(2):
        store.write_trial(TrialRecord(run_id="r", trial_id=trial_id, attempt="a", status="ok", objective=1.0))


def test_a_truncated_trial_is_skipped_and_listed(tmp_path: Path) -> None:
    store = Store(tmp_path)
    _two_trials(store)
    damaged = store.attempt_dir("r", 1, "a") / "trial.json"
    damaged.write_text(damaged.read_text()[:40])
    assert [t.trial_id for t in store.list_trials("r")] == [0]  # the other trial is still read
    assert store.finished_trial("r", 1) is None  # a resume runs trial 1 again
    assert [m.run_id for m in store.list_runs()] == ["r"]
    [damage] = check_store(store)
    assert damage.path == damaged
    assert damage.run_id == "r"
    assert "not a valid TrialRecord" in damage.problem
    assert not damage.stale


def test_a_damaged_manifest_hides_only_its_run(tmp_path: Path) -> None:
    store = Store(tmp_path)
    _two_trials(store)
    store.write_manifest(RunManifest(run_id="other", max_evals=1, parallelism=1))
    (store.run_dir("other") / "manifest.json").write_text("{")
    assert [m.run_id for m in store.list_runs()] == ["r"]
    assert [d.run_id for d in check_store(store)] == ["other"]


def test_a_damaged_registry_does_not_stop_a_model_given_by_path(tmp_path: Path, tiny_bundle: Path) -> None:
    store = Store(tmp_path)
    (tmp_path / "registry.json").write_text("not json")
    assert store.resolve_model(str(tiny_bundle)) == tiny_bundle
    with pytest.raises(InputError, match=r"registry\.json: not a valid Registry"):
        store.resolve_model("best")
    assert [d.path.name for d in check_store(store)] == ["registry.json"]


def _dead_pid() -> int:
    process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    process.start()
    process.join()
    return process.pid


def test_a_run_left_running_by_a_dead_process_is_stale_and_can_be_marked(tmp_path: Path) -> None:
    store = Store(tmp_path)
    dead = RunManifest(run_id="dead", max_evals=2, parallelism=1, pid=_dead_pid())
    alive = RunManifest(run_id="alive", max_evals=2, parallelism=1)  # this process
    elsewhere = RunManifest(run_id="elsewhere", max_evals=2, parallelism=1, host="another-host", pid=1)
    for manifest in (dead, alive, elsewhere):
        store.write_manifest(manifest)
    [stale] = check_store(store)
    assert (stale.run_id, stale.stale) == ("dead", True)
    marked = mark_stale(store, "dead")
    assert marked.status == "interrupted"
    assert store.load_manifest("dead").status == "interrupted"
    assert check_store(store) == []


@pytest.mark.parametrize("run_id", ["../x", "a/b", ".", "..", ".hidden", "", "a" * 129, "a b", "x\n"])
def test_run_ids_that_are_not_one_plain_name_are_refused(tmp_path: Path, run_id: str) -> None:
    with pytest.raises(InputError, match="not a valid run id"):
        Store(tmp_path).write_manifest(RunManifest(run_id=run_id, max_evals=1, parallelism=1))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("run_id", ["20261123-083213-078cab", "run-a", "a.b_c", "X1"])
def test_valid_run_ids(run_id: str) -> None:
    assert check_run_id(run_id) == run_id


def test_runs_and_store_check_on_a_damaged_store(tmp_path: Path) -> None:
    """`runs` lists what it can read; `store check` names the damage; `--mark` fixes stale runs."""
    from cli_fixtures import invoke_main

    store = Store(tmp_path / "store")
    _two_trials(store)
    damaged = store.attempt_dir("r", 1, "a") / "trial.json"
    damaged.write_text("{")
    store.write_manifest(RunManifest(run_id="dead", max_evals=2, parallelism=1, pid=_dead_pid()))

    runs = invoke_main(["runs", "--store", store.root], tmp_path)
    assert runs.code == 0, runs.output
    assert "1/2" in runs.stdout  # run r: the readable trial
    assert "2 damaged record(s) or stale run(s), skipped" in runs.stderr

    check = invoke_main(["store", "check", "--store", store.root], tmp_path)
    assert check.code == 1
    assert check.stdout.splitlines() == [
        f"{store.run_dir('dead') / 'manifest.json'}: stale: `running`, but its process "
        f"{store.load_manifest('dead').pid} on {store.load_manifest('dead').host} is gone",
        f"{damaged}: not a valid TrialRecord (1 errors)",
    ]
    marked = invoke_main(["store", "check", "--store", store.root, "--mark"], tmp_path)
    assert marked.code == 1  # the damaged trial is still there
    assert marked.stdout.splitlines()[0].endswith("→ marked interrupted")
    assert store.load_manifest("dead").status == "interrupted"
    again = invoke_main(["store", "check", "--store", store.root], tmp_path)
    assert again.stdout.splitlines() == [f"{damaged}: not a valid TrialRecord (1 errors)"]
