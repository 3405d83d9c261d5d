"""A Ctrl-C or SIGTERM while the command line is still importing (torch, pandas, Prefect: a second
or more): one line and exit status 130, not an import's KeyboardInterrupt traceback or a silent
death; a program that imports the package keeps its own handlers."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_fixtures import cli_command, cli_env


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (its SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_command_imports_is_one_line(tmp_path: Path, signum: int) -> None:
    process = subprocess.Popen(
        cli_command("runs", "--store", tmp_path),
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    # Python itself catches SIGINT from its start; SIGTERM is caught once tcr_cli is imported, the
    # moment its start-up handlers are in place and the heavy imports begin
    deadline = time.monotonic() + 30
    while not _catches(process.pid, signal.SIGTERM):
        assert process.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.001)
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    name = signal.Signals(signum).name
    assert process.returncode == 130, err
    assert err.strip().splitlines() == [f"interrupted by {name} while starting: nothing was done"]
    assert out == ""


def test_importing_the_package_leaves_the_handlers_alone() -> None:
    shown = subprocess.run(
        [sys.executable, "-c", "import signal, tcr_cli; print(signal.getsignal(signal.SIGTERM))"],
        env=cli_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == str(signal.SIG_DFL)  # as this Python prints it


def test_a_process_the_command_spawns_keeps_the_default_handlers(tmp_path: Path) -> None:
    """Dask's workers are spawned: they re-run the console script, with its argv, to import what
    the command's main module defines; the start-up handler (os._exit with a line) is not theirs."""
    script = tmp_path / "tcr-pipeline"  # named as the console script
    script.write_text(
        "import multiprocessing, signal\n"
        "import tcr_cli\n"
        "def show():\n"
        "    print('child', signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, flush=True)\n"
        "if __name__ == '__main__':\n"
        "    print('command', signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, flush=True)\n"
        "    child = multiprocessing.get_context('spawn').Process(target=show)\n"
        "    child.start()\n"
        "    child.join()\n"
    )
    shown = subprocess.run(
        [sys.executable, str(script)], env=cli_env(), capture_output=True, text=True, timeout=120
    )
    assert shown.stdout.split("\n")[:2] == ["command True", "child True"], shown.stderr
