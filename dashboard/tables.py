"""Tables over monitoring reports for the Monitoring page (pure): drift, alerts, service health."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from tcr_pipeline.store import MonitoringReport

DRIFT_COLUMNS = ["created", "report", "model_id", "name", "group", "feature", "statistic", "value",
                 "threshold", "p_value", "n", "crossed", "since"]  # fmt: skip
ALERT_COLUMNS = ["created", "report", "model_id", "name", "feature", "statistic", "value", "threshold",
                 "excess", "since", "message", "delivered"]  # fmt: skip
HEALTH_COLUMNS = ["created", "report", "status", "model_id", "queries", "requests", "invalid_rate",
                  "latency_p50_ms", "latency_p95_ms", "alerts"]  # fmt: skip


def drift_table(reports: Iterable[MonitoringReport]) -> pd.DataFrame:
    """One row per check per report: the drift of every feature over time."""
    rows = [
        {"created": r.created, "report": r.name, "model_id": r.model_id}
        | {column: getattr(c, column) for column in DRIFT_COLUMNS[3:]}
        for r in reports
        for c in r.checks
    ]
    return pd.DataFrame(rows, columns=DRIFT_COLUMNS)


def alert_table(reports: Iterable[MonitoringReport]) -> pd.DataFrame:
    """Every alert raised, with its reason (newest report first)."""
    rows = [
        {"created": r.created, "report": r.name, "model_id": r.model_id}
        | {column: getattr(c, column) for column in ALERT_COLUMNS[3:-1]}
        | {"delivered": ", ".join(d.channel for d in r.deliveries if d.ok)}
        for r in reports
        for c in r.alerts
    ]
    table = pd.DataFrame(rows, columns=ALERT_COLUMNS)
    return table.sort_values("created", ascending=False, ignore_index=True)


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
    return pd.DataFrame(rows, columns=HEALTH_COLUMNS)


__all__ = ["alert_table", "drift_table", "health_table"]
