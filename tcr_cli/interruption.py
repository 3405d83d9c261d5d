"""SIGINT and SIGTERM stop every command the same way, and the interrupted command says what became
of its work in one line."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tcr_cli.options import console

# the signal that stopped the command ("signal"), what became of its work ("note"); "done": its
# work is safe (a search's run completed), "late": a signal that came after that, "exit": the
# status it ended with (Python is shutting down)
state: dict[str, str] = {}


def work_done() -> None:
    """The command's work is safe (recorded, complete): from now on a signal no longer stops it.

    Its last steps (stopping the Prefect server, printing the summary) take a second or two; a
    Ctrl-C then is remembered and said in one line, and the command still exits 0.
    """
    state["done"] = "1"


def interrupt(signum: int, frame: object) -> None:
    """The handler of SIGINT and SIGTERM: remember the signal, raise KeyboardInterrupt.

    Once the command has ended (Python shutting down: Prefect's and Dask's exit handlers) a signal
    ends the process at once with the command's exit status; once its work is done it is only
    remembered (:func:`work_done`).
    """
    name = signal.Signals(signum).name
    if "exit" in state:
        console.print(
            f"{name} while shutting down: the command had ended (exit status {state['exit']}); stopped now",
            markup=False,
            soft_wrap=True,
        )
        sys.stdout.flush()
        os._exit(int(state["exit"]))
    if "done" in state:
        state.setdefault("late", name)
        return
    state.setdefault("signal", name)
    # the Dask cluster is torn down mid-trial now: its comm errors (with tracebacks) say nothing
    # the one closing line does not
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, so every command stops the
    same way: temporary files are removed, a search records its run as ``interrupted``, exit 130.

    SIGINT is caught even when the shell started us with it ignored (a background job), so that
    ``kill -INT`` always stops a command.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except SystemExit as exc:  # the command ended: the handlers stay for Python's shutdown
        state["exit"] = str(exit_status(exc.code))
        raise
    finally:
        if "exit" not in state:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def ignore_signals_at_exit() -> None:
    """Run last at exit (registered first): Python then tears itself down, about two seconds with
    torch loaded and nothing left to do, under its default handlers, so a Ctrl-C would kill a
    command that has ended (status 130 after a complete run, without a line). Ignored instead."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def exit_status(code: object) -> int:
    """The process exit status of ``SystemExit(code)``."""
    return code if isinstance(code, int) else (0 if code is None else 1)


def report_late_signal() -> None:
    """The line of a signal that came after the command's work was done (it changed nothing)."""
    if "late" in state:
        console.print(
            f"{state['late']} after the run completed: ignored, nothing was interrupted",
            markup=False,
            soft_wrap=True,
        )


def report_interruption() -> None:
    """The closing line of an interrupted command."""
    what = state.get("note", "stopped; no half-written file was left")
    console.print(f"interrupted by {state.get('signal', 'SIGINT')}: {what}", markup=False, soft_wrap=True)
