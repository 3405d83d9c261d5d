"""Errors that reach the user as one line (the CLI exits with status 2)."""


class InputError(Exception):
    """Bad input: a missing or malformed file, row or value. The message names file, row and column."""
