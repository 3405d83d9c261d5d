"""Where everything lives in a store, in one place: names, paths, ids, the lock, atomic writes.

::

    STORE/
      registry.json                                     Registry          (one writer at a time: the lock)
      .registry.lock                                    flock(2) target for read-modify-write of the registry
      queries.sqlite                                    the query log      (SQLite WAL, :mod:`.querylog`)
      monitoring/                                       monitoring reports (tcr_pipeline.monitoring)
      runs/<run_id>/manifest.json                       RunManifest       (the search's flow process)
      runs/<run_id>/baseline.json                       k-mer baseline metrics on the run's split
      runs/<run_id>/trials/<tid>/<attempt>/trial.json   TrialRecord       (that attempt's process only)
      runs/<run_id>/trials/<tid>/<attempt>/model/       model bundle      (that attempt's process only)

Every record file is replaced atomically (:func:`tcr_pipeline.store.records.write_record`: a
temporary file in the same folder, then ``rename(2)``), so a reader sees the old file or the
new one, never part of one.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from tcr_pipeline.errors import InputError
from tcr_pipeline.files import share_file_with_group

STORE_ENV = "TCR_STORE"
STORE_GROUP_ENV = "TCR_STORE_GROUP"  # a Unix group to share the store with (docs/store.md)
RUNS_DIR = "runs"
TRIALS_DIR = "trials"
MANIFEST_FILE = "manifest.json"
TRIAL_FILE = "trial.json"
REGISTRY_FILE = "registry.json"
BASELINE_FILE = "baseline.json"
LOCK_FILE = ".registry.lock"
MODEL_DIR = "model"
# a run id names a directory under STORE/runs: one path component, never hidden, never . or ..
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
RUN_ID_RULE = "1-128 letters, digits, '-', '_' or '.', not starting with '.'"

StatKey = tuple[int, int, int]  # inode, mtime_ns, size: an atomically replaced file's version


def now() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


def model_id_of(run_id: str, trial_id: int) -> str:
    """The registry id of a trial's model."""
    return f"{run_id}/{trial_id:04d}"


def trial_dir_name(trial_id: int) -> str:
    """The folder of a trial under ``trials/``: its id, four digits."""
    return f"{trial_id:04d}"


def new_attempt_id() -> str:
    """A name for one attempt, unique across hosts and processes."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is a valid run id (:data:`RUN_ID_PATTERN`), else :class:`InputError`.

    A run id becomes a directory name: ``../x`` would write outside the store, ``a/b`` would be
    a run that ``list_runs`` never finds.
    """
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise InputError(f"run id {run_id!r}: not a valid run id ({RUN_ID_RULE})")
    return run_id


def new_run_id() -> str:
    """A sortable run id: UTC time plus a random suffix."""
    return f"{now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def runs_dir(root: Path) -> Path:
    return root / RUNS_DIR


def run_dir(root: Path, run_id: str) -> Path:
    return root / RUNS_DIR / check_run_id(run_id)


def trials_dir(root: Path, run_id: str) -> Path:
    return run_dir(root, run_id) / TRIALS_DIR


def attempt_dir(root: Path, run_id: str, trial_id: int, attempt: str) -> Path:
    return trials_dir(root, run_id) / trial_dir_name(trial_id) / attempt


def run_of(path: Path) -> str | None:
    """The run a path inside ``runs/`` belongs to."""
    parts = path.parts
    return parts[parts.index(RUNS_DIR) + 1] if RUNS_DIR in parts[:-1] else None


def stat_key(path: Path | str) -> StatKey | None:
    """A file's ``(inode, mtime, size)``, None when it is not there.

    Every record is replaced by a rename (a new inode per write), so an unchanged key means an
    unchanged record: what the cached readers compare before reading again.
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold ``flock(2)`` ``LOCK_EX`` on ``path`` (created group-writable when the store is shared).

    Across hosts only where the filesystem makes flock coherent between clients (NFSv4, NFSv3
    with lockd, Lustre mounted with ``flock``, GPFS): docs/store.md. A filesystem that refuses
    it (Lustre ``noflock``: ENOSYS) is an OSError naming the lock file, not a silent race.
    """
    with open(path, "w") as handle:
        share_file_with_group(handle.name)  # others in the group open it for writing too
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot lock it ({exc.strerror}): the store's filesystem must support flock "
                "across hosts (docs/store.md, 'Locking on shared filesystems')",
                handle.name,
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
