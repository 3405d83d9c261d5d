"""Stopping a real `tcr-pipeline search`: Ctrl-C (SIGINT to the process group) and SIGTERM.

Each test starts the real command in its own session, without PREFECT_API_URL (so the CLI starts
its temporary Prefect server, as for a user), waits until a trial is running on a Dask worker and
sends the signal. The command must stop within seconds with exit status 130, one line naming the
signal and the run, no traceback, the run recorded as ``interrupted``, no process left behind,
and a rerun with the same run id must finish with exactly ``max_evals`` trials.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from cli_fixtures import cli_command, cli_env, wait_for_url

from tcr_pipeline.store import Store

pytestmark = pytest.mark.slow

STOP_WITHIN_S = 30  # measured: 5-8 s on the loaded two-core machine (4 s of it Dask killing a busy worker)
MAX_EVALS = 3


@pytest.fixture(scope="module")
def slow_params(workdir: Path) -> Path:
    """The flow tests' tiny search, with trials long enough (several seconds) to be interrupted
    mid-way: 250 epochs were enough before compact codes and the rank-based AUC, not after."""
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["search"]["space"]["epochs"] = {"choice": [1000]}
    params["search"]["max_evals"] = MAX_EVALS
    path = workdir / "params-signals.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _search(workdir: Path, params: Path, store: Path, run_id: str, command: str = "search") -> list[str]:
    if command == "pipeline":  # prepare (into the store's sibling) → search → promote
        return cli_command(
            "pipeline", "--run-id", run_id, "--store", store, "--prepared", store.parent / "prepared",
            "--params", params, "--data", workdir / "small.csv",
        )  # fmt: skip
    return cli_command(
        "search", "--run-id", run_id, "--store", store, "--prepared", workdir / "prepared",
        "--params", params, "--no-promote",
    )  # fmt: skip


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in cli_env().items() if k != "PREFECT_API_URL"}  # the CLI's own server
    env["PREFECT_HOME"] = str(home)  # its own database, not ~/.prefect shared with other runs
    return env


def _processes_with(prefect_home: str) -> list[int]:
    """Processes whose environment names this PREFECT_HOME: the command's server and workers."""
    marker = f"PREFECT_HOME={prefect_home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone, or not ours
            continue
    return found


def test_a_killed_search_leaves_no_prefect_server(workdir: Path, slow_params: Path, tmp_path: Path) -> None:
    """SIGKILL cannot be caught: the temporary server still goes (it gets SIGTERM when its parent dies)."""
    store = Store(tmp_path / "store")
    env = _env(tmp_path / "prefect-home")
    command = _search(workdir, slow_params, store.root, "killed")
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while store.load_manifest("killed") is None:  # the server is up, the flow has started
            assert process.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    deadline = time.monotonic() + 20
    while _processes_with(env["PREFECT_HOME"]):
        assert time.monotonic() < deadline, "the temporary Prefect server outlived its command"
        time.sleep(0.2)


def _kill_left(process: subprocess.Popen[str]) -> None:
    """SIGKILL to the process group of a command that is still running (a failed test)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _running_trial(store: Store, run_id: str) -> bool:
    return any(t.status == "running" for t in store.list_trials(run_id))


@pytest.mark.parametrize(
    ("signum", "to_group", "name"),
    [
        pytest.param(signal.SIGINT, True, "search", id="ctrl-c-to-the-process-group"),
        pytest.param(signal.SIGTERM, False, "search", id="sigterm-to-the-command"),
        pytest.param(signal.SIGINT, False, "search", id="sigint-to-the-command"),
        pytest.param(signal.SIGINT, True, "pipeline", id="ctrl-c-to-a-pipeline"),
    ],
)
def test_a_signal_stops_the_search_and_the_run_resumes(
    workdir: Path, slow_params: Path, tmp_path: Path, signum: signal.Signals, to_group: bool, name: str
) -> None:
    store = Store(tmp_path / "store")
    run_id = f"stop-{signum.name.lower()}"
    command = _search(workdir, slow_params, store.root, run_id, name)
    env = _env(tmp_path / "prefect-home")
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not _running_trial(store, run_id):
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no trial started in time"
            time.sleep(0.2)
        time.sleep(1.0)  # the trial is training on a Dask worker
        sent = time.monotonic()
        if to_group:
            os.killpg(process.pid, signum)  # what Ctrl-C in a terminal does
        else:
            os.kill(process.pid, signum)
        _, stderr = process.communicate(timeout=STOP_WITHIN_S)
        stopped_after = time.monotonic() - sent
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, stderr[-3000:]
    assert stopped_after < STOP_WITHIN_S
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last == (
        f"interrupted by {signum.name}: run {run_id} recorded as interrupted in {store.root}; "
        f"resume it with --run-id {run_id}"
    )
    assert sum("interrupted by" in line for line in stderr.splitlines()) == 1
    manifest = store.load_manifest(run_id)
    assert manifest is not None
    assert manifest.status == "interrupted"
    assert not [t for t in store.list_trials(run_id) if t.done]  # stopped mid-trial
    # nothing of the search outlives it: no Dask worker, no Prefect server (in a session of its own),
    # all of which carry the command's PREFECT_HOME in their environment
    deadline = time.monotonic() + 10
    while left := _processes_with(env["PREFECT_HOME"]):
        commands = [(Path("/proc") / str(pid) / "cmdline").read_bytes()[:200] for pid in left]
        assert time.monotonic() < deadline, f"left running: {commands}"
        time.sleep(0.2)

    if signum == signal.SIGTERM:  # resuming once is enough (each rerun trains three trials)
        resumed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        trials = store.list_trials(run_id)
        assert sorted(t.trial_id for t in trials if t.done) == list(range(MAX_EVALS))
        assert store.load_manifest(run_id).status == "completed"


@pytest.mark.parametrize("name", ["search", "pipeline"])
def test_ctrl_c_while_the_cluster_starts_stops_cleanly(
    workdir: Path, slow_params: Path, tmp_path: Path, name: str
) -> None:
    """The Dask cluster starts in a thread while the run opens (and, for `pipeline`, while the data
    is prepared): Ctrl-C then, before any trial, stops as cleanly as mid-trial, cluster included."""
    store = Store(tmp_path / "store")
    run_id = f"early-{name}"
    env = _env(tmp_path / "prefect-home")
    process = subprocess.Popen(
        _search(workdir, slow_params, store.root, run_id, name), cwd=tmp_path, env=env,
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while store.load_manifest(run_id) is None:  # the run is open, the cluster starting
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run did not open in time"
            time.sleep(0.05)
        assert not store.list_trials(run_id)
        os.killpg(process.pid, signal.SIGINT)
        stderr = process.communicate(timeout=STOP_WITHIN_S)[1]
    finally:
        _kill_left(process)
    assert (process.returncode, "Traceback" in stderr) == (130, False), stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted by SIGINT: run {run_id} recorded as interrupted in {store.root}; "
        f"resume it with --run-id {run_id}"
    )
    assert store.load_manifest(run_id).status == "interrupted"
    assert not store.list_trials(run_id)  # stopped before its first trial
    deadline = time.monotonic() + 10
    while left := _processes_with(env["PREFECT_HOME"]):
        commands = [(Path("/proc") / str(pid) / "cmdline").read_bytes()[:200] for pid in left]
        assert time.monotonic() < deadline, f"left running: {commands}"
        time.sleep(0.2)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_dashboard_stops_on_a_signal_even_when_started_with_sigint_ignored(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """`tcr-pipeline dashboard &` from a script starts with SIGINT ignored: `kill -INT` must still stop it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "store").mkdir()
    process = subprocess.Popen(
        cli_command("dashboard", "--store", tmp_path / "store", "--port", port), cwd=tmp_path, env=cli_env(),
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # what a non-interactive `&` does
    )  # fmt: skip
    try:
        wait_for_url(
            f"http://127.0.0.1:{port}/",
            process,
            120,
            "the dashboard",
            lambda: process.communicate()[1][-3000:],
        )
        os.kill(process.pid, signum)
        _, stderr = process.communicate(timeout=STOP_WITHIN_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert (
        stderr.strip().splitlines()[-1]
        == f"interrupted by {signum.name}: stopped; no half-written file was left"
    )


def test_ctrl_c_after_the_search_completed_leaves_it_completed(workdir: Path, tmp_path: Path) -> None:
    """Ctrl-C again and again from the moment the summary appears until the process is gone (its
    last steps: stopping the server, printing, Python's own teardown of about two seconds): the
    run is complete, so the command exits 0, its summary whole, never 130."""
    import json

    store = Store(tmp_path / "store")
    command = [*_search(workdir, workdir / "params.yaml", store.root, "late"), "--max-evals", "1"]
    env = {**_env(tmp_path / "prefect-home"), "PYTHONUNBUFFERED": "1"}
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr_file:
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.PIPE,
            stderr=stderr_file, text=True,
        )  # fmt: skip
    assert process.stdout is not None
    summary = []
    try:
        while line := process.stdout.readline():
            summary.append(line)
            if line.startswith("{"):  # the flow has returned: the summary is being printed
                break
        assert summary, errors.read_text()[-3000:]
        signals = 0
        while process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            signals += 1
            time.sleep(0.05)
        rest = process.stdout.read()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()
    stderr = errors.read_text()
    assert process.returncode == 0, stderr[-3000:]
    assert signals >= 1
    assert "KeyboardInterrupt" not in stderr  # (distributed may log a comm traceback as the cluster closes)
    last = stderr.strip().splitlines()[-1]
    assert last in (
        "SIGINT after the run completed: ignored, nothing was interrupted",  # printing the summary
        "SIGINT while shutting down: the command had ended (exit status 0); stopped now",  # exit handlers
    ) or last.startswith("search ━"), last  # Python's teardown: ignored
    assert "interrupted by" not in stderr
    assert json.loads("".join(summary) + rest)["run_id"] == "late"
    manifest = store.load_manifest("late")
    assert manifest is not None
    assert manifest.status == "completed"
