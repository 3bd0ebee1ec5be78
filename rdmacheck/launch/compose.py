"""Drive docker compose: v2 (``docker compose``) first, v1 (``docker-compose``) as fallback.

Debian 12 packages only compose v1 (1.29, Python); DGX OS ships the v2 plugin.
Both take the same ``-f FILE --env-file FILE -p PROJECT <sub-command>`` line
for what the launcher needs (config, up -d, down, ps), so one invocation type
serves both.

The .env is never pasted into a command line: compose reads it itself
(``--env-file``), and the two values the launcher decides (the role and the
absolute path of that .env) reach compose as process environment, which
compose lets win over the file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Mapping

from rdmacheck.util.errors import UsageError
from . import proc

DEFAULT_COMPOSE_FILE = Path("docker/compose.yaml")
SERVICE = "ray-node"
# Variables the launcher itself hands to compose (see ComposeInvocation.subprocess_env).
LAUNCHER_VARS = ("RAY_MODE", "RDMACHECK_ENV_FILE")


class ComposeDriver:
    """One compose implementation: the argv prefix, its major version and its version string.

    Compose v1 is a Python program that needs about a second just to print its
    version on a busy box, so for v1 the version query runs in the background
    (started at detection, read when the evidence is written) while the
    preflight gates run.
    """

    def __init__(self, base: list[str], major: int, version: str | None = None,
                 pending: subprocess.Popen | None = None) -> None:
        self.base = base
        self.major = major
        self._version = version
        self._pending = pending

    @property
    def version(self) -> str:
        if self._version is None:
            out = ""
            if self._pending is not None:
                try:
                    out, _ = self._pending.communicate(timeout=15)
                except subprocess.TimeoutExpired:
                    self._pending.kill()
                    self._pending.communicate()
                out = (out or "").strip().lstrip("v") if self._pending.returncode == 0 else ""
            self._version = out or "unknown"
            if self._version.startswith("2."):
                self.major = 2  # a standalone v2 binary installed as docker-compose
        return self._version

    def describe(self) -> str:
        v = self.version
        return f"{' '.join(self.base)} (compose v{self.major}, {v})"

    def __repr__(self) -> str:
        return f"ComposeDriver({self.base!r}, {self.major})"


DRIVER_CHOICES = ("auto", "v2", "v1")


def detect_driver(docker: str = "docker", v1: str = "docker-compose", timeout: float = 15,
                  prefer: str = "auto") -> ComposeDriver | None:
    """The compose implementation to use: the v2 plugin when the docker CLI has it, else v1, else None.

    ``prefer`` "v2" or "v1" allows only that one (an operator whose v2 plugin misbehaves, and the
    tests, which drive both).
    """
    if prefer not in DRIVER_CHOICES:
        raise ValueError(prefer)
    if prefer in ("auto", "v2"):
        p = proc.run([docker, "compose", "version", "--short"], timeout, needs_daemon=False)
        if p.ok and p.stdout.strip():
            return ComposeDriver([docker, "compose"], 2, p.stdout.strip().lstrip("v"))
        if prefer == "v2":
            return None
    path = shutil.which(v1)
    if path is None:
        return None
    try:
        pending = subprocess.Popen([path, "version", "--short"], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    except OSError:
        return None
    return ComposeDriver([v1], 1, None, pending)


@dataclasses.dataclass
class ComposeInvocation:
    driver: ComposeDriver
    compose_file: Path
    env_file: Path
    project: str
    role: str

    def argv(self, *sub: str) -> list[str]:
        return [*self.driver.base, "-f", str(self.compose_file), "--env-file", str(self.env_file),
                "-p", self.project, *sub]

    def subprocess_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["RAY_MODE"] = self.role
        # compose.yaml's env_file: points here, so the container gets the .env that was checked
        # (a relative default would silently pick docker/.env even when --env names another file).
        env["RDMACHECK_ENV_FILE"] = str(self.env_file)
        return env

    def run(self, *sub: str, timeout: float) -> proc.Proc:
        # `config` and `version` are answered by the CLI alone; everything else asks the daemon
        return proc.run(self.argv(*sub), timeout, env=self.subprocess_env(),
                        needs_daemon=sub[:1] not in (("config",), ("version",)))


# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, ${NAME?err}, ${NAME:+alt}, $NAME
_VAR = re.compile(
    r"\$(?:\{(?P<braced>[^}:?+\-]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def read_compose_file(path: Path) -> str:
    from rdmacheck.util.inputs import COMPOSE_MAX, read_input_file

    raw = read_input_file(path, "compose file", COMPOSE_MAX,
                          missing=f"compose file {path} not found; pass --compose FILE (default {DEFAULT_COMPOSE_FILE})")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"compose file {path} is not UTF-8 text") from None


def check_variables(text: str, env: Mapping[str, str], source: str, env_name: str) -> list[str]:
    """Every variable the compose file uses; UsageError naming the first line that uses an undefined one.

    Compose itself only warns about an unset ``${VAR}`` and substitutes an empty
    string, which is how a container starts with ``NCCL_IB_HCA=`` and NCCL picks
    whatever HCA it likes.  Here a reference without a default must be defined
    (``${VAR:?msg}`` additionally must be non-empty).
    """
    used: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue  # YAML comment: compose does not interpolate it
        scan = line.replace("$$", "")  # $$ is compose's escape for a literal $
        for m in _VAR.finditer(scan):
            name = m.group("braced") if m.group("plain") is None else m.group("plain")
            op = m.group("op")
            if not _NAME.match(name or ""):
                raise UsageError(f"{source} line {n}: {m.group(0)!r} is not a valid variable reference; write ${{NAME}}")
            if name not in used:
                used.append(name)
            value = env.get(name)
            if op in (None, "?"):
                missing = value is None
            elif op == ":?":
                missing = not value
            else:
                missing = False
            if missing:
                raise UsageError(
                    f"{source} line {n}: {m.group(0)} is not defined in {env_name} (nor in the environment); "
                    f"add {name}=... to {env_name} or give a default in the compose file (${{{name}:-value}})"
                )
    return used


def parse_config_output(text: str, service: str = SERVICE) -> dict[str, str]:
    """Scalar keys of one service from the normalised ``compose config`` output (v1 and v2 print the same layout).

    A tiny reader instead of a YAML library: the normalised output is two-space
    indented block YAML, and only a few scalars (image, container_name, runtime,
    network_mode, ipc) are needed.
    """
    out: dict[str, str] = {}
    in_services = False
    current = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            in_services = line.rstrip() == "services:"
            current = None
            continue
        if not in_services:
            continue
        if indent == 2 and line.rstrip().endswith(":"):
            current = line.strip()[:-1].strip("'\"")
            continue
        if current == service and indent == 4:
            key, sep, value = line.strip().partition(":")
            value = value.strip()
            if sep and value and not value.startswith(("|", ">")):
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                    value = value[1:-1]
                out[key] = value
    return out
