"""Cluster profiles: where the search's Dask workers run (a local cluster or SLURM jobs), as YAML files.

A profile is data, not code: ``tcr_pipeline/profiles/<name>.yaml`` ships ``local``, ``slurm-local``,
``slurm-cpu`` and ``slurm-gpu``; a lab adds its own in ``$TCR_PROFILES`` or ``./profiles/``, and those
shadow the shipped ones of the same name. :func:`task_runner_kwargs` turns a profile into the keyword
arguments of ``prefect_dask.DaskTaskRunner``; this module itself never imports Prefect or Dask (only
:func:`render_job_script` imports dask-jobqueue, when called).

Resolution order of every cluster keyword: CLI argument > deployment parameter > profile > the
shipped default. The caller merges the first two into ``overrides``.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tcr_pipeline.errors import InputError

PROFILES_ENV = "TCR_PROFILES"
SHIPPED_DIR = Path(__file__).with_name("profiles")
LOCAL_DIR = Path("profiles")
CLUSTER_CLASSES = {"local": "distributed.LocalCluster", "slurm": "dask_jobqueue.SLURMCluster"}
# Variables a SLURM job needs from the submitting shell: workers must report to the same Prefect
# server (without it each worker starts its own temporary one) and write to the same store.
DEFAULT_EXPORT_ENV = ("PREFECT_API_URL", "TCR_STORE")
# SLURMCluster keywords that configure the scheduler or the cluster object, not the job script.
_CLUSTER_ONLY_KWARGS = frozenset(
    {
        "n_workers",
        "job_cls",
        "loop",
        "security",
        "shared_temp_directory",
        "silence_logs",
        "name",
        "asynchronous",
        "dashboard_address",
        "host",
        "scheduler_options",
        "scheduler_cls",
    }
)
# Seconds a search waits for its first Dask worker before it stops (a job that dies at start-up
# would otherwise leave it waiting forever). Long enough for a queue that is busy but moving.
DEFAULT_WORKER_START_TIMEOUT = 900.0
# What SLURMCluster.job_script() puts in before the scheduler has started.
_SCHEDULER_PLACEHOLDER = "tcp://<insert-scheduler-address-here>:8786"


class AdaptParams(BaseModel):
    """Bounds of adaptive scaling, in Dask workers (a SLURM job runs ``processes`` of them).

    Workers, not jobs, for every kind of cluster: the unit of ``cluster.adapt(minimum, maximum)``
    and of "trials in flight" when each worker runs one thread.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    minimum: int = Field(0, ge=0)
    maximum: int = Field(ge=1)
    # how often the scheduler re-plans, e.g. "10s" (Dask's default: 1s)
    interval: str | None = None
    # consecutive idle checks before a worker is released (Dask's default: 3)
    wait_count: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _minimum_not_above_maximum(self) -> AdaptParams:
        if self.minimum > self.maximum:
            raise ValueError(f"minimum ({self.minimum}) is above maximum ({self.maximum})")
        return self


class ClusterProfile(BaseModel):
    """One cluster profile: the Dask cluster class, its keyword arguments and its scaling."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["local", "slurm"]
    description: str = ""
    cluster_kwargs: dict[str, Any] = Field(default_factory=dict)
    adapt: AdaptParams | None = None
    # environment variables copied into each SLURM job script, when set in the submitting process
    export_env: tuple[str, ...] = DEFAULT_EXPORT_ENV
    # the workers run on the submitting host (a local cluster, a single-node SLURM), so they reach
    # a Prefect API on the loopback interface; on a real cluster they do not
    same_host: bool = False
    # the job script activates the venv the submitting process runs in (first line of the
    # prologue), and `python` is the one on its PATH: for jobs that see the same filesystem path
    # and start without the login environment (`--export=NONE`)
    activate_venv: bool = False
    # seconds the search waits for its first Dask worker before it stops and shows the newest
    # worker job's log (a bad `python` or prologue kills every job at start-up); null: forever
    worker_start_timeout: float | None = Field(DEFAULT_WORKER_START_TIMEOUT, gt=0)
    source: Path | None = None  # the YAML file it was read from

    @model_validator(mode="after")
    def _check_cluster_kwargs(self) -> ClusterProfile:
        if "asynchronous" in self.cluster_kwargs:
            raise ValueError("cluster_kwargs cannot set 'asynchronous' (the task runner manages it)")
        if self.kind == "slurm":
            missing = [key for key in ("cores", "memory") if self.cluster_kwargs.get(key) is None]
            if missing:
                raise ValueError(f"a slurm profile needs cluster_kwargs {' and '.join(missing)}")
        return self

    @property
    def cluster_class(self) -> str:
        """Qualified name of the Dask cluster class."""
        return CLUSTER_CLASSES[self.kind]

    @property
    def on_this_host(self) -> bool:
        """Whether every worker runs on the submitting host (a local cluster, or ``same_host``)."""
        return self.kind == "local" or self.same_host


def _is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def check_api_url(profile: ClusterProfile, api_url: str | None) -> None:
    """Refuse a Prefect API that the profile's workers cannot reach, before any job is submitted.

    SLURM workers of a profile that is not ``same_host`` run on other nodes: a loopback URL (the
    temporary server Prefect starts without ``PREFECT_API_URL``, or a server bound to 127.0.0.1)
    would be written into their job scripts, and every trial would fail there.
    """
    if profile.on_this_host:
        return
    if not api_url:
        raise InputError(
            f"cluster profile {profile.name!r} runs workers on other nodes, and PREFECT_API_URL is not "
            "set: start a Prefect server the compute nodes reach and set PREFECT_API_URL "
            "(slurm/README.md), or set `same_host: true` in a profile whose jobs run on this host"
        )
    if _is_loopback(api_url):
        raise InputError(
            f"cluster profile {profile.name!r} runs workers on other nodes, but the Prefect API "
            f"{api_url} is a loopback address they cannot reach: set PREFECT_API_URL to an address "
            "of this host the compute nodes reach (slurm/README.md), or set `same_host: true` in a "
            "profile whose jobs run on this host"
        )


def cap_parallelism(profile: ClusterProfile, parallelism: int) -> tuple[int, str | None]:
    """Trials in flight: ``parallelism``, at most the profile's ``adapt.maximum`` workers.

    Returns the value to use and, when it was capped, a one-line warning saying so. A profile
    without ``adapt`` (the local one) has no cap: its workers are started for ``parallelism``.
    """
    if profile.adapt is None or parallelism <= profile.adapt.maximum:
        return parallelism, None
    maximum = profile.adapt.maximum
    return maximum, (
        f"parallelism {parallelism} is above the {maximum} workers cluster profile {profile.name!r} "
        f"allows at most (adapt.maximum): {maximum} trials in flight"
    )


def job_label(run_id: str) -> str:
    """The run id as it may appear in a SLURM job name: letters, digits, ``.``, ``_``, ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)[:64]


def _search_dirs() -> list[Path]:
    """Profile directories, first match wins: ``$TCR_PROFILES`` (may list several), ./profiles, shipped."""
    dirs = [Path(d) for d in os.environ.get(PROFILES_ENV, "").split(os.pathsep) if d]
    return [*dirs, LOCAL_DIR, SHIPPED_DIR]


def _profile_files() -> dict[str, Path]:
    """Every profile name visible from here, mapped to the file that wins."""
    found: dict[str, Path] = {}
    for directory in _search_dirs():
        if not directory.is_dir():
            continue
        for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
            found.setdefault(path.stem, path)
    return found


def list_profiles() -> list[str]:
    """Names of the shipped profiles and of the user profiles in ``$TCR_PROFILES`` or ./profiles."""
    return sorted(_profile_files())


def _is_path(name_or_path: str) -> bool:
    return "/" in name_or_path or os.sep in name_or_path or name_or_path.endswith((".yaml", ".yml"))


def _resolve(name_or_path: str) -> Path:
    if _is_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise InputError(f"{path}: no such cluster profile file")
        return path
    files = _profile_files()
    if name_or_path not in files:
        raise InputError(
            f"unknown cluster profile {name_or_path!r}; available: {', '.join(sorted(files))} "
            f"(or a path to a YAML file; user profiles go in ${PROFILES_ENV} or ./profiles/)"
        )
    return files[name_or_path]


def load_profile(name_or_path: str, overrides: dict[str, Any] | None = None) -> ClusterProfile:
    """Read a profile by name or path and merge ``overrides`` into its ``cluster_kwargs``.

    Overrides replace whole values (a list or a mapping is not merged item by item); a ``None``
    value means "not given" and leaves the profile's value in place.
    """
    path = _resolve(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping with 'kind' and 'cluster_kwargs'")
    if "name" in raw or "source" in raw:
        raise InputError(f"{path}: 'name' and 'source' come from the file name, remove them")
    cluster_kwargs = dict(raw.get("cluster_kwargs") or {})
    cluster_kwargs.update({key: value for key, value in (overrides or {}).items() if value is not None})
    try:
        return ClusterProfile.model_validate(
            {**raw, "cluster_kwargs": cluster_kwargs, "name": path.stem, "source": path}
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"{path}: {where + ': ' if where else ''}{first['msg']}") from None


def venv_activation() -> str:
    """The shell line that activates the environment this process runs in, on a host that sees it.

    ``source <venv>/bin/activate`` in a venv; otherwise the interpreter's directory put first on
    ``PATH``.
    """
    activate = Path(sys.prefix) / "bin" / "activate"
    if activate.is_file():
        return f"source {shlex.quote(str(activate))}"
    return f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"'


def _job_environment(profile: ClusterProfile, environ: Mapping[str, str]) -> list[str]:
    """``export`` lines for the variables of ``profile.export_env`` that are set in ``environ``."""
    return [f"export {key}={shlex.quote(environ[key])}" for key in profile.export_env if environ.get(key)]


def task_runner_kwargs(
    profile: ClusterProfile, environ: Mapping[str, str] | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """Keyword arguments of ``prefect_dask.DaskTaskRunner`` for ``profile``.

    With ``profile.activate_venv`` the job script's prologue starts by activating this process's
    venv (:func:`venv_activation`) and the worker's ``python`` is the one on the ``PATH``.
    For a slurm profile, ``export`` lines for ``profile.export_env`` (``PREFECT_API_URL``,
    ``TCR_STORE``) are appended to ``job_script_prologue``, read from ``environ`` (default:
    ``os.environ``) now, in the process that will submit the jobs. With ``run_id`` each job
    carries it in its name (``tcr-worker-RUN``, what ``squeue`` shows) and in ``--comment``
    (``squeue -o %k``, ``sacct -o Comment``), so everyone sees whose search a job belongs to.
    """
    cluster_kwargs = copy.deepcopy(profile.cluster_kwargs)
    adapt_kwargs: dict[str, Any] | None = None
    if profile.kind == "slurm" and run_id:
        label = job_label(run_id)
        cluster_kwargs["job_name"] = f"{cluster_kwargs.get('job_name') or 'dask-worker'}-{label}"
        directives = cluster_kwargs.get("job_extra_directives") or []
        cluster_kwargs["job_extra_directives"] = [*directives, f"--comment=tcr-pipeline-run:{label}"]
    if profile.kind == "slurm" and profile.activate_venv:
        cluster_kwargs["job_script_prologue"] = [
            venv_activation(),
            *(cluster_kwargs.get("job_script_prologue") or []),
        ]
        cluster_kwargs.setdefault("python", "python")  # the venv's, found on the PATH it set
    if profile.kind == "slurm":
        exports = _job_environment(profile, os.environ if environ is None else environ)
        if exports:
            prologue = cluster_kwargs.get("job_script_prologue") or []
            cluster_kwargs["job_script_prologue"] = [*prologue, *exports]
    if profile.adapt is not None:
        adapt_kwargs = {"minimum": profile.adapt.minimum, "maximum": profile.adapt.maximum}
        if profile.adapt.interval is not None:
            adapt_kwargs["interval"] = profile.adapt.interval
        if profile.adapt.wait_count is not None:
            adapt_kwargs["wait_count"] = profile.adapt.wait_count
    return {
        "cluster_class": profile.cluster_class,
        "cluster_kwargs": cluster_kwargs,
        "adapt_kwargs": adapt_kwargs,
    }


def render_job_script(
    profile: ClusterProfile, environ: Mapping[str, str] | None = None, run_id: str | None = None
) -> str:
    """The job script dask-jobqueue submits for ``profile``, as ``SLURMCluster.job_script()`` shows it.

    Built from ``SLURMJob`` alone: no scheduler starts, no job is submitted, and neither SLURM nor
    the profile's network interface has to exist here. The scheduler address and the worker name
    are the placeholders dask-jobqueue itself prints before the scheduler has started. Needs the
    ``flows`` extra (dask-jobqueue).
    """
    if profile.kind != "slurm":
        raise InputError(f"profile {profile.name!r} is a {profile.kind} cluster: it submits no job script")
    from dask_jobqueue.slurm import SLURMJob  # the library stays importable without Dask

    cluster_kwargs = task_runner_kwargs(profile, environ, run_id)["cluster_kwargs"]
    job_kwargs = {key: value for key, value in cluster_kwargs.items() if key not in _CLUSTER_ONLY_KWARGS}
    if job_kwargs.get("protocol") is None and cluster_kwargs.get("security"):
        job_kwargs["protocol"] = "tls://"  # as SLURMCluster does; the TLS file arguments are left out
    log_directory = job_kwargs.get("log_directory")
    try:
        if log_directory is None or os.path.isdir(log_directory):
            return str(SLURMJob(_SCHEDULER_PLACEHOLDER, name="dummy-name", **job_kwargs).job_script())
        # SLURMJob creates a missing log directory: render with a stand-in and put the real path back
        with tempfile.TemporaryDirectory(prefix="tcr-render-") as stand_in:
            script = SLURMJob(
                _SCHEDULER_PLACEHOLDER, name="dummy-name", **{**job_kwargs, "log_directory": stand_in}
            ).job_script()
        return str(script).replace(stand_in, str(log_directory))
    except (TypeError, ValueError) as exc:
        raise InputError(f"profile {profile.name!r}: {exc}") from None


def _scontrol_job(job_id: str) -> dict[str, str]:
    """``scontrol show job -o`` as a mapping (empty when SLURM no longer knows the job)."""
    try:
        shown = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if shown.returncode != 0:
        return {}
    return dict(field.split("=", 1) for field in shown.stdout.split() if "=" in field)


def _log_tail(path: Path, lines: int = 3, width: int = 400) -> str | None:
    """The last ``lines`` non-empty lines of ``path`` joined by `` | ``, or None when it has none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(tail)[-width:] if tail else None


def worker_job_log(
    job_id: str, log_directory: str | None = None
) -> tuple[str | None, Path | None, str | None]:
    """State, log file and log tail of SLURM job ``job_id`` (each None when unknown).

    The log is where the job wrote its stderr, then its stdout: the paths ``scontrol`` reports
    while SLURM remembers the job, else dask-jobqueue's ``LOG_DIRECTORY/NAME-JOBID.err``/``.out``
    (``#SBATCH -e``/``-o``), else SLURM's default ``slurm-JOBID.out`` in the submitting directory.
    """
    info = _scontrol_job(job_id)
    candidates = [Path(info[key]) for key in ("StdErr", "StdOut") if info.get(key)]
    if log_directory:
        for suffix in (".err", ".out"):
            candidates += sorted(Path(log_directory).glob(f"*-{job_id}{suffix}"))
    candidates.append(Path(f"slurm-{job_id}.out"))
    for path in candidates:
        tail = _log_tail(path)
        if tail:
            return info.get("JobState"), path, tail
    return info.get("JobState"), None, None


def worker_start_failure(
    profile_name: str, timeout: float, job_id: str | None, log_directory: str | None
) -> str:
    """One line: no worker connected within ``timeout`` s, with the newest worker job's log tail."""
    head = f"search stopped: no Dask worker connected within {timeout:g} s (cluster profile {profile_name!r})"
    hint = (
        "check the profile's python and job_script_prologue, or raise worker_start_timeout "
        "if the queue is only slow"
    )
    if job_id is None:
        return f"{head}; no worker job was submitted; {hint}"
    state, path, tail = worker_job_log(job_id, log_directory)
    job = f"worker job {job_id}" + (f" is {state}" if state else "")
    if tail is None:
        return f"{head}; {job}, no log of it found; {hint}"
    return f"{head}; {job}, {path} ends: {tail}; {hint}"
