"""The store's records, every field declared, and how a record file is written and read.

A record is one JSON file (:class:`RunManifest`, :class:`TrialRecord`, :class:`Registry`); each
carries ``format_version``. Format history:

- **1** (until November 2026): no ``format_version`` field. ``RunManifest.prepared_dir`` and
  ``TrialRecord.traceback`` were written but not declared (they passed as extra fields).
- **2**: ``format_version: 2`` in every record file; ``prepared_dir``, ``traceback`` and the
  trial's ``batch`` and ``device`` declared.

:func:`read_record` reads every format: a file without ``format_version`` is format 1 and goes
through :func:`read_format_1` (explicit, tested against ``tests/data/store-format-1``); a file
of a format newer than :data:`FORMAT_VERSION` is refused as damaged (this code cannot know what
changed). :func:`write_record` always writes the current format. Unknown extra fields are kept
(``extra="allow"``), so a record rewritten by older code loses nothing a newer writer added.
"""

from __future__ import annotations

import math
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tcr_pipeline.errors import InputError
from tcr_pipeline.files import write_text_atomic
from tcr_pipeline.store.layout import now

FORMAT_VERSION = 2
RunStatus = Literal["running", "completed", "failed", "interrupted"]
TrialStatus = Literal["running", "ok", "failed"]


class _Part(BaseModel):
    """A part of a record (kept inside a record file, versioned with it)."""

    model_config = ConfigDict(extra="allow")


class Record(_Part):
    """A record file: versioned by its ``format_version``."""

    format_version: int = FORMAT_VERSION


R = TypeVar("R", bound=Record)


class RunManifest(Record):
    """What a search run is: its settings, code and data versions, and where it ran.

    Written by the process that runs the search (the flow process), only: at the start, on
    resume, at the end; ``mark_stale`` rewrites a dead run's. Readers see the old or new file.
    """

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
    prepared_dir: str | None = None  # the prepared data as the search was given it (may be relative)


class Hardware(_Part):
    """Where one trial attempt ran."""

    host: str = Field(default_factory=socket.gethostname)
    pid: int = Field(default_factory=os.getpid)
    device: str = "cpu"
    gpu: str | None = None
    slurm_job_id: str | None = Field(default_factory=lambda: os.environ.get("SLURM_JOB_ID"))


class TrialRecord(Record):
    """One attempt at one trial: its hyperparameters, curves, metrics, model and hardware.

    Written only by the process running that attempt, inside its own attempt folder: once when
    it starts (``running``) and once when it finishes (``ok`` or ``failed``). A finished record
    is never rewritten.
    """

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
    traceback: str | None = None  # of a failed trial: the end of the exception's traceback
    hardware: Hardware = Field(default_factory=Hardware)
    started: datetime = Field(default_factory=now)
    finished: datetime | None = None
    seconds: float | None = None
    train_seconds: float | None = None
    data_sha256: str = ""
    best_epoch: int | None = None  # the epoch whose weights were kept (mean over folds)
    folds: int = 1  # >1: objective from out-of-fold scores of this many TCR-grouped folds
    batch: str | None = None  # the population batch the trial was trained in, if any
    device: str | None = None  # the device it ran on, as the trainer named it

    @property
    def done(self) -> bool:
        return self.status in ("ok", "failed")

    @property
    def scored(self) -> bool:
        """A successful trial with an objective: the only kind that can be the best (the one rule)."""
        return self.status == "ok" and self.objective is not None

    @property
    def score(self) -> float:
        """The objective of a scored trial, ``-inf`` for any other: what "best" maximises."""
        return self.objective if self.scored and self.objective is not None else -math.inf

    @property
    def loss(self) -> float:
        """What hyperopt minimises: the negated objective (+inf for a failed trial)."""
        if not self.scored or self.objective is None or not math.isfinite(self.objective):
            return math.inf
        return -self.objective


class RegistryEntry(_Part):
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


class Promotion(_Part):
    """One change of the current best model."""

    model_id: str
    replaced: str | None
    promoted: datetime = Field(default_factory=now)
    reason: str
    objective: float
    previous_objective: float | None = None
    eval_data_sha256: str = ""
    interval: dict[str, Any] | None = None  # paired bootstrap vs the replaced model (comparison.py)


class Comparison(_Part):
    """A candidate measured against the current model: promoted or not, and why."""

    candidate: str
    current: str
    decided: datetime = Field(default_factory=now)
    promoted: bool
    reason: str
    interval: dict[str, Any]


class Registry(Record):
    """Registered models, the one in use, and the history of promotions.

    The one file several processes change (searches, ``monitor``, ``retrain``, the dashboard,
    perhaps on several hosts): each change is a read-modify-write under
    :meth:`tcr_pipeline.store.Store.registry_lock`, then an atomic replace.
    """

    models: list[RegistryEntry] = Field(default_factory=list)
    current: str | None = None
    history: list[Promotion] = Field(default_factory=list)
    comparisons: list[Comparison] = Field(default_factory=list)  # every candidate vs current

    def get(self, model_id: str) -> RegistryEntry | None:
        return next((m for m in self.models if m.model_id == model_id), None)

    @property
    def current_entry(self) -> RegistryEntry | None:
        return self.get(self.current) if self.current else None


def read_format_1(record: R) -> R:
    """A record read from a format-1 file (no ``format_version``), as format 1.

    Format 1 differs from 2 only in what it declared: ``prepared_dir`` and ``traceback`` were
    already written under those names with those types, so validation has put them in their
    fields. The record keeps ``format_version = 1`` (it tells where it came from); writing it
    again writes format 2.
    """
    return record.model_copy(update={"format_version": 1})


def parse_record(data: bytes | str, kind: type[R], where: Path | str) -> R:
    """A record of any format from a file's contents; InputError (naming ``where``) when it is
    damaged or of a format newer than this code reads."""
    try:
        record = kind.model_validate_json(data)
    except ValidationError as exc:
        raise InputError(f"{where}: not a valid {kind.__name__} ({exc.error_count()} errors)") from None
    if "format_version" not in record.model_fields_set:
        return read_format_1(record)
    if record.format_version > FORMAT_VERSION:
        raise InputError(
            f"{where}: a {kind.__name__} of format {record.format_version}, newer than this "
            f"tcr-pipeline reads (up to {FORMAT_VERSION}): update it"
        )
    return record


def read_record(path: Path | str, kind: type[R]) -> R | None:
    """A record of any format, or None when the file does not exist (yet); InputError when it is
    damaged or of a format newer than this code reads."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    return parse_record(data, kind, path)


def read_or_skip(path: Path | str, kind: type[R]) -> R | None:
    """A record, or None when it does not exist or is damaged (``check_store`` lists those)."""
    try:
        return read_record(path, kind)
    except InputError:
        return None


def write_record(path: Path, record: Record) -> None:
    """Replace ``path`` atomically with ``record`` in the current format."""
    if record.format_version != FORMAT_VERSION:
        record = record.model_copy(update={"format_version": FORMAT_VERSION})
    write_text_atomic(path, record.model_dump_json(indent=2) + "\n")
