"""Container gates: what must hold in Docker before the Ray node may start.

    docker.engine     the daemon answers (docker info)
    docker.runtime    the runtime compose.yaml asks for (nvidia) is registered with the daemon
    docker.image      the image is present locally (or will be pulled with --pull)
    docker.compose    a compose implementation exists and `config` validates the file with this .env
    docker.container  no container of this node is already running (never waivable: it is what
                      stops a second launch from recreating the running one)

Every probe only reads: a refused launch leaves Docker exactly as it was.
"""

from __future__ import annotations

import dataclasses
import json
import re
import os

from rdmacheck.evidence.model import Result, Status
from . import proc
from .compose import SERVICE, ComposeDriver, ComposeInvocation, parse_config_output

ENGINE, RUNTIME, IMAGE, COMPOSE, CONTAINER = (
    "docker.engine", "docker.runtime", "docker.image", "docker.compose", "docker.container")
GATE_IDS = (ENGINE, RUNTIME, IMAGE, COMPOSE, CONTAINER)
UNWAIVABLE = frozenset({CONTAINER})
PROBE_TIMEOUT = 15.0   # launch and down must end within 30 s on a silent daemon


@dataclasses.dataclass
class DockerState:
    """What the gates learnt, for the launcher's next steps and the evidence."""

    info: dict | None = None
    config: dict[str, str] = dataclasses.field(default_factory=dict)
    image: str | None = None
    image_id: str | None = None
    container_name: str | None = None
    pull_pending: bool = False


def _engine(docker: str) -> tuple[Result, dict | None]:
    p = proc.run([docker, "info", "--format", "{{json .}}"], PROBE_TIMEOUT)
    info = None
    if p.ok:
        try:
            info = json.loads(p.stdout)
        except ValueError:
            info = None
    if p.rc == 127:
        return Result(ENGINE, Status.FAIL, observed=f"{docker}: command not found (no Docker engine installed)",
                      expected="a reachable Docker daemon",
                      remedy="install Docker (Debian: apt-get install docker.io; DGX OS ships it) and start dockerd"), None
    if not info or not info.get("ServerVersion"):
        return Result(
            ENGINE, Status.FAIL,
            observed=f"docker info failed: {p.tail(300)}" if p.rc else "docker info answered without a server version",
            expected="a reachable Docker daemon",
            remedy="start dockerd (systemctl start docker; on a test box .ci/docker-setup.sh) and make sure "
                   "this user may use /var/run/docker.sock (root or the docker group)",
        ), None
    return Result(
        ENGINE, Status.PASS,
        observed=f"dockerd {info.get('ServerVersion')} ({info.get('OperatingSystem', '?')})",
        expected="a reachable Docker daemon",
        details={"server_version": info.get("ServerVersion"), "default_runtime": info.get("DefaultRuntime")},
    ), info


def _runtime(info: dict | None, wanted: str | None) -> Result:
    expected = f"runtime {wanted!r} registered" if wanted else "the runtime compose.yaml names"
    if info is None:
        return Result(RUNTIME, Status.SKIP, observed="engine unreachable", expected=expected,
                      remedy="fix docker.engine first")
    runtimes = info.get("Runtimes") or {}
    names = sorted(runtimes)
    if not wanted:
        return Result(RUNTIME, Status.PASS, observed=f"compose file requests no runtime (daemon has {', '.join(names)})",
                      expected=expected)
    if wanted not in runtimes:
        return Result(
            RUNTIME, Status.FAIL, observed=f"registered: {', '.join(names) or 'none'}", expected=expected,
            remedy="install the NVIDIA container toolkit and run `nvidia-ctk runtime configure --runtime=docker`, "
                   "then restart dockerd (docker run fails with 'Unknown runtime specified nvidia' otherwise)",
            details={"runtimes": runtimes},
        )
    path = str((runtimes.get(wanted) or {}).get("path", "")) or "?"
    if wanted == "nvidia" and os.path.basename(path) == "runc":
        # The CI box maps the name to plain runc (no GPU here): the container starts, but no GPU is injected.
        return Result(
            RUNTIME, Status.WARN, observed=f"nvidia -> {path} (plain runc: no GPU is injected)",
            expected="nvidia -> nvidia-container-runtime",
            remedy="on a GPU node register the real runtime: nvidia-ctk runtime configure --runtime=docker",
            details={"runtimes": runtimes},
        )
    return Result(RUNTIME, Status.PASS, observed=f"{wanted} -> {path}", expected=expected, details={"runtimes": runtimes})


def _image(docker: str, info: dict | None, image: str | None, pull: bool, state: DockerState,
           compose_r: Result | None = None) -> Result:
    expected = "image present locally" + (" or pullable (--pull)" if pull else "")
    if not image and compose_r is not None and compose_r.status is not Status.PASS:
        # The image name comes from `compose config`; without it the .env's VLLM_IMAGE was never read,
        # so the cause to name is compose's, not the .env's.
        return Result(IMAGE, Status.SKIP, observed=f"image not known: {compose_r.observed}", expected=expected,
                      remedy="fix docker.compose first (the image name comes from `compose config`)")
    if not image:
        return Result(IMAGE, Status.FAIL, observed="compose config names no image for " + SERVICE, expected=expected,
                      remedy="set VLLM_IMAGE in the .env (see docker/.env.example)")
    if info is None:
        return Result(IMAGE, Status.SKIP, observed=f"{image}: engine unreachable", expected=expected,
                      remedy="fix docker.engine first")
    p = proc.run([docker, "image", "inspect", "--format", "{{.Id}}", image], PROBE_TIMEOUT)
    if p.ok and p.stdout.strip():
        state.image_id = p.stdout.strip()
        return Result(IMAGE, Status.PASS, observed=f"{image} present ({state.image_id[:19]})", expected=expected,
                      details={"image": image, "id": state.image_id})
    if pull:
        state.pull_pending = True
        return Result(IMAGE, Status.FAIL, observed=f"{image} not present locally; will be pulled once every other gate passes",
                      expected=expected, remedy=f"docker pull {image}", details={"image": image, "pull_pending": True})
    return Result(IMAGE, Status.FAIL, observed=f"{image} not present locally", expected=expected,
                  remedy=f"docker pull {image} (or rerun with --pull), or docker load it on an air-gapped node",
                  details={"image": image})


def _compose(inv: ComposeInvocation | None, driver: ComposeDriver | None, state: DockerState,
             want: str | None = None) -> Result:
    expected = f"`config` validates, service {SERVICE} defined"
    if driver is None or inv is None:
        return Result(COMPOSE, Status.FAIL,
                      observed=f"no compose implementation found ({want or 'docker compose (v2) or docker-compose (v1)'})",
                      expected=expected,
                      remedy="install the compose plugin (docker-compose-plugin) or Debian's docker-compose"
                             + (", or drop --compose-driver" if want else ""))
    p = inv.run("config", timeout=PROBE_TIMEOUT)
    if not p.ok:
        return Result(COMPOSE, Status.FAIL, observed=f"{driver.describe()}: config failed: {p.tail(300)}",
                      expected=expected, remedy=f"fix {inv.compose_file} (run: {proc.display(inv.argv('config'))})")
    cfg = parse_config_output(p.stdout)
    state.config = cfg
    if not cfg:
        return Result(COMPOSE, Status.FAIL, observed=f"no service {SERVICE!r} in {inv.compose_file}", expected=expected,
                      remedy=f"define the service {SERVICE} (see docker/compose.yaml)")
    state.image = cfg.get("image")
    state.container_name = cfg.get("container_name")
    return Result(
        COMPOSE, Status.PASS,
        observed=f"valid ({driver.describe()}); network_mode {cfg.get('network_mode', 'default')}, "
                 f"ipc {cfg.get('ipc', 'default')}, container {state.container_name or '(compose-named)'}",
        expected=expected, details={"driver": driver.base, "driver_version": driver.version, "service": cfg},
    )


def _container(docker: str, info: dict | None, inv: ComposeInvocation | None, state: DockerState) -> Result:
    expected = "no container of this node running"
    if info is None:
        return Result(CONTAINER, Status.SKIP, observed="engine unreachable", expected=expected,
                      remedy="fix docker.engine first")
    fmt = '{{.ID}}\t{{.Names}}\t{{.State}}\t{{.Label "com.docker.compose.project"}}'
    rows: dict[str, list[str]] = {}
    filters = []
    if state.container_name:
        filters.append(["--filter", f"name=^/?{re.escape(state.container_name)}$"])
    if inv is not None:
        filters.append(["--filter", f"label=com.docker.compose.project={inv.project}",
                        "--filter", f"label=com.docker.compose.service={SERVICE}"])
    for flt in filters:
        p = proc.run([docker, "ps", "-a", "--no-trunc", *flt, "--format", fmt], PROBE_TIMEOUT)
        if not p.ok:
            return Result(CONTAINER, Status.FAIL, observed=f"docker ps failed: {p.tail(300)}", expected=expected,
                          remedy="check the daemon (docker ps)")
        for line in p.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) == 4:
                rows[parts[0]] = parts
    running = [r for r in rows.values() if r[2] in ("running", "restarting", "paused")]
    project = inv.project if inv else "?"
    role = inv.role if inv else "?"
    if running:
        cid, name, st, proj = running[0]
        return Result(
            CONTAINER, Status.FAIL,
            observed=f"{name} is already {st} (container {cid[:12]}, project {proj or 'none'}); not starting a second one",
            expected=expected,
            remedy=f"leave it running, or stop it first: rdmacheck launch --role {role}"
                   + ("" if project == f"rdmacheck-{role}" else f" --project {project}") + " down",
            details={"container_id": cid, "name": name, "state": st, "project": proj},
        )
    foreign = [r for r in rows.values() if r[3] != project]
    if foreign:
        cid, name, st, proj = foreign[0]
        return Result(
            CONTAINER, Status.FAIL,
            observed=f"the name {name} is taken by a {st} container {cid[:12]} of project {proj or 'none'}",
            expected=expected, remedy=f"remove it (docker rm {name}) or change container_name",
            details={"container_id": cid, "name": name, "state": st, "project": proj},
        )
    if rows:
        cid, name, st, _ = next(iter(rows.values()))
        return Result(CONTAINER, Status.PASS, observed=f"{name} exists but is {st}; compose will replace it",
                      expected=expected, details={"container_id": cid, "state": st})
    return Result(CONTAINER, Status.PASS, observed=f"no {state.container_name or SERVICE} container", expected=expected)


def container_gates(
    inv: ComposeInvocation | None, driver: ComposeDriver | None, docker: str = "docker", pull: bool = False,
    want: str | None = None,
) -> tuple[list[Result], DockerState]:
    """Run the docker.* gates (read-only), in display order."""
    state = DockerState()
    compose_r = _compose(inv, driver, state, want)
    engine_r, info = _engine(docker)
    state.info = info
    runtime_r = _runtime(info, state.config.get("runtime") if state.config else "nvidia")
    image_r = _image(docker, info, state.image, pull, state, compose_r)
    container_r = _container(docker, info, inv, state)
    return [engine_r, runtime_r, image_r, compose_r, container_r], state
