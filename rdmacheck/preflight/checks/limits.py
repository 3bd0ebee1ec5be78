"""Resource-limit gates: memlock, stack, /dev/shm.

RDMA registers (pins) memory: with a finite RLIMIT_MEMLOCK NCCL's IB
transport fails to register buffers and falls back to sockets, or dies at
the first large message.  vLLM/NCCL threads want a large stack (the reference
container sets 64 MiB), and NCCL's SHM transport and vLLM need /dev/shm.
"""

from __future__ import annotations

from rdmacheck.evidence.model import Result, Status
from rdmacheck.util.units import human_bytes

MEMLOCK = "Max locked memory"
STACK = "Max stack size"


def _missing(gid: str, exp: str) -> list[Result]:
    return [Result(gid, Status.SKIP, observed="/proc/self/limits unreadable", expected=exp,
                   remedy="run on Linux with /proc mounted (or a snapshot that captured proc/self/limits)")]


def gate_memlock(facts, config) -> list[Result]:
    want = config.profile.memlock
    want_n = None if want == "unlimited" else int(want)
    exp = "unlimited (soft and hard)" if want_n is None else f">= {human_bytes(want_n)} (soft and hard)"
    lim = facts.limits
    if lim is None:
        return _missing("limits.memlock", exp)
    m = lim.get(MEMLOCK)
    if m is None:
        return [Result("limits.memlock", Status.SKIP, observed="no 'Max locked memory' line", expected=exp,
                       remedy="unexpected /proc/self/limits format")]
    obs = f"soft {human_bytes(m.soft)}, hard {human_bytes(m.hard)}"

    def ok(v: int | None) -> bool:
        return v is None if want_n is None else (v is None or v >= want_n)

    if ok(m.soft) and ok(m.hard):
        return [Result("limits.memlock", Status.PASS, observed=obs, expected=exp)]
    remedy = ("raise memlock to unlimited: `* - memlock unlimited` in /etc/security/limits.conf (log in again), "
              "LimitMEMLOCK=infinity for systemd services (dockerd/containerd too), and `ulimits: memlock: -1` "
              "(docker run --ulimit memlock=-1) for the container")
    if not ok(m.hard):
        remedy += "; the hard limit can only be raised by root with CAP_SYS_RESOURCE"
    return [Result("limits.memlock", Status.FAIL, observed=obs, expected=exp, remedy=remedy)]


def gate_stack(facts, config) -> list[Result]:
    want = config.profile.stack_min
    exp = f">= {human_bytes(want)} (soft)"
    lim = facts.limits
    if lim is None:
        return _missing("limits.stack", exp)
    s = lim.get(STACK)
    if s is None:
        return [Result("limits.stack", Status.SKIP, observed="no 'Max stack size' line", expected=exp,
                       remedy="unexpected /proc/self/limits format")]
    obs = f"soft {human_bytes(s.soft)}, hard {human_bytes(s.hard)}"
    if s.soft is None or s.soft >= want:
        return [Result("limits.stack", Status.PASS, observed=obs, expected=exp)]
    return [Result("limits.stack", Status.FAIL, observed=obs, expected=exp,
                   remedy=f"`ulimit -s {want // 1024}` before starting, or `ulimits: stack: {want}` in compose "
                          f"(docker run --ulimit stack={want})")]


def gate_shm(facts, config) -> list[Result]:
    want = config.profile.shm_min
    exp = f"/dev/shm >= {human_bytes(want)}"
    size = facts.shm
    if size is None:
        return [Result("limits.shm", Status.SKIP, observed="/dev/shm size unknown", expected=exp,
                       remedy="mount /dev/shm (tmpfs); the container should use `ipc: host`")]
    obs = f"/dev/shm {human_bytes(size)}"
    if size >= want:
        return [Result("limits.shm", Status.PASS, observed=obs, expected=exp)]
    return [Result("limits.shm", Status.FAIL, observed=obs, expected=exp,
                   remedy="use `ipc: host` in compose (or --shm-size=16g) and size /dev/shm on the host "
                          "(mount -o remount,size=16G /dev/shm)")]
