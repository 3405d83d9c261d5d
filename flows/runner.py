"""Build the Dask task runner of a search from a named cluster profile."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from distributed import Worker, WorkerPlugin
from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from prefect_dask import DaskTaskRunner

from tcr_pipeline.clusters import (
    ClusterProfile,
    cap_parallelism,
    check_api_url,
    load_profile,
    task_runner_kwargs,
)


def share_api_url() -> None:
    """Make Dask worker processes report to this process's Prefect API.

    Workers read ``PREFECT_API_URL`` from the environment they start with. When it is unset,
    this process talks to a server set in its Prefect settings (a profile, a test harness) or
    to a temporary server it started itself; without the URL each worker process would start a
    temporary server of its own on the same SQLite file ("database is locked"). On a cluster,
    set ``PREFECT_API_URL`` to a real server instead (see slurm/README.md).
    """
    if os.environ.get("PREFECT_API_URL"):
        return
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        server = SubprocessASGIServer._instances.get(None)
        url = server.api_url if server is not None and server.running else None
    if url:
        os.environ["PREFECT_API_URL"] = url


class QuietShutdown(WorkerPlugin):
    """Drop the traceback a closing worker logs when its last heartbeat meets its own closed comm.

    When a search is interrupted the cluster closes while trials are running; distributed then
    often logs "Failed to communicate with scheduler during heartbeat" with a traceback from a
    worker that is already shutting down (a race inside distributed, harmless). Only that record,
    and only from a worker that is closing, is dropped.
    """

    name = "tcr-pipeline-quiet-shutdown"

    def setup(self, worker: Worker) -> None:
        logging.getLogger("distributed.worker").addFilter(_ClosingHeartbeatFilter(worker))


class _ClosingHeartbeatFilter(logging.Filter):
    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        from distributed.core import Status

        closing = self.worker.status in (Status.closing, Status.closing_gracefully, Status.closed)
        return not (closing and record.getMessage().startswith("Failed to communicate with scheduler"))


def check_cluster(cluster: str, overrides: dict[str, Any] | None = None) -> ClusterProfile:
    """Profile ``cluster``, refused (InputError) when its workers could not reach this process's
    Prefect API: a loopback URL for workers on other nodes. Starts no server, submits nothing."""
    share_api_url()  # first: a SLURM profile exports PREFECT_API_URL into its job scripts
    profile = load_profile(cluster, overrides)
    check_api_url(profile, os.environ.get("PREFECT_API_URL"))
    return profile


def plan_parallelism(cluster: str, parallelism: int, overrides: dict[str, Any] | None = None) -> int:
    """Trials in flight on profile ``cluster``: ``parallelism`` capped by the profile's maximum
    (with a warning), after :func:`check_cluster`."""
    capped, warning = cap_parallelism(check_cluster(cluster, overrides), parallelism)
    if warning:
        try:
            get_run_logger().warning(warning)
        except MissingContextError:
            print(f"warning: {warning}", file=sys.stderr)
    return capped


def make_task_runner(
    cluster: str, parallelism: int, overrides: dict[str, Any] | None = None, run_id: str | None = None
) -> DaskTaskRunner:
    """A ``DaskTaskRunner`` for profile ``cluster`` sized for ``parallelism`` trials in flight
    (at most the profile's maximum); SLURM jobs carry ``run_id`` in their name and comment."""
    profile = check_cluster(cluster, overrides)
    parallelism, _ = cap_parallelism(profile, parallelism)
    kwargs = task_runner_kwargs(profile, run_id=run_id)
    # a free port for the Dask dashboard unless the profile names one (Prefect logs its URL)
    cluster_kwargs = kwargs["cluster_kwargs"]
    if profile.kind == "local":
        cluster_kwargs.setdefault("dashboard_address", ":0")
    else:
        cluster_kwargs["scheduler_options"] = {
            "dashboard_address": ":0",
            **cluster_kwargs.get("scheduler_options", {}),
        }
    if profile.kind == "local":
        kwargs["cluster_kwargs"] = {
            "plugins": {QuietShutdown()},
            **kwargs["cluster_kwargs"],
            "n_workers": parallelism,
        }
        kwargs.pop("adapt_kwargs", None)
    elif kwargs.get("adapt_kwargs"):
        kwargs["adapt_kwargs"] = {**kwargs["adapt_kwargs"], "maximum": parallelism}
    return DaskTaskRunner(**kwargs)
