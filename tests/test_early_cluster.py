"""The search's Dask cluster starting before the flow that runs its trials (flows.runner:
EarlyDaskTaskRunner, start_task_runner, cluster_ahead), on a real LocalCluster with real flows."""

from __future__ import annotations

import os
import time

import psutil
from distributed.core import Status
from prefect import flow, task
from prefect.context import FlowRunContext

from flows.runner import cluster_ahead, early_start_pays, make_task_runner, start_task_runner
from tcr_pipeline.clusters import load_profile

START_S = 120  # the cluster's start on a loaded two-core machine


@task
def worker_pid(i: int) -> int:
    time.sleep(0.2)  # keeps one worker busy: the next task goes to the other
    return os.getpid()


@flow
def two_pids() -> tuple[str, set[int]]:
    context = FlowRunContext.get()
    assert context is not None
    futures = [worker_pid.submit(i) for i in range(4)]  # the first submit makes the client
    address = context.task_runner._cluster.scheduler_address  # type: ignore[attr-defined]
    return address, {f.result() for f in futures}


def _gone(pids: set[int], within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_the_flow_runs_on_the_cluster_started_before_it_and_closes_it(prefect_api: str) -> None:
    runner = start_task_runner("local", 2, early=True)
    assert runner is not None
    assert runner._start is not None
    try:
        started = runner._start.future.result(timeout=START_S)  # up before the flow begins
        address, pids = two_pids.with_options(task_runner=runner)()  # type: ignore[arg-type]
        assert address == started.scheduler_address  # adopted, no second cluster
        assert pids
        assert os.getpid() not in pids
        assert started.status == Status.closed  # the runner closed it on the flow's exit
        assert _gone(pids), "worker processes outlived the flow"
    finally:
        runner.discard()


def test_a_started_cluster_no_flow_adopted_is_closed() -> None:
    with cluster_ahead("local", 1, "early", early=True):
        assert make_task_runner("local", 2, run_id="early")._start is None  # other size: its own
        assert make_task_runner("local", 1, run_id="other")._start is None  # other run: its own
        ahead = make_task_runner("local", 1, run_id="early")
        assert ahead._start is not None  # the one started ahead
        assert make_task_runner("local", 1, run_id="early")._start is None  # handed out once
        cluster = ahead._start.future.result(timeout=START_S)
        pids = {nanny.process.pid for nanny in cluster.workers.values()}
        assert pids
    assert cluster.status == Status.closed  # nobody adopted it: closed on leaving the block
    assert _gone(pids), "worker processes outlived the block"


def test_the_cluster_starts_early_only_with_a_core_for_each_worker_and_the_flow() -> None:
    cores = len(os.sched_getaffinity(0))
    local = load_profile("local")
    assert early_start_pays(local, cores - 2)
    assert not early_start_pays(local, cores - 1)  # e.g. 2 workers on 2 cores: with the trials
    assert not early_start_pays(load_profile("slurm-local"), 1)  # its jobs go with the trials
    assert start_task_runner("local", cores - 1) is None
