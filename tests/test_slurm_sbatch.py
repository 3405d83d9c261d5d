"""slurm/run-pipeline.sbatch as shipped, on the dev SLURM: it runs without overrides, logs under
logs/, and a SIGTERM requeues the job, which resumes the same run.

Needs ``bash slurm/dev-cluster.sh start``; skipped without SLURM, failed without it when ``$CI``
is set. The job runs the real CLI with a temporary Prefect server inside the job.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from flow_fixtures import small_search_params

from tcr_pipeline.store import Store

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_node")]

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "slurm" / "run-pipeline.sbatch"


def test_the_job_logs_under_an_ignored_folder() -> None:
    assert "#SBATCH -o logs/tcr-pipeline-%j.out" in SBATCH.read_text().splitlines()
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "logs/tcr-pipeline-123.out"], cwd=ROOT, capture_output=True
    )
    assert ignored.returncode == 0, "logs/ is not ignored by git"
    assert (ROOT / "logs").is_dir()  # SLURM does not create it: a job writing there would fail


def _job(job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (empty once SLURM has forgotten the job)."""
    done = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True)
    return dict(re.findall(r"(\w+)=(\S*)", done.stdout)) if done.returncode == 0 else {}


def _wait_for(what: str, condition: Callable[[], bool], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            pytest.fail(f"{what} within {timeout:.0f} s; job log:\n{tail}")
        time.sleep(1)


@pytest.mark.timeout(600)
def test_the_shipped_script_runs_and_a_sigterm_requeues_and_resumes(small_csv: Path, tmp_path: Path) -> None:
    # long enough trials (≈ 5 s each) that the SIGTERM arrives while one is running
    params = small_search_params(small_csv, n_startup=1, top_k=1, lr=(0.005, 0.05), epochs={"choice": [600]})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TCR_"))}
    env |= {  # sbatch passes the environment on (--export=ALL)
        "TCR_STORE": str(tmp_path / "store"),
        "TCR_MAX_EVALS": "3",
        "TCR_PARALLELISM": "1",
        "PREFECT_HOME": str(tmp_path / "prefect"),  # the job's temporary server, not ~/.prefect
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    submitted = subprocess.run(
        ["sbatch", "--parsable", str(SBATCH), "--data", str(small_csv),
         "--params", str(tmp_path / "params.yaml"), "--prepared", str(tmp_path / "prepared")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr  # no partition or GPU the dev SLURM lacks
    job = submitted.stdout.strip().split(";")[0]
    log = ROOT / "logs" / f"tcr-pipeline-{job}.out"
    store = Store(tmp_path / "store")
    run_id = f"slurm-{job}"
    try:
        _wait_for("no trial finished", lambda: any(t.done for t in store.list_trials(run_id)), 300, log)
        first = {t.trial_id: t.attempt for t in store.list_trials(run_id) if t.done}
        # what SLURM sends before the walltime (--signal=B:TERM@300), here by hand
        subprocess.run(["scancel", "--signal=TERM", "--batch", job], check=True, timeout=30)
        _wait_for("the job was not requeued", lambda: _job(job).get("Restarts") == "1", 120, log)
        # SLURM holds a requeued job for cred_expire + 1 s (dev-cluster.sh: 10 s; default 120 s) while
        # the node forgets the killed batch's credential. Forcing StartTime=now here raced that
        # window: the node refused the launch ("Job credential revoked") and the job ended FAILED.
        _wait_for(
            "the requeued job did not complete",
            lambda: _job(job).get("JobState") in {"COMPLETED", "FAILED", "CANCELLED", ""},
            400, log,
        )  # fmt: skip
        assert _job(job).get("JobState", "COMPLETED") == "COMPLETED", log.read_text()[-3000:]
    finally:
        subprocess.run(["scancel", job], capture_output=True, timeout=30)
    text = log.read_text()
    assert f"tcr-pipeline run {run_id} in job {job} (start 0)" in text
    assert f"SIGTERM: stopping run {run_id}" in text
    assert f"requeueing job {job}: it resumes run {run_id}" in text
    assert f"tcr-pipeline run {run_id} in job {job} (start 1)" in text
    manifest = store.load_manifest(run_id)
    assert manifest is not None
    assert manifest.status == "completed"
    trials = store.list_trials(run_id)
    assert sorted(t.trial_id for t in trials if t.done) == [0, 1, 2]
    for trial_id, attempt in first.items():  # what finished before the SIGTERM was kept
        assert trials[trial_id].attempt == attempt
    log.unlink()
