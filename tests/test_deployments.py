"""prefect.yaml and deployments/: declarations checked as data, then the real thing end to end.

The end-to-end tests start a real Prefect server (SQLite, loopback, a free port, a temporary
PREFECT_HOME), create the work pool and deploy with ``deployments/deploy.sh``, start
``deployments/worker.sh``, and run deployments with ``deployments/run.sh``: the commands of
deployments/README.md, and the one cluster-run.yml runs on the login node.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from cli_fixtures import wait_for_url
from flow_fixtures import small_search_params
from test_workflows import run_cluster_run_step

from tcr_pipeline.store import RunManifest, Store, TrialRecord

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENTS = ROOT / "deployments"
PREFECT_YAML = ROOT / "prefect.yaml"
SCRIPTS = sorted([*DEPLOYMENTS.glob("*.sh"), *DEPLOYMENTS.glob("*.sbatch")])
EXPECTED = {
    "tcr-pipeline/full": "flows/pipeline.py:pipeline_flow",
    "search/search-only": "flows/search.py:search_flow",
    "monitor/hourly": "flows/monitor.py:monitor_flow",
    "retrain/on-new-data": "flows/retrain.py:retrain_flow",
}
SEARCHING = {"full", "search-only", "on-new-data"}  # deployments that run a search


def _prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text())


def _flow(entrypoint: str) -> Any:
    path, name = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


@functools.cache
def _run_module() -> ModuleType:
    """deployments/run.py, imported from its path (deployments/ is no package)."""
    spec = importlib.util.spec_from_file_location("deployments_run", DEPLOYMENTS / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# prefect.yaml and the work pool template, as data
# ---------------------------------------------------------------------------------------------


def test_every_deployment_is_declared_under_its_documented_name() -> None:
    declared = {}
    for deployment in _prefect_yaml()["deployments"]:
        flow = _flow(deployment["entrypoint"])
        declared[f"{flow.name}/{deployment['name']}"] = deployment["entrypoint"]
    assert EXPECTED.items() <= declared.items()
    readme = (DEPLOYMENTS / "README.md").read_text()
    for name in declared:
        assert f"'{name}'" in readme or f"`{name}`" in readme, f"{name} is not in deployments/README.md"


def test_deployment_parameters_are_parameters_of_their_flows() -> None:
    for deployment in _prefect_yaml()["deployments"]:
        signature = inspect.signature(_flow(deployment["entrypoint"]).fn)
        unknown = set(deployment["parameters"]) - set(signature.parameters)
        assert not unknown, f"{deployment['name']}: {unknown} are not parameters of the flow"
        assert "store" in deployment["parameters"]
        assert "run_id" not in deployment["parameters"]  # a fixed run id would resume one run forever
        if deployment["name"] in SEARCHING:  # the documented overrides exist on every searching flow
            assert {"max_evals", "parallelism", "cluster", "objective"} <= set(deployment["parameters"])
    full = next(d for d in _prefect_yaml()["deployments"] if d["name"] == "full")
    assert "data" in full["parameters"]


def test_shared_settings_are_anchors_not_copies() -> None:
    """One definition each: the aliases load as the very same objects."""
    config = _prefect_yaml()
    definitions = config["definitions"]
    for deployment in config["deployments"]:
        assert deployment["work_pool"] is definitions["work_pool"], deployment["name"]
    full = next(d for d in config["deployments"] if d["name"] == "full")
    search = next(d for d in config["deployments"] if d["name"] == "search-only")
    assert definitions["work_pool"]["job_variables"] is definitions["job_variables"]
    assert search["parameters"] is definitions["parameters"]
    assert definitions["parameters"].items() <= full["parameters"].items()  # merged with <<
    text = PREFECT_YAML.read_text()
    assert text.count(definitions["work_pool"]["name"]) == 1


def test_flow_runs_start_in_the_deployed_checkout() -> None:
    (step,) = _prefect_yaml()["pull"]
    assert step == {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PWD }}"}}
    assert 'cd "$TCR_ROOT"' in (DEPLOYMENTS / "deploy.sh").read_text()  # so $PWD is the checkout


def test_work_pool_template_matches_prefects_process_worker() -> None:
    """Same job configuration and variables as Prefect's own template (caught on an upgrade)."""
    from prefect.workers.process import ProcessWorker

    ours = json.loads((DEPLOYMENTS / "process-work-pool.json").read_text())
    default = ProcessWorker.get_default_base_job_template()
    assert ours["job_configuration"] == default["job_configuration"]
    assert set(ours["variables"]["properties"]) == set(default["variables"]["properties"])
    for name, placeholder in ours["job_configuration"].items():
        assert placeholder == f"{{{{ {name} }}}}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_pass_shellcheck(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if shutil.which("shellcheck"):
        done = subprocess.run(["shellcheck", "-x", str(script)], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout


# ---------------------------------------------------------------------------------------------
# deployments/run.py and env.sh, without a server
# ---------------------------------------------------------------------------------------------

SCHEMA = {
    "properties": {
        "run_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "max_evals": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "force": {"type": "boolean"},
        "data": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "cluster_overrides": {"anyOf": [{"type": "object"}, {"type": "null"}]},
    }
}


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (["max_evals=2"], {"max_evals": 2}),
        (["force=true"], {"force": True}),
        (["max_evals=null"], {"max_evals": None}),
        # JSON would read a number: the schema wants text, so the text is kept
        (["run_id=20261123"], {"run_id": "20261123"}),
        (["data=data/raw/viral_pairs.csv"], {"data": "data/raw/viral_pairs.csv"}),
        (["data=a=b"], {"data": "a=b"}),  # only the first '=' separates
        (['cluster_overrides={"walltime": "02:00:00"}'], {"cluster_overrides": {"walltime": "02:00:00"}}),
        (["max_evals=2", "max_evals=3"], {"max_evals": 3}),  # the last one wins
    ],
)
def test_param_values_are_json_or_text_as_the_flow_wants(pairs: list[str], expected: dict[str, Any]) -> None:
    run = _run_module()
    assert run.coerce_parameters(run.parse_parameters(None, pairs), SCHEMA, "x/y") == expected


def test_params_json_is_merged_under_param() -> None:
    run = _run_module()
    parsed = run.parse_parameters('{"max_evals": 4, "force": true}', ["max_evals=5"])
    assert run.coerce_parameters(parsed, SCHEMA, "x/y") == {"max_evals": 5, "force": True}


@pytest.mark.parametrize(
    ("params_json", "pairs", "message"),
    [
        (None, ["max_evals"], "KEY=VALUE"),
        ("[1, 2]", [], "JSON object"),
        ("{nope", [], "not valid JSON"),
    ],
)
def test_bad_params_are_usage_errors(params_json: str | None, pairs: list[str], message: str) -> None:
    run = _run_module()
    with pytest.raises(run.UsageError, match=message):
        run.parse_parameters(params_json, pairs)


def test_an_unknown_parameter_names_the_known_ones() -> None:
    run = _run_module()
    with pytest.raises(run.UsageError, match=r"search/search-only has no parameter 'data'; its parameters: "):
        run.coerce_parameters(
            run.parse_parameters(None, ["data=x.csv"]), {"properties": {"run_id": {}}}, "search/search-only"
        )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://login01:4200/runs/flow-run/1", "http://login01:4200/runs/flow-run/1"),
        ("https://me:s3cret@prefect.lab.org/runs/x", "https://prefect.lab.org/runs/x"),
        (None, None),
    ],
)
def test_links_never_carry_credentials(url: str | None, shown: str | None) -> None:
    assert _run_module().public_url(url) == shown


def _bash(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_settings_file_fills_in_what_the_caller_left_unset(tmp_path: Path) -> None:
    settings = tmp_path / "env"
    settings.write_text("# the lab's settings\nTCR_STORE=/shared/store\n\nTCR_PROFILES=/shared/profiles\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TCR_")}
    env |= {"TCR_ENV_FILE": str(settings), "TCR_PROFILES": "/mine"}
    done = _bash('. deployments/env.sh && echo "$TCR_STORE $TCR_PROFILES $TCR_ROOT"', env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["/shared/store", "/mine", str(ROOT)]

    settings.write_text("TCR_STORE = /spaces/around\n")
    done = _bash(". deployments/env.sh", env)
    assert done.returncode == 2
    assert f"{settings}:1: expected KEY=value" in done.stderr


def test_run_sh_without_a_server_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TCR_"))}
    env |= {"PREFECT_HOME": str(tmp_path), "TCR_ENV_FILE": "/dev/null"}
    for deployment, status, message in (
        ("tcr-pipeline/full", 3, "PREFECT_API_URL is not set"),
        ("no-slash", 2, "FLOW/DEPLOYMENT"),
    ):
        done = subprocess.run(
            ["bash", str(DEPLOYMENTS / "run.sh"), deployment],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == status, done.stderr
        assert message in done.stderr


# ---------------------------------------------------------------------------------------------
# End to end: a real server, the work pool, deploy, a worker, deployment runs
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM the process group this test started, then SIGKILL whatever is left of it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # flow-run processes and their Dask workers
    process.wait(10)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A Prefect server, the work pool, both deployments and a worker, as on a login node.

    Returns the environment of the login node's shell: PREFECT_API_URL, TCR_STORE (a temporary
    store, also the worker's), no settings file, nothing from the caller's Prefect profile.
    """
    home = tmp_path_factory.mktemp("prefect-home")
    logs = tmp_path_factory.mktemp("logs")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TCR_"))}
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "TCR_ENV_FILE": "/dev/null",
        "TCR_VENV": str(Path(sys.executable).parent.parent),
        "TCR_STORE": str(tmp_path_factory.mktemp("default-store")),
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    with (logs / "server.log").open("wb") as server_log:
        server = subprocess.Popen(
            [Path(sys.executable).with_name("prefect"), "server", "start",
             "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
            env=env, stdout=server_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    worker = None
    try:
        wait_for_url(
            f"{env['PREFECT_API_URL']}/health",
            server,
            180,
            "the Prefect server",
            lambda: (logs / "server.log").read_text()[-3000:],
        )
        for attempt in (1, 2):  # the second time it only updates: deploy.sh is idempotent
            done = subprocess.run(
                ["bash", str(DEPLOYMENTS / "deploy.sh")],
                cwd=logs,  # not the checkout: the scripts find it themselves
                env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert done.returncode == 0, (
                f"deploy.sh (run {attempt}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
            assert ("Created" if attempt == 1 else "Updated") + " work pool 'tcr-login-node'" in done.stdout
        with (logs / "worker.log").open("wb") as worker_log:
            worker = subprocess.Popen(
                ["bash", str(DEPLOYMENTS / "worker.sh")],
                cwd=logs,
                env=env, stdout=worker_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        yield env | {"LOGS": str(logs)}
    finally:
        if worker is not None:
            _stop(worker)  # before the server, or it would retry against a dead API
        _stop(server)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, small_csv: Path) -> dict[str, Path]:
    """A budget that finishes in seconds: the small CSV, a small model, 1-2 epochs, 2 trials."""
    root = tmp_path_factory.mktemp("tiny")
    params = small_search_params(
        small_csv, max_evals=2, parallelism=1, n_startup=1, top_k=1, lr=(0.005, 0.05)
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return {"params": root / "params.yaml", "data": small_csv, "root": root}


def run_sh(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``deployments/run.sh ARGS`` as a user types it on the login node."""
    return subprocess.run(
        ["bash", str(DEPLOYMENTS / "run.sh"), *args],
        cwd=env["LOGS"],  # anywhere: run.sh works from the checkout it belongs to
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _explain(done: subprocess.CompletedProcess[str], env: dict[str, str]) -> str:
    worker_log = Path(env["LOGS"], "worker.log")
    tail = worker_log.read_text(errors="replace")[-4000:] if worker_log.exists() else ""
    return (
        f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr[-6000:]}"
        f"\n--- worker\n{tail}"
    )


def _completed_run(root: Path, cluster: str) -> tuple[Store, RunManifest, list[TrialRecord]]:
    """The one run of the store at ``root``: completed on ``cluster``, both its trials ok."""
    store = Store(root)
    (manifest,) = store.list_runs()
    assert manifest.status == "completed"
    assert manifest.cluster == cluster
    trials = store.list_trials(manifest.run_id)
    assert len(trials) == 2
    assert all(t.status == "ok" for t in trials)
    return store, manifest, trials


def _tiny_args(tiny: dict[str, Path], name: str) -> list[str]:
    root = tiny["root"]
    return [
        "--param", f"data={tiny['data']}",
        "--param", f"params_file={tiny['params']}",
        "--param", f"prepared_dir={root / name / 'prepared'}",
        "--param", f"store={root / name / 'store'}",
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(600)  # includes starting the server, deploying and the worker (the fixture)
def test_full_deployment_runs_to_completion_and_promotes(lab: dict[str, str], tiny: dict[str, Path]) -> None:
    summary = tiny["root"] / "summary.md"
    env = lab | {"TCR_DASHBOARD_URL": "http://dashboard.lab.example:8050/runs/{run_id}"}
    started = time.monotonic()
    done = run_sh(env, "tcr-pipeline/full", *_tiny_args(tiny, "local"), "--summary", str(summary))
    assert done.returncode == 0, _explain(done, lab)
    seconds = time.monotonic() - started

    store, manifest, _ = _completed_run(tiny["root"] / "local" / "store", "local")
    registry = store.load_registry()
    assert registry.current is not None
    assert registry.current.startswith(f"{manifest.run_id}/")
    assert (store.root / registry.current_entry.path / "weights.pt").is_file()

    # the report: state, the run and its model, links; on stdout and in the summary file
    report = summary.read_text()
    assert report.strip() == done.stdout.strip()
    assert "✅ tcr-pipeline/full: Completed" in report
    assert f"flow run: [{manifest.run_id}](http://127.0.0.1:" in report  # named after the store run
    assert f"`{registry.current}`" in report
    assert "promoted by this run" in report
    assert f"http://dashboard.lab.example:8050/runs/{manifest.run_id}" in report
    # the flow's own logs came through, subflows included
    assert "Beginning subflow run" in done.stderr
    assert "promoted" in done.stderr
    print(f"tcr-pipeline/full, tiny budget: {seconds:.1f} s from run.sh to Completed")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_deployments_are_known_by_name_and_bad_requests_refused(lab: dict[str, str]) -> None:
    # Prefect's own CLI knows them by these names: `prefect deployment run 'tcr-pipeline/full'`
    listing = subprocess.run(
        [Path(sys.executable).with_name("prefect"), "deployment", "ls"],
        env=lab, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert set(EXPECTED) <= set(re.findall(r"[\w-]+/[\w-]+", listing.stdout))

    done = run_sh(lab, "tcr-pipeline/nightly")
    assert done.returncode == 2
    assert f"no deployment 'tcr-pipeline/nightly'; deployed: {', '.join(sorted(EXPECTED))}" in done.stderr
    done = run_sh(lab, "search/search-only", "--param", "data=x.csv")
    assert done.returncode == 2
    assert "search/search-only has no parameter 'data'" in done.stderr
    done = run_sh(lab, "tcr-pipeline/full", "--param", "max_evals=many")
    assert done.returncode == 2
    assert "refused" in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_failed_run_exits_non_zero_with_its_error(lab: dict[str, str], tmp_path: Path) -> None:
    """A run whose data file does not exist, started the way cluster-run.yml starts one: its step,
    with ssh to this machine, runs the real run.sh against the real server."""
    missing = f"/nonexistent/{tmp_path.name}/pairs-v0.csv"
    inputs = {"deployment": "tcr-pipeline/full", "max_evals": "1", "parallelism": "1", "data": missing}
    result = run_cluster_run_step(tmp_path, inputs, env=lab, timeout=240)
    assert result.code == 1, result.output
    error = f"InputError: {missing}:-:-: no such file"
    # in the output: the flow's own traceback as it happened, and run.sh's last word
    assert f"tcr_pipeline.errors.{error}" in result.stderr
    assert f"ended Failed: Flow run encountered an exception: {error}" in result.stderr
    # in the report, on stdout and in the job summary
    assert result.summary.count("❌ tcr-pipeline/full: Failed") == 1
    assert error in result.summary
    assert f'`data="{missing}"`' in result.summary
    assert "`max_evals=1`" in result.summary
    assert "the flow ended before the search began" in result.summary


def _api(env: dict[str, str], path: str, body: dict[str, Any] | None = None) -> Any:
    """One call of the server's REST API (POST when there is a body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{env['PREFECT_API_URL']}/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def _runs_of(env: dict[str, str], deployment: str) -> list[dict[str, Any]]:
    deployment_id = _api(env, f"deployments/name/{deployment}")["id"]
    return list(_api(env, "flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}}}))


TICK_FLOW = """\
from pathlib import Path

from prefect import flow, runtime


@flow
def tick(out: str) -> None:
    Path(out, str(runtime.flow_run.id)).touch()
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_scheduled_deployment_gets_runs_the_worker_completes(lab: dict[str, str], tmp_path: Path) -> None:
    """The scheduler service really creates runs (with SQLAlchemy 2.1 it failed on every pass:
    "Can't evaluate bulk DML statement", and monitor/hourly never got a run)."""
    (tmp_path / "tick.py").write_text(TICK_FLOW)
    out = tmp_path / "ticks"
    out.mkdir()
    deployed = subprocess.run(
        [Path(sys.executable).with_name("prefect"), "--no-prompt", "deploy", "tick.py:tick",
         "--name", "every-5s", "--pool", "tcr-login-node", "--interval", "5", "--param", f"out={out}"],
        cwd=tmp_path, env=lab, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    started = time.monotonic()
    try:
        completed: list[dict[str, Any]] = []
        while not completed:
            if time.monotonic() > started + 60:
                states = [r["state_type"] for r in _runs_of(lab, "tick/every-5s")]
                log = Path(lab["LOGS"], "server.log").read_text(errors="replace")
                pytest.fail(f"no completed scheduled run in 60 s; runs: {states}; server log:\n{log[-2000:]}")
            time.sleep(1)
            completed = [r for r in _runs_of(lab, "tick/every-5s") if r["state_type"] == "COMPLETED"]
        assert all(r["auto_scheduled"] for r in completed)  # made by the scheduler, not by hand
        assert {p.name for p in out.iterdir()} >= {r["id"] for r in completed}  # the flow really ran
        seconds = time.monotonic() - started
    finally:
        subprocess.run(
            [Path(sys.executable).with_name("prefect"), "deployment", "delete", "tick/every-5s"],
            env=lab, capture_output=True, timeout=120,
        )  # fmt: skip
    # the shipped cron deployment has its next runs waiting, and the scheduler never failed
    upcoming = [r for r in _runs_of(lab, "monitor/hourly") if r["state_type"] == "SCHEDULED"]
    assert upcoming, "monitor/hourly has no scheduled run"
    assert all(r["auto_scheduled"] for r in upcoming)
    server_log = Path(lab["LOGS"], "server.log").read_text(errors="replace")
    assert "Can't evaluate bulk DML statement" not in server_log
    print(f"scheduled tick run completed {seconds:.1f} s after deploying")


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_node")
@pytest.mark.timeout(420)
def test_full_deployment_on_the_dev_slurm(lab: dict[str, str], tiny: dict[str, Path]) -> None:
    """The same deployment with --param cluster=slurm-local: every trial runs in a SLURM job."""
    done = run_sh(lab, "tcr-pipeline/full", *_tiny_args(tiny, "slurm"),
                  "--param", "cluster=slurm-local", "--param", "parallelism=2")  # fmt: skip
    assert done.returncode == 0, _explain(done, lab)
    store, manifest, trials = _completed_run(tiny["root"] / "slurm" / "store", "slurm-local")
    assert all(t.hardware.slurm_job_id for t in trials), [t.hardware for t in trials]
    assert store.load_registry().current.startswith(f"{manifest.run_id}/")
    assert re.search(r"cluster profile `slurm-local`", done.stdout)
