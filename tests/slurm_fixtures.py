"""Whether a SLURM cluster can take jobs here, as a fixture: skip without one, fail without one in CI.

Tests that need SLURM use ``@pytest.mark.usefixtures("slurm_node")`` (conftest.py loads this
module as a plugin).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tcr_pipeline.clusters import load_profile

# node states in which a node still takes a 1-core job
READY_STATES = frozenset({"idle", "mixed"})
START_HINT = "start one with `bash slurm/dev-cluster.sh start` (as root)"


def slurm_unavailable_reason(partition: str) -> str | None:
    """Why no job can start in ``partition`` now, or None when a node there is idle or mixed."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return f"SLURM is not installed (no sinfo/sbatch on PATH); {START_HINT}"
    try:
        listing = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %P %T"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return f"sinfo did not answer within 20 s; {START_HINT}"
    if listing.returncode != 0:
        return f"sinfo failed ({listing.stderr.strip() or listing.returncode}); {START_HINT}"
    states = {}
    for line in listing.stdout.splitlines():
        node, part, state = line.split()
        if part.rstrip("*") == partition:
            states[node] = state
    if not states:
        return f"SLURM has no partition {partition!r}; {START_HINT}"
    if not READY_STATES & set(states.values()):
        summary = ", ".join(f"{node}={state}" for node, state in sorted(states.items()))
        return f"no idle node in SLURM partition {partition!r} ({summary})"
    return None


def require_slurm(partition: str) -> None:
    """Skip the calling test without a usable SLURM, or fail it when ``$CI`` is set."""
    reason = slurm_unavailable_reason(partition)
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}: CI must run the slurm tests, not skip them", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_node() -> str:
    """The partition of the ``slurm-local`` profile, once a node in it takes jobs."""
    partition = str(load_profile("slurm-local").cluster_kwargs["queue"])
    require_slurm(partition)
    return partition
