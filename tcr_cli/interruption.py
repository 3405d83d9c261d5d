"""SIGINT and SIGTERM stop every command the same way, and the interrupted command says what became
of its work in one line."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tcr_cli.options import console

state: dict[str, str] = {}  # the signal that stopped the command ("signal"), what became of its work ("note")


def interrupt(signum: int, frame: object) -> None:
    """The handler of SIGINT and SIGTERM: remember the signal, raise KeyboardInterrupt."""
    state.setdefault("signal", signal.Signals(signum).name)
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
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def report_interruption() -> None:
    """The closing line of an interrupted command."""
    what = state.get("note", "stopped; no half-written file was left")
    console.print(f"interrupted by {state.get('signal', 'SIGINT')}: {what}", markup=False, soft_wrap=True)
