"""Where a result came from: git commit, data version, package versions, hardware."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path

import yaml

PACKAGES = (
    "tcr-pipeline",
    "torch",
    "numpy",
    "pandas",
    "scikit-learn",
    "hyperopt",
    "prefect",
    "prefect-dask",
    "dask",
    "distributed",
    "dask-jobqueue",
    "dvc",
)


def git_state(cwd: Path | str = ".") -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout at ``cwd``, or ``(None, None)`` outside one."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(status.strip())


def dvc_md5(raw: Path | str, lock: Path | str = "dvc.lock") -> str | None:
    """The md5 that ``dvc.lock`` records for the raw data file (DVC's version of it), if any."""
    try:
        stages = (yaml.safe_load(Path(lock).read_text()) or {}).get("stages", {})
    except (OSError, yaml.YAMLError):
        return None
    wanted = Path(raw).as_posix()
    for stage in stages.values():
        for dep in stage.get("deps", []):
            if Path(dep.get("path", "")).as_posix() == wanted:
                return dep.get("md5")
    return None


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape a result."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def gpu_name() -> str | None:
    """The first CUDA device's name, or None."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
