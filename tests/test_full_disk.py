"""A store whose disk fills during a search: on a real full filesystem (a small tmpfs), the search
stops with one line naming the file and ENOSPC, not as "workers dying"; the run is recorded as
failed, and the trials it cut short stay unfinished, for a resume to run again."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from flow_fixtures import run_search_process

from tcr_pipeline.config import ModelParams, TrainParams
from tcr_pipeline.errors import StoreWriteError
from tcr_pipeline.files import write_text_atomic
from tcr_pipeline.prepare import prepare_dataset
from tcr_pipeline.search import Suggestion
from tcr_pipeline.store import RunManifest, Store
from tcr_pipeline.trials import run_batch


def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path`` (root only; skipped where mounting is refused, as in a
    container without CAP_SYS_ADMIN)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    yield from _tmpfs(tmp_path / "disk", "600k")


def test_a_full_disk_names_the_file_it_could_not_write(small_disk: Path) -> None:
    """The error appears when the file is closed, where Python names no file: the path is added."""
    with pytest.raises(OSError, match="No space left on device") as caught:
        write_text_atomic(small_disk / "big.txt", "x" * 1_000_000)
    assert caught.value.filename == str(small_disk / "big.txt")
    assert caught.value.strerror == "No space left on device"
    assert list(small_disk.iterdir()) == []  # the partial temporary file is gone


def test_a_batch_the_store_cannot_take_leaves_its_trials_to_run_again(
    small_disk: Path, small_csv: Path
) -> None:
    from tcr_pipeline.config import EvaluateParams, PrepareParams

    prepared_dir = small_disk.parent / "prepared"
    prepare_dataset(small_csv, PrepareParams(encoding="aligned"), prepared_dir)
    store = Store(small_disk / "store")
    store.write_manifest(RunManifest(run_id="f", max_evals=4, parallelism=1))
    train = TrainParams(model=ModelParams(kind="small", small_widths=(256, 64)), epochs=1, device="cpu")
    members = [Suggestion(i, {}, {"lr": 0.01}) for i in range(4)]  # ~1 MB of weights each
    with pytest.raises(StoreWriteError) as caught:
        run_batch(store, "f", "b0000-x", members, prepared_dir, train, EvaluateParams())
    message = str(caught.value)
    assert message.startswith(f"writing to the result store failed: {small_disk}/store/runs/f/trials/")
    assert message.endswith("weights.pt: No space left on device (ENOSPC)")
    trials = store.list_trials("f")
    assert trials  # started, then cut short: not failed trials, nothing a resume would skip
    assert all(t.status == "running" for t in trials)
    assert all(store.finished_trial("f", i) is None for i in range(4))


@pytest.mark.slow
def test_search_on_a_disk_that_fills_stops_with_one_line(
    prefect_api: str, workdir: Path, tmp_path: Path
) -> None:
    disk = tmp_path / "disk"
    mount = _tmpfs(disk, "600k")  # about two trials of the flow tests' params
    next(mount)
    search = ("--store", disk / "store", "--run-id", "full", "--parallelism", 1)
    try:
        done, _ = run_search_process(workdir, tmp_path, prefect_api, *search, timeout=300)
        store = Store(disk / "store")
        manifest = store.load_manifest("full")
        trials = store.list_trials("full")
        # room again (the same store, remounted larger): the resume finishes the search
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        resumed, _ = run_search_process(workdir, tmp_path, prefect_api, *search, timeout=300)
        after = store.load_manifest("full")
        finished = [store.finished_trial("full", i) for i in range(4)]
    finally:
        next(mount, None)
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"error: search stopped: writing to the result store failed: {disk}/store/runs/full/"
    )
    assert "No space left on device (ENOSPC)" in last
    assert "resumes with --run-id full" in last
    assert "Traceback" not in done.stderr  # no worker's task log of it either
    assert "StoreWriteError" not in done.stderr
    assert "infrastructure failure" not in done.stderr
    assert "workers dying" not in done.stderr
    assert manifest is not None
    assert manifest.status == "failed"
    assert manifest.error is not None
    assert "No space left on device" in manifest.error
    assert not [t for t in trials if t.status == "failed"]  # a full disk is no trial's failure
    assert [t for t in trials if not t.done]  # the trial in flight: left for the resume to run again
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert after is not None
    assert after.status == "completed"
    assert all(f is not None and f.status == "ok" for f in finished)  # all four, none lost


def test_a_promotion_the_store_cannot_take_stops_with_one_line(tmp_path: Path, small_csv: Path) -> None:
    """Registration writes each entry's reference profile: on a full disk that is one line naming
    the file and how to resume, not an OSError's traceback in the promote task's log."""
    from prefect.logging import disable_run_logger

    from flows.search import promote_task
    from tcr_pipeline.config import EvaluateParams, PrepareParams

    prepared_dir = tmp_path / "prepared"
    prepare_dataset(small_csv, PrepareParams(encoding="aligned"), prepared_dir)
    disk = _tmpfs(tmp_path / "disk", "2m")
    next(disk)
    try:
        store = Store(tmp_path / "disk" / "store")
        store.write_manifest(RunManifest(run_id="p", max_evals=1, parallelism=1))
        train = TrainParams(model=ModelParams(kind="small", small_widths=(32, 16)), epochs=1, device="cpu")
        run_batch(
            store, "p", "b0000-x", [Suggestion(0, {}, {"lr": 0.01})], prepared_dir, train, EvaluateParams()
        )
        filler = tmp_path / "disk" / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)  # fills it
        with disable_run_logger(), pytest.raises(StoreWriteError) as caught:
            promote_task.fn(
                str(store.root), "p", str(prepared_dir), 1, EvaluateParams().model_dump(mode="json")
            )
        filler.unlink()
    finally:
        next(disk, None)
    message = str(caught.value)
    assert message.startswith(f"promotion stopped: writing to the result store failed: {store.root}/")
    assert "No space left on device (ENOSPC)" in message
    assert message.endswith("(run p registers and promotes with --run-id p once the store can be written)")


def test_predict_log_on_a_full_disk_is_one_line(
    tmp_path: Path, tiny_bundle: Path, small_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite says only "disk I/O error" (its WAL cannot grow): one line naming the log, where the
    scores are, and nothing logged, not sqlite3's traceback."""
    from cli_fixtures import invoke_main

    from tcr_pipeline.store import count_queries

    monkeypatch.delenv("TCR_QUERY_LOG", raising=False)
    disk = _tmpfs(tmp_path / "disk", "4m")
    store = next(disk) / "store"
    store.mkdir()
    scores = tmp_path / "scores.csv"
    args = ("predict", small_csv, "-o", scores, "--model", tiny_bundle, "--store", store, "--log")
    try:
        assert invoke_main(args, tmp_path).code == 0  # the log exists, with one request
        subprocess.run(["dd", "if=/dev/zero", f"of={store.parent / 'filler'}", "bs=64k"], capture_output=True)
        full = invoke_main(args, tmp_path)
        (store.parent / "filler").unlink()
        logged = count_queries(store)
    finally:
        next(disk, None)
    assert full.code == 1, full.output
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {store}/queries.sqlite: the query log was not written (disk I/O error;")
    assert last.endswith(f"nothing was logged, the scores are in {scores}")
    assert "Traceback" not in full.output
    assert logged == 560  # the first request only: the refused one left no rows
