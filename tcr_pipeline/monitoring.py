"""Monitoring of the model in use: input drift, prediction drift, concept drift, service health.

A report compares the recent rows of the query log with the training data of the model the
registry marks as current, and is written to ``STORE/monitoring/<timestamp>.json``. Every
statistic, threshold and design choice is explained in ``docs/monitoring.md``; in short:

- **Reference.** The model's training split, rebuilt from the raw CSV of its run (checked
  against the sha256 in its card) and re-split with the card's prepare parameters, or, when that
  file has changed, decoded from the run's prepared directory. The model's scores on its test
  split are the reference of its predictions. Both are cached per model in
  ``STORE/monitoring/reference/``, so a later data version at the same path does not matter.
- **Units.** Receptor features (CDR3 lengths and residues, V/J genes) are counted once per
  distinct TCR; a TCR is queried against many epitopes, and counting it once per row would make
  every test far too confident. Pair features (epitope, MHC) are counted per row.
- **Statistics.** Categorical features: population stability index (PSI) with a chi-square test;
  numeric ones (CDR3 lengths, scores): Kolmogorov–Smirnov with PSI on fixed bins as extra
  information; anything unseen in training: a rate. A PSI or KS check alerts only when it
  exceeds its threshold *and* the difference is significant.

Nothing here imports Prefect; ``flows/monitor.py`` wraps it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy import stats

from tcr_pipeline.bundle import Bundle, load_bundle, predict_frame
from tcr_pipeline.config import DriftThresholds, MonitorParams, PrepareParams
from tcr_pipeline.data import COLUMNS, TCR_COLUMNS, load_pairs
from tcr_pipeline.errors import InputError
from tcr_pipeline.files import sha256_file, write_text_atomic
from tcr_pipeline.metrics import compute_metrics
from tcr_pipeline.prepare import load_prepared
from tcr_pipeline.provenance import dvc_md5
from tcr_pipeline.splits import split_pairs
from tcr_pipeline.store import RegistryEntry, Store, now
from tcr_pipeline.store.querylog import Query, QueryLog, query_log_path

MONITORING_DIR = "monitoring"
REFERENCE_DIR = "reference"
REFERENCE_FORMAT = 1
PAIR_FEATURES = ("Epitope", "MHC")  # counted per row
GENE_FEATURES = ("V_alpha", "V_beta", "J_alpha", "J_beta")  # counted per distinct TCR
CDR3_FEATURES = ("CDR3_alpha", "CDR3_beta")  # lengths and residues, per distinct TCR
PSI_EPSILON = 1e-4  # stands in for a zero proportion, so a category new on one side has a finite PSI
SCORE_BINS = tuple(np.linspace(0.0, 1.0, 11).round(1))
UNSEEN = "<unseen>"
_PAGE = 1000
_REPORT_NAME = re.compile(r"^\d{8}-\d{6}-\d{6}$")
EXIT_CODES = {"healthy": 0, "insufficient_data": 0, "alert": 1}  # of `tcr-pipeline monitor`

Group = Literal["input", "prediction", "concept", "health"]
Status = Literal["healthy", "alert", "insufficient_data"]


class _Model(BaseModel):
    # NaN (a metric with one class present) round-trips as the JSON constant NaN, as Python's json
    model_config = ConfigDict(extra="allow", ser_json_inf_nan="constants")


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


class ReferenceProfile(_Model):
    """What a model was trained on, summarised for drift tests, and its scores on its test split."""

    format: int = REFERENCE_FORMAT
    model_id: str
    data_sha256: str
    source: str  # "raw <path>" or "prepared <dir>"
    train_rows: int
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
    sha256: str
    rows: int
    unscorable: int
    metrics: dict[str, float]
    test_metrics: dict[str, float]


class Delivery(_Model):
    """The outcome of sending a report's alerts through one channel."""

    channel: str  # log | webhook | email
    ok: bool
    error: str | None = None
    at: datetime = Field(default_factory=now)


class MonitoringReport(_Model):
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
# Statistics (pure)
# ---------------------------------------------------------------------------------------------


def psi(reference: Mapping[Any, float], recent: Mapping[Any, float], epsilon: float = PSI_EPSILON) -> float:
    """Population stability index ``Σ (q − p) ln(q / p)`` of two count (or share) tables.

    Proportions below ``epsilon`` are raised to it, so a category present on one side only
    contributes a large but finite term.
    """
    keys = sorted(set(reference) | set(recent), key=str)
    p = np.array([reference.get(k, 0.0) for k in keys], dtype=float)
    q = np.array([recent.get(k, 0.0) for k in keys], dtype=float)
    if p.sum() <= 0 or q.sum() <= 0:
        return math.nan
    p = np.clip(p / p.sum(), epsilon, None)
    q = np.clip(q / q.sum(), epsilon, None)
    return float(np.sum((q - p) * np.log(q / p)))


def chi_square_p(reference: Mapping[Any, float], recent: Mapping[Any, float]) -> float:
    """p-value of a chi-square test that two count tables come from one distribution."""
    keys = sorted(set(reference) | set(recent), key=str)
    table = np.array([[reference.get(k, 0) for k in keys], [recent.get(k, 0) for k in keys]], dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    return float(stats.chi2_contingency(table).pvalue)


def binned(values: np.ndarray, edges: Sequence[float]) -> dict[int, int]:
    """Counts per bin of ``edges`` (bin i: edges[i] ≤ v < edges[i+1]; the last bin is closed)."""
    counts, _ = np.histogram(np.asarray(values, dtype=float), bins=np.asarray(edges, dtype=float))
    return {i: int(c) for i, c in enumerate(counts)}


def length_bins(reference: Mapping[int, int], values: np.ndarray) -> tuple[dict[int, int], dict[int, int]]:
    """Reference and recent counts on fixed bins: each training length, plus below and above."""
    low, high = min(reference), max(reference)
    recent: Counter[int] = Counter()
    for v in np.asarray(values, dtype=int):
        recent[int(min(max(v, low - 1), high + 1))] += 1
    return dict(reference), dict(recent)


def _expand(histogram: Mapping[int, int]) -> np.ndarray:
    lengths = np.array(sorted(histogram), dtype=float)
    return np.repeat(lengths, [histogram[int(k)] for k in lengths])


def _shifts(reference: Mapping[str, int], recent: Mapping[str, int], top: int = 3) -> str:
    """The categories whose share moved most, as ``name 7.1% → 62.0%``."""
    total_ref = sum(reference.values()) or 1
    total_new = sum(recent.values()) or 1
    keys = set(reference) | set(recent)
    moves = sorted(
        keys,
        key=lambda k: (-abs(recent.get(k, 0) / total_new - reference.get(k, 0) / total_ref), str(k)),
    )
    return ", ".join(
        f"{k} {reference.get(k, 0) / total_ref:.1%} → {recent.get(k, 0) / total_new:.1%}" for k in moves[:top]
    )


def _significant_crossing(value: float, threshold: float, p_value: float, alpha: float) -> bool:
    return math.isfinite(value) and value > threshold and p_value < alpha


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------
# Reference profile
# ---------------------------------------------------------------------------------------------


def _distinct_tcrs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct αβ TCR (both CDR3s and all four genes)."""
    return frame.loc[~frame.duplicated(subset=list(TCR_COLUMNS))]


def _lengths(values: pd.Series) -> dict[int, int]:
    counts = Counter(len(v) for v in values.astype(str))
    return {int(k): int(v) for k, v in counts.items()}


def build_reference(
    model_id: str,
    bundle: Bundle,
    train: pd.DataFrame,
    test: pd.DataFrame,
    source: str,
) -> ReferenceProfile:
    """The reference profile of a model from its training and test rows (labelled pair tables)."""
    tcrs = _distinct_tcrs(train)
    categories = {c: _counts(train[c]) for c in PAIR_FEATURES} | {c: _counts(tcrs[c]) for c in GENE_FEATURES}
    result = predict_frame(bundle, test.reset_index(drop=True), "test split")
    scores = pd.to_numeric(result["score"], errors="coerce").fillna(0.0).to_numpy()
    threshold = bundle.card.evaluate.threshold
    metrics = compute_metrics(
        test["Label"].astype(int).to_numpy(), scores, test["Epitope"].astype(str).to_numpy(), threshold
    )
    return ReferenceProfile(
        model_id=model_id,
        data_sha256=bundle.card.data_sha256,
        source=source,
        train_rows=len(train),
        train_tcrs=len(tcrs),
        categories=categories,
        lengths={c: _lengths(tcrs[c]) for c in CDR3_FEATURES},
        residues={c: "".join(sorted(set("".join(tcrs[c].astype(str))))) for c in CDR3_FEATURES},
        threshold=threshold,
        test_scores=[round(float(s), 6) for s in scores],
        test_positive_rate=float((scores >= threshold).mean()) if len(scores) else math.nan,
        test_metrics={k: v for k, v in metrics.items() if "/" not in k},
    )


def _counts(values: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in values.astype(str).value_counts().items()}


def _reference_path(store: Store, model_id: str) -> Path:
    run_id, _, trial = model_id.partition("/")
    return store.root / MONITORING_DIR / REFERENCE_DIR / run_id / f"{trial or 'model'}.json"


def _training_rows(
    store: Store, entry: RegistryEntry, bundle: Bundle, reference_data: Path | None
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The model's training and test rows: from its raw CSV if unchanged, else its prepared dir."""
    card = bundle.card
    prepare = PrepareParams.model_validate(card.prepare_params)
    manifest = store.load_manifest(entry.run_id)
    raw_candidates = [p for p in (reference_data, manifest.data_path if manifest else None) if p]
    tried: list[str] = []
    for raw in map(Path, raw_candidates):
        if not raw.is_file():
            tried.append(f"{raw} (missing)")
            continue
        if sha256_file(raw) != card.data_sha256:
            tried.append(f"{raw} (a different data version)")
            continue
        frame = load_pairs(raw, require_clone_id=prepare.use_clone_id)
        split = split_pairs(frame, prepare)
        return frame[split == 0], frame[split == 2], f"raw {raw}"
    prepared_dir = manifest.prepared_dir if manifest else None
    if prepared_dir:
        try:
            prepared = load_prepared(prepared_dir)
        except InputError:
            tried.append(f"{prepared_dir} (not a prepared directory)")
        else:
            if prepared.data_sha256 == card.data_sha256 and prepared.meta["params"] == card.prepare_params:
                frames = []
                for part in ("train", "test"):
                    rows = prepared.rows(part)
                    frame = prepared.encoder.decode(prepared.features[rows].numpy())
                    frame["Epitope"] = prepared.epitopes_of(rows)
                    frame["Label"] = prepared.labels[rows].numpy().astype(int)
                    frames.append(frame)
                return frames[0], frames[1], f"prepared {prepared_dir}"
            tried.append(f"{prepared_dir} (prepared from other data or parameters)")
    raise InputError(
        f"model {entry.model_id}: its training data (sha256 {card.data_sha256[:12]}) is not available: "
        f"tried {', '.join(tried) or 'nothing (no run manifest)'}; check out that data version "
        "(git checkout + dvc checkout) or pass it as reference_data"
    )


def reference_profile(
    store: Store, entry: RegistryEntry, bundle: Bundle, reference_data: Path | str | None = None
) -> ReferenceProfile:
    """A model's reference profile: cached in the store, computed on first use."""
    path = _reference_path(store, entry.model_id)
    try:
        cached = ReferenceProfile.model_validate_json(path.read_text())
        if cached.format == REFERENCE_FORMAT and cached.data_sha256 == bundle.card.data_sha256:
            return cached
    except (FileNotFoundError, ValidationError):
        pass
    train, test, source = _training_rows(
        store, entry, bundle, Path(reference_data) if reference_data else None
    )
    profile = build_reference(entry.model_id, bundle, train, test, source)
    write_text_atomic(path, profile.model_dump_json(indent=1) + "\n")
    return profile


# ---------------------------------------------------------------------------------------------
# Recent queries
# ---------------------------------------------------------------------------------------------


def _aware(time: datetime) -> datetime:
    return time if time.tzinfo else time.replace(tzinfo=UTC)


def recent_queries(store_root: Path | str, window: int, since: datetime | None = None) -> list[Query]:
    """The last ``window`` logged rows (only those at or after ``since``), oldest first."""
    log = QueryLog(query_log_path(store_root))
    rows: list[Query] = []
    offset = 0
    while len(rows) < window:
        page = log.read(offset, min(_PAGE, window - len(rows)))
        if not page:
            break
        offset += len(page)
        if since is not None:
            kept = [q for q in page if _aware(q.time) >= since]
            rows.extend(kept)
            if len(kept) < len(page):
                break
        else:
            rows.extend(page)
    return rows[::-1]


def queries_frame(queries: Sequence[Query]) -> pd.DataFrame:
    """The inputs of logged rows as a pair table (absent columns empty, values stripped)."""
    frame = pd.DataFrame([q.input for q in queries], dtype=str)
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    frame = frame.fillna("")
    for column in COLUMNS:
        frame[column] = frame[column].astype(str).str.strip()
    return frame.reset_index(drop=True)


def _error_column(error: str) -> str:
    match = re.search(r"\b(" + "|".join(COLUMNS) + r")\b", error)
    return match.group(1) if match else "other"


def service_health(queries: Sequence[Query]) -> Health:
    """Query count, invalid rows (and the columns to blame), request latency percentiles."""
    invalid = [q for q in queries if not q.valid]
    latencies: dict[str, float] = {}
    for q in queries:
        if q.latency_ms is not None:
            latencies[q.request] = q.latency_ms
    values = np.array(list(latencies.values()), dtype=float)
    return Health(
        queries=len(queries),
        invalid=len(invalid),
        invalid_rate=len(invalid) / len(queries) if queries else None,
        invalid_columns=dict(Counter(_error_column(q.error) for q in invalid).most_common()),
        requests=len({q.request for q in queries}),
        latency_p50_ms=float(np.percentile(values, 50)) if len(values) else None,
        latency_p95_ms=float(np.percentile(values, 95)) if len(values) else None,
        latency_max_ms=float(values.max()) if len(values) else None,
    )


# ---------------------------------------------------------------------------------------------
# Checks (pure)
# ---------------------------------------------------------------------------------------------


def _categorical_checks(
    feature: str, reference: Mapping[str, int], values: pd.Series, thresholds: DriftThresholds
) -> list[Check]:
    values = values[values != ""].astype(str)
    n = len(values)
    known = values.isin(list(reference))
    recent = _counts(values.where(known, UNSEEN))
    unseen_rate = float((~known).mean()) if n else math.nan
    value = psi(reference, recent)
    p = chi_square_p(reference, recent)
    unseen_names = sorted(set(values[~known]))
    return [
        Check(
            name=f"input.{feature}.psi",
            group="input",
            feature=feature,
            statistic="psi",
            value=_finite(value),
            threshold=thresholds.psi,
            crossed=_significant_crossing(value, thresholds.psi, p, thresholds.p_value),
            p_value=p,
            n=n,
            detail=_shifts(reference, recent) if n else "no values",
        ),
        Check(
            name=f"input.{feature}.unseen",
            group="input",
            feature=feature,
            statistic="unseen",
            value=_finite(unseen_rate),
            threshold=thresholds.unseen_rate,
            crossed=n > 0 and unseen_rate > thresholds.unseen_rate,
            n=n,
            detail=(
                f"{int((~known).sum())} of {n} unseen: {', '.join(unseen_names[:5])}"
                + (" …" if len(unseen_names) > 5 else "")
            )
            if unseen_names
            else "",
        ),
    ]


def _cdr3_checks(
    feature: str, reference: ReferenceProfile, values: pd.Series, thresholds: DriftThresholds
) -> list[Check]:
    values = values[values != ""].astype(str)
    n = len(values)
    lengths = values.str.len().to_numpy()
    histogram = reference.lengths[feature]
    checks = []
    if n:
        result = stats.ks_2samp(_expand(histogram), lengths)
        ks, p = float(result.statistic), float(result.pvalue)
        ref_bins, new_bins = length_bins(histogram, lengths)
        mean_ref = float(_expand(histogram).mean())
        extra = {
            "psi": psi(ref_bins, new_bins),
            "mean_reference": mean_ref,
            "mean_recent": float(lengths.mean()),
        }
        detail = f"mean length {mean_ref:.1f} → {lengths.mean():.1f}"
    else:
        ks, p, extra, detail = math.nan, 1.0, {}, "no values"
    checks.append(
        Check(
            name=f"input.{feature}.length_ks",
            group="input",
            feature=feature,
            statistic="length_ks",
            value=_finite(ks),
            threshold=thresholds.ks,
            crossed=_significant_crossing(ks, thresholds.ks, p, thresholds.p_value),
            p_value=p,
            n=n,
            extra=extra,
            detail=detail,
        )
    )
    unseen_length = ~np.isin(lengths, list(histogram))
    residues = set(reference.residues[feature])
    unseen_residue = np.array([not set(v) <= residues for v in values], dtype=bool)
    for statistic, mask, what in (
        ("unseen_length", unseen_length, sorted({int(x) for x in lengths[unseen_length]})),
        ("unseen_residue", unseen_residue, sorted(set("".join(values[unseen_residue])) - residues)),
    ):
        rate = float(mask.mean()) if n else math.nan
        checks.append(
            Check(
                name=f"input.{feature}.{statistic}",
                group="input",
                feature=feature,
                statistic=statistic,
                value=_finite(rate),
                threshold=thresholds.unseen_rate,
                crossed=n > 0 and rate > thresholds.unseen_rate,
                n=n,
                detail=f"{int(mask.sum())} of {n}: {', '.join(map(str, what[:8]))}" if mask.any() else "",
            )
        )
    return checks


def input_checks(
    reference: ReferenceProfile, frame: pd.DataFrame, thresholds: DriftThresholds
) -> list[Check]:
    """Drift of the recent inputs from the training split, feature by feature."""
    tcrs = _distinct_tcrs(frame)
    checks = []
    for feature in PAIR_FEATURES:
        checks += _categorical_checks(feature, reference.categories[feature], frame[feature], thresholds)
    for feature in GENE_FEATURES:
        checks += _categorical_checks(feature, reference.categories[feature], tcrs[feature], thresholds)
    for feature in CDR3_FEATURES:
        checks += _cdr3_checks(feature, reference, tcrs[feature], thresholds)
    return checks


def prediction_checks(
    reference: ReferenceProfile, scores: np.ndarray, thresholds: DriftThresholds
) -> list[Check]:
    """Drift of the model's scores on recent inputs from its scores on its test split."""
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    ref = np.asarray(reference.test_scores, dtype=float)
    if n and len(ref):
        result = stats.ks_2samp(ref, scores)
        ks, p = float(result.statistic), float(result.pvalue)
        positives = int((scores >= reference.threshold).sum())
        rate = positives / n
        rate_p = float(
            stats.binomtest(positives, n, min(max(reference.test_positive_rate, 1e-9), 1 - 1e-9)).pvalue
        )
    else:
        ks, p, rate, rate_p = math.nan, 1.0, math.nan, 1.0
    delta = abs(rate - reference.test_positive_rate)
    return [
        Check(
            name="prediction.score.ks",
            group="prediction",
            feature="score",
            statistic="ks",
            value=_finite(ks),
            threshold=thresholds.ks,
            crossed=_significant_crossing(ks, thresholds.ks, p, thresholds.p_value),
            p_value=p,
            n=n,
            extra={
                "psi": psi(binned(ref, SCORE_BINS), binned(scores, SCORE_BINS)) if n else math.nan,
                "median_reference": float(np.median(ref)) if len(ref) else math.nan,
                "median_recent": float(np.median(scores)) if n else math.nan,
            },
            detail=f"median score {np.median(ref):.3f} (test split) → {np.median(scores):.3f}"
            if n
            else "no scores",
        ),
        Check(
            name="prediction.positive_rate.delta",
            group="prediction",
            feature="positive_rate",
            statistic="delta",
            value=_finite(delta),
            threshold=thresholds.positive_rate_delta,
            crossed=_significant_crossing(delta, thresholds.positive_rate_delta, rate_p, thresholds.p_value),
            p_value=rate_p,
            n=n,
            extra={"reference": reference.test_positive_rate, "recent": rate},
            detail=f"predicted-positive rate {reference.test_positive_rate:.1%} (test split) → {rate:.1%}"
            if n
            else "no scores",
        ),
    ]


def concept_checks(
    reference_metrics: Mapping[str, float], metrics: Mapping[str, float], thresholds: DriftThresholds
) -> list[Check]:
    """The drop of each watched metric from the test split to newly labelled data."""
    checks = []
    for metric in thresholds.metrics:
        before, after = reference_metrics.get(metric, math.nan), metrics.get(metric, math.nan)
        drop = before - after
        computable = math.isfinite(drop)
        checks.append(
            Check(
                name=f"concept.{metric}.drop",
                group="concept",
                feature=metric,
                statistic="drop",
                value=drop if computable else None,
                threshold=thresholds.metric_drop,
                crossed=computable and drop > thresholds.metric_drop,
                n=int(metrics.get("n", 0)),
                extra={"test": before, "labelled": after},
                detail=f"{before:.3f} on the test split → {after:.3f} on the new labels"
                if computable
                else "needs both classes in the labelled rows",
            )
        )
    return checks


def health_checks(health: Health, thresholds: DriftThresholds, enough: bool) -> list[Check]:
    """Invalid-row rate (when the window is large enough) and request latency."""
    checks = []
    if enough and health.invalid_rate is not None:
        columns = ", ".join(f"{c} {n}" for c, n in list(health.invalid_columns.items())[:4])
        checks.append(
            Check(
                name="health.invalid_rate.rate",
                group="health",
                feature="invalid_rate",
                statistic="rate",
                value=health.invalid_rate,
                threshold=thresholds.invalid_rate,
                crossed=health.invalid_rate > thresholds.invalid_rate,
                n=health.queries,
                detail=f"{health.invalid} of {health.queries} rows invalid"
                + (f" ({columns})" if columns else ""),
            )
        )
    if health.latency_p95_ms is not None:
        checks.append(
            Check(
                name="health.latency.p95_ms",
                group="health",
                feature="latency",
                statistic="p95_ms",
                value=health.latency_p95_ms,
                threshold=thresholds.latency_p95_ms,
                crossed=health.latency_p95_ms > thresholds.latency_p95_ms,
                n=health.requests,
                detail=f"p50 {health.latency_p50_ms:.0f} ms, max {health.latency_max_ms:.0f} ms "
                f"over {health.requests} requests",
            )
        )
    return checks


def carry_since(
    checks: Sequence[Check], previous: Sequence[MonitoringReport], model_id: str, at: datetime
) -> list[Check]:
    """Set ``since`` of each crossed check: the first report of its current run of crossings.

    The run continues while the most recent earlier report that computed the check had it
    crossed. Drift checks start over when the model in use changed; health checks do not.
    """
    latest: dict[str, tuple[Check, str]] = {}
    for report in sorted(previous, key=lambda r: r.created):
        for check in report.checks:
            latest[check.name] = (check, report.model_id)
    out = []
    for check in checks:
        since = None
        if check.crossed:
            before = latest.get(check.name)
            same_model = before is not None and (check.group == "health" or before[1] == model_id)
            since = before[0].since if before and same_model and before[0].crossed else None
            since = since or at
        out.append(check.model_copy(update={"since": since}))
    return out


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


def report_name(at: datetime) -> str:
    """A report's sortable file stem: its UTC time to the microsecond."""
    return f"{at.astimezone(UTC):%Y%m%d-%H%M%S-%f}"


def monitoring_dir(store: Store) -> Path:
    return store.root / MONITORING_DIR


def write_report(store: Store, report: MonitoringReport) -> Path:
    """Write a report atomically to ``STORE/monitoring/<name>.json``."""
    path = monitoring_dir(store) / f"{report.name}.json"
    write_text_atomic(path, report.model_dump_json(indent=2) + "\n")
    return path


def load_report(store: Store, name: str) -> MonitoringReport | None:
    """One report by name, or None when there is no such report."""
    path = monitoring_dir(store) / f"{name}.json"
    try:
        return MonitoringReport.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None
    except ValidationError as exc:
        raise InputError(f"{path}: not a valid MonitoringReport ({exc.error_count()} errors)") from None


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


def _labelled(bundle: Bundle, path: Path, reference: ReferenceProfile) -> Labels:
    frame = load_pairs(path, require_label=True)
    result = predict_frame(bundle, frame, str(path))
    scores = pd.to_numeric(result["score"], errors="coerce")
    # rows the model cannot represent count as a score of 0, as in promotion (search.score_on)
    metrics = compute_metrics(
        frame["Label"].to_numpy(),
        scores.fillna(0.0).to_numpy(),
        frame["Epitope"].to_numpy(),
        reference.threshold,
    )
    return Labels(
        path=str(path),
        sha256=sha256_file(path),
        rows=len(frame),
        unscorable=int(scores.isna().sum()),
        metrics={k: v for k, v in metrics.items() if "/" not in k},
        test_metrics=reference.test_metrics,
    )


def build_report(
    *,
    entry: RegistryEntry,
    reference: ReferenceProfile,
    queries: Sequence[Query],
    scores: np.ndarray,
    params: MonitorParams,
    labels: Labels | None = None,
    previous: Sequence[MonitoringReport] = (),
    at: datetime | None = None,
    data_path: str | None = None,
) -> MonitoringReport:
    """A report from its parts (pure): every check, ``since`` carried over, the status."""
    at = at or now()
    thresholds = params.thresholds
    frame = queries_frame(queries) if queries else queries_frame([])
    health = service_health(queries)
    enough = len(queries) >= params.min_queries
    notes = []
    checks: list[Check] = []
    if enough:
        checks += input_checks(reference, frame, thresholds)
        if len(scores) >= params.min_queries:
            checks += prediction_checks(reference, scores, thresholds)
        else:
            notes.append(f"prediction drift not assessed: {len(scores)} scorable rows < {params.min_queries}")
    else:
        notes.append(
            f"drift not assessed: {len(queries)} logged rows in the window < min_queries {params.min_queries}"
        )
    if labels is not None:
        checks += concept_checks(labels.test_metrics, labels.metrics, thresholds)
    checks += health_checks(health, thresholds, enough)
    checks = carry_since(checks, previous, entry.model_id, at)
    crossed = any(c.crossed for c in checks)
    status: Status = "alert" if crossed else "healthy" if enough else "insufficient_data"
    times = [_aware(q.time) for q in queries]
    window = Window(
        rows=len(queries),
        valid=sum(q.valid for q in queries),
        requests=health.requests,
        tcrs=len(_distinct_tcrs(frame)),
        scored=len(scores),
        first=min(times) if times else None,
        last=max(times) if times else None,
        models=dict(Counter(q.model_id for q in queries)),
    )
    return MonitoringReport(
        name=report_name(at),
        created=at,
        status=status,
        model_id=entry.model_id,
        data_sha256=entry.data_sha256,
        dvc_md5=entry.dvc_md5,
        data_path=data_path,
        params=params.model_dump(mode="json", exclude={"alerts"}),
        window=window,
        health=health,
        labels=labels,
        checks=checks,
        notes=notes,
    )


def _score(bundle: Bundle, frame: pd.DataFrame) -> np.ndarray:
    """The model's scores on the rows it can represent now."""
    if frame.empty:
        return np.zeros(0)
    result = predict_frame(bundle, frame, "query log")
    return pd.to_numeric(result["score"], errors="coerce").dropna().to_numpy()


def monitor_store(
    store: Store,
    params: MonitorParams,
    *,
    labels: Path | str | None = None,
    model_id: str | None = None,
    reference_data: Path | str | None = None,
    at: datetime | None = None,
    history: int = 200,
) -> MonitoringReport:
    """Compare the store's recent queries with the training data of its current model.

    Reads the registry, the model bundle, its reference profile, the query log and the last
    ``history`` reports; writes only the reference cache. The caller sends alerts and writes
    the report (:func:`write_report`).
    """
    at = at or now()
    registry = store.load_registry()
    entry = registry.get(model_id) if model_id else registry.current_entry
    if entry is None:
        raise InputError(
            f"{store.root}: "
            + (f"no model {model_id} in the registry" if model_id else "no promoted model yet")
        )
    bundle = load_bundle(store.root / entry.path)
    reference = reference_profile(store, entry, bundle, reference_data)
    since = at - timedelta(hours=params.since_hours) if params.since_hours else None
    queries = recent_queries(store.root, params.window, since)
    scores = _score(bundle, queries_frame(queries)) if queries else np.zeros(0)
    labelled = _labelled(bundle, Path(labels), reference) if labels else None
    manifest = store.load_manifest(entry.run_id)
    return build_report(
        entry=entry,
        reference=reference,
        queries=queries,
        scores=scores,
        params=params,
        labels=labelled,
        previous=list_reports(store, history),
        at=at,
        data_path=manifest.data_path if manifest else None,
    )


# ---------------------------------------------------------------------------------------------
# For the dashboard: tables over reports and the registry (pure, or reading through Store)
# ---------------------------------------------------------------------------------------------


def drift_table(reports: Iterable[MonitoringReport]) -> pd.DataFrame:
    """One row per check per report: the drift of every feature over time."""
    rows = [
        {
            "created": r.created,
            "report": r.name,
            "model_id": r.model_id,
            "name": c.name,
            "group": c.group,
            "feature": c.feature,
            "statistic": c.statistic,
            "value": c.value,
            "threshold": c.threshold,
            "p_value": c.p_value,
            "n": c.n,
            "crossed": c.crossed,
            "since": c.since,
        }
        for r in reports
        for c in r.checks
    ]
    columns = ["created", "report", "model_id", "name", "group", "feature", "statistic", "value",
               "threshold", "p_value", "n", "crossed", "since"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def alert_table(reports: Iterable[MonitoringReport]) -> pd.DataFrame:
    """Every alert raised, with its reason (newest report first)."""
    rows = [
        {
            "created": r.created,
            "report": r.name,
            "model_id": r.model_id,
            "name": c.name,
            "feature": c.feature,
            "statistic": c.statistic,
            "value": c.value,
            "threshold": c.threshold,
            "excess": c.excess,
            "since": c.since,
            "message": c.message,
            "delivered": ", ".join(d.channel for d in r.deliveries if d.ok),
        }
        for r in reports
        for c in r.alerts
    ]
    columns = ["created", "report", "model_id", "name", "feature", "statistic", "value", "threshold",
               "excess", "since", "message", "delivered"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns).sort_values("created", ascending=False, ignore_index=True)


def health_table(reports: Iterable[MonitoringReport]) -> pd.DataFrame:
    """Service health per report."""
    rows = [
        {
            "created": r.created,
            "report": r.name,
            "status": r.status,
            "model_id": r.model_id,
            "queries": r.health.queries,
            "requests": r.health.requests,
            "invalid_rate": r.health.invalid_rate,
            "latency_p50_ms": r.health.latency_p50_ms,
            "latency_p95_ms": r.health.latency_p95_ms,
            "alerts": len(r.alerts),
        }
        for r in reports
    ]
    columns = ["created", "report", "status", "model_id", "queries", "requests", "invalid_rate",
               "latency_p50_ms", "latency_p95_ms", "alerts"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def data_versions(store: Store) -> pd.DataFrame:
    """Every registered model with the data version it was trained on (sha256, DVC md5, path)."""
    registry = store.load_registry()
    promoted = {p.model_id: p.promoted for p in registry.history}
    manifests = {m.run_id: m for m in store.list_runs()}
    rows = []
    for entry in registry.models:
        manifest = manifests.get(entry.run_id)
        rows.append(
            {
                "model_id": entry.model_id,
                "current": entry.model_id == registry.current,
                "promoted": promoted.get(entry.model_id),
                "objective": entry.objective,
                "trained": entry.trained,
                "data_sha256": entry.data_sha256,
                "dvc_md5": entry.dvc_md5,
                "data_path": manifest.data_path if manifest else None,
            }
        )
    columns = [
        "model_id",
        "current",
        "promoted",
        "objective",
        "trained",
        "data_sha256",
        "dvc_md5",
        "data_path",
    ]
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------------------------------------
# Data versions (DVC)
# ---------------------------------------------------------------------------------------------


class DataVersion(_Model):
    """A labelled data file and the version DVC records for it."""

    path: str
    sha256: str
    md5: str  # of the file's bytes, what DVC 3 records
    dvc_md5: str | None = None  # from <path>.dvc (dvc add), else dvc.lock (a stage dependency)
    dvc_file: str | None = None

    @property
    def tracked(self) -> bool:
        return self.dvc_md5 is not None

    @property
    def current(self) -> bool:
        """Whether DVC's record matches the file (False: changed since the last dvc add / repro)."""
        return self.dvc_md5 == self.md5


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def dvc_file_md5(path: Path | str) -> str | None:
    """The md5 that ``<path>.dvc`` (written by ``dvc add``) records for ``path``, if any."""
    dvc_file = Path(f"{path}.dvc")
    try:
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", [])
    except (OSError, yaml.YAMLError):
        return None
    for out in outs:
        if Path(str(out.get("path", ""))).name == Path(path).name:
            return out.get("md5")
    return None


def data_version(path: Path | str, lock: Path | str = "dvc.lock") -> DataVersion:
    """The sha256, md5 and DVC-recorded md5 of a data file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such data file (dvc pull / dvc checkout it first)")
    recorded = dvc_file_md5(path)
    dvc_file = f"{path}.dvc" if recorded else None
    if recorded is None:
        recorded = dvc_md5(path, lock)
        dvc_file = str(lock) if recorded else None
    return DataVersion(
        path=str(path), sha256=sha256_file(path), md5=_md5(path), dvc_md5=recorded, dvc_file=dvc_file
    )


def stamp_data_version(store: Store, run_id: str, version: DataVersion) -> int:
    """Record a verified data version on a run's manifest and its registered models.

    The search records ``dvc_md5`` from ``dvc.lock`` only; a version added with ``dvc add`` is
    in ``<file>.dvc``. Returns how many registry entries changed.
    """
    if not version.current:
        raise InputError(f"{version.path}: DVC records md5 {version.dvc_md5}, the file has {version.md5}")
    manifest = store.load_manifest(run_id)
    if manifest is not None and manifest.data_sha256 not in ("", version.sha256):
        raise InputError(f"run {run_id} was trained on data {manifest.data_sha256[:12]}, not {version.path}")
    if manifest is not None:
        store.write_manifest(manifest.model_copy(update={"dvc_md5": version.dvc_md5}))
    changed = 0
    with store.registry_lock():
        registry = store.load_registry()
        for i, entry in enumerate(registry.models):
            if (
                entry.run_id == run_id
                and entry.data_sha256 == version.sha256
                and entry.dvc_md5 != version.dvc_md5
            ):
                registry.models[i] = entry.model_copy(update={"dvc_md5": version.dvc_md5})
                changed += 1
        if changed:
            store.save_registry(registry)
    return changed


def report_json(report: MonitoringReport) -> dict[str, Any]:
    """A report as plain JSON data (what the flow passes between tasks)."""
    return json.loads(report.model_dump_json())


__all__ = [
    "Check",
    "DataVersion",
    "Delivery",
    "Health",
    "MonitoringReport",
    "ReferenceProfile",
    "alert_table",
    "build_report",
    "data_version",
    "data_versions",
    "drift_table",
    "health_table",
    "list_reports",
    "load_report",
    "monitor_store",
    "psi",
    "recent_queries",
    "reference_profile",
    "stamp_data_version",
    "write_report",
]
