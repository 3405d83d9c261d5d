"""Alerts of a monitoring report: a log line always, plus a webhook and an email when configured.

- **log**: one ``WARNING`` line per crossed check on the ``tcr_pipeline.alerts`` logger (or the
  logger passed in, e.g. a Prefect run logger), every time.
- **webhook**: one JSON ``POST`` (``monitor.alerts.webhook``, else ``$TCR_ALERT_WEBHOOK``, so a
  URL with a token stays out of git). Its ``text`` field is a readable summary, which Slack and
  Mattermost incoming webhooks display as is; the rest is structured.
- **email**: one message through the SMTP relay of ``monitor.alerts.email``; a login, when the
  relay needs one, comes from the environment variables the config names.

One attempt per channel with a timeout: a failed delivery is logged and recorded in the report
(``deliveries``), never retried in a loop and never fatal: the exit status still says "alert".
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import ssl
import urllib.error
import urllib.request
from email.message import EmailMessage
from typing import Any

from tcr_pipeline.config import AlertParams, EmailParams
from tcr_pipeline.store import Check, Delivery, MonitoringReport

WEBHOOK_ENV = "TCR_ALERT_WEBHOOK"
logger = logging.getLogger("tcr_pipeline.alerts")
Logger = logging.Logger | logging.LoggerAdapter[Any]


def alerts_to_send(report: MonitoringReport, params: AlertParams) -> list[Check]:
    """The checks to notify about: all crossed ones, or with ``notify: new`` those crossed just now."""
    if params.notify == "new":
        return [c for c in report.alerts if c.since == report.created]
    return report.alerts


def summary(report: MonitoringReport, alerts: list[Check]) -> str:
    """The headline of an alert."""
    return (
        f"tcr-pipeline monitoring: {len(alerts)} alert(s) for model {report.model_id} "
        f"(report {report.name}, {report.window.rows} queries)"
    )


def alert_payload(report: MonitoringReport, alerts: list[Check]) -> dict[str, Any]:
    """The webhook's JSON body: a readable ``text`` plus every alert as data."""
    return {
        "text": "\n".join([summary(report, alerts), *(f"• {c.message}" for c in alerts)]),
        "status": report.status,
        "report": report.name,
        "created": report.created.isoformat(),
        "model_id": report.model_id,
        "data_sha256": report.data_sha256,
        "dvc_md5": report.dvc_md5,
        "window": json.loads(report.window.model_dump_json()),
        "alerts": [
            {
                "check": c.name,
                "group": c.group,
                "feature": c.feature,
                "statistic": c.statistic,
                "value": c.value,
                "threshold": c.threshold,
                "excess": c.excess,
                "p_value": c.p_value,
                "since": c.since.isoformat() if c.since else None,
                "message": c.message,
            }
            for c in alerts
        ],
    }


def alert_email(report: MonitoringReport, alerts: list[Check], email: EmailParams) -> EmailMessage:
    """The alert as a plain-text email."""
    message = EmailMessage()
    message["Subject"] = f"[tcr-pipeline] {len(alerts)} monitoring alert(s): model {report.model_id}"
    message["From"] = email.sender
    message["To"] = ", ".join(email.to)
    lines = [summary(report, alerts), "", *(f"- {c.message}" for c in alerts)]
    lines += ["", f"window: {report.window.rows} rows, {report.window.first} to {report.window.last}"]
    message.set_content("\n".join(lines) + "\n")
    return message


def post_webhook(url: str, payload: dict[str, Any], timeout: float) -> None:
    """POST ``payload`` as JSON; raise on a non-2xx answer, a timeout or a refused connection."""
    if not url.startswith(("http://", "https://")):
        raise ValueError("the webhook must be an http:// or https:// URL")
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "tcr-pipeline-monitor"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # 4xx/5xx raise HTTPError
        response.read()


def send_email(message: EmailMessage, email: EmailParams) -> None:
    """Send through the configured relay (STARTTLS and login when configured)."""
    with smtplib.SMTP(email.host, email.port, timeout=email.timeout_s) as smtp:
        if email.starttls:
            smtp.starttls(context=ssl.create_default_context())
        user, password = os.environ.get(email.username_env), os.environ.get(email.password_env)
        if user and password:
            smtp.login(user, password)
        smtp.send_message(message)


def send_alerts(report: MonitoringReport, params: AlertParams, log: Logger | None = None) -> list[Delivery]:
    """Log every alert, then notify the configured channels once each; returns the deliveries."""
    log = log or logger
    if not report.alerts:
        log.info(
            "monitoring %s: %s (model %s, %d queries)",
            report.name,
            report.status,
            report.model_id,
            report.window.rows,
        )
        return []
    for check in report.alerts:
        log.warning("ALERT %s: %s", check.name, check.message)
    deliveries = [Delivery(channel="log", ok=True)]
    alerts = alerts_to_send(report, params)
    if not alerts:
        return deliveries
    url = params.webhook or os.environ.get(WEBHOOK_ENV)
    if url:
        try:
            post_webhook(url, alert_payload(report, alerts), params.webhook_timeout_s)
            deliveries.append(Delivery(channel="webhook", ok=True))
        except (OSError, ValueError) as exc:  # URLError, HTTPError and timeouts are OSErrors
            log.error("alert webhook failed: %s", _reason(exc))
            deliveries.append(Delivery(channel="webhook", ok=False, error=_reason(exc)))
    if params.email is not None:
        try:
            send_email(alert_email(report, alerts, params.email), params.email)
            deliveries.append(Delivery(channel="email", ok=True))
        except (OSError, smtplib.SMTPException) as exc:
            log.error("alert email failed: %s", _reason(exc))
            deliveries.append(Delivery(channel="email", ok=False, error=_reason(exc)))
    return deliveries


def _reason(exc: BaseException) -> str:
    """An error without the URL (a webhook URL may carry a token)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{type(exc.reason).__name__}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


__all__ = ["WEBHOOK_ENV", "alert_email", "alert_payload", "post_webhook", "send_alerts", "send_email"]
