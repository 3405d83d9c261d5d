"""A store shared by a lab: file modes follow the umask, TCR_STORE_GROUP shares it with a group.

Checked with a second Unix user for real: ``nobody`` (group ``nogroup``) reads, or may not read,
what root wrote (root itself bypasses every permission check, so only another user tells).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tcr_pipeline.errors import InputError
from tcr_pipeline.files import write_atomic
from tcr_pipeline.store import STORE_GROUP_ENV, Registry, RunManifest, Store, TrialRecord
from tcr_pipeline.store.querylog import NewQuery, QueryLog, query_log_path

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"  # nobody cannot enter /root, where the venv's interpreter may live

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None or not Path(SYSTEM_PYTHON).exists(),
    reason="needs root, runuser and /usr/bin/python3 to act as a second user (nobody)",
)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder every user can enter (pytest's tmp_path is under a 0700 folder)."""
    folder = Path(tempfile.mkdtemp(prefix="tcr-shared-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def _write_store(root: Path, umask: int, group: str | None = None) -> tuple[Store, Path]:
    """A run, a trial with its weights, the registry and a query, as written with ``umask``."""
    previous = os.umask(umask)
    try:
        store = Store(root, group=group)
        store.write_manifest(RunManifest(run_id="r1", max_evals=1, parallelism=1))
        record = TrialRecord(run_id="r1", trial_id=0, attempt="a", status="ok", objective=1.0)
        store.write_trial(record)
        weights = store.model_dir(record) / "weights.pt"
        write_atomic(weights, lambda tmp: torch.save({"w": torch.zeros(3)}, tmp))  # as save_bundle
        with store.registry_lock():
            store.save_registry(Registry(current=None))
        QueryLog(query_log_path(root)).log([NewQuery(row=2, valid=True, input={}, output={})], "m", "cli")
    finally:
        os.umask(previous)
    return store, weights


def _as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", *command],
        capture_output=True, text=True, errors="replace", timeout=60, cwd="/",
    )  # fmt: skip


def _nobody_reads(path: Path) -> bool:
    """Whether nobody gets the file's very bytes (``cat`` as nobody)."""
    done = subprocess.run(
        ["runuser", "-u", "nobody", "--", "cat", str(path)], capture_output=True, timeout=60
    )
    return done.returncode == 0 and done.stdout == path.read_bytes()


def _nobody_logs_a_query(path: Path) -> subprocess.CompletedProcess[str]:
    # the query log's module alone, by path: the store package's __init__ needs pydantic, which
    # the system python lacks (the module itself needs only the standard library)
    script = (
        "import importlib.util, sys; sys.path.insert(0, sys.argv[1]); sys.dont_write_bytecode = True\n"
        "path = sys.argv[1] + '/tcr_pipeline/store/querylog.py'\n"
        "spec = importlib.util.spec_from_file_location('querylog', path)\n"
        "querylog = sys.modules['querylog'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(querylog)\n"
        "querylog.QueryLog(sys.argv[2]).log([querylog.NewQuery(2, True, {}, {})], 'm', 'dashboard')\n"
    )
    return _as_nobody(SYSTEM_PYTHON, "-c", script, str(ROOT), str(path))


def test_files_follow_the_umask_so_others_can_read_them(shared_dir: Path) -> None:
    store, weights = _write_store(shared_dir / "store", umask=0o022)
    for path in (store.root / "registry.json", weights, store.run_dir("r1") / "manifest.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path  # mkstemp alone gives 0600
        assert _nobody_reads(path), path
    assert stat.S_IMODE(weights.parent.stat().st_mode) == 0o755
    assert not list(store.root.rglob("*.tmp"))
    # a private umask keeps the store private: the permissions are the umask's, not ours
    private, private_weights = _write_store(shared_dir / "private", umask=0o077)
    assert stat.S_IMODE(private_weights.stat().st_mode) == 0o600
    done = _as_nobody("cat", str(private.root / "registry.json"))
    assert done.returncode != 0
    assert "Permission denied" in done.stderr


def test_a_group_store_is_readable_by_the_group_and_its_query_log_writable(shared_dir: Path) -> None:
    """umask 077 (nothing for others), TCR_STORE_GROUP=nogroup: nobody, in nogroup, reads the
    registry and the weights and adds to the query log."""
    os.environ[STORE_GROUP_ENV] = "nogroup"  # the documented switch, read by Store()
    try:
        store, weights = _write_store(shared_dir / "store", umask=0o077)
    finally:
        del os.environ[STORE_GROUP_ENV]
    nogroup = 65534
    for folder in (store.root, store.run_dir("r1"), weights.parent):
        info = folder.stat()
        assert info.st_gid == nogroup, folder
        assert stat.S_IMODE(info.st_mode) == 0o2770, (folder, oct(info.st_mode))
    for path in (store.root / "registry.json", weights):
        assert (path.stat().st_gid, stat.S_IMODE(path.stat().st_mode)) == (nogroup, 0o640)
        assert _nobody_reads(path), path
    log = query_log_path(store.root)
    assert stat.S_IMODE(log.stat().st_mode) == 0o660
    assert stat.S_IMODE((store.root / ".registry.lock").stat().st_mode) == 0o660
    done = _nobody_logs_a_query(log)
    assert done.returncode == 0, done.stderr
    assert QueryLog(log).count() == 2
    assert {q.source for q in QueryLog(log).read()} == {"cli", "dashboard"}


def test_an_unknown_group_is_one_line_of_input_error(shared_dir: Path) -> None:
    store = Store(shared_dir / "store", group="no-such-lab-group")
    with pytest.raises(InputError, match=r"no group 'no-such-lab-group' on this host \(TCR_STORE_GROUP\)"):
        store.write_manifest(RunManifest(run_id="r1", max_evals=1, parallelism=1))
