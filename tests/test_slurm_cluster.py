"""The slurm-local profile on a real SLURM: Dask workers run inside SLURM jobs.

Needs ``bash slurm/dev-cluster.sh start``; skipped without SLURM, failed without it when ``$CI`` is
set. Uses dask-jobqueue directly, not Prefect: this checks the profile, not the flows.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from slurm_fixtures import require_slurm

from tcr_pipeline.clusters import load_profile, task_runner_kwargs

JOBCOMP_LOG = Path("/var/log/slurm/jobcomp.log")


def _queued_job_ids() -> set[str]:
    listing = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True)
    return set(listing.stdout.split())


def _in_jobcomp_log(job_ids: set[str], timeout_s: float = 30) -> set[str]:
    """The ids among ``job_ids`` that slurmctld has logged as finished, waiting up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = JOBCOMP_LOG.read_text() if JOBCOMP_LOG.is_file() else ""
        logged = {job_id for job_id in job_ids if f"JobId={job_id} " in text}
        if logged == job_ids or time.monotonic() > deadline:
            return logged
        time.sleep(0.5)


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_node")
@pytest.mark.timeout(300)
def test_slurm_local_profile_runs_tasks_in_slurm_jobs(tmp_path: Path) -> None:
    dask_jobqueue = pytest.importorskip("dask_jobqueue")
    from distributed import Client

    profile = load_profile("slurm-local", {"log_directory": str(tmp_path / "job-logs")})
    kwargs = task_runner_kwargs(profile)
    assert kwargs["cluster_class"] == "dask_jobqueue.SLURMCluster"
    # a free dashboard port: 8787 may be taken by another cluster on this machine
    cluster_kwargs = {**kwargs["cluster_kwargs"], "scheduler_options": {"dashboard_address": ":0"}}

    with dask_jobqueue.SLURMCluster(**cluster_kwargs) as cluster, Client(cluster) as client:
        cluster.scale(jobs=2)
        client.wait_for_workers(2, timeout=180)
        submitted = {str(job.job_id) for job in cluster.workers.values()}
        # pure=False: the same function without arguments would otherwise be one task, run once
        futures = [client.submit(lambda: os.environ.get("SLURM_JOB_ID"), pure=False) for _ in range(6)]
        from_tasks = set(client.gather(futures))
        from_workers = set(client.run(lambda: os.environ.get("SLURM_JOB_ID")).values())
        queued = _queued_job_ids()

    assert len(submitted) == 2
    assert None not in from_tasks, "a task ran outside a SLURM job"
    assert from_tasks <= submitted
    assert from_workers == submitted, "each of the two jobs runs one worker"
    assert submitted <= queued, f"jobs {submitted - queued} were not in squeue while their workers ran"
    # dask-jobqueue scancels its jobs on close: they end up in the completion log as CANCELLED
    assert _in_jobcomp_log(submitted) == submitted
    logs = sorted(p.name for p in (tmp_path / "job-logs").iterdir())
    assert logs, "no job log written to the profile's log_directory"


# The skip/fail decision itself, without SLURM ------------------------------------------------


def test_require_slurm_skips_without_sinfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="SLURM is not installed"):
        require_slurm("debug")


def test_require_slurm_fails_without_sinfo_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set but SLURM is not installed"):
        require_slurm("debug")


def test_require_slurm_skips_without_the_partition(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "sinfo"
    fake.write_text("#!/bin/sh\necho 'node1 batch* idle'\n")
    fake.chmod(0o755)
    (tmp_path / "sbatch").symlink_to(fake)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin:/bin")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no partition 'debug'"):
        require_slurm("debug")
    fake.write_text("#!/bin/sh\necho 'node1 debug* drained'\n")
    with pytest.raises(pytest.skip.Exception, match=r"no idle node .*node1=drained"):
        require_slurm("debug")
    fake.write_text("#!/bin/sh\necho 'node1 debug* mixed'\n")
    require_slurm("debug")
