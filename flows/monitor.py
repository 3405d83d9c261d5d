"""The ``monitor`` flow: compare recent queries with the training data of the model in use.

A thin wrapper over :mod:`tcr_pipeline.monitoring` and :mod:`tcr_pipeline.alerts`: build the
report, send its alerts (a log line always, a webhook and an email when configured), write it to
``STORE/monitoring/``. Returns ``status`` (``healthy``, ``alert`` or ``insufficient_data``);
``tcr-pipeline monitor`` exits 1 on ``alert``. Scheduled as the ``monitor/hourly`` deployment.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tcr_pipeline.alerts import send_alerts
from tcr_pipeline.config import AlertParams, MonitorParams, resolve_params
from tcr_pipeline.monitoring import monitor_store
from tcr_pipeline.store import MonitoringReport, Store, report_json, write_report


@task(name="monitoring-report", cache_policy=NO_CACHE)
def report_task(
    store_root: str,
    monitor: dict[str, Any],
    labels: str | None,
    model_id: str | None,
    reference_data: str | None,
) -> dict[str, Any]:
    """Build the monitoring report of the store's current model (nothing written but its cache)."""
    report = monitor_store(
        Store(store_root),
        MonitorParams.model_validate(monitor),
        labels=labels,
        model_id=model_id,
        reference_data=reference_data,
    )
    return report_json(report)


@task(name="send-alerts", cache_policy=NO_CACHE)
def alert_task(report: dict[str, Any], alerts: dict[str, Any]) -> list[dict[str, Any]]:
    """Log each alert and notify the configured channels once (no retries: no alert storms)."""
    deliveries = send_alerts(
        MonitoringReport.model_validate(report), AlertParams.model_validate(alerts), get_run_logger()
    )
    return [d.model_dump(mode="json") for d in deliveries]


@task(name="save-report", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def save_task(store_root: str, report: dict[str, Any]) -> str:
    """Write the report into the store (atomically)."""
    return str(write_report(Store(store_root), MonitoringReport.model_validate(report)))


@flow(name="monitor")
def monitor_flow(
    store: str | None = None,
    labels: str | None = None,
    window: int | None = None,
    since_hours: float | None = None,
    model_id: str | None = None,
    reference_data: str | None = None,
    params_file: str | None = "params.yaml",
) -> dict[str, Any]:
    """Drift, prediction drift, concept drift (with ``labels``) and service health of the model in use."""
    logger = get_run_logger()
    params = resolve_params(params_file, {"monitor.window": window, "monitor.since_hours": since_hours})
    result_store = Store.from_env(store)
    report = report_task(
        str(result_store.root), params.monitor.model_dump(mode="json"), labels, model_id, reference_data
    )
    report["deliveries"] = alert_task(report, params.monitor.alerts.model_dump(mode="json"))
    path = save_task(str(result_store.root), report)
    saved = MonitoringReport.model_validate(report)
    logger.info(
        "monitoring report %s: %s, %d alert(s) → %s", saved.name, saved.status, len(saved.alerts), path
    )
    return {
        "status": saved.status,
        "report": path,
        "model_id": saved.model_id,
        "alerts": [c.message for c in saved.alerts],
        "deliveries": report["deliveries"],
    }
