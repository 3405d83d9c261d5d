"""The result store: one directory shared by every host of a search, read by the dashboard.

Layout (documented in ``docs/store.md``)::

    STORE/
      runs/<run_id>/manifest.json                  RunManifest
      runs/<run_id>/baseline.json                  k-mer baseline metrics on the run's split
      runs/<run_id>/trials/<tid>/<attempt>/trial.json   TrialRecord of one attempt
      runs/<run_id>/trials/<tid>/<attempt>/model/  model bundle (weights.pt, encoder.json, card.json)
      registry.json                                Registry: registered models, current best, history

Every file is written atomically (temporary file + rename), so a reader never sees a partial
record. Each attempt of a trial writes only inside its own directory, named after its host,
process and a random suffix, so trials on different hosts never write the same file. When two
attempts of one trial both finished (a worker presumed dead came back), the first to finish
counts and the other is ignored: a trial is never counted twice.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tcr_pipeline.errors import InputError
from tcr_pipeline.files import make_dirs, share_file_with_group, share_with_group, write_text_atomic

STORE_ENV = "TCR_STORE"
STORE_GROUP_ENV = "TCR_STORE_GROUP"  # a Unix group to share the store with (docs/store.md)
MANIFEST_FILE = "manifest.json"
TRIAL_FILE = "trial.json"
REGISTRY_FILE = "registry.json"
BASELINE_FILE = "baseline.json"
MODEL_DIR = "model"
R = TypeVar("R", bound=BaseModel)
# a run id names a directory under STORE/runs: one path component, never hidden, never . or ..
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
RUN_ID_RULE = "1-128 letters, digits, '-', '_' or '.', not starting with '.'"

RunStatus = Literal["running", "completed", "failed", "interrupted"]
TrialStatus = Literal["running", "ok", "failed"]


def now() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class RunManifest(_Record):
    """What a search run is: its settings, code and data versions, and where it ran."""

    run_id: str
    status: RunStatus = "running"
    started: datetime = Field(default_factory=now)
    finished: datetime | None = None
    max_evals: int
    parallelism: int
    cluster: str = "local"
    objective: str = "paper"
    seed: int = 42
    params: dict[str, Any] = Field(default_factory=dict)
    search_space: dict[str, Any] = Field(default_factory=dict)
    git_commit: str | None = None
    git_dirty: bool | None = None
    data_path: str = ""
    data_sha256: str = ""
    dvc_md5: str | None = None
    packages: dict[str, str] = Field(default_factory=dict)
    host: str = Field(default_factory=socket.gethostname)
    pid: int | None = Field(default_factory=os.getpid)  # the process that runs the search (stale-run check)
    gpu: str | None = None
    error: str | None = None


class Hardware(_Record):
    """Where one trial attempt ran."""

    host: str = Field(default_factory=socket.gethostname)
    pid: int = Field(default_factory=os.getpid)
    device: str = "cpu"
    gpu: str | None = None
    slurm_job_id: str | None = Field(default_factory=lambda: os.environ.get("SLURM_JOB_ID"))


class TrialRecord(_Record):
    """One attempt at one trial: its hyperparameters, curves, metrics, model and hardware."""

    run_id: str
    trial_id: int
    attempt: str
    status: TrialStatus = "running"
    params: dict[str, Any] = Field(default_factory=dict)
    hyperopt_vals: dict[str, list[Any]] = Field(default_factory=dict)
    objective: float | None = None
    history: list[dict[str, float]] = Field(default_factory=list)
    val_metrics: dict[str, float] = Field(default_factory=dict)
    test_metrics: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
    hardware: Hardware = Field(default_factory=Hardware)
    started: datetime = Field(default_factory=now)
    finished: datetime | None = None
    seconds: float | None = None
    train_seconds: float | None = None
    data_sha256: str = ""
    best_epoch: int | None = None  # the epoch whose weights were kept (mean over folds)
    folds: int = 1  # >1: objective from out-of-fold scores of this many TCR-grouped folds
    batch: str | None = None  # the batch of suggestions (one task) this attempt ran in
    device: str | None = None  # the device it trained on (cpu, cuda:0 …)

    @property
    def done(self) -> bool:
        return self.status in ("ok", "failed")

    @property
    def loss(self) -> float:
        """What hyperopt minimises: the negated objective (+inf for a failed trial)."""
        if self.status != "ok" or self.objective is None or not math.isfinite(self.objective):
            return math.inf
        return -self.objective


class RegistryEntry(_Record):
    """A registered model: one of the top trials of a run."""

    model_id: str
    run_id: str
    trial_id: int
    path: str
    objective: float
    objective_name: str
    params: dict[str, Any] = Field(default_factory=dict)
    val_metrics: dict[str, float] = Field(default_factory=dict)
    test_metrics: dict[str, float] = Field(default_factory=dict)
    data_sha256: str = ""
    dvc_md5: str | None = None
    git_commit: str | None = None
    trained: datetime | None = None
    registered: datetime = Field(default_factory=now)
    fingerprint: str | None = None  # hyperparameters + train/prepare settings + data: one per model


class Promotion(_Record):
    """One change of the current best model."""

    model_id: str
    replaced: str | None
    promoted: datetime = Field(default_factory=now)
    reason: str
    objective: float
    previous_objective: float | None = None
    eval_data_sha256: str = ""
    interval: dict[str, Any] | None = None  # paired bootstrap vs the replaced model (comparison.py)


class Comparison(_Record):
    """A candidate measured against the current model: promoted or not, and why."""

    candidate: str
    current: str
    decided: datetime = Field(default_factory=now)
    promoted: bool
    reason: str
    interval: dict[str, Any]


class Registry(_Record):
    """Registered models, the one in use, and the history of promotions."""

    models: list[RegistryEntry] = Field(default_factory=list)
    current: str | None = None
    history: list[Promotion] = Field(default_factory=list)
    comparisons: list[Comparison] = Field(default_factory=list)  # every candidate vs current

    def get(self, model_id: str) -> RegistryEntry | None:
        return next((m for m in self.models if m.model_id == model_id), None)

    @property
    def current_entry(self) -> RegistryEntry | None:
        return self.get(self.current) if self.current else None


def model_id_of(run_id: str, trial_id: int) -> str:
    """The registry id of a trial's model."""
    return f"{run_id}/{trial_id:04d}"


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


class Store:
    """Typed access to a result store directory; the only code that reads or writes it."""

    def __init__(self, root: Path | str, group: str | None = None) -> None:
        self.root = Path(root)
        self.group = group or os.environ.get(STORE_GROUP_ENV) or None
        self._prepared = False

    def _prepare(self) -> None:
        """Before the first write: create the store, shared with ``group`` when one is set."""
        if not self._prepared:
            if self.group:
                share_with_group(self.root, self.group)
            else:
                make_dirs(self.root)
            self._prepared = True

    @classmethod
    def from_env(cls, root: Path | str | None = None) -> Store:
        """``root`` if given, else ``$TCR_STORE``, else ``./store``."""
        return cls(root or os.environ.get(STORE_ENV) or "store")

    # runs ---------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / check_run_id(run_id)

    def write_manifest(self, manifest: RunManifest) -> None:
        self._prepare()
        _write_record(self.run_dir(manifest.run_id) / MANIFEST_FILE, manifest)

    def load_manifest(self, run_id: str) -> RunManifest | None:
        return _read_record(self.run_dir(run_id) / MANIFEST_FILE, RunManifest)

    def list_runs(self) -> list[RunManifest]:
        """Every run with a readable manifest, oldest first."""
        runs_dir = self.root / "runs"
        if not runs_dir.is_dir():
            return []
        manifests = [
            _read_or_skip(p / MANIFEST_FILE, RunManifest)
            for p in sorted(runs_dir.iterdir())
            if p.is_dir() and RUN_ID_PATTERN.fullmatch(p.name)
        ]
        return sorted((m for m in manifests if m is not None), key=lambda m: m.started)

    def write_baseline(self, run_id: str, metrics: dict[str, dict[str, float]]) -> None:
        """Metrics of the k-mer baseline computed on the run's split (``baseline.json``)."""
        self._prepare()
        write_text_atomic(self.run_dir(run_id) / BASELINE_FILE, json.dumps(metrics, indent=2) + "\n")

    def load_baseline(self, run_id: str) -> dict[str, dict[str, float]] | None:
        try:
            return json.loads((self.run_dir(run_id) / BASELINE_FILE).read_text())
        except FileNotFoundError:
            return None

    # trials -------------------------------------------------------------------------------
    def attempt_dir(self, run_id: str, trial_id: int, attempt: str) -> Path:
        return self.run_dir(run_id) / "trials" / f"{trial_id:04d}" / attempt

    def model_dir(self, record: TrialRecord) -> Path:
        return self.attempt_dir(record.run_id, record.trial_id, record.attempt) / MODEL_DIR

    def write_trial(self, record: TrialRecord) -> None:
        self._prepare()
        _write_record(self.attempt_dir(record.run_id, record.trial_id, record.attempt) / TRIAL_FILE, record)

    def trial_attempts(self, run_id: str) -> Iterator[TrialRecord]:
        """Every readable attempt record of a run (a damaged one is skipped: see :meth:`check`)."""
        trials_dir = self.run_dir(run_id) / "trials"
        if not trials_dir.is_dir():
            return
        for trial_dir in sorted(trials_dir.iterdir()):
            if not trial_dir.is_dir():
                continue
            for attempt_dir in sorted(trial_dir.iterdir()):
                record = _read_or_skip(attempt_dir / TRIAL_FILE, TrialRecord)
                if record is not None:
                    yield record

    def list_trials(self, run_id: str) -> list[TrialRecord]:
        """One record per trial id: the first finished attempt, else the latest started one."""
        chosen: dict[int, TrialRecord] = {}
        for record in self.trial_attempts(run_id):
            best = chosen.get(record.trial_id)
            if best is None or _preferred(record, best):
                chosen[record.trial_id] = record
        return [chosen[t] for t in sorted(chosen)]

    def finished_trial(self, run_id: str, trial_id: int) -> TrialRecord | None:
        """The counted attempt of a trial, if one has finished."""
        trial_dir = self.run_dir(run_id) / "trials" / f"{trial_id:04d}"
        if not trial_dir.is_dir():
            return None
        done = [
            r
            for p in sorted(trial_dir.iterdir())
            if (r := _read_or_skip(p / TRIAL_FILE, TrialRecord)) is not None and r.done
        ]
        return min(done, key=_finish_key) if done else None

    # registry -----------------------------------------------------------------------------
    @contextmanager
    def registry_lock(self) -> Iterator[None]:
        """An exclusive lock for read-modify-write of the registry: ``flock(2)`` on ``.registry.lock``.

        Across hosts only where the filesystem makes flock coherent between clients (NFSv4, NFSv3
        with lockd, Lustre mounted with ``flock``, GPFS): docs/store.md. A filesystem that refuses
        it (Lustre ``noflock``: ENOSYS) is an OSError naming the lock file, not a silent race.
        """
        self._prepare()
        with open(self.root / ".registry.lock", "w") as handle:
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

    def load_registry(self) -> Registry:
        return _read_record(self.root / REGISTRY_FILE, Registry) or Registry()

    def save_registry(self, registry: Registry) -> None:
        self._prepare()
        _write_record(self.root / REGISTRY_FILE, registry)

    def resolve_model(self, name: str) -> Path:
        """A model directory from ``best``, a registry id (``RUN/TID``) or a path.

        A path to a bundle directory is used as it is: the registry is not read, so a damaged
        registry does not stop ``predict --model /path/to/bundle``.
        """
        if name != "best" and (Path(name) / "card.json").is_file():
            return Path(name)
        if name == "best":
            entry = self.load_registry().current_entry
            if entry is None:
                raise InputError(f"{self.root}: no promoted model yet (run a search first)")
            return self.root / entry.path
        entry = self.load_registry().get(name)
        if entry is not None:
            return self.root / entry.path
        return Path(name)


@dataclass(frozen=True)
class Damage:
    """A record that cannot be read, or a run whose owner died while it was ``running``."""

    path: Path
    problem: str
    run_id: str | None = None
    stale: bool = False  # a run left `running` by a dead process (``mark_stale`` can fix it)

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def check_store(store: Store) -> list[Damage]:
    """Every damaged record and every stale ``running`` run of a store (read-only).

    A run is stale when its manifest says ``running`` and names this host and a process id that
    no longer exists here. Runs owned by another host are not judged (their process cannot be
    seen from here).
    """
    found: list[Damage] = []
    registry = store.root / REGISTRY_FILE
    if registry.exists():
        found.extend(_damage(registry, Registry))
    runs_dir = store.root / "runs"
    if not runs_dir.is_dir():
        return found
    for run_dir in sorted(runs_dir.iterdir()):
        if not run_dir.is_dir():
            continue
        if not RUN_ID_PATTERN.fullmatch(run_dir.name):
            found.append(Damage(run_dir, "not a valid run id; ignored by every reader"))
            continue
        damage = _damage(run_dir / MANIFEST_FILE, RunManifest)
        found.extend(damage)
        manifest = None if damage else _read_or_skip(run_dir / MANIFEST_FILE, RunManifest)
        if manifest is None and not damage:
            found.append(Damage(run_dir / MANIFEST_FILE, "missing: the run is not listed", run_dir.name))
        trials_dir = run_dir / "trials"
        if trials_dir.is_dir():
            for trial_file in sorted(trials_dir.glob(f"*/*/{TRIAL_FILE}")):
                found.extend(_damage(trial_file, TrialRecord))
        if manifest is not None and manifest.status == "running" and _owner_gone(manifest):
            found.append(
                Damage(
                    run_dir / MANIFEST_FILE,
                    f"stale: `running`, but its process {manifest.pid} on {manifest.host} is gone",
                    manifest.run_id,
                    stale=True,
                )
            )
    return found


def check_resume_budget(store: Store, run_id: str, max_evals: int) -> int:
    """The number of finished trials of a run; InputError when ``max_evals`` is below it."""
    finished = sum(t.done for t in store.list_trials(run_id))
    if max_evals < finished:
        raise InputError(
            f"run {run_id}: already has {finished} finished trials, --max-evals {max_evals} is below that "
            "(max_evals counts every trial of the run)"
        )
    return finished


def mark_stale(store: Store, run_id: str) -> RunManifest:
    """Record a stale run as ``interrupted`` (resumable with its run id)."""
    manifest = store.load_manifest(run_id)
    if manifest is None:
        raise InputError(f"run {run_id}: no manifest")
    marked = manifest.model_copy(
        update={
            "status": "interrupted",
            "finished": now(),
            "error": f"its process {manifest.pid} on {manifest.host} died while the run was running",
        }
    )
    store.write_manifest(marked)
    return marked


def _owner_gone(manifest: RunManifest) -> bool:
    if manifest.pid is None or manifest.host != socket.gethostname():
        return False
    try:
        os.kill(manifest.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _damage(path: Path, kind: type[BaseModel]) -> list[Damage]:
    try:
        _read_record(path, kind)
    except InputError as exc:
        return [Damage(path, str(exc).removeprefix(f"{path}: "), _run_of(path))]
    return []


def _run_of(path: Path) -> str | None:
    parts = path.parts
    return parts[parts.index("runs") + 1] if "runs" in parts[:-1] else None


def _read_or_skip(path: Path, kind: type[R]) -> R | None:
    """A record, or None when it does not exist or is damaged (``check_store`` lists those)."""
    try:
        return _read_record(path, kind)
    except InputError:
        return None


def _finish_key(record: TrialRecord) -> tuple[datetime, str]:
    return (record.finished or record.started, record.attempt)


def _preferred(candidate: TrialRecord, current: TrialRecord) -> bool:
    if candidate.done != current.done:
        return candidate.done
    if candidate.done:
        return _finish_key(candidate) < _finish_key(current)
    return candidate.started > current.started


def _write_record(path: Path, record: BaseModel) -> None:
    write_text_atomic(path, record.model_dump_json(indent=2) + "\n")


def _read_record(path: Path, kind: type[R]) -> R | None:
    """A record, or None when the file does not exist (yet); InputError when it is damaged."""
    try:
        return kind.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValidationError as exc:
        raise InputError(f"{path}: not a valid {kind.__name__} ({exc.error_count()} errors)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
