"""Errors that end a command with exit code 2 and one line, never a traceback."""


class UsageError(Exception):
    """Bad input: a flag, a file, a value.  The message names the problem and the fix.

    The CLI prints ``rdmacheck: error: <message>`` and exits 2.
    """
