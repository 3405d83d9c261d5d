"""A monitoring report: every check over the recent window, against the model's reference.

:func:`build_report` is pure; :func:`monitor_store` gathers its parts from a store (the
registry, the model bundle, its reference profile, the query log, earlier reports). The
caller sends alerts and writes the report (:func:`tcr_pipeline.store.reports.write_report`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from tcr_pipeline.bundle import Bundle, load_bundle, predict_frame
from tcr_pipeline.config import MonitorParams
from tcr_pipeline.data import load_pairs
from tcr_pipeline.errors import InputError
from tcr_pipeline.files import sha256_file
from tcr_pipeline.monitoring.checks import concept_checks, health_checks, input_checks, prediction_checks
from tcr_pipeline.monitoring.reference import reference_profile, score_labelled
from tcr_pipeline.monitoring.statistics import distinct_tcrs
from tcr_pipeline.monitoring.window import aware, queries_frame, recent_queries, service_health
from tcr_pipeline.store import RegistryEntry, Store, now
from tcr_pipeline.store.querylog import Query
from tcr_pipeline.store.reports import (
    Check,
    Labels,
    MonitoringReport,
    ReferenceProfile,
    Status,
    Window,
    list_reports,
    report_name,
)


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
    times = [aware(q.time) for q in queries]
    window = Window(
        rows=len(queries),
        valid=sum(q.valid for q in queries),
        requests=health.requests,
        tcrs=len(distinct_tcrs(frame)),
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


def _labelled(bundle: Bundle, path: Path, reference: ReferenceProfile) -> Labels:
    frame = load_pairs(path, require_label=True)
    scores, metrics = score_labelled(bundle, frame, str(path), reference.threshold)
    return Labels(
        path=str(path),
        sha256=sha256_file(path),
        rows=len(frame),
        unscorable=int(scores.isna().sum()),
        metrics=metrics,
        test_metrics=reference.test_metrics,
    )


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

    Reads the registry, the model bundle, its reference profile (saved at registration), the
    query log and the last ``history`` reports. Writes nothing, except the reference profile of
    a model registered before profiles were saved (``reference_data``: its training CSV, read
    only then). The caller sends alerts and writes the report.
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
    manifest = store.load_manifest(entry.run_id)
    return build_report(
        entry=entry,
        reference=reference,
        queries=queries,
        scores=_score(bundle, queries_frame(queries)) if queries else np.zeros(0),
        params=params,
        labels=_labelled(bundle, Path(labels), reference) if labels else None,
        previous=list_reports(store, history),
        at=at,
        data_path=manifest.data_path if manifest else None,
    )


__all__ = ["build_report", "carry_since", "monitor_store"]
