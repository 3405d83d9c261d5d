"""Alert channels against real servers on 127.0.0.1: an HTTP server for the webhook and a small
SMTP server (written here: aiosmtpd is not a dependency) for email. Every server listens on an
ephemeral port, answers within seconds and is shut down by its fixture."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tcr_pipeline.alerts import WEBHOOK_ENV, alert_payload, send_alerts
from tcr_pipeline.config import AlertParams, EmailParams
from tcr_pipeline.store import Check, MonitoringReport, Window

CREATED = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
SINCE = CREATED - timedelta(hours=3)


def make_report(*checks: Check) -> MonitoringReport:
    return MonitoringReport(
        name="20261123-090000-000000",
        created=CREATED,
        status="alert" if any(c.crossed for c in checks) else "healthy",
        model_id="run-1/0003",
        data_sha256="ab" * 32,
        dvc_md5="cd" * 16,
        window=Window(rows=600, valid=600, requests=10, first=SINCE, last=CREATED),
        checks=list(checks),
    )


def input_check(feature: str, statistic: str, value: float, threshold: float, **fields: Any) -> Check:
    """A check on an input feature, named as the monitor names it (``input.<feature>.<statistic>``)."""
    return Check(
        name=f"input.{feature}.{statistic}",
        group="input",
        feature=feature,
        statistic=statistic,
        value=value,
        threshold=threshold,
        crossed=value > threshold,
        **fields,
    )


V_BETA = input_check(
    "V_beta", "unseen", 0.433, 0.05, n=261, detail="113 of 261 unseen: TRBV99-9*01", since=SINCE
)
# crossed for the first time in this report
EPITOPE = input_check("Epitope", "psi", 6.37, 0.25, p_value=4.9e-257, n=600, since=CREATED)
QUIET = input_check("MHC", "psi", 0.01, 0.25, n=600)


# ---------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------


@dataclass
class Webhook:
    """A real HTTP server on 127.0.0.1 recording each POST; ``status``/``delay`` shape its answers."""

    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0


@contextlib.contextmanager
def serving(server: socketserver.ThreadingMixIn) -> Iterator[int]:
    """Serve ``server`` (bound to an ephemeral port) from a thread; yield the port, shut it down after."""
    assert isinstance(server, socketserver.TCPServer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hook.posts.append(
                {
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    "body": json.loads(body),
                }
            )
            time.sleep(hook.delay)
            self.send_response(hook.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as port:
        hook.url = f"http://127.0.0.1:{port}/hooks/tcr"
        yield hook


@dataclass
class Smtp:
    """A minimal SMTP server on 127.0.0.1 (EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT)."""

    port: int
    commands: list[str] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    record = Smtp(port=0)

    class Handler(socketserver.StreamRequestHandler):
        timeout = 5  # a client that goes quiet cannot hold the test

        def reply(self, *lines: str) -> None:
            self.wfile.write("".join(f"{line}\r\n" for line in lines).encode())

        def handle(self) -> None:
            self.reply("220 127.0.0.1 test SMTP")
            data: list[bytes] | None = None
            while line := self.rfile.readline(1 << 16):
                if data is not None:
                    if line.rstrip(b"\r\n") == b".":
                        record.messages.append(b"".join(data))
                        data = None
                        self.reply("250 queued")
                    else:
                        data.append(line[1:] if line.startswith(b"..") else line)
                    continue
                verb, _, argument = line.decode().strip().partition(" ")
                verb = verb.upper()  # smtplib sends "mail FROM:<…>"
                record.commands.append(f"{verb} {argument}".strip())
                if verb == "EHLO":
                    self.reply("250-127.0.0.1", "250 AUTH PLAIN")
                elif verb == "AUTH":
                    self.reply("235 authenticated")
                elif verb in ("HELO", "MAIL", "RCPT", "RSET", "NOOP"):
                    self.reply("250 ok")
                elif verb == "DATA":
                    data = []
                    self.reply("354 end with .")
                elif verb == "QUIT":
                    self.reply("221 bye")
                    return
                else:
                    self.reply("502 not implemented")

    with serving(socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)) as port:
        record.port = port
        yield record


@pytest.fixture(autouse=True)
def _no_channels_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (WEBHOOK_ENV, "TCR_SMTP_USER", "TCR_SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------------------------
# Log line, webhook, email
# ---------------------------------------------------------------------------------------------


def test_every_alert_is_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tcr_pipeline.alerts"):
        deliveries = send_alerts(make_report(V_BETA, EPITOPE, QUIET), AlertParams())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"ALERT input.V_beta.unseen: {V_BETA.message}",
        f"ALERT input.Epitope.psi: {EPITOPE.message}",
    ]
    assert "V_beta unseen rate 0.433 > 0.05 (by 0.383); 113 of 261 unseen: TRBV99-9*01" in warnings[0]
    assert "since 2026-11-23 06:00:00 UTC" in warnings[0]
    assert [(d.channel, d.ok) for d in deliveries] == [("log", True)]


def test_a_healthy_report_logs_one_info_line_and_notifies_nobody(
    webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tcr_pipeline.alerts"):
        deliveries = send_alerts(make_report(QUIET), AlertParams(webhook=webhook.url))
    assert deliveries == []
    assert webhook.posts == []
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "healthy" in caplog.records[0].getMessage()


def test_the_webhook_receives_one_json_post_with_every_alert(webhook: Webhook) -> None:
    report = make_report(V_BETA, EPITOPE, QUIET)
    deliveries = send_alerts(report, AlertParams(webhook=webhook.url))
    assert [(d.channel, d.ok) for d in deliveries] == [("log", True), ("webhook", True)]
    assert len(webhook.posts) == 1
    post = webhook.posts[0]
    assert post["path"] == "/hooks/tcr"
    assert post["content_type"] == "application/json"
    body = post["body"]
    assert body == json.loads(json.dumps(alert_payload(report, report.alerts)))
    assert body["model_id"] == "run-1/0003"
    assert [a["check"] for a in body["alerts"]] == ["input.V_beta.unseen", "input.Epitope.psi"]
    first = body["alerts"][0]
    assert first["feature"] == "V_beta"
    assert first["value"] == 0.433
    assert first["threshold"] == 0.05
    assert first["excess"] == pytest.approx(0.383)
    assert first["since"] == SINCE.isoformat()
    assert body["text"].startswith("tcr-pipeline monitoring: 2 alert(s) for model run-1/0003")
    assert V_BETA.message in body["text"]


def test_the_webhook_url_can_come_from_the_environment(
    webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WEBHOOK_ENV, webhook.url)
    send_alerts(make_report(V_BETA), AlertParams())
    assert len(webhook.posts) == 1


def test_a_failing_webhook_is_recorded_not_raised_nor_retried(
    webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    webhook.status = 500
    deliveries = send_alerts(make_report(V_BETA), AlertParams(webhook=webhook.url))
    assert [(d.channel, d.ok, d.error) for d in deliveries][1] == (
        "webhook",
        False,
        "HTTP 500 Internal Server Error",
    )
    assert len(webhook.posts) == 1  # one attempt, no retry storm
    assert "alert webhook failed: HTTP 500" in caplog.text
    assert webhook.url not in caplog.text  # a URL may hold a token


def test_a_slow_webhook_times_out_quickly(webhook: Webhook) -> None:
    webhook.delay = 2.0
    started = time.perf_counter()
    deliveries = send_alerts(make_report(V_BETA), AlertParams(webhook=webhook.url, webhook_timeout_s=0.3))
    assert time.perf_counter() - started < 1.5
    assert deliveries[1].ok is False
    assert "timed out" in (deliveries[1].error or "")


def test_an_unreachable_or_bad_webhook_fails_cleanly() -> None:
    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as closed:
        port = closed.server_address[1]  # bound, then closed below: nothing listens on it
    refused = send_alerts(make_report(V_BETA), AlertParams(webhook=f"http://127.0.0.1:{port}/x"))
    assert refused[1].ok is False
    assert "ConnectionRefusedError" in (refused[1].error or "")
    not_http = send_alerts(make_report(V_BETA), AlertParams(webhook="file:///etc/passwd"))
    assert not_http[1].ok is False
    assert "http:// or https://" in (not_http[1].error or "")


def test_the_email_goes_through_the_smtp_relay_with_credentials_from_the_environment(
    smtp: Smtp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_SMTP_USER", "monitor")
    monkeypatch.setenv("LAB_SMTP_PASSWORD", "s3cret")
    email = EmailParams(
        host="127.0.0.1",
        port=smtp.port,
        sender="tcr-pipeline@lab.example",
        to=["oncall@lab.example", "pi@lab.example"],
        username_env="LAB_SMTP_USER",
        password_env="LAB_SMTP_PASSWORD",
        timeout_s=5,
    )
    deliveries = send_alerts(make_report(V_BETA, EPITOPE), AlertParams(email=email))
    assert [(d.channel, d.ok) for d in deliveries] == [("log", True), ("email", True)]
    [auth] = [c for c in smtp.commands if c.startswith("AUTH PLAIN ")]
    assert base64.b64decode(auth.split()[-1]) == b"\0monitor\0s3cret"
    assert "MAIL FROM:<tcr-pipeline@lab.example>" in smtp.commands
    assert {c for c in smtp.commands if c.startswith("RCPT")} == {
        "RCPT TO:<oncall@lab.example>",
        "RCPT TO:<pi@lab.example>",
    }
    [raw] = smtp.messages
    message = message_from_bytes(raw, policy=default_policy)
    assert message["Subject"] == "[tcr-pipeline] 2 monitoring alert(s): model run-1/0003"
    body = message.get_content()
    assert V_BETA.message in body
    assert EPITOPE.message in body


def test_without_credentials_there_is_no_login(smtp: Smtp) -> None:
    email = EmailParams(host="127.0.0.1", port=smtp.port, sender="a@lab.example", to=["b@lab.example"])
    send_alerts(make_report(V_BETA), AlertParams(email=email))
    assert not any(c.startswith("AUTH") for c in smtp.commands)
    assert len(smtp.messages) == 1


def test_an_unreachable_relay_is_recorded() -> None:
    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as closed:
        port = closed.server_address[1]
    email = EmailParams(
        host="127.0.0.1", port=port, sender="a@lab.example", to=["b@lab.example"], timeout_s=2
    )
    deliveries = send_alerts(make_report(V_BETA), AlertParams(email=email))
    assert deliveries[1].channel == "email"
    assert deliveries[1].ok is False


def test_notify_new_sends_only_checks_that_crossed_in_this_report(
    webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    params = AlertParams(webhook=webhook.url, notify="new")
    with caplog.at_level(logging.WARNING, logger="tcr_pipeline.alerts"):
        send_alerts(make_report(V_BETA, EPITOPE), params)
    assert [a["check"] for a in webhook.posts[0]["body"]["alerts"]] == ["input.Epitope.psi"]
    send_alerts(make_report(V_BETA), params)  # crossed since 06:00, already notified
    assert len(webhook.posts) == 1
    assert caplog.text.count("ALERT input.V_beta.unseen") == 2  # the log line is always written
