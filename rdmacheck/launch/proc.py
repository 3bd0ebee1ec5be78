"""Bounded subprocesses for the launcher.

Every Docker call is an argument list (never a shell string) with a timeout,
so a value from .env can never be parsed by a shell and a wedged daemon can
never hang the launcher.  A missing binary or a timeout comes back as a
result with a conventional exit status (127, 124) instead of an exception:
the gates turn it into a FAIL with a remedy.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
from typing import Mapping, Sequence


@dataclasses.dataclass
class Proc:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def tail(self, n: int = 400) -> str:
        """The last ``n`` characters of stderr (or stdout), one line, for a Result."""
        text = (self.stderr.strip() or self.stdout.strip()).replace("\n", " | ")
        return text[-n:]


def display(argv: Sequence[str]) -> str:
    """How a command is shown to people (quoted so it can be pasted); never executed as text."""
    return shlex.join(list(argv))


# Once a call that talks to the daemon has timed out, every later one in this process would wait
# its own full timeout too (a waived docker.engine took compose up to its 600 s bound): they
# return at once instead, naming the first timeout as the cause.  One CLI run is one process.
_daemon_silent: str | None = None


def daemon_address(env: Mapping[str, str] | None = None) -> str:
    e = os.environ if env is None else env
    return e.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def daemon_silent() -> str | None:
    """Why the daemon counts as unreachable for the rest of this run (None: it has answered or not been asked)."""
    return _daemon_silent


def reset_daemon_state() -> None:
    global _daemon_silent
    _daemon_silent = None


def run(argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None,
        needs_daemon: bool = True) -> Proc:
    """Run ``argv`` for at most ``timeout`` s.  ``needs_daemon=False`` for calls the CLI answers alone
    (``compose version``, ``compose config``): those still run after the daemon went silent."""
    global _daemon_silent
    argv = [str(a) for a in argv]
    if needs_daemon and _daemon_silent:
        return Proc(argv, 124, "", f"not run: {_daemon_silent}")
    try:
        cp = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout,
            env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return Proc(argv, 127, "", f"{argv[0]}: command not found")
    except PermissionError as e:
        return Proc(argv, 126, "", f"{argv[0]}: {e.strerror}")
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        if needs_daemon and _daemon_silent is None:
            _daemon_silent = (f"the Docker daemon at {daemon_address(env)} did not answer "
                              f"`{display(argv)[:120]}` within {timeout:g} s")
        return Proc(argv, 124, out, f"{display(argv)} timed out after {timeout:g} s "
                                    f"(the Docker daemon at {daemon_address(env)} did not answer)")
    return Proc(argv, cp.returncode, cp.stdout, cp.stderr)
