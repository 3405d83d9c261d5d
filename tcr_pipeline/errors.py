"""Errors that reach the user as one line (the CLI exits with status 2)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path


class InputError(Exception):
    """Bad input: a missing or malformed file, row or value. The message names file, row and column."""


class InfrastructureError(RuntimeError):
    """The cluster failed, not the input: workers lost again and again, or unable to reach the
    Prefect API. The search stops with this one-line reason (the CLI exits with status 1)."""


class StoreWriteError(InfrastructureError):
    """The result store refused a write (disk full, quota, read-only, file too large): not the
    trial's fault, and retrying cannot help. The search stops with this one line (exit status 1)."""


@contextlib.contextmanager
def store_writes(root: str | Path) -> Iterator[None]:
    """An OSError on a file under the store ``root`` becomes a :class:`StoreWriteError` naming the
    file (and the errno's name: ENOSPC); any other error passes unchanged."""
    try:
        yield
    except OSError as exc:
        top = os.path.abspath(root)
        if exc.filename is None or not os.path.abspath(exc.filename).startswith(top + os.sep):
            raise
        code = errno.errorcode.get(exc.errno or 0, "")
        error = StoreWriteError(
            f"writing to the result store failed: {exc.filename}: {exc.strerror or exc}"
            + (f" ({code})" if code else "")
        )
        raise error from exc


ONE_LINE_ERRORS = (InputError, InfrastructureError)
# how Prefect names one in the records it logs of a failed task or flow: "Task run failed with
# exception: InputError(…)" (with the traceback), "Finished in state Failed('… exception: InputError: …')"
_NAMED = re.compile(r"exception:? (InputError|InfrastructureError|StoreWriteError)\b")


class OneLineErrorLogFilter(logging.Filter):
    """Drops the log records of a one-line error (a traceback, a "Finished in state Failed" line):
    the command prints that line itself, last."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ONE_LINE_ERRORS):
            return False
        return not _NAMED.search(record.getMessage())


def quiet_one_line_errors() -> None:
    """Put :class:`OneLineErrorLogFilter` on the handlers of the root logger and Prefect's (once)."""
    for name in ("", "prefect"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, OneLineErrorLogFilter) for f in handler.filters):
                handler.addFilter(OneLineErrorLogFilter())
