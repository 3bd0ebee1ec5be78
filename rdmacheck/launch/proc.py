"""Bounded subprocesses for the launcher.

Every Docker call is an argument list (never a shell string) with a timeout,
so a value from .env can never be parsed by a shell and a wedged daemon can
never hang the launcher.  A missing binary or a timeout comes back as a
result with a conventional exit status (127, 124) instead of an exception:
the gates turn it into a FAIL with a remedy.
"""

from __future__ import annotations

import dataclasses
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


def run(argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None) -> Proc:
    argv = [str(a) for a in argv]
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
        return Proc(argv, 124, out, f"{display(argv)} timed out after {timeout:g} s")
    return Proc(argv, cp.returncode, cp.stdout, cp.stderr)
