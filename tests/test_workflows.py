"""The GitHub Actions workflows: schema-valid, clean under zizmor, pinned, and running what is tested.

``cluster-run.yml``'s script is executed here as GitHub would run it, with a fake ``ssh`` that runs
the remote command locally: the arguments that reach ``deployments/run.sh`` on the login node are
checked one by one. tests/test_deployments.py runs the same step against a real Prefect server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
CLUSTER_RUN = WORKFLOWS / "cluster-run.yml"
FAKE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n-----END OPENSSH PRIVATE KEY-----"
EXPRESSION = re.compile(r"\$\{\{\s*(inputs|secrets|vars)\.([A-Za-z0-9_]+)\s*\}\}")


def _tool(name: str) -> str:
    """A console script of this venv (dev extra), else from PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]' (make test does)")
    return found


def load_workflow(path: Path) -> dict[str, Any]:
    workflow = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def declared_deployments() -> set[str]:
    """``FLOW/DEPLOYMENT`` of every deployment in prefect.yaml, the flow's name read from its code."""
    import importlib

    names = set()
    for deployment in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]:
        path, function = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), function)
        names.add(f"{flow.name}/{deployment['name']}")
    return names


def cluster_run_step() -> dict[str, Any]:
    """The step of cluster-run.yml that calls the login node."""
    steps = load_workflow(CLUSTER_RUN)["jobs"]["run"]["steps"]
    return next(step for step in steps if "run" in step and "ssh-run.sh" in step["run"])


# ---------------------------------------------------------------------------------------------
# Running the cluster-run step locally
# ---------------------------------------------------------------------------------------------

FAKE_SSH = """\
#!/usr/bin/env bash
# Stands in for ssh: records its arguments and the key file it was given, then runs the remote
# command here (the login node is this machine, TCR_REMOTE_DIR a directory on it).
printf '%s\\n' "$@" >"$FAKE_SSH_LOG"
prev=
for arg in "$@"; do
  if [ "$prev" = -i ]; then stat -c '%a' "$arg" >"$FAKE_SSH_LOG.key-mode"; cp "$arg" "$FAKE_SSH_LOG.key"; fi
  prev=$arg
done
# what ssh does not carry over: the runner's variables and the step's secrets
exec env -u GITHUB_STEP_SUMMARY -u RUNNER_TEMP -u SSH_KEY -u SSH_KNOWN_HOSTS -u TCR_SSH_TARGET \\
  bash -c "${@: -1}"
"""


@dataclass(frozen=True)
class StepResult:
    code: int
    stdout: str
    stderr: str
    summary: str
    ssh_args: list[str]
    key_mode: str | None
    runner_temp: Path

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cluster_run_step(
    tmp_path: Path,
    inputs: dict[str, str],
    *,
    remote_dir: Path = ROOT,
    env: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    timeout: float = 300,
) -> StepResult:
    """Run the cluster-run step's script as GitHub does (bash -e, the step's env with the
    expressions filled in), with ``ssh`` replaced by a local stand-in."""
    step = cluster_run_step()
    secrets = {
        "TCR_SSH_TARGET": "tester@login-node.example",
        "TCR_SSH_KEY": FAKE_KEY,
        "TCR_SSH_KNOWN_HOSTS": "login-node.example ssh-ed25519 AAAAnot-a-real-host-key",
        **(secrets or {}),
    }
    values = {"inputs": inputs, "secrets": secrets, "vars": {"TCR_REMOTE_DIR": str(remote_dir)}}

    def fill(value: object) -> str:
        return EXPRESSION.sub(lambda m: values[m[1]].get(m[2], ""), str(value))

    bin_dir = _fake_ssh_dir(tmp_path)
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir(exist_ok=True)
    summary = tmp_path / "step-summary.md"
    summary.touch()
    ssh_log = tmp_path / "ssh-args"
    step_env = {
        **(env if env is not None else os.environ),
        **{key: fill(value) for key, value in step["env"].items()},
        "PATH": f"{bin_dir}{os.pathsep}{(env or os.environ).get('PATH', '')}",
        "RUNNER_TEMP": str(runner_temp),
        "GITHUB_STEP_SUMMARY": str(summary),
        "FAKE_SSH_LOG": str(ssh_log),
    }
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    # what GitHub runs for `shell: bash` (the default on Linux runners)
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        cwd=ROOT,
        env=step_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    key_mode = ssh_log.with_name("ssh-args.key-mode")
    return StepResult(
        code=done.returncode,
        stdout=done.stdout,
        stderr=done.stderr,
        summary=summary.read_text(),
        ssh_args=ssh_log.read_text().splitlines() if ssh_log.exists() else [],
        key_mode=key_mode.read_text().strip() if key_mode.exists() else None,
        runner_temp=runner_temp,
    )


def _fake_ssh_dir(tmp_path: Path) -> Path:
    """A directory holding the ``ssh`` stand-in (FAKE_SSH), to put first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    return bin_dir


def _ssh_run(tmp_path: Path, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """deployments/ssh-run.sh ARGS with the ``ssh`` stand-in, ``env`` on top of this environment."""
    bin_dir = _fake_ssh_dir(tmp_path)
    return subprocess.run(
        ["bash", str(ROOT / "deployments" / "ssh-run.sh"), *args],
        cwd=tmp_path,
        env={
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "TCR_SSH_TARGET": "me@login",
            "FAKE_SSH_LOG": str(tmp_path / "ssh-args"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


STUB_RUN_SH = """\
#!/usr/bin/env bash
# Stands in for deployments/run.sh on the login node: records its arguments, prints a report.
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >"$STUB_ARGV"
echo "### stub report"
exit "${STUB_EXIT:-0}"
"""


@pytest.fixture
def stub_checkout(tmp_path: Path) -> Path:
    """A 'login node checkout' whose deployments/run.sh only records how it was called."""
    checkout = tmp_path / "login node" / "tcr-pipeline"  # a space: quoting must survive it
    (checkout / "deployments").mkdir(parents=True)
    (checkout / "deployments" / "run.sh").write_text(STUB_RUN_SH)
    (checkout / "deployments" / "run.sh").chmod(0o755)
    return checkout


# ---------------------------------------------------------------------------------------------
# Both workflows
# ---------------------------------------------------------------------------------------------


def test_workflows_are_valid_github_workflows() -> None:
    done = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(CI), str(CLUSTER_RUN)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _zizmor(*paths: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [_tool("zizmor"), "--offline", "--format", "json", "--min-severity", "medium", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.stdout.strip(), f"zizmor said nothing (exit {done.returncode}): {done.stderr[-2000:]}"
    return [finding for finding in json.loads(done.stdout) if not finding.get("ignored")]


def test_zizmor_finds_nothing_of_medium_or_high_severity() -> None:
    findings = _zizmor(CI, CLUSTER_RUN)
    assert findings == [], "\n".join(
        f"{f['ident']} ({f['determinations']['severity']}): {f['desc']} at "
        f"{f['locations'][0]['concrete']['feature']!r}"
        for f in findings
    )


def test_zizmor_does_audit_here(tmp_path: Path) -> None:
    """The check above means something: the same call flags an injectable, unpinned workflow."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        textwrap.dedent("""\
        name: bad
        on: [push]
        permissions: {}
        jobs:
          a:
            runs-on: ubuntu-24.04
            steps:
              - uses: actions/checkout@v4
              - run: echo "${{ github.event.head_commit.message }}"
        """)
    )
    assert {"template-injection", "unpinned-uses"} <= {f["ident"] for f in _zizmor(bad)}


@pytest.mark.parametrize("path", [CI, CLUSTER_RUN], ids=lambda p: p.name)
def test_actions_are_pinned_to_a_full_commit_sha_with_its_tag(path: Path) -> None:
    uses = re.findall(r"^\s*(?:-\s*)?uses:\s*(\S+)(.*)$", path.read_text(), flags=re.MULTILINE)
    assert uses, f"{path.name} uses no action"
    for action, rest in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), f"{action} is not pinned to a commit"
        assert re.search(r"#\s*v\d+\.\d+\.\d+", rest), f"{action}: say which release the SHA is (# vX.Y.Z)"


@pytest.mark.parametrize("path", [CI, CLUSTER_RUN], ids=lambda p: p.name)
def test_no_expression_is_pasted_into_a_script(path: Path) -> None:
    """Inputs, secrets and event data reach scripts only through env (no template injection)."""
    workflow = load_workflow(path)
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), f"{step.get('name')}: an expression inside run:"
    text = path.read_text()
    for line in text.splitlines():
        if "secrets." in line and not line.lstrip().startswith("#"):
            assert re.match(r"\s+[A-Z_]+: \$\{\{ secrets\.[A-Z_]+ \}\}$", line), f"secret outside env: {line}"


@pytest.mark.parametrize("path", [CI, CLUSTER_RUN], ids=lambda p: p.name)
def test_token_permissions_are_read_only(path: Path) -> None:
    workflow = load_workflow(path)
    scopes = [workflow.get("permissions"), *(job.get("permissions") for job in workflow["jobs"].values())]
    for scope in scopes:
        assert scope in (None, {}, {"contents": "read"}), scope
    assert workflow.get("permissions") is not None, "set top-level permissions explicitly"


# ---------------------------------------------------------------------------------------------
# ci.yml
# ---------------------------------------------------------------------------------------------


def test_ci_runs_the_ci_entry_point_as_root_on_push_and_pull_request() -> None:
    workflow = load_workflow(CI)
    assert {"push", "pull_request"} <= set(workflow["on"])
    (job,) = workflow["jobs"].values()
    assert str(job["container"]).startswith("debian:12")  # root, the Debian .ci/run was written for
    assert any("bash .ci/run" in step.get("run", "") for step in job["steps"])
    checkout = next(step for step in job["steps"] if "actions/checkout@" in step.get("uses", ""))
    assert checkout["with"]["persist-credentials"] is False
    assert (ROOT / ".ci" / "run").is_file()


# ---------------------------------------------------------------------------------------------
# cluster-run.yml
# ---------------------------------------------------------------------------------------------


def test_cluster_run_is_dispatched_by_hand_with_the_documented_inputs() -> None:
    workflow = load_workflow(CLUSTER_RUN)
    assert set(workflow["on"]) == {"workflow_dispatch"}
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"deployment", "max_evals", "parallelism", "cluster", "data"}
    options = set(inputs["deployment"]["options"])
    assert {"tcr-pipeline/full", "search/search-only"} <= options <= declared_deployments()
    assert inputs["deployment"]["default"] == "tcr-pipeline/full"


def test_cluster_run_inputs_become_flow_parameters() -> None:
    """Each input is passed as `--param NAME=...` with NAME a parameter of the flow."""
    import inspect

    from flows.pipeline import pipeline_flow

    script = cluster_run_step()["run"]
    names = set(re.findall(r'--param "([a-z_]+)=', script))
    assert names == {"max_evals", "parallelism", "cluster", "data"}
    assert names <= set(inspect.signature(pipeline_flow.fn).parameters)


def test_cluster_run_passes_the_inputs_to_run_sh_unchanged(tmp_path: Path, stub_checkout: Path) -> None:
    argv_file = tmp_path / "argv.json"
    inputs = {
        "deployment": "tcr-pipeline/full",
        "max_evals": "64",
        "parallelism": "8",
        "cluster": "my-lab-gpu",
        "data": "/shared/tcr/data/pairs-v2.csv",
    }
    result = run_cluster_run_step(
        tmp_path, inputs, remote_dir=stub_checkout, env={**os.environ, "STUB_ARGV": str(argv_file)}
    )
    assert result.code == 0, result.output
    assert json.loads(argv_file.read_text()) == [
        "tcr-pipeline/full",
        "--param", "max_evals=64",
        "--param", "parallelism=8",
        "--param", "cluster=my-lab-gpu",
        "--param", f"data={inputs['data']}",
        "--timeout", "20700",
    ]  # fmt: skip
    # ssh was told who to trust and with which key; the key was private while it existed
    assert result.ssh_args[-2:] == ["tester@login-node.example", "bash -s"]
    assert "StrictHostKeyChecking=yes" in result.ssh_args
    assert "BatchMode=yes" in result.ssh_args
    assert result.key_mode == "600"
    assert list(result.runner_temp.glob("ssh.*")) == []  # removed at the end
    assert "### stub report" in result.summary
    assert "not-a-real-key" not in result.output + result.summary


def test_cluster_run_leaves_out_empty_inputs(tmp_path: Path, stub_checkout: Path) -> None:
    argv_file = tmp_path / "argv.json"
    result = run_cluster_run_step(
        tmp_path,
        {"deployment": "search/search-only", "max_evals": "", "parallelism": "", "cluster": "", "data": ""},
        remote_dir=stub_checkout,
        env={**os.environ, "STUB_ARGV": str(argv_file)},
    )
    assert result.code == 0, result.output
    assert json.loads(argv_file.read_text()) == ["search/search-only", "--timeout", "20700"]


def test_cluster_run_fails_with_the_exit_status_of_run_sh(tmp_path: Path, stub_checkout: Path) -> None:
    result = run_cluster_run_step(
        tmp_path,
        {"deployment": "tcr-pipeline/full"},
        remote_dir=stub_checkout,
        env={**os.environ, "STUB_ARGV": str(tmp_path / "argv.json"), "STUB_EXIT": "1"},
    )
    assert result.code == 1
    assert "### stub report" in result.summary


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_evals", "8; touch /tmp/pwned"),  # shell syntax
        ("max_evals", "0"),
        ("parallelism", "two"),
        ("cluster", "$(id)"),
        ("data", "pairs.csv' && id '"),
        ("deployment", "tcr-pipeline/full --param force=true"),
    ],
)
def test_cluster_run_refuses_bad_inputs_before_connecting(
    tmp_path: Path, stub_checkout: Path, name: str, value: str
) -> None:
    inputs = {"deployment": "tcr-pipeline/full", name: value}
    result = run_cluster_run_step(
        tmp_path, inputs, remote_dir=stub_checkout, env={**os.environ, "STUB_ARGV": str(tmp_path / "argv")}
    )
    assert result.code == 2
    assert result.ssh_args == []  # never reached ssh
    assert "::error::" in result.stdout
    assert "❌" in result.summary


def test_cluster_run_says_which_secrets_are_missing(tmp_path: Path, stub_checkout: Path) -> None:
    result = run_cluster_run_step(
        tmp_path, {"deployment": "tcr-pipeline/full"}, remote_dir=stub_checkout, secrets={"TCR_SSH_KEY": ""}
    )
    assert result.code == 2
    assert "TCR_SSH_KEY" in result.stdout
    assert result.ssh_args == []


def test_ssh_run_quotes_arguments_for_the_remote_shell(tmp_path: Path, stub_checkout: Path) -> None:
    """Whatever the arguments, run.sh on the login node receives them as given."""
    argv_file = tmp_path / "argv.json"
    tricky = ["search/search-only", "--param", "run_id=a b", "--param", "x=$(touch pwned) \"q\" 's' ; |"]
    done = _ssh_run(tmp_path, tricky, TCR_REMOTE_DIR=str(stub_checkout), STUB_ARGV=str(argv_file))
    assert done.returncode == 0, done.stderr
    assert json.loads(argv_file.read_text()) == tricky
    assert not (tmp_path / "pwned").exists()
    assert not (stub_checkout / "pwned").exists()


def test_ssh_run_expands_a_home_relative_checkout_on_the_login_node(
    tmp_path: Path, stub_checkout: Path
) -> None:
    argv_file = tmp_path / "argv.json"
    home = stub_checkout.parent  # "login node" (with its space) stands for the remote $HOME
    done = _ssh_run(
        tmp_path,
        ["tcr-pipeline/full"],
        HOME=str(home),
        TCR_REMOTE_DIR=f"~/{stub_checkout.name}",
        STUB_ARGV=str(argv_file),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(argv_file.read_text()) == ["tcr-pipeline/full"]
