"""Build the Dask task runner of a search from a named cluster profile."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from multiprocessing import resource_tracker
from typing import Any, Self

from distributed import Worker, WorkerPlugin
from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError
from prefect_dask import DaskTaskRunner

from tcr_pipeline.clusters import (
    ClusterProfile,
    cap_parallelism,
    check_api_url,
    load_profile,
    task_runner_kwargs,
    worker_start_failure,
)
from tcr_pipeline.errors import InfrastructureError, quiet_one_line_errors


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
    and only from a worker that is closing, is dropped, with any other comm error carrying a
    traceback from a closing worker. A local worker process ends quietly on SIGINT: the search
    command receives Ctrl-C itself and shuts the cluster down. A task's one-line error (bad input, a
    full disk) is not logged with its traceback: the command prints that line itself.
    """

    name = "tcr-pipeline-quiet-shutdown"

    def setup(self, worker: Worker) -> None:
        for name in ("distributed.worker", "distributed.batched", "distributed.core", "distributed.comm"):
            logging.getLogger(name).addFilter(_ClosingHeartbeatFilter(worker))
        quiet_one_line_errors()  # a task's InputError or full disk: the command prints its one line
        # Ctrl-C in a terminal reaches the whole process group, local workers included, and the
        # nanny stops a worker with SIGINT too; asyncio's handler then prints a KeyboardInterrupt
        # traceback of the worker's own (seen under load). The command that owns the cluster
        # handles the interrupt; the worker just ends, at once and quietly (its trial reruns).
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, _exit_quietly)
            # a worker of a cluster started in a thread (EarlyDaskTaskRunner) starts with SIGINT
            # blocked, so that Ctrl-C during its imports prints no traceback; pending, it ends it now
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _exit_quietly(signum: int, frame: object) -> None:
    os._exit(128 + signum)


class _ClosingHeartbeatFilter(logging.Filter):
    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        from distributed.core import Status

        closing = self.worker.status in (Status.closing, Status.closing_gracefully, Status.closed)
        heartbeat = record.getMessage().startswith("Failed to communicate with scheduler")
        return not (closing and (heartbeat or record.exc_info is not None))


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


class EarlyDaskTaskRunner(DaskTaskRunner):
    """A ``DaskTaskRunner`` whose cluster can start before the flow that runs on it.

    :meth:`start_cluster` creates the cluster (for ``local``: the scheduler and the worker
    processes, their spawn and imports; for SLURM: the scheduler) in a thread while the calling
    flow goes on (prepared data, run manifest, baseline). When Prefect enters the runner (a copy
    of it: :meth:`duplicate` shares the start), its first ``client`` waits for that start and
    adopts the cluster: from then on the runner owns it as if it had created it (adapts it, closes
    it on exit). :meth:`discard` closes a started cluster that no runner adopted (the flow stopped
    before its trials). Without :meth:`start_cluster` the first ``client`` starts the cluster
    the same way and waits for it, as ``DaskTaskRunner`` does.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start: _ClusterStart | None = None
        self.key = ""  # what made it (make_task_runner's arguments)

    def start_cluster(self) -> None:
        """Begin creating the cluster in a thread; returns at once. (Its worker processes start
        with SIGINT blocked until they can take it, so that Ctrl-C prints no traceback of theirs.)"""
        if self._start is None:
            name = getattr(self.resolved_cluster_class or self.cluster_class, "__name__", "LocalCluster")
            self.logger.info("Creating a new Dask cluster with `%s`", name)
            self._start = _ClusterStart(
                self.resolved_cluster_class or self.cluster_class, self.cluster_kwargs
            )

    def __getstate__(self) -> dict[str, Any]:
        # the flow, runner included, travels with each task to the workers: without the start
        return {**self.__dict__, "_start": None}

    def duplicate(self) -> Self:
        copy = super().duplicate()
        copy._start = self._start
        return copy

    @property
    def client(self) -> Any:
        if self._client is None and self._cluster is None and self.address is None:
            self.start_cluster()  # now, if not before: its workers start as start_cluster says
            assert self._start is not None
            try:
                cluster = self._start.adopt()
            except BaseException:  # interrupted while it waits, or the start failed
                self._start.discard()
                raise
            if cluster is not None:
                self._exit_stack.enter_context(cluster)  # closed with the runner, as its own
                self._cluster = cluster
        return DaskTaskRunner.client.fget(self)  # type: ignore[attr-defined]

    def discard(self) -> None:
        """Close the started cluster unless a runner adopted it (waits for its start to end)."""
        if self._start is not None:
            self._start.discard()


class _ClusterStart:
    """One cluster being created in a daemon thread, adopted by a runner or discarded."""

    def __init__(self, cluster_class: Any, cluster_kwargs: dict[str, Any]) -> None:
        import distributed

        self.cluster_class = cluster_class or distributed.LocalCluster
        self.cluster_kwargs = cluster_kwargs
        self.future: Future[Any] = Future()
        self.adopted = False
        self.lock = threading.Lock()
        thread = threading.Thread(target=self._create, name="tcr-cluster-start", daemon=True)
        thread.start()

    def _create(self) -> None:
        # Ctrl-C goes to the main thread, never to this one nor to the threads the cluster starts
        # here, nor to the worker processes they spawn until the workers can take it (QuietShutdown).
        # multiprocessing's resource tracker first: starting it unblocks SIGINT in the thread
        # that starts it (the cluster's loop thread, else)
        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            self.future.set_result(self.cluster_class(**self.cluster_kwargs))
        except BaseException as exc:  # handed to whoever adopts or discards the cluster
            self.future.set_exception(exc)

    def adopt(self) -> Any:
        """The started cluster, once (it raises what the start raised); None after the first call.
        Interrupted while it waits, the cluster stays to be discarded."""
        cluster = self.future.result()
        with self.lock:
            if self.adopted:
                return None
            self.adopted = True
        return cluster

    def discard(self) -> None:
        with self.lock:
            if self.adopted:
                return
            self.adopted = True
        try:
            cluster = self.future.result()
        except Exception:  # the start failed: nothing to close
            return
        cluster.close()


# runners whose cluster :func:`cluster_ahead` started, by the arguments that make them
_AHEAD: dict[str, EarlyDaskTaskRunner] = {}


def _runner_key(profile: ClusterProfile, parallelism: int, run_id: str | None) -> str:
    return json.dumps([profile.model_dump(mode="json"), parallelism, run_id], sort_keys=True, default=str)


def early_start_pays(profile: ClusterProfile, parallelism: int) -> bool:
    """Whether starting the cluster beside the flow's own work can shorten the way to the first
    trial: a ``local`` cluster on a machine with a core for each starting worker process and two
    more, for the flow and the scheduler (bench/README.md: on two busy cores the overlap only made
    both sides slower).
    A SLURM cluster's start here is its scheduler only; its jobs are submitted when it is adopted."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return profile.kind == "local" and cores >= parallelism + 2


def start_task_runner(
    cluster: str,
    parallelism: int,
    overrides: dict[str, Any] | None = None,
    run_id: str | None = None,
    early: bool | None = None,
) -> EarlyDaskTaskRunner | None:
    """:func:`make_task_runner`'s runner with its cluster starting now, in a thread (see
    :class:`EarlyDaskTaskRunner`), when ``early`` (None: when :func:`early_start_pays`);
    otherwise None: make the runner when the trials start (its cluster starts then)."""
    profile = check_cluster(cluster, overrides)
    if not (early_start_pays(profile, parallelism) if early is None else early):
        return None
    runner = make_task_runner(cluster, parallelism, overrides, run_id)
    runner.start_cluster()
    return runner


@contextmanager
def cluster_ahead(
    cluster: str, parallelism: int, run_id: str | None, early: bool | None = None
) -> Iterator[None]:
    """Within the block the cluster of ``make_task_runner(cluster, parallelism, run_id=run_id)``
    starts (:func:`start_task_runner`), and the first such call in this process gets that runner;
    on leaving, a started cluster that no flow adopted is closed. For a flow that starts the
    search later (``pipeline``: while the data is prepared)."""
    runner = start_task_runner(cluster, parallelism, run_id=run_id, early=early)
    key = runner.key if runner is not None else ""
    if runner is not None:
        _AHEAD[key] = runner
    try:
        yield
    finally:
        if runner is not None:
            _AHEAD.pop(key, None)
            runner.discard()


def make_task_runner(
    cluster: str, parallelism: int, overrides: dict[str, Any] | None = None, run_id: str | None = None
) -> EarlyDaskTaskRunner:
    """A ``DaskTaskRunner`` for profile ``cluster`` sized for ``parallelism`` trials in flight
    (at most the profile's maximum); SLURM jobs carry ``run_id`` in their name and comment.
    Within :func:`cluster_ahead` with the same arguments: the runner it started."""
    profile = check_cluster(cluster, overrides)
    parallelism, _ = cap_parallelism(profile, parallelism)
    key = _runner_key(profile, parallelism, run_id)
    if key in _AHEAD:
        return _AHEAD.pop(key)
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
    runner = EarlyDaskTaskRunner(**kwargs)
    runner.key = key
    return runner


class WorkerStartWatch:
    """Stops a search whose Dask cluster never gets a worker: the fail-fast canary.

    A SLURM job that dies at start-up (a bad ``python`` path, a prologue that fails) never
    connects, and the search would wait for it forever. :meth:`check`, called while the search
    waits, raises :class:`InfrastructureError` once ``timeout`` seconds have passed without any
    worker, naming the newest worker job and the tail of its log. After the first worker has
    connected it never fires again: losing workers later is what the resubmissions handle.
    """

    def __init__(self, profile_name: str, timeout: float) -> None:
        self.profile_name = profile_name
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.connected = False

    def check(self) -> None:
        """Raise when no worker has connected before the deadline (the flow's Dask task runner)."""
        if self.connected:
            return
        context = FlowRunContext.get()
        runner = context.task_runner if context is not None else None
        client = getattr(runner, "_client", None)
        if client is None or client.nthreads():
            self.connected = True  # not on a Dask cluster, or a worker is there
            return
        if time.monotonic() < self.deadline:
            return
        job_id, log_directory = _newest_job(getattr(runner, "_cluster", None))
        message = worker_start_failure(self.profile_name, self.timeout, job_id, log_directory)
        raise InfrastructureError(message)


def _newest_job(cluster: Any) -> tuple[str | None, str | None]:
    """Id and log directory of the newest job ``cluster`` submitted, as plain strings.

    No reference to a job object may outlive this call: SpecCluster's close asserts that every
    job it ever created and that is still alive has closed, and dask-jobqueue's ``Job.close``
    never marks one so (a job object kept by an exception's traceback fails the close).
    """
    newest: tuple[int, str | None] | None = None
    for job in list(getattr(cluster, "workers", {}).values()):
        job_id = str(getattr(job, "job_id", None) or "")
        if job_id.isdigit() and (newest is None or int(job_id) > newest[0]):
            newest = (int(job_id), getattr(job, "log_directory", None))
    return (None, None) if newest is None else (str(newest[0]), newest[1])
