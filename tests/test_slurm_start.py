"""Worker jobs that die at start-up, on a real SLURM: the search stops instead of waiting forever.

Needs ``bash slurm/dev-cluster.sh start`` and runs a real Prefect server (flow_fixtures); skipped
without SLURM, failed without it when ``$CI`` is set.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from flow_fixtures import run_search_process

from tcr_pipeline.clusters import SHIPPED_DIR
from tcr_pipeline.store import Store

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_node")]

START_TIMEOUT_S = 40


@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    ("case", "changes", "job_error"),
    [
        # a python path that does not exist on the node
        ("bad-python", {"python": "/nonexistent/python"}, "/nonexistent/python: No such file or directory"),
        # no venv activated: the job starts without the submitting shell's environment
        # (--export=NONE), so `python` is the node's own, which has no Dask
        ("no-venv", {"python": "python", "activate_venv": False}, "No module named 'distributed'"),
    ],
)
def test_worker_jobs_that_die_at_start_stop_the_search_with_their_log(
    prefect_api: str, workdir: Path, tmp_path: Path, case: str, changes: dict[str, object], job_error: str
) -> None:
    """Every job dies before its worker starts: the search stops once ``worker_start_timeout``
    has passed, with exit 1, one line naming the newest job and what its log says, no traceback,
    and the run recorded as failed."""
    profile = yaml.safe_load((SHIPPED_DIR / "slurm-local.yaml").read_text())
    for key, value in changes.items():
        if key in profile:
            profile[key] = value
        else:
            profile["cluster_kwargs"][key] = value
    profile["cluster_kwargs"]["log_directory"] = str(tmp_path / "logs")
    profile["worker_start_timeout"] = START_TIMEOUT_S
    path = tmp_path / f"{case}.yaml"
    path.write_text(yaml.safe_dump(profile))
    store = Store(tmp_path / "store")
    done, seconds = run_search_process(
        workdir, tmp_path, prefect_api,
        "--run-id", case, "--store", store.root, "--max-evals", 2, "--parallelism", 1, "--cluster", path,
        timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-4000:]
    # the timeout, plus the flow's start and the cluster's close; not "forever"
    assert START_TIMEOUT_S <= seconds < START_TIMEOUT_S + 120, f"{seconds:.0f} s"
    assert "Traceback" not in output, output[-4000:]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output[-4000:]
    (line,) = errors
    assert line.startswith(f"error: search stopped: no Dask worker connected within {START_TIMEOUT_S} s")
    assert job_error in line  # from the job's own log
    assert str(tmp_path / "logs") in line  # where the whole log is
    manifest = store.load_manifest(case)
    assert manifest is not None
    assert manifest.status == "failed"
    assert manifest.error is not None
    assert "no Dask worker connected" in manifest.error
    # the cluster closed its jobs on the way out: none of this run is left in the queue
    queued = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout
    assert f"tcr-worker-{case}" not in queued
    print(f"{case}: stopped after {seconds:.1f} s: {line}")
