"""The window a report looks at: the recent rows of the query log and the service's health."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from tcr_pipeline.data import COLUMNS
from tcr_pipeline.store.querylog import Query, QueryLog, query_log_path
from tcr_pipeline.store.reports import Health

_PAGE = 1000


def aware(time: datetime) -> datetime:
    """A logged time as timezone-aware (a naive one is UTC)."""
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
            kept = [q for q in page if aware(q.time) >= since]
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


__all__ = ["aware", "queries_frame", "recent_queries", "service_health"]
