"""The temporary Prefect server a flow command starts when none is configured, and Prefect's logs
of errors the command reports in one line itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tcr_pipeline.errors import quiet_one_line_errors


@contextmanager
def prefect_server() -> Iterator[None]:
    """A temporary Prefect server for a flow command when none is configured, in its own session.

    Prefect would start one itself, but as a child in our process group: Ctrl-C in a terminal
    reaches every process of the group, the server dies first, and the interrupted flow then
    retries its state updates against it for minutes. Here the server runs in a new session, so
    only this process sees the signal; it stops the flow (run recorded as ``interrupted``), the
    Dask cluster, and then the server.
    """
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    quiet_one_line_errors()
    settings = get_current_settings()
    if os.environ.get("PREFECT_API_URL") or settings.api.url:  # a server is configured: use it
        yield
        return
    import httpx
    import prefect

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    server_env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
        "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "error", "--lifespan", "on",
    ]  # fmt: skip
    env = {**os.environ, **server_env, **settings.to_environment_variables(exclude_unset=True)}
    server = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_die_with_parent)
    try:
        timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(
                    f"The temporary Prefect API server exited with status {server.returncode} on start."
                )
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Timed out after {timeout:.0f} s while attempting to connect to the temporary "
                    "Prefect API server."
                )
            time.sleep(0.2)
        os.environ["PREFECT_API_URL"] = url  # Dask worker processes report to the same server
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield
            finally:
                _drain_prefect_services()
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _die_with_parent() -> None:
    """In the server process: get SIGTERM when this process dies, even by SIGKILL (Linux only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _drain_prefect_services() -> None:
    """Send Prefect's queued logs and events while the server is still up (as its test harness does)."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        try:
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        except RuntimeError:  # never started
            pass
        drained = EventsWorker.drain_all()
        if inspect.isawaitable(drained):
            await drained

    run_coro_as_sync(drain())
