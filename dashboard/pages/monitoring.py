"""Monitoring: drift per feature over time, the alerts and why, service health, data versions.

Everything comes from the reports ``tcr-pipeline monitor`` writes to ``STORE/monitoring/`` and
the tables :mod:`dashboard.tables` builds from them (``drift_table``, ``alert_table``,
``health_table``), with :func:`tcr_pipeline.store.data_versions`; see docs/monitoring.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, dcc, html, no_update
from dash.development.base_component import Component

from dashboard import figures
from dashboard.components import badge, changed, dropdown_control, graph, key_values, note, table
from dashboard.data import Dashboard
from dashboard.tables import alert_table, drift_table, health_table
from tcr_pipeline.errors import InputError
from tcr_pipeline.store import MonitoringReport, data_versions

PATH = "/monitoring"
NAME = "Monitoring"
MAX_ALERTS = 50  # rows of the alert table (newest first)
DEFAULT_STATISTIC = "psi"
STATISTICS = {
    "psi": "PSI (categories)",
    "unseen": "unseen rate (categories)",
    "length_ks": "CDR3 length KS",
    "unseen_length": "CDR3 unseen-length rate",
    "unseen_residue": "CDR3 unseen-residue rate",
    "ks": "score KS (prediction)",
    "delta": "positive-rate change (prediction)",
    "drop": "metric drop (labelled data)",
}
NO_REPORTS = (
    "No monitoring reports yet: run `tcr-pipeline monitor --store STORE` (or the monitor/hourly "
    "deployment); it compares the query log with the current model's training data."
)


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Monitoring"),
            html.Div(id="monitoring-status"),
            html.H2("Drift per feature over time"),
            html.Div(
                dropdown_control("statistic", "monitoring-statistic", wide=True),
                className="controls",
            ),
            graph("monitoring-drift"),
            html.H2("Alerts"),
            html.Div(id="monitoring-alerts"),
            html.H2("Service health"),
            html.Div(
                [
                    html.Div(graph("monitoring-health"), className="col wide"),
                    html.Div(id="monitoring-health-facts", className="col"),
                ],
                className="row",
            ),
            html.H2("Data versions of the registered models"),
            html.Div(id="monitoring-versions"),
            dcc.Store(id="monitoring-seen"),
        ]
    )


def _when(value: Any) -> Any:
    """A time as a UTC datetime (``fmt`` prints it to the second); None for a missing one."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def status_summary(report: MonitoringReport | None) -> Component:
    """The newest report: its status, model, data version and the window of queries it saw."""
    if report is None:
        return note(NO_REPORTS, id="monitoring-none")
    window = report.window
    facts: dict[str, Any] = {
        "status": html.Span(
            [badge(report.status), f"  {len(report.alerts)} alert(s)"], id="monitoring-current-status"
        ),
        "latest report": f"{report.name} ({_when(report.created):%Y-%m-%d %H:%M:%S} UTC)",
        "model monitored": html.Code(report.model_id),
        "its data version": f"sha256 {report.data_sha256[:12]}"
        + (f", DVC md5 {report.dvc_md5}" if report.dvc_md5 else "")
        + (f", {report.data_path}" if report.data_path else ""),
        "window": f"{window.rows:,} logged rows ({window.valid:,} valid) from {window.tcrs:,} TCRs "
        f"in {window.requests:,} requests",
        "window time (UTC)": f"{_when(window.first):%Y-%m-%d %H:%M} – {_when(window.last):%Y-%m-%d %H:%M}"
        if window.first and window.last
        else "–",
    }
    parts: list[Component] = [key_values(facts)]
    parts += [note(text, "warning") for text in report.notes]
    return html.Div(parts, id="monitoring-summary")


def statistic_options(drift: pd.DataFrame) -> list[dict[str, str]]:
    """The drift statistics the reports hold (health has its own figure), then the overview."""
    present = set(drift.loc[drift["group"] != "health", "statistic"])
    options = [{"label": label, "value": s} for s, label in STATISTICS.items() if s in present]
    options += [{"label": s, "value": s} for s in sorted(present - set(STATISTICS))]
    if options:
        options.append({"label": "all checks: value ÷ threshold", "value": figures.RATIO})
    return options


def choose_statistic(options: Sequence[dict[str, str]], selected: str | None, alerts: pd.DataFrame) -> str:
    """Keep the reader's choice; else the statistic of the newest drift alert, else PSI."""
    values = [o["value"] for o in options]
    if selected in values:
        return str(selected)
    alerted = [s for s in alerts["statistic"] if s in values]
    if alerted:
        return str(alerted[0])
    return DEFAULT_STATISTIC if DEFAULT_STATISTIC in values or not values else values[0]


def drift_figure(reports: Sequence[MonitoringReport], statistic: str | None) -> Any:
    """The drift chart for one statistic (or :data:`figures.RATIO`)."""
    if not reports:
        return figures.empty_figure("no monitoring reports yet")
    statistic = statistic or DEFAULT_STATISTIC
    label = "value ÷ threshold" if statistic == figures.RATIO else STATISTICS.get(statistic, statistic)
    return figures.drift_over_time(drift_table(reports), statistic, label)


def alerts_table(alerts: pd.DataFrame, latest: str | None) -> Component:
    """Every alert, newest first: what crossed, by how much, since when, the full reason.

    Rows of the newest report (the alerts still standing) are highlighted.
    """
    if alerts.empty:
        return note("No alerts: no monitoring report has crossed a threshold.", id="monitoring-no-alerts")
    shown = alerts.head(MAX_ALERTS)
    rows = [
        [
            _when(a.created),
            html.Code(str(a.name)),
            a.value,
            a.threshold,
            a.excess,
            _when(a.since),
            a.message,
            a.delivered or "–",
        ]
        for a in shown.itertuples()
    ]
    more = (
        [html.P(f"the newest {MAX_ALERTS} of {len(alerts):,} alerts", className="hint")]
        if len(alerts) > MAX_ALERTS
        else []
    )
    return html.Div(
        [
            table(
                ["report (UTC)", "check", "value", "threshold", "by", "since (UTC)", "reason", "delivered"],
                rows,
                id="monitoring-alerts-table",
                row_class=["alert" if a.report == latest else "" for a in shown.itertuples()],
            ),
            *more,
        ]
    )


def health_facts(report: MonitoringReport | None) -> Component:
    """The newest report's service health in numbers."""
    if report is None:
        return html.Div()
    health = report.health
    columns = ", ".join(f"{c} {n}" for c, n in health.invalid_columns.items()) or "–"
    return key_values(
        {
            "logged rows": health.queries,
            "requests": health.requests,
            "invalid rows": f"{health.invalid} ({health.invalid_rate:.1%})"
            if health.invalid_rate is not None
            else health.invalid,
            "invalid, by column": columns,
            **{
                f"latency {name} (ms)": f"{value:.1f}" if value is not None else None
                for name, value in (
                    ("p50", health.latency_p50_ms),
                    ("p95", health.latency_p95_ms),
                    ("max", health.latency_max_ms),
                )
            },
        }
    )


def health_thresholds(report: MonitoringReport | None) -> dict[str, float]:
    """The health thresholds the newest report was made with."""
    thresholds = (report.params.get("thresholds") or {}) if report else {}
    return {k: float(thresholds[k]) for k in ("invalid_rate", "latency_p95_ms") if k in thresholds}


def versions_table(versions: pd.DataFrame, reports: Sequence[MonitoringReport]) -> Component:
    """Every registered model with the data version it was trained on and its monitoring."""
    if versions.empty:
        return note("No registered models yet.")
    latest: dict[str, MonitoringReport] = {}
    counts: dict[str, int] = {}
    for report in reports:
        latest[report.model_id] = report
        counts[report.model_id] = counts.get(report.model_id, 0) + 1
    rows = []
    for v in versions.itertuples():
        model_id = str(v.model_id)
        last = latest.get(model_id)
        rows.append(
            [
                html.Code(model_id),
                "in use" if v.current else "–",
                _when(v.promoted),
                v.objective,
                _when(v.trained),
                html.Code(str(v.data_sha256)[:12]),
                v.dvc_md5 or "–",
                v.data_path or "–",
                f"{counts[model_id]} ({last.status} {_when(last.created):%m-%d %H:%M})" if last else "–",
            ]
        )
    return table(
        [
            "model",
            "in use",
            "promoted (UTC)",
            "objective",
            "trained (UTC)",
            "data sha256",
            "DVC md5",
            "data path",
            "reports (latest)",
        ],
        rows,
        id="monitoring-versions-table",
        row_class=["current" if v.current else "" for v in versions.itertuples()],
    )


def monitoring_content(
    reports: Sequence[MonitoringReport], versions: pd.DataFrame, selected: str | None
) -> tuple[Component, list[dict[str, str]], str, Component, Any, Component, Component]:
    """Everything on the page but the drift chart: summary, statistic options and choice, alerts,
    health figure and numbers, data versions."""
    newest = reports[-1] if reports else None
    alerts = alert_table(reports)
    options = statistic_options(drift_table(reports))
    return (
        status_summary(newest),
        options,
        choose_statistic(options, selected, alerts),
        alerts_table(alerts, newest.name if newest else None),
        figures.service_health(health_table(reports), health_thresholds(newest)),
        health_facts(newest),
        versions_table(versions, reports),
    )


def register_callbacks(app: dash.Dash, ctx: Dashboard) -> None:
    @app.callback(
        Output("monitoring-status", "children"),
        Output("monitoring-statistic", "options"),
        Output("monitoring-statistic", "value"),
        Output("monitoring-alerts", "children"),
        Output("monitoring-health", "figure"),
        Output("monitoring-health-facts", "children"),
        Output("monitoring-versions", "children"),
        Output("monitoring-seen", "data"),
        Input("store-version", "data"),
        Input("refresh-interval", "n_intervals"),
        State("monitoring-statistic", "value"),
        State("monitoring-seen", "data"),
    )
    def update(version: int | None, _: int, selected: str | None, seen: list[Any] | None) -> tuple[Any, ...]:
        signature = [version, *ctx.reports.signature()]
        if dash.ctx.triggered_id == "refresh-interval" and signature == seen:
            return (no_update,) * 8  # no new report, no registry change: nothing read
        reports = ctx.reports.reports()
        try:
            versions = data_versions(ctx.store)
        except InputError:  # an unreadable registry: the Overview page says why
            versions = pd.DataFrame()
        status, options, statistic, alerts, health, facts, table_ = monitoring_content(
            reports, versions, selected
        )
        return status, options, changed(statistic, selected), alerts, health, facts, table_, signature

    @app.callback(
        Output("monitoring-drift", "figure"),
        Input("monitoring-statistic", "value"),
        Input("monitoring-seen", "data"),
    )
    def update_drift(statistic: str | None, _: Any) -> Any:
        return drift_figure(ctx.reports.reports(), statistic)
