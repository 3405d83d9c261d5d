"""Errors that reach the user as one line (the CLI exits with status 2)."""


class InputError(Exception):
    """Bad input: a missing or malformed file, row or value. The message names file, row and column."""


class InfrastructureError(RuntimeError):
    """The cluster failed, not the input: workers lost again and again, or unable to reach the
    Prefect API. The search stops with this one-line reason (the CLI exits with status 1)."""
