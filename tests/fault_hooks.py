"""Test-only fault injection, through the hook points users have; nothing here ships in rdmacheck/.

Bench (``rdmacheck bench --hook tests.fault_hooks:install``; runs on every rank, reads the env):

* ``RDMACHECK_FAULT_CORRUPT=RANK[:OP]``: that rank adds 1 to one element of its output after every
  call of OP (every op when omitted), so the ``--check`` call sees one wrong element: a reduction that
  got one element wrong.  It wraps the collective's buffers (rdmacheck.bench.collectives.COLLECTIVES),
  the runner is untouched.
* ``RDMACHECK_FAULT_DIE=RANK:INDEX``: RANK SIGKILLs itself in the before_size hook of plan row INDEX:
  a real kill -9 mid-sweep, not a simulation of one.
* ``RDMACHECK_FAULT_SLOW_FINISH=RANK:SECONDS``: RANK sleeps that long in the after_run hook, after every
  measurement: a rank that a loaded machine makes finish later than the others.
* ``RDMACHECK_FAULT_REFUSE=RANK``: RANK refuses its input (a UsageError from its hook) while the others
  go on: a refusal only one rank meets, such as more ranks than that node has GPUs.

Cluster (``python -m tests.fault_hooks cluster ...``: the CLI with a phase observer installed in the
driver, rdmacheck.cluster.driver.PHASE_HOOKS):

* ``RDMACHECK_FAULT_HOLD=PHASE:FILE``: when the driver reaches PHASE ("preflight", "bench",
  "pairwise-round-N") it prints "# test hold: PHASE" and waits (at most 120 s) until FILE exists, so a
  test can remove a Ray node at a known point of the run.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time

HOOK = "tests.fault_hooks:install"
CORRUPT_ENV = "RDMACHECK_FAULT_CORRUPT"
DIE_ENV = "RDMACHECK_FAULT_DIE"
HOLD_ENV = "RDMACHECK_FAULT_HOLD"
SLOW_FINISH_ENV = "RDMACHECK_FAULT_SLOW_FINISH"
REFUSE_ENV = "RDMACHECK_FAULT_REFUSE"


def _corrupting(make):
    def wrapped(*args, **kwargs):
        b = make(*args, **kwargs)
        real = b.call

        def call():
            real()
            flat = b.out.view(-1)
            flat[flat.numel() // 2] += 1

        return dataclasses.replace(b, call=call)

    return wrapped


def install(hooks) -> None:
    from rdmacheck.bench import collectives

    rank = os.environ.get("RANK", "0")
    if os.environ.get(REFUSE_ENV) == rank:
        from rdmacheck.util.errors import UsageError

        raise UsageError(f"planted refusal on rank {rank} ({REFUSE_ENV})")
    spec = os.environ.get(CORRUPT_ENV, "")
    if spec:
        who, _, op = spec.partition(":")
        if who == rank:
            for name in ([op] if op else list(collectives.COLLECTIVES)):
                c = collectives.COLLECTIVES[name]
                collectives.COLLECTIVES[name] = dataclasses.replace(c, make=_corrupting(c.make))
    die = os.environ.get(DIE_ENV, "")
    if die:
        who, _, index = die.partition(":")
        if who == rank:
            def before_size(row) -> None:
                if str(row.index) == index:
                    os.kill(os.getpid(), signal.SIGKILL)

            hooks.before_size.append(before_size)
    slow = os.environ.get(SLOW_FINISH_ENV, "")
    if slow:
        who, _, seconds = slow.partition(":")
        if who == rank:
            hooks.after_run.append(lambda info: time.sleep(float(seconds)))


def _hold(phase: str) -> None:
    want, _, path = os.environ.get(HOLD_ENV, "").partition(":")
    if want != phase:
        return
    print(f"# test hold: {phase} (waiting for {path})", flush=True)
    end = time.monotonic() + 120
    while time.monotonic() < end and not os.path.exists(path):
        time.sleep(0.1)


if __name__ == "__main__":
    from rdmacheck.cli import main
    from rdmacheck.cluster import driver

    driver.PHASE_HOOKS.append(_hold)
    sys.exit(main(sys.argv[1:]))
