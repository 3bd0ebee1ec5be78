"""`rdmacheck launch`: every gate first, then compose.

    up:   parse the .env (exit 2 on a malformed line) -> check the compose file's
          variables against it (exit 2 naming the line) -> preflight gates (the
          same code as `rdmacheck preflight`) + docker.* gates -> waivers ->
          refuse (exit 1, Docker untouched) if any gate fails unwaived ->
          [pull] -> compose up -d -> wait (bounded) for healthy -> evidence.
    down: compose down for this role's project.

Evidence (kind="launch") is written whether the launch went ahead or was
refused, so a refusal leaves a record of why.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from ..config import DEFAULT_ENV_FILE, load_env_file
from rdmacheck.util.errors import UsageError
from rdmacheck.evidence.model import Evidence, Result, Status, now_iso
from . import proc, waivers as waivers_mod
from .compose import (DEFAULT_COMPOSE_FILE, SERVICE, ComposeDriver, ComposeInvocation, check_variables,
                      detect_driver, read_compose_file)
from .gates import IMAGE, UNWAIVABLE, DockerState, container_gates

ROLES = ("head", "worker")
UP_TIMEOUT = 600.0      # creating the container; image pulls have their own bound
PULL_TIMEOUT = 3600.0   # the vLLM image is ~20 GB
DOWN_TIMEOUT = 120.0
DEFAULT_REPORTS = Path("reports")


@dataclasses.dataclass
class LaunchOptions:
    role: str
    action: str = "up"                    # "up" or "down"
    env_file: str | None = None
    compose_file: str | None = None
    project: str | None = None
    dry_run: bool = False
    pull: bool = False
    waivers: list = dataclasses.field(default_factory=list)
    json_path: str | None = None
    health_timeout: float = 300.0
    docker: str = "docker"
    compose_v1: str = "docker-compose"
    compose_driver: str = "auto"          # auto (v2, else v1), v2, v1


@dataclasses.dataclass
class Prepared:
    env_file: Path
    env: dict[str, str]
    compose_file: Path
    inv: ComposeInvocation | None
    driver: ComposeDriver | None
    planned: ComposeInvocation     # inv, or the v2 command that would run once compose is installed


def _say(msg: str) -> None:
    print(msg, flush=True)


def prepare(opts: LaunchOptions) -> Prepared:
    """Input checks that end in exit 2: role, .env syntax, compose variables."""
    if opts.role not in ROLES:
        raise UsageError(f"--role {opts.role!r}: use head or worker")
    env_path = Path(opts.env_file) if opts.env_file else DEFAULT_ENV_FILE
    if not env_path.is_file():
        raise UsageError(f"env file {env_path} not found; copy docker/.env.example to {env_path} and edit it, "
                         "or pass --env FILE")
    file_env = load_env_file(env_path)  # EnvFileError (a UsageError) names the bad line
    compose_path = Path(opts.compose_file) if opts.compose_file else DEFAULT_COMPOSE_FILE
    text = read_compose_file(compose_path)
    # What compose will substitute: the .env, overlaid by the process environment (compose's precedence),
    # plus the two values the launcher sets itself.
    env = {**file_env, **os.environ}
    env.update({"RAY_MODE": opts.role, "RDMACHECK_ENV_FILE": str(env_path.resolve())})
    check_variables(text, env, str(compose_path), str(env_path))
    file_mode = file_env.get("RAY_MODE")
    if file_mode and file_mode != opts.role:
        _say(f"note: {env_path} sets RAY_MODE={file_mode}; --role {opts.role} wins for this launch")
    driver = detect_driver(opts.docker, opts.compose_v1, prefer=opts.compose_driver)
    project = opts.project or f"rdmacheck-{opts.role}"
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", project):
        raise UsageError(f"--project {project!r}: compose project names are lowercase letters, digits, '-' and '_'")
    inv = None
    if driver is not None:
        inv = ComposeInvocation(driver, compose_path.resolve(), env_path.resolve(), project, opts.role)
    # With no compose found the command is still shown (and recorded): the one the preferred driver would run.
    base = [opts.compose_v1] if opts.compose_driver == "v1" else [opts.docker, "compose"]
    planned = inv or ComposeInvocation(ComposeDriver(base, 1 if opts.compose_driver == "v1" else 2, "not installed"),
                                       compose_path.resolve(), env_path.resolve(), project, opts.role)
    return Prepared(env_path, file_env, compose_path, inv, driver, planned)


def _default_evidence_path(role: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return DEFAULT_REPORTS / f"launch-{socket.gethostname()}-{role}-{stamp}.json"


def _container_info(docker: str, ref: str) -> dict | None:
    p = proc.run([docker, "inspect", "--type", "container", "--format", "{{json .}}", ref], 20)
    if not p.ok:
        return None
    try:
        return json.loads(p.stdout)
    except ValueError:
        return None


def wait_healthy(docker: str, ref: str, timeout: float, poll: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> Result:
    """Poll the container until healthy (or running, without a healthcheck); bounded by ``timeout``."""
    expected = f"healthy within {timeout:g} s"
    deadline = clock() + timeout
    last = "not found"
    while True:
        info = _container_info(docker, ref)
        if info is not None:
            st = info.get("State") or {}
            health = (st.get("Health") or {}).get("Status")
            status = st.get("Status", "?")
            last = f"{status}" + (f", health {health}" if health else "")
            if status in ("exited", "dead"):
                return Result("launch.health", Status.FAIL, observed=f"container {status} (exit code {st.get('ExitCode')})",
                              expected=expected, remedy=f"read its log: docker logs {ref}",
                              details={"state": st})
            if health == "healthy" or (health is None and status == "running"):
                return Result("launch.health", Status.PASS,
                              observed=last if health else "running (no healthcheck defined)",
                              expected=expected, details={"health": health, "status": status})
            if health == "unhealthy":
                log = (st.get("Health") or {}).get("Log") or []
                out = (log[-1].get("Output", "") if log else "").strip().replace("\n", " | ")[-300:]
                return Result("launch.health", Status.FAIL, observed=f"unhealthy: {out}", expected=expected,
                              remedy=f"docker logs {ref}; the healthcheck is `ray status` (is the head reachable?)")
        if clock() >= deadline:
            return Result("launch.health", Status.FAIL, observed=f"still {last} after {timeout:g} s", expected=expected,
                          remedy=f"docker logs {ref}; raise --health-timeout if the image is slow to start")
        time.sleep(poll)


def _print_results(results: list[Result], title: str) -> None:
    from ..output.console import render_results

    render_results(results, title=title)


@dataclasses.dataclass
class _Launch:
    """One `up` once its gates are judged: what the later phases read, and the evidence they fill in."""
    opts: LaunchOptions
    prep: Prepared
    state: DockerState
    results: list[Result]
    ev: Evidence
    ctx: dict                 # ev.context
    evidence_path: Path


def launch(opts: LaunchOptions, root, config) -> int:
    """The `up` path; ``root`` and ``config`` are preflight's (``preflight.open_config``) from the same arguments."""
    from rdmacheck import preflight

    prep = prepare(opts)
    wv = waivers_mod.validate(opts.waivers)
    evidence_path = _checked_evidence_path(opts)
    done = preflight.run(root, config=config)
    results, state = _judge(opts, prep, done, wv)
    ev = Evidence(kind="launch", results=results)
    ev.context = ctx = _launch_context(opts, prep, state, root, config, wv, done)
    job = _Launch(opts, prep, state, results, ev, ctx, evidence_path)

    _print_gates(job, root)
    if _refuse_failed_gates(job):
        return _finish(job, 1)
    inv = prep.inv
    if inv is None:
        _refuse_without_compose(job)
        return _finish(job, 1)
    if opts.dry_run:
        _show_dry_run(job, inv)
        return _finish(job, 0)
    if not _pull(job):
        return _finish(job, 1)
    if not _compose_up(job, inv):
        return _finish(job, 1)
    return _finish(job, _await_health(job, inv))


def _checked_evidence_path(opts: LaunchOptions) -> Path:
    evidence_path = Path(opts.json_path) if opts.json_path else _default_evidence_path(opts.role)
    if not (opts.dry_run and not opts.json_path):
        from rdmacheck.util.outpath import check_output_path

        check_output_path(evidence_path, "--json")  # before the gates: never "cannot write" after the work
    return evidence_path


def _judge(opts: LaunchOptions, prep: Prepared, done, wv: list) -> tuple[list[Result], DockerState]:
    """Preflight's results plus the docker.* gates, with the waivers applied."""
    results = list(done.results)
    docker_results, state = container_gates(prep.inv, prep.driver, opts.docker, opts.pull,
                                            None if opts.compose_driver == "auto" else f"--compose-driver {opts.compose_driver}")
    results += docker_results
    notes = waivers_mod.apply(results, wv, UNWAIVABLE)
    for n in notes:
        _say(f"note: {n}")
    return results, state


def _launch_context(opts: LaunchOptions, prep: Prepared, state: DockerState, root, config, wv: list, done) -> dict:
    ctx: dict = {
        "role": opts.role,
        "project": prep.inv.project if prep.inv else None,
        "env_file": str(prep.env_file),
        "compose_file": str(prep.compose_file),
        "compose_driver": prep.driver.describe() if prep.driver else None,
        "compose_command": prep.planned.argv("up", "-d"),
        "image": state.image,
        "image_id": state.image_id,
        "container_name": state.container_name,
        "container_id": None,
        "root": str(root.root),
        "config": config.to_dict(),
        "dry_run": opts.dry_run,
        "launched": False,
        "waivers": [{"gate": w.gate, "reason": w.reason} for w in wv],
    }
    try:
        ctx["facts"] = done.summary()
    except Exception as e:  # facts are context, not a gate: never let them stop the record
        ctx["facts"] = {"error": f"{type(e).__name__}: {e}"}
    return ctx


def _finish(job: _Launch, code: int) -> int:
    """Every way out of an `up` past the gates: the evidence is written, refused or not."""
    job.ctx["finished"] = now_iso()  # ev.time stays the start: gates were judged then
    if not (job.opts.dry_run and not job.opts.json_path):
        from rdmacheck.evidence.jsonout import write_evidence

        write_evidence(job.ev, job.evidence_path)
        _say(f"evidence: {job.evidence_path}")
    return code


def _print_gates(job: _Launch, root) -> None:
    title = f"rdmacheck launch --role {job.opts.role} — {job.ev.host}" + (
        "" if root.live else f" (host gates from {root.root})")
    _print_results(job.results, title)
    waived = [r for r in job.results if r.waiver and r.status is Status.FAIL]
    for r in waived:
        _say(f"WAIVED {r.id}: {r.waiver['reason']} (by {r.waiver['user']} at {r.waiver['time']})")


def _refuse_failed_gates(job: _Launch) -> bool:
    """True (refused, said why) if a gate failed unwaived; an image still to pull is judged by the pull."""
    opts, planned = job.opts, job.prep.planned
    blocking = [r for r in job.results if r.effective_status is Status.FAIL
                and not (r.id == IMAGE and job.state.pull_pending)]
    if not blocking:
        return False
    job.ctx["refused"] = sorted({r.id for r in blocking})
    _say(f"REFUSED: not launching the {opts.role} container; {len(blocking)} gate(s) failed:")
    for r in blocking:
        _say(f"  [{r.id}] {r.observed}\n      remedy: {r.remedy or '-'}")
    if any(r.id not in UNWAIVABLE for r in blocking):
        _say("Fix them, or accept one explicitly with --waive ID --reason TEXT (recorded in the evidence).")
    # the command is shown refused or not, so the operator sees exactly what a passing node would run
    _say(f"{'would run' if opts.dry_run else 'would have run'} once every gate passes: "
         f"{proc.display(planned.argv('up', '-d'))}")
    _say(f"  with RAY_MODE={opts.role} RDMACHECK_ENV_FILE={planned.env_file} in its environment")
    return True


def _refuse_without_compose(job: _Launch) -> None:
    # docker.compose failed and was waived: a waiver accepts a gate, it cannot start a container without a
    # compose command (this was `assert prep.inv is not None`, exit 3, on a box with docker but no compose)
    why = "no compose implementation found, so nothing can start the container (docker.compose was waived)"
    job.results.append(Result("launch.up", Status.FAIL, observed=why, expected="compose up starts the container",
                              remedy="install the compose plugin (docker-compose-plugin) or Debian's docker-compose"))
    _say(f"{'would not run' if job.opts.dry_run else 'not launching'}: {why}: "
         f"{proc.display(job.prep.planned.argv('up', '-d'))}")


def _show_dry_run(job: _Launch, inv: ComposeInvocation) -> None:
    opts, state = job.opts, job.state
    if state.pull_pending:
        _say(f"would run: {proc.display([opts.docker, 'pull', state.image or '?'])}")
    _say(f"would run: {proc.display(inv.argv('up', '-d'))}")
    _say(f"  with RAY_MODE={opts.role} RDMACHECK_ENV_FILE={inv.env_file} in its environment")
    _say(f"then wait up to {opts.health_timeout:g} s for {state.container_name or SERVICE} to be healthy")


def _pull(job: _Launch) -> bool:
    """The pull --pull asked for, judged in place of the image gate; False: it failed, launch refused."""
    opts, state, results = job.opts, job.state, job.results
    if not (state.pull_pending and state.image):
        return True
    _say(f"pulling {state.image} ...")
    p = proc.run([opts.docker, "pull", state.image], PULL_TIMEOUT)
    pulled = Result(IMAGE, Status.PASS if p.ok else Status.FAIL,
                    observed=f"{state.image} pulled" if p.ok else f"pull failed: {p.tail(300)}",
                    expected="image present locally or pullable (--pull)",
                    remedy="" if p.ok else "check registry access and credentials (docker login)")
    idx = next(i for i, r in enumerate(results) if r.id == IMAGE)
    pulled.waiver = results[idx].waiver  # a waiver of the image gate still covers the pull's verdict
    results[idx] = pulled
    if pulled.effective_status is Status.FAIL:
        job.ctx["refused"] = [IMAGE]
        _say(f"REFUSED: {pulled.observed}")
        return False
    return True


def _compose_up(job: _Launch, inv: ComposeInvocation) -> bool:
    """compose up -d; False: it failed, and the project was taken down again."""
    _say(f"running: {proc.display(inv.argv('up', '-d'))}")
    up = inv.run("up", "-d", timeout=UP_TIMEOUT)
    job.ctx["compose_up"] = {"rc": up.rc, "output": (up.stderr + up.stdout)[-2000:]}
    if not up.ok:
        job.results.append(Result("launch.up", Status.FAIL, observed=f"compose up failed: {up.tail(400)}",
                                  expected="container created and started",
                                  remedy=("the Docker daemon is not answering: check dockerd (systemctl status docker) "
                                          "and DOCKER_HOST, then launch again" if proc.daemon_silent() else
                                          "read the error above; the project was taken down again so nothing half-started remains")))
        # compose leaves a Created-but-not-started container behind on a start error: remove it.
        inv.run("down", "--timeout", "10", timeout=DOWN_TIMEOUT)
        _print_results(job.results[-1:], "compose up")
        return False
    job.ctx["launched"] = True
    return True


def _await_health(job: _Launch, inv: ComposeInvocation) -> int:
    """Find the started container, record it, and wait (bounded) for it to be healthy; the exit code."""
    opts, ctx, results = job.opts, job.ctx, job.results
    ref = job.state.container_name or ""
    if not ref:
        ps = inv.run("ps", "-q", SERVICE, timeout=30)
        ref = ps.stdout.strip().splitlines()[0] if ps.ok and ps.stdout.strip() else ""
    info = _container_info(opts.docker, ref) if ref else None
    ctx["container_id"] = info.get("Id") if info else None
    results.append(Result("launch.up", Status.PASS, observed=f"started {ref} ({(ctx['container_id'] or '?')[:12]})",
                          expected="container created and started"))
    _say(f"started {ref} ({(ctx['container_id'] or '?')[:12]}); waiting up to {opts.health_timeout:g} s for healthy ...")
    health = wait_healthy(opts.docker, ctx["container_id"] or ref, opts.health_timeout)
    results.append(health)
    _say(f"[{health.id}] {health.status.value.upper()}: {health.observed}")
    if health.status is Status.FAIL:
        _say(f"the container was left as it is for inspection; remove it with: rdmacheck launch --role {opts.role} down")
    return 1 if health.status is Status.FAIL else 0


def down(opts: LaunchOptions) -> int:
    prep = prepare(opts)
    if prep.inv is None:
        raise UsageError("neither `docker compose` (v2) nor `docker-compose` (v1) found; install one to run down")
    argv = prep.inv.argv("down", "--timeout", "30")
    if opts.dry_run:
        _say(f"would run: {proc.display(argv)}")
        return 0
    # compose down may legitimately take DOWN_TIMEOUT stopping containers; a daemon that does not
    # answer at all must not hold it that long: ask it first, with the probe's bound
    from .gates import PROBE_TIMEOUT

    ping = proc.run([opts.docker, "version", "--format", "{{.Server.Version}}"], PROBE_TIMEOUT)
    if not ping.ok:
        print(f"rdmacheck: compose down not run: {proc.daemon_silent() or 'docker version failed: ' + ping.tail(300)}; "
              "check dockerd (systemctl status docker) and DOCKER_HOST", file=sys.stderr)
        return 1
    _say(f"running: {proc.display(argv)}")
    p = prep.inv.run("down", "--timeout", "30", timeout=DOWN_TIMEOUT)
    if not p.ok:
        print(f"rdmacheck: compose down failed: {p.tail(600)}", file=sys.stderr)
        return 1
    _say(f"{prep.inv.project}: down")
    return 0
