"""Cluster profiles: loading, resolution, overrides, task runner arguments and job scripts as text."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tcr_pipeline.clusters import (
    DEFAULT_WORKER_START_TIMEOUT,
    SHIPPED_DIR,
    ClusterProfile,
    cap_parallelism,
    check_api_url,
    list_profiles,
    load_profile,
    render_job_script,
    task_runner_kwargs,
    worker_start_failure,
)
from tcr_pipeline.errors import InputError

if TYPE_CHECKING:
    from cli_fixtures import CliResult

SHIPPED = ["local", "slurm-local", "slurm-cpu", "slurm-gpu", "slurm-gpu-apptainer"]
SLURM_SHIPPED = ["slurm-local", "slurm-cpu", "slurm-gpu", "slurm-gpu-apptainer"]
DEFINITION = SHIPPED_DIR.parents[1] / "slurm" / "tcr-pipeline.def"
NO_ENV: dict[str, str] = {}  # renders without PREFECT_API_URL / TCR_STORE, whatever the shell has


@pytest.fixture(autouse=True)
def _no_user_profiles(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the shipped profiles are visible: no $TCR_PROFILES, and a cwd without ./profiles."""
    monkeypatch.delenv("TCR_PROFILES", raising=False)
    monkeypatch.chdir(tmp_path)


def _script(name: str, overrides: dict[str, object] | None = None, **environ: str) -> str:
    return render_job_script(load_profile(name, overrides), environ)


# Every shipped profile -------------------------------------------------------------------------


def test_list_profiles_names_the_shipped_ones() -> None:
    assert list_profiles() == sorted(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_loads(name: str) -> None:
    profile = load_profile(name)
    assert isinstance(profile, ClusterProfile)
    assert profile.name == name
    assert profile.kind == ("local" if name == "local" else "slurm")
    assert profile.source == SHIPPED_DIR / f"{name}.yaml"
    assert profile.description


@pytest.mark.parametrize("name", SHIPPED)
def test_every_field_of_a_shipped_profile_is_commented(name: str) -> None:
    """Each key has a comment on its line or on the comment block right above it."""
    lines = (SHIPPED_DIR / f"{name}.yaml").read_text().splitlines()
    undocumented = []
    for number, line in enumerate(lines):
        match = re.match(r"\s*([A-Za-z_][\w-]*):", line)
        if match is None:
            continue
        above = lines[number - 1].strip() if number else ""
        if "#" not in line and not above.startswith("#"):
            undocumented.append(match.group(1))
    assert not undocumented, f"{name}.yaml: keys without a comment: {undocumented}"


@pytest.mark.parametrize("name", SHIPPED)
def test_task_runner_kwargs_build_a_dask_task_runner(name: str) -> None:
    prefect_dask = pytest.importorskip("prefect_dask")
    kwargs = task_runner_kwargs(load_profile(name), NO_ENV)
    assert set(kwargs) == {"cluster_class", "cluster_kwargs", "adapt_kwargs"}
    runner = prefect_dask.DaskTaskRunner(**kwargs)  # builds no cluster until the flow starts
    expected = "LocalCluster" if name == "local" else "SLURMCluster"
    assert runner.resolved_cluster_class.__name__ == expected
    assert runner.cluster_kwargs == kwargs["cluster_kwargs"]


def test_adapt_kwargs_are_worker_bounds() -> None:
    assert task_runner_kwargs(load_profile("slurm-local"), NO_ENV)["adapt_kwargs"] == {
        "minimum": 0,
        "maximum": 2,
    }
    assert task_runner_kwargs(load_profile("slurm-cpu"), NO_ENV)["adapt_kwargs"] == {
        "minimum": 0,
        "maximum": 40,
        "interval": "10s",
        "wait_count": 6,
    }
    assert task_runner_kwargs(load_profile("local"), NO_ENV)["adapt_kwargs"] is None


def test_local_profile_is_a_local_cluster() -> None:
    kwargs = task_runner_kwargs(load_profile("local"), NO_ENV)
    assert kwargs["cluster_class"] == "distributed.LocalCluster"
    assert kwargs["cluster_kwargs"]["threads_per_worker"] == 1
    assert kwargs["cluster_kwargs"]["processes"] is True
    with pytest.raises(InputError, match="submits no job script"):
        render_job_script(load_profile("local"))


# Job scripts, as text ----------------------------------------------------------------------------


def test_slurm_local_job_script() -> None:
    script = _script("slurm-local")
    assert script.startswith("#!/usr/bin/env bash\n")
    for line in [
        "#SBATCH -J tcr-worker",
        "#SBATCH -p debug",
        "#SBATCH -n 1",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --mem=2G",
        "#SBATCH -t 00:30:00",
        "#SBATCH -o /tmp/tcr-dask-slurm/tcr-worker-%J.out",
        # the job starts with the node's login environment, not the submitting shell's
        "#SBATCH --export=NONE",
    ]:
        assert line in script.splitlines()
    assert "#SBATCH -A" not in script
    assert "--gres" not in script
    assert "export " not in script  # nothing to export from an empty environment
    # so the script sets up Python itself: it activates the venv this process runs in
    assert script.splitlines()[-2] == f"source {Path(sys.prefix) / 'bin' / 'activate'}"
    worker = script.splitlines()[-1]
    assert worker.startswith("python -m distributed.cli.dask_worker ")
    assert "--nthreads 1 --memory-limit 2.00GiB" in worker
    assert worker.endswith("--interface lo")
    assert "--lifetime" not in worker


def test_slurm_local_script_matches_what_slurm_cluster_renders(tmp_path: Path) -> None:
    """The rendered script is the one SLURMCluster submits (here the loopback interface exists)."""
    dask_jobqueue = pytest.importorskip("dask_jobqueue")
    profile = load_profile("slurm-local", {"log_directory": str(tmp_path / "logs")})
    cluster_kwargs = {
        **task_runner_kwargs(profile, NO_ENV)["cluster_kwargs"],
        "scheduler_options": {"dashboard_address": ":0"},
    }
    with dask_jobqueue.SLURMCluster(**cluster_kwargs) as cluster:
        from_cluster = cluster.job_script().replace(cluster.scheduler_address, "{scheduler}")
    rendered = render_job_script(profile, NO_ENV)
    assert rendered.replace("tcp://<insert-scheduler-address-here>:8786", "{scheduler}") == from_cluster


def test_slurm_cpu_job_script() -> None:
    script = _script("slurm-cpu")
    lines = script.splitlines()
    for line in [
        "#SBATCH -p cpu",
        "#SBATCH -A my-lab",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32G",
        "#SBATCH -t 01:00:00",
        "#SBATCH -o slurm-logs/tcr-worker-%J.out",
        "module load python/3.11",
        "source /path/to/tcr-pipeline/.venv/bin/activate",
        "export OMP_NUM_THREADS=1",
    ]:
        assert line in lines
    assert "--gres" not in script
    worker = lines[-1]
    assert worker.startswith("python -m distributed.cli.dask_worker ")
    assert "--nthreads 1 --memory-limit 4.00GiB --nworkers 8" in worker
    assert "--lifetime 55m --lifetime-stagger 4m --lifetime-restart" in worker
    assert "--local-directory ${TMPDIR:-/tmp}" in worker
    assert worker.endswith("--interface ib0")
    # the prologue runs before the worker starts
    assert lines.index("source /path/to/tcr-pipeline/.venv/bin/activate") < len(lines) - 1


def test_slurm_gpu_job_script() -> None:
    lines = _script("slurm-gpu").splitlines()
    for line in [
        "#SBATCH -p gpu",
        "#SBATCH -A my-lab",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=8G",
        "#SBATCH -t 01:00:00",
        "#SBATCH --gres=gpu:1",
        "module load python/3.11 cuda/12.4",
        "source /path/to/tcr-pipeline/.venv/bin/activate",
    ]:
        assert line in lines
    worker = lines[-1]
    assert "--nthreads 1 " in worker, "one trial at a time on the job's one GPU"
    assert "--nworkers" not in worker
    assert "--resources GPU=1" in worker
    assert "--lifetime 55m --lifetime-stagger 4m --lifetime-restart" in worker


@pytest.mark.parametrize("name", SLURM_SHIPPED)
def test_jobs_carry_the_run_id_in_their_name_and_comment(name: str) -> None:
    """squeue's NAME column (and sacct/jobcomp's JobName, `squeue -o %k`) say whose search a job is."""
    base = load_profile(name).cluster_kwargs["job_name"]
    lines = render_job_script(load_profile(name), NO_ENV, run_id="20261129-235700-0a1b2c").splitlines()
    assert f"#SBATCH -J {base}-20261129-235700-0a1b2c" in lines
    assert "#SBATCH --comment=tcr-pipeline-run:20261129-235700-0a1b2c" in lines
    assert any(re.fullmatch(rf"#SBATCH -o \S*/{base}-20261129-235700-0a1b2c-%J\.out", line) for line in lines)
    if name.startswith("slurm-gpu"):
        assert "#SBATCH --gres=gpu:1" in lines  # the profile's own directives stay
    # a run id with characters a job name should not carry
    lines = render_job_script(load_profile(name), NO_ENV, run_id="lab search/1").splitlines()
    assert f"#SBATCH -J {base}-lab_search_1" in lines
    # without a run id (tcr-pipeline slurm script), the profile's name as it is
    assert f"#SBATCH -J {base}" in _script(name).splitlines()


@pytest.mark.parametrize(
    ("name", "asked", "expected"),
    [
        ("slurm-local", 3, 2),  # adapt.maximum: 2
        ("slurm-local", 2, 2),
        ("slurm-local", 1, 1),
        ("slurm-gpu", 9, 4),
        ("local", 9, 9),  # no adapt: the local cluster starts as many workers as asked
    ],
)
def test_parallelism_is_capped_by_the_profiles_maximum(name: str, asked: int, expected: int) -> None:
    capped, warning = cap_parallelism(load_profile(name), asked)
    assert capped == expected
    if expected == asked:
        assert warning is None
    else:
        assert warning == (
            f"parallelism {asked} is above the {expected} workers cluster profile {name!r} allows "
            f"at most (adapt.maximum): {expected} trials in flight"
        )


LOOPBACK = ["http://127.0.0.1:4200/api", "http://localhost:4200/api", "http://[::1]:4200/api",
            "http://0.0.0.0:4200/api", "http://127.0.1.1:4200/api"]  # fmt: skip
REACHABLE = ["http://login01.cluster:4200/api", "http://10.1.2.3:4200/api", "https://prefect.lab.org/api"]


@pytest.mark.parametrize("name", ["slurm-cpu", "slurm-gpu", "slurm-gpu-apptainer"])
def test_workers_on_other_nodes_refuse_a_loopback_api(name: str) -> None:
    profile = load_profile(name)
    for url in LOOPBACK:
        with pytest.raises(InputError, match=rf"^cluster profile '{name}' runs workers on other nodes, but"):
            check_api_url(profile, url)
    with pytest.raises(InputError, match="PREFECT_API_URL is not set"):
        check_api_url(profile, None)
    for url in REACHABLE:
        check_api_url(profile, url)
    # a lab profile whose jobs run on the submitting host says so
    check_api_url(profile.model_copy(update={"same_host": True}), LOOPBACK[0])


@pytest.mark.parametrize("name", ["local", "slurm-local"])
def test_profiles_on_this_host_accept_a_loopback_api(name: str) -> None:
    profile = load_profile(name)
    assert profile.on_this_host
    for url in [*LOOPBACK, *REACHABLE, None]:
        check_api_url(profile, url)


def test_gres_only_in_the_gpu_profile() -> None:
    with_gres = [name for name in SLURM_SHIPPED if "#SBATCH --gres=gpu:1" in _script(name)]
    assert with_gres == ["slurm-gpu", "slurm-gpu-apptainer"]


def test_rendering_creates_no_log_directory(tmp_path: Path) -> None:
    script = _script("slurm-cpu")  # log_directory: slurm-logs, relative to the cwd (tmp_path)
    assert "#SBATCH -e slurm-logs/tcr-worker-%J.err" in script
    assert not (tmp_path / "slurm-logs").exists()


@pytest.mark.parametrize("name", SLURM_SHIPPED)
def test_job_script_exports_prefect_api_url_and_store(name: str) -> None:
    script = _script(
        name, PREFECT_API_URL="http://login01:4200/api", TCR_STORE="/shared/tcr store", HOME="/root"
    )
    lines = script.splitlines()
    assert "export PREFECT_API_URL=http://login01:4200/api" in lines
    assert "export TCR_STORE='/shared/tcr store'" in lines  # quoted for the shell
    assert "HOME" not in script  # only the variables of export_env
    assert lines.index("export TCR_STORE='/shared/tcr store'") == len(lines) - 2  # last before the worker


def test_task_runner_kwargs_read_the_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.delenv("TCR_STORE", raising=False)
    profile = load_profile("slurm-local")
    prologue = task_runner_kwargs(profile)["cluster_kwargs"]["job_script_prologue"]
    assert prologue[1:] == ["export PREFECT_API_URL=http://127.0.0.1:4200/api"]  # after the venv
    assert "job_script_prologue" not in profile.cluster_kwargs  # the profile itself is unchanged
    assert "job_script_prologue" not in task_runner_kwargs(load_profile("local"))["cluster_kwargs"]


# Overrides and resolution ----------------------------------------------------------------------


def test_overrides_win_over_the_profile() -> None:
    profile = load_profile("slurm-local", {"memory": "6GiB", "walltime": "02:00:00", "queue": None})
    assert profile.cluster_kwargs["memory"] == "6GiB"
    assert profile.cluster_kwargs["queue"] == "debug"  # None means "not given"
    script = render_job_script(profile, NO_ENV)
    assert "#SBATCH --mem=6G" in script
    assert "#SBATCH -t 02:00:00" in script
    assert "#SBATCH -p debug" in script
    assert load_profile("slurm-local").cluster_kwargs["memory"] == "2GiB"  # nothing leaks


def test_override_adds_a_key() -> None:
    script = _script("slurm-local", {"account": "lab42", "job_extra_directives": ["--qos=short"]})
    assert "#SBATCH -A lab42" in script
    assert "#SBATCH --qos=short" in script


def test_unknown_profile_names_the_available_ones() -> None:
    with pytest.raises(InputError, match="unknown cluster profile 'slurm-huge'") as error:
        load_profile("slurm-huge")
    for name in SHIPPED:
        assert name in str(error.value)


def test_a_profile_file_path_works(tmp_path: Path) -> None:
    path = tmp_path / "my-lab.yaml"
    path.write_text(
        "kind: slurm\n"
        "cluster_kwargs: {queue: short, account: lab42, cores: 4, memory: 8GiB, walltime: '00:20:00'}\n"
        "adapt: {minimum: 1, maximum: 3}\n"
    )
    profile = load_profile(str(path), {"cores": 2})
    assert profile.name == "my-lab"
    assert profile.source == path
    kwargs = task_runner_kwargs(profile, NO_ENV)
    assert kwargs["adapt_kwargs"] == {"minimum": 1, "maximum": 3}
    script = render_job_script(profile, NO_ENV)
    for line in ["#SBATCH -p short", "#SBATCH -A lab42", "#SBATCH --cpus-per-task=2", "#SBATCH --mem=8G"]:
        assert line in script.splitlines()


def test_user_profiles_from_tcr_profiles_and_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lab = tmp_path / "lab-profiles"
    lab.mkdir()
    (lab / "slurm-local.yaml").write_text(
        "kind: slurm\ncluster_kwargs: {queue: mine, cores: 1, memory: 1GiB}\n"
    )
    (tmp_path / "profiles").mkdir()  # ./profiles: the cwd is tmp_path
    (tmp_path / "profiles" / "tiny.yml").write_text("kind: local\ncluster_kwargs: {n_workers: 1}\n")
    monkeypatch.setenv("TCR_PROFILES", str(lab))
    assert list_profiles() == sorted([*SHIPPED, "tiny"])
    shadowing = load_profile("slurm-local")  # a user profile shadows the shipped one of that name
    assert shadowing.source == lab / "slurm-local.yaml"
    assert shadowing.cluster_kwargs["queue"] == "mine"
    assert load_profile("tiny").cluster_kwargs == {"n_workers": 1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: slurm\ncluster_kwargs: {cores: 1}\n", "needs cluster_kwargs memory"),
        ("kind: pbs\n", "kind"),
        ("kind: local\nadapt: {minimum: 3, maximum: 2}\n", "minimum .3. is above maximum .2."),
        ("kind: local\nworkers: 2\n", "workers: Extra inputs are not permitted"),  # a typo'd key
        ("kind: local\ncluster_kwargs: {asynchronous: true}\n", "asynchronous"),
        ("name: other\nkind: local\n", "come from the file name"),
        ("- kind: local\n", "expected a mapping"),
        ("kind: [local\n", "not valid YAML"),
    ],
)
def test_bad_profile_files_are_input_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_profile(str(path))


def test_missing_profile_file() -> None:
    with pytest.raises(InputError, match="no such cluster profile file"):
        load_profile("nowhere/lab.yaml")


def test_the_library_imports_neither_prefect_nor_dask() -> None:
    code = (
        "import sys, tcr_pipeline.clusters as c; c.task_runner_kwargs(c.load_profile('slurm-gpu'));"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'prefect', 'prefect_dask', 'dask',"
        " 'distributed', 'dask_jobqueue'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("api_url", ["http://127.0.0.1:4200/api", None])
def test_a_search_whose_slurm_workers_cannot_reach_the_api_is_refused_first(
    run_cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, api_url: str | None
) -> None:
    """Before a Prefect server starts, a run is written or a job submitted: one line, exit 2."""
    if api_url:
        monkeypatch.setenv("PREFECT_API_URL", api_url)
    else:  # without it the flow would start a temporary server on 127.0.0.1
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
        monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    result = run_cli("search", "--cluster", "slurm-gpu", "--store", tmp_path / "store")
    assert result.code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: cluster profile 'slurm-gpu' runs workers on other nodes")
    assert "slurm/README.md" in line
    assert not (tmp_path / "store").exists()


def test_slurm_gpu_apptainer_job_script_runs_the_worker_in_the_image() -> None:
    lines = _script("slurm-gpu-apptainer", PREFECT_API_URL="http://login01:4200/api").splitlines()
    for line in [
        "#SBATCH -p gpu",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --export=NONE",  # the image brings its Python, not the submitting shell
        "module load apptainer",
        "export PREFECT_API_URL=http://login01:4200/api",  # passes into the container
    ]:
        assert line in lines
    assert not [line for line in lines if "activate" in line]  # no venv on the node
    worker = lines[-1]
    assert worker.startswith(
        "apptainer exec --nv --bind ${TMPDIR:-/tmp} --bind /path/to/shared/tcr-store "
        "/path/to/tcr-pipeline-cuda.sif python -m distributed.cli.dask_worker "
    )
    assert "--cleanenv" not in worker  # it would drop PREFECT_API_URL and TCR_STORE
    assert "--local-directory ${TMPDIR:-/tmp}" in worker  # bound into the container above
    assert "--nthreads 1 " in worker
    assert "--resources GPU=1" in worker
    assert load_profile("slurm-gpu-apptainer").worker_start_timeout == 1800  # image pulls take time


def _def_sections(text: str) -> dict[str, list[str]]:
    """An Apptainer definition file: ``{"header": [...], "%post": [...], ...}``, lines stripped."""
    sections: dict[str, list[str]] = {"header": []}
    current = "header"
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("%"):
            current = line.split()[0]
            sections[current] = []
        elif line and not line.startswith("#"):
            sections[current].append(line)
    return sections


def test_the_apptainer_definition_installs_the_project_with_the_constraints() -> None:
    sections = _def_sections(DEFINITION.read_text())
    assert sections["header"] == ["Bootstrap: docker", "From: python:3.11-slim-bookworm"]
    assert set(sections) >= {"%arguments", "%files", "%post", "%environment", "%runscript", "%test", "%help"}
    # CPU torch by default; the CUDA variant is a --build-arg away
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cpu" in sections["%arguments"]
    assert "TORCH_VERSION=2.13.0+cpu" in sections["%arguments"]
    constraints = (SHIPPED_DIR.parents[1] / "requirements" / "constraints.txt").read_text().splitlines()
    assert "torch==2.13.0+cpu" in constraints  # the version the default build installs
    # everything `pip install .[flows]` needs is copied in, from the repository root
    copied = [line.split()[0] for line in sections["%files"]]
    assert copied == ["pyproject.toml", "README.md", "requirements/constraints.txt",
                      "tcr_pipeline", "tcr_cli", "flows", "dashboard"]  # fmt: skip
    for path in copied:
        assert (SHIPPED_DIR.parents[1] / path).exists(), path
    post = sections["%post"]
    assert post[0] == "set -eu"
    assert '/opt/venv/bin/pip install --index-url "{{ TORCH_INDEX }}" "torch=={{ TORCH_VERSION }}"' in post
    install = next(line for line in post if '"/opt/tcr-pipeline[flows]"' in line)
    assert install.startswith("/opt/venv/bin/pip install -c ")  # pinned as in CI
    assert "/opt/venv/bin/pip check" in post
    assert "export PATH=/opt/venv/bin:$PATH" in sections["%environment"]  # `python` is the image's
    assert sections["%runscript"] == ['exec tcr-pipeline "$@"']
    assert any(
        "import tcr_pipeline.clusters, flows.search, distributed" in line for line in sections["%test"]
    )
    # the build command in the comments names the file as it is in the repository
    assert "apptainer build tcr-pipeline.sif slurm/tcr-pipeline.def" in DEFINITION.read_text()


def test_activate_venv_comes_first_and_keeps_a_python_the_profile_names(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(
        "kind: slurm\nactivate_venv: true\n"
        "cluster_kwargs: {cores: 1, memory: 1GiB, python: /opt/py/bin/python3,\n"
        "                 job_script_prologue: [module load cuda]}\n"
    )
    lines = render_job_script(load_profile(str(path)), {"PREFECT_API_URL": "http://login01:4200/api"})
    lines = lines.splitlines()
    activate = f"source {Path(sys.prefix) / 'bin' / 'activate'}"
    assert lines[-4:-1] == [activate, "module load cuda", "export PREFECT_API_URL=http://login01:4200/api"]
    assert lines[-1].startswith("/opt/py/bin/python3 -m distributed.cli.dask_worker ")
    assert not load_profile("slurm-gpu").activate_venv  # the templates name their venv themselves


# Worker start-up --------------------------------------------------------------------------------


def test_worker_start_timeout_defaults_and_is_validated(tmp_path: Path) -> None:
    assert load_profile("slurm-local").worker_start_timeout == DEFAULT_WORKER_START_TIMEOUT == 900
    path = tmp_path / "impatient.yaml"
    path.write_text("kind: local\nworker_start_timeout: 45\n")
    assert load_profile(str(path)).worker_start_timeout == 45
    path.write_text("kind: local\nworker_start_timeout: null\n")  # wait forever
    assert load_profile(str(path)).worker_start_timeout is None
    path.write_text("kind: local\nworker_start_timeout: 0\n")
    with pytest.raises(InputError, match="worker_start_timeout"):
        load_profile(str(path))


def test_worker_start_failure_names_the_job_and_its_log(tmp_path: Path) -> None:
    """A job SLURM no longer knows: its log is found in dask-jobqueue's log directory by job id."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "tcr-worker-run1-987654321.out").write_text("")
    (logs / "tcr-worker-run1-987654321.err").write_text(
        "\nslurm_script: line 13: /nonexistent/python: No such file or directory\n\n"
    )
    line = worker_start_failure("lab", 45.0, "987654321", str(logs))
    assert line == (
        "search stopped: no Dask worker connected within 45 s (cluster profile 'lab'); worker job "
        f"987654321, {logs}/tcr-worker-run1-987654321.err ends: slurm_script: line 13: "
        "/nonexistent/python: No such file or directory; check the profile's python and "
        "job_script_prologue, or raise worker_start_timeout if the queue is only slow"
    )
    assert "\n" not in line
    assert "no log of it found" in worker_start_failure("lab", 45.0, "987654322", str(logs))
    assert "no worker job was submitted" in worker_start_failure("lab", 45.0, None, None)
