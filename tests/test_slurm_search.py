"""The search on a real SLURM (slurm-local profile): job ids, a cancelled worker, walltime retirement.

Needs ``bash slurm/dev-cluster.sh start`` and runs a real Prefect server (flow_fixtures); skipped
without SLURM, failed without it when ``$CI`` is set.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tcr_pipeline.store import Store

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_node")]

JOBCOMP_LOG = Path("/var/log/slurm/jobcomp.log")


def _params_file(workdir: Path, name: str, epochs: int, max_evals: int) -> Path:
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["search"]["max_evals"] = max_evals
    params["search"]["cluster"] = "slurm-local"
    params["search"]["space"]["epochs"] = {"choice": [epochs]}
    params["train"]["model"] = {"kind": "medium", "max_width": 64}
    path = workdir / name
    path.write_text(yaml.safe_dump(params))
    return path


def _known_jobs(job_ids: set[str], timeout_s: float = 60) -> set[str]:
    """The ids among ``job_ids`` that SLURM knows: queued now or in the job completion log."""
    deadline = time.monotonic() + timeout_s
    while True:
        queued = set(
            subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
        )
        logged = JOBCOMP_LOG.read_text() if JOBCOMP_LOG.is_file() else ""
        known = {j for j in job_ids if j in queued or f"JobId={j} " in logged}
        if known == job_ids or time.monotonic() > deadline:
            return known
        time.sleep(1)


def _search(
    workdir: Path, store: Store, run_id: str, params: Path, parallelism: int = 2, **extra: Any
) -> dict[str, Any]:
    from flows.search import search_flow

    return search_flow(
        run_id=run_id, store=str(store.root), prepared_dir=str(workdir / "prepared"),
        params_file=str(params), parallelism=parallelism, **extra,
    )  # fmt: skip


def _assert_complete(store: Store, run_id: str, max_evals: int) -> list:
    trials = store.list_trials(run_id)
    assert sorted(t.trial_id for t in trials) == list(range(max_evals))  # none lost, none twice
    assert all(t.done for t in trials)
    return trials


@pytest.mark.timeout(600)
def test_search_trials_run_in_real_slurm_jobs(prefect_api: str, workdir: Path) -> None:
    store = Store(workdir / "store-slurm")
    params = _params_file(workdir, "params-slurm.yaml", epochs=2, max_evals=8)
    _search(workdir, store, "slurm-8", params, parallelism=3)  # slurm-local allows 2 workers at most
    trials = _assert_complete(store, "slurm-8", 8)
    assert all(t.status == "ok" for t in trials)
    job_ids = {t.hardware.slurm_job_id for t in trials}
    assert None not in job_ids, "a trial ran outside SLURM"
    assert _known_jobs(job_ids) == job_ids  # real jobs, in squeue or slurmctld's completion log
    assert store.load_manifest("slurm-8").parallelism == 2  # capped by the profile, not 3
    # every job says whose search it ran: its name carries the run id (squeue, sacct, jobcomp)
    deadline = time.monotonic() + 60  # a cancelled job reaches the completion log when it has ended
    while True:
        logged = [x for x in JOBCOMP_LOG.read_text().splitlines() if x.split(" ", 1)[0][6:] in job_ids]
        if len(logged) >= len(job_ids) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(logged) == len(job_ids), logged
    assert all(" Name=tcr-worker-slurm-8 " in line for line in logged), logged


@pytest.mark.timeout(600)
def test_scancel_of_a_worker_mid_trial_loses_no_trial(prefect_api: str, workdir: Path) -> None:
    store = Store(workdir / "store-scancel")
    params = _params_file(workdir, "params-scancel.yaml", epochs=40, max_evals=4)
    cancelled: list[str] = []

    def cancel_first_running_trial() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for attempt in store.trial_attempts("scancel"):
                job = attempt.hardware.slurm_job_id
                if attempt.status == "running" and job:
                    time.sleep(1.0)  # well inside the trial's training
                    subprocess.run(["scancel", job], check=True)
                    cancelled.append(job)
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=cancel_first_running_trial, daemon=True)
    killer.start()
    _search(workdir, store, "scancel", params)
    killer.join(timeout=5)
    assert cancelled, "no running trial was seen to cancel"
    trials = _assert_complete(store, "scancel", 4)
    assert all(t.status == "ok" for t in trials)
    attempts = list(store.trial_attempts("scancel"))
    killed = [a for a in attempts if a.hardware.slurm_job_id == cancelled[0] and a.status == "running"]
    assert killed, "the cancelled job left no interrupted attempt"
    rerun = next(t for t in trials if t.trial_id == killed[0].trial_id)
    assert rerun.hardware.slurm_job_id != cancelled[0]  # the trial ran again, in another job


@pytest.mark.timeout(900)
def test_workers_retire_before_walltime_and_are_replaced(prefect_api: str, workdir: Path) -> None:
    """Jobs of one minute walltime whose workers retire after 35-45 s: the search still finishes.

    The search must outlast a job's walltime on any machine, so its length is set by work, not
    time: 12 trials of 200 epochs are ≈ 100 s of training for two workers on an idle 2-core
    machine (25-epoch trials finished the search in 38 s there, before any job's walltime)."""
    store = Store(workdir / "store-walltime")
    params = _params_file(workdir, "params-walltime.yaml", epochs=200, max_evals=12)
    started = time.monotonic()
    _search(
        workdir, store, "walltime", params,
        cluster_overrides={"walltime": "00:01:00",
                           "worker_extra_args": ["--lifetime", "35s", "--lifetime-stagger", "10s"]},
    )  # fmt: skip
    elapsed = time.monotonic() - started
    trials = _assert_complete(store, "walltime", 12)
    assert all(t.status == "ok" for t in trials)
    jobs = {t.hardware.slurm_job_id for t in trials}
    assert None not in jobs
    # more jobs than workers in flight: retired workers were replaced by new jobs
    assert elapsed > 60
    assert len(jobs) > 2, f"expected replacement jobs over {elapsed:.0f} s, saw {sorted(jobs)}"
