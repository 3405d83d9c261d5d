"""Monitoring records and where they live in the store: reports and reference profiles.

Written by ``tcr-pipeline monitor`` (reports) and by registration (reference profiles); read by
``monitor``, the dashboard and the CLI. Both are :class:`~tcr_pipeline.store.records.Record` files
(``format_version``), written atomically by :func:`~tcr_pipeline.store.records.write_record`: a
concurrent reader sees the old file or the new one, never a part.

Layout (``docs/store.md``)::

    STORE/monitoring/<YYYYMMDD-HHMMSS-ffffff>.json             MonitoringReport, one per run
    STORE/runs/<run>/trials/<tid>/<attempt>/reference.json     ReferenceProfile of that model

A report is written once, atomically, and never rewritten; its name is its UTC time, so names
sort in time order. A reference profile is written (atomically) when its model is registered,
next to the model's trial record and bundle, and read by every later monitoring run.

"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tcr_pipeline.errors import InputError
from tcr_pipeline.store.file_store import Store
from tcr_pipeline.store.layout import now
from tcr_pipeline.store.records import Record, RegistryEntry, read_record, write_record

MONITORING_DIR = "monitoring"
REFERENCE_FILE = "reference.json"  # next to a registered model's bundle directory
REFERENCE_FORMAT = 2  # 2: the rows the model trained on (train + val with train.folds > 1)
EXIT_CODES = {"healthy": 0, "insufficient_data": 0, "alert": 1}  # of `tcr-pipeline monitor`
_REPORT_NAME = re.compile(r"^\d{8}-\d{6}-\d{6}$")

Group = Literal["input", "prediction", "concept", "health"]
Status = Literal["healthy", "alert", "insufficient_data"]


class _Model(BaseModel):
    # NaN (a metric with one class present) round-trips as the JSON constant NaN, as Python's json
    model_config = ConfigDict(extra="allow", ser_json_inf_nan="constants")


class _Record(Record):
    """A monitoring record file (``format_version``; NaN round-trips like :class:`_Model`)."""

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="constants")


class ReferenceProfile(_Record):
    """What a model was trained on, summarised for drift tests, and its scores on its test split."""

    format: int = REFERENCE_FORMAT
    model_id: str
    data_sha256: str
    source: str  # "prepared <dir>" or "raw <path>"
    splits: list[str] = Field(default_factory=lambda: ["train"])  # the rows summarised below
    train_rows: int  # rows of ``splits``: those the model learned from
    train_tcrs: int
    categories: dict[str, dict[str, int]]  # Epitope, MHC per row; genes per distinct TCR
    lengths: dict[str, dict[int, int]]  # CDR3 length -> distinct TCRs
    residues: dict[str, str]  # residues seen per CDR3 column
    threshold: float
    test_scores: list[float]
    test_positive_rate: float
    test_metrics: dict[str, float]
    created: datetime = Field(default_factory=now)


class Check(_Model):
    """One monitored statistic against its threshold."""

    name: str  # group.feature.statistic, stable across reports
    group: Group
    feature: str
    statistic: str
    value: float | None
    threshold: float
    crossed: bool = False
    p_value: float | None = None
    n: int = 0  # recent observations behind the value
    extra: dict[str, float] = Field(default_factory=dict)
    detail: str = ""
    since: datetime | None = None  # first report of the current run of crossings

    @property
    def excess(self) -> float:
        """By how much the value is over its threshold (negative: under it)."""
        return math.nan if self.value is None else self.value - self.threshold

    @property
    def message(self) -> str:
        """One line: what crossed, by how much, and since when."""
        label = _STATISTIC_LABELS.get(self.statistic, self.statistic)
        if self.value is None:
            return f"{self.feature} {label}: not computable ({self.detail or 'no data'})"
        relation = ">" if self.crossed or self.value > self.threshold else "≤"
        text = f"{self.feature} {label} {self.value:.3g} {relation} {self.threshold:.3g}"
        if self.crossed:
            text += f" (by {self.excess:.3g}"
            text += f", p={self.p_value:.1e})" if self.p_value is not None else ")"
        if self.detail:
            text += f"; {self.detail}"
        if self.crossed and self.since is not None:
            text += f"; since {self.since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        return text


_STATISTIC_LABELS = {
    "psi": "PSI",
    "length_ks": "length KS",
    "ks": "KS",
    "unseen": "unseen rate",
    "unseen_length": "unseen-length rate",
    "unseen_residue": "unseen-residue rate",
    "delta": "change",
    "drop": "drop",
    "rate": "rate",
    "p95_ms": "p95 (ms)",
}


class Window(_Model):
    """The logged rows a report looked at."""

    rows: int = 0
    valid: int = 0
    requests: int = 0
    tcrs: int = 0
    scored: int = 0  # rows the model in use could score now
    first: datetime | None = None
    last: datetime | None = None
    models: dict[str, int] = Field(default_factory=dict)  # rows per model that answered them


class Health(_Model):
    """Service health over the window."""

    queries: int = 0
    invalid: int = 0
    invalid_rate: float | None = None
    invalid_columns: dict[str, int] = Field(default_factory=dict)
    requests: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_max_ms: float | None = None


class Labels(_Model):
    """A newly labelled data set the model was scored on (concept drift)."""

    path: str
    sha256: str  # of the labelled file
    rows: int
    unscorable: int  # rows the model could not represent (scored 0)
    metrics: dict[str, float]  # on the labelled rows
    test_metrics: dict[str, float]  # on the model's test split (the reference)


class Delivery(_Model):
    """The outcome of sending a report's alerts through one channel."""

    channel: str  # log | webhook | email
    ok: bool
    error: str | None = None
    at: datetime = Field(default_factory=now)


class MonitoringReport(_Record):
    """One monitoring run: the model, the window, every check, the alerts and their delivery."""

    name: str
    created: datetime
    status: Status
    model_id: str
    data_sha256: str
    dvc_md5: str | None = None
    data_path: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    window: Window = Field(default_factory=Window)
    health: Health = Field(default_factory=Health)
    labels: Labels | None = None
    checks: list[Check] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    deliveries: list[Delivery] = Field(default_factory=list)

    @property
    def alerts(self) -> list[Check]:
        """The checks that crossed their threshold."""
        return [c for c in self.checks if c.crossed]

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def exit_code(self) -> int:
        """What ``tcr-pipeline monitor`` exits with: 0 healthy (or too few queries), 1 alert."""
        return EXIT_CODES[self.status]


# ---------------------------------------------------------------------------------------------
# Reports: STORE/monitoring/<name>.json
# ---------------------------------------------------------------------------------------------


def report_name(at: datetime) -> str:
    """A report's sortable file stem: its UTC time to the microsecond."""
    return f"{at.astimezone(UTC):%Y%m%d-%H%M%S-%f}"


def monitoring_dir(store: Store) -> Path:
    return store.root / MONITORING_DIR


def write_report(store: Store, report: MonitoringReport) -> Path:
    """Write a report atomically to ``STORE/monitoring/<name>.json``."""
    path = monitoring_dir(store) / f"{report.name}.json"
    write_record(path, report)
    return path


def load_report(store: Store, name: str) -> MonitoringReport | None:
    """One report by name, or None when there is no such report (InputError when damaged)."""
    return read_record(monitoring_dir(store) / f"{name}.json", MonitoringReport)


def report_names(store: Store) -> list[str]:
    """Names of the store's reports, oldest first."""
    directory = monitoring_dir(store)
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.json") if _REPORT_NAME.match(p.stem))


def list_reports(store: Store, limit: int | None = None) -> list[MonitoringReport]:
    """The store's reports, oldest first (the newest ``limit`` when given)."""
    names = report_names(store)
    if limit is not None:
        names = names[-limit:] if limit > 0 else []
    return [r for r in (load_report(store, n) for n in names) if r is not None]


def latest_report(store: Store) -> MonitoringReport | None:
    names = report_names(store)
    return load_report(store, names[-1]) if names else None


def report_json(report: MonitoringReport) -> dict[str, Any]:
    """A report as plain JSON data (what the flow passes between tasks)."""
    return json.loads(report.model_dump_json())


# ---------------------------------------------------------------------------------------------
# Reference profiles: next to the registered model
# ---------------------------------------------------------------------------------------------


def reference_path(store: Store, entry: RegistryEntry) -> Path:
    """``runs/<run>/trials/<tid>/<attempt>/reference.json``: beside the model's ``model/`` bundle."""
    return (store.root / entry.path).parent / REFERENCE_FILE


def write_reference(store: Store, entry: RegistryEntry, profile: ReferenceProfile) -> Path:
    """Write a model's reference profile atomically beside its bundle."""
    path = reference_path(store, entry)
    write_record(path, profile)
    return path


def load_reference(store: Store, entry: RegistryEntry) -> ReferenceProfile | None:
    """A model's saved reference profile; None when there is none of the current format.

    A profile of an earlier format counts as none (the caller builds it again); a damaged file,
    or a profile of other data than the registered model's, is an :class:`InputError`.
    """
    profile = read_record(reference_path(store, entry), ReferenceProfile)
    if profile is None or profile.format != REFERENCE_FORMAT:
        return None
    if entry.data_sha256 and profile.data_sha256 != entry.data_sha256:
        raise InputError(
            f"{reference_path(store, entry)}: a profile of data {profile.data_sha256[:12]}, "
            f"but model {entry.model_id} was trained on {entry.data_sha256[:12]}"
        )
    return profile
