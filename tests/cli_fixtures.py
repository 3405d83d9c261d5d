"""Running the command line: in-process through its entry point (fast), or as a real
``python -m tcr_cli`` process (what a user's shell sees: exit status, streams).

Starting a Python process that imports torch and scikit-learn costs several seconds here, so most
CLI tests call ``tcr_cli.main.main`` in-process (``run_cli``); a few run real processes.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tcr_cli.main as cli
from tcr_cli import options

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class EscapedException(AssertionError):
    """An exception escaped ``main()``: a real process would print a traceback."""


def invoke_main(args: Sequence[object], cwd: Path) -> CliResult:
    """Run ``tcr_cli.main.main`` (the ``tcr-pipeline`` entry point) in-process, in ``cwd``.

    Both rich consoles are pinned to 80 columns, the width rich uses when not on a terminal.
    Raises :class:`EscapedException` for any exception other than the SystemExit of ``main``.
    """
    stdout, stderr = io.StringIO(), io.StringIO()
    widths = options.console.width, options.out.width
    argv, here = sys.argv, Path.cwd()
    # main() leaves its signal handlers for the shutdown of the process it ends; here it ends none
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    options.console.width = options.out.width = 80
    sys.argv = ["tcr-pipeline", *map(str, args)]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:
        command = " ".join(map(str, args))
        raise EscapedException(f"tcr-pipeline {command} raised {exc!r} (a traceback for the user)") from exc
    else:
        code = 0
    finally:
        os.chdir(here)
        sys.argv = argv
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        options.console.width, options.out.width = widths
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., CliResult]:
    """``run_cli(*args)``: :func:`invoke_main` in tmp_path (an escaping exception fails the test)."""

    def run(*args: object) -> CliResult:
        return invoke_main(args, tmp_path)

    return run


def cli_command(*args: object) -> list[str]:
    """The argv of a real ``python -m tcr_cli`` process."""
    return [sys.executable, "-m", "tcr_cli", *map(str, args)]


def cli_env() -> dict[str, str]:
    """The environment for CLI subprocesses: this checkout first on the path, plain output."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["NO_COLOR"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # tiny data: one thread, no spinning against the other processes
    return env


def run_cli_process(*args: object, cwd: Path, timeout: float = 300) -> CliResult:
    """Run ``python -m tcr_cli ARGS`` in a subprocess in ``cwd`` (thread-safe)."""
    done = subprocess.run(
        cli_command(*args), cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


@pytest.fixture(name="run_cli_process", scope="session")
def _run_cli_process() -> Callable[..., CliResult]:
    """:func:`run_cli_process` as a fixture."""
    return run_cli_process


def wait_for_url(
    url: str, process: subprocess.Popen[Any], timeout_s: float, what: str, why: Callable[[], str]
) -> None:
    """Wait until ``url`` answers; fail with ``why()`` if ``process`` (its server) ends first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert process.poll() is None, why()
            assert time.monotonic() < deadline, f"{what} did not answer within {timeout_s:.0f} s"
            time.sleep(0.3)
