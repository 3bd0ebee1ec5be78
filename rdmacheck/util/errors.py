"""Errors that end a command with exit code 2 and one line, never a traceback."""


class UsageError(Exception):
    """Bad input: a flag, a file, a value.  The message names the problem and the fix.

    The CLI prints ``rdmacheck: error: <message>`` and exits 2.
    """


class Terminated(BaseException):
    """SIGTERM arrived while rdmacheck had children to stop (bench --nproc): raised from the signal handler so
    the ``finally`` blocks stop the ranks and remove the temp folder; the CLI exits 143 (128 + SIGTERM)."""
