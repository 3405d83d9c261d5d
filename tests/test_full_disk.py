"""A store whose disk fills during a search: on a real full filesystem (a small tmpfs), the search
stops with one line naming the file and ENOSPC, not as "workers dying"; the run is recorded as
failed and no trial it could still record is left ``running``."""

from __future__ import annotations

import os
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
    """A tmpfs of ``size`` at ``path`` (root only: skipped elsewhere, a failure under CI)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
        pytest.skip("mounting a small tmpfs needs root")
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


def test_a_batch_the_store_cannot_take_records_its_trials_failed(small_disk: Path, small_csv: Path) -> None:
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
    assert trials
    assert all(t.status != "running" for t in trials)
    assert {t.error for t in trials} == {f"StoreWriteError: {message}"}  # one population: all four


@pytest.mark.slow
def test_search_on_a_disk_that_fills_stops_with_one_line(
    prefect_api: str, workdir: Path, tmp_path: Path
) -> None:
    disk = tmp_path / "disk"
    mount = _tmpfs(disk, "600k")  # about two trials of the flow tests' params
    next(mount)
    try:
        done, _ = run_search_process(
            workdir,
            tmp_path,
            prefect_api,
            "--store",
            disk / "store",
            "--run-id",
            "full",
            "--parallelism",
            1,
            timeout=300,
        )
        store = Store(disk / "store")
        manifest = store.load_manifest("full")
        trials = store.list_trials("full")
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
    assert any(t.status == "failed" and "StoreWriteError" in (t.error or "") for t in trials)
    assert not [t.trial_id for t in trials if t.status == "running"]  # one trial in flight: recorded
