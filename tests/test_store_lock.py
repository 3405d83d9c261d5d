"""The registry lock under contention: writers in separate processes, no lost update.

Two "hosts" are simulated by two process groups of three writers each, every writer with its own
``Store`` and its own open of ``.registry.lock`` (what a writer on another NFS client has). Each
does read-modify-write cycles of the registry; with the lock every update survives, without it
updates are lost (the control shows the test can see a lost update).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tcr_pipeline.store import Store

GROUPS = 2  # "hosts"
WRITERS = 3  # processes per group
CYCLES = 25  # read-modify-write cycles per writer

WRITER = """
import sys, time
from pathlib import Path
from tcr_pipeline.store import RegistryEntry, Store

root, tag, cycles, locked = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
store = Store(root)
go = Path(root) / "go"
while not go.exists():
    time.sleep(0.005)

def update(i):
    registry = store.load_registry()
    time.sleep(0.002)  # widen the window between read and write
    entry = RegistryEntry(model_id=f"{tag}/{i:04d}", run_id=tag, trial_id=i, path="x",
                          objective=float(i), objective_name="paper")
    store.save_registry(registry.model_copy(update={"models": [*registry.models, entry]}))

for i in range(cycles):
    if locked:
        with store.registry_lock():
            update(i)
    else:
        update(i)
"""


def _hammer(root: Path, locked: bool) -> list[str]:
    """Start GROUPS process groups of WRITERS writers, release them at once, return the model ids."""
    Store(root).save_registry(Store(root).load_registry())  # the store exists before they start
    processes: list[subprocess.Popen[bytes]] = []
    for group in range(GROUPS):
        leader: int | None = None
        for writer in range(WRITERS):
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WRITER,
                    str(root),
                    f"h{group}w{writer}",
                    str(CYCLES),
                    "1" if locked else "0",
                ],
                process_group=0 if leader is None else leader,
            )
            leader = leader or process.pid
            processes.append(process)
    groups = {os.getpgid(p.pid) for p in processes}
    assert len(groups) == GROUPS  # two "hosts", each its own process group
    time.sleep(1.0)  # let every writer import and wait
    (root / "go").touch()
    for process in processes:
        assert process.wait(timeout=120) == 0
    return [m.model_id for m in Store(root).load_registry().models]


@pytest.mark.timeout(300)
def test_writers_in_separate_processes_lose_no_update_under_the_lock(tmp_path: Path) -> None:
    ids = _hammer(tmp_path / "locked", locked=True)
    expected = {f"h{g}w{w}/{i:04d}" for g in range(GROUPS) for w in range(WRITERS) for i in range(CYCLES)}
    assert len(ids) == len(expected), f"{len(expected) - len(ids)} update(s) lost"
    assert set(ids) == expected


@pytest.mark.timeout(300)
def test_without_the_lock_updates_are_lost(tmp_path: Path) -> None:
    """The control: the same writers without the lock overwrite each other's updates."""
    ids = _hammer(tmp_path / "unlocked", locked=False)
    assert len(ids) < GROUPS * WRITERS * CYCLES


def test_a_filesystem_that_refuses_flock_is_one_error_naming_the_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lustre mounted `noflock` answers flock with ENOSYS (no such mount here: flock is replaced)."""
    import errno
    import fcntl

    def refuse(fd: object, operation: int) -> None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(fcntl, "flock", refuse)
    store = Store(tmp_path)
    with pytest.raises(OSError, match="must support flock across hosts") as error, store.registry_lock():
        pass
    assert error.value.filename == str(tmp_path / ".registry.lock")
    assert error.value.errno == errno.ENOSYS
    assert error.value.strerror.startswith("cannot lock it (Function not implemented)")
