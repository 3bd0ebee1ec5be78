"""A warm Python inside the soft-RoCE guest: each `rdmacheck` run of session.sh is a fork of it.

Why: under QEMU TCG a Python start costs ~4 s (site's .pth files, read over the 9p-shared tree at
~3 ms a stat) and importing rdmacheck ~5 s more, against ~4 s of real work in a preflight; the
session runs about twenty.  This server imports rdmacheck's modules once, then forks for every
request.  The child runs the real entry point (`rdmacheck.cli.main`, as `python -m rdmacheck`
does) with its own environment (exactly the request's, on top of session.sh's clean base), resource
limits, working folder, argv and output file, so what rdmacheck reads is what a fresh process of
that shell line would read.  No rdmacheck code runs before the fork (the parent only imports), so no
state of one run reaches another.

Protocol: one request per line on the FIFO named by argv[1], fields split by tabs:
    BASE DONE TIMEOUT CWD MEMLOCK_SOFT MEMLOCK_HARD STACK_SOFT STACK_HARD [NAME=VALUE ...] -- ARG ...
(limits as bash's `ulimit` prints them: KiB or "unlimited").  The run leaves BASE.out (stdout and
stderr), BASE.time ("start end") and BASE.rc (its exit code, 124 when it ran past TIMEOUT and was
killed, as `timeout` reports), then writes the code to DONE, a FIFO the caller waits on.
"""

from __future__ import annotations

import atexit
import importlib
import os
import pkgutil
import resource
import select
import signal
import sys
import time
import traceback
from pathlib import Path

# the runs' own base environment is the server's, which session.sh starts under `env -i`
BASE_ENV = dict(os.environ)
# what a preflight or snapshot imports: not __main__ (it runs the CLI), not bench and cluster (torch, Ray)
SKIP = ("rdmacheck.__main__", "rdmacheck.bench", "rdmacheck.cluster", "rdmacheck.commands.bench", "rdmacheck.commands.cluster")


def preload() -> list[str]:
    import rdmacheck

    failed = []
    for m in pkgutil.walk_packages(rdmacheck.__path__, "rdmacheck."):
        if m.name.startswith(SKIP):
            continue
        try:
            importlib.import_module(m.name)
        except Exception as e:  # a module the guest cannot import is imported (and fails) in the run itself
            failed.append(f"{m.name}: {e}")
    return failed


def _limit(text: str) -> int:
    return resource.RLIM_INFINITY if text == "unlimited" else int(text) * 1024


def _run(base: str, cwd: str, limits: list[str], env: list[str], args: list[str]) -> None:
    """The child: become the process the shell line would have started, run the CLI, exit with its code."""
    os.setpgid(0, 0)  # its own group: a timeout kills what it started too
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (_limit(limits[0]), _limit(limits[1])))
    resource.setrlimit(resource.RLIMIT_STACK, (_limit(limits[2]), _limit(limits[3])))
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(BASE_ENV)
    os.environ.update(kv.split("=", 1) for kv in env)
    out = os.open(base + ".out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    sys.argv = [str(Path(sys.modules["rdmacheck"].__file__).with_name("__main__.py")), *args]
    from rdmacheck.cli import main

    try:
        code = main()
    except SystemExit as e:  # what the interpreter makes of `raise SystemExit(...)` (--help, --version)
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _watch(line: str) -> None:
    """A forked monitor: start the run, bound it, record its code and times, tell the caller."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    fields = line.split("\t")
    base, done, timeout, cwd, limits = fields[0], fields[1], float(fields[2]), fields[3], fields[4:8]
    rest = fields[8:]
    cut = rest.index("--")
    env, args = [kv for kv in rest[:cut] if kv], rest[cut + 1:]
    t0 = time.time()
    pid = os.fork()
    if pid == 0:
        try:
            _run(base, cwd, limits, env, args)
        finally:
            os._exit(127)  # _run never returns; a failure before the CLI started lands here
    pidfd = os.pidfd_open(pid)
    ready, _, _ = select.select([pidfd], [], [], timeout)
    if not ready:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    code = 124 if not ready else os.waitstatus_to_exitcode(status)
    code = code if code >= 0 else 128 - code  # killed by a signal: the shell's 128+N
    Path(base + ".time").write_text(f"{t0:.6f} {time.time():.6f}\n")
    Path(base + ".rc").write_text(f"{code}\n")
    try:
        fd = os.open(done, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, f"{code}\n".encode())
        os.close(fd)
    except OSError:
        pass  # the caller gave up waiting; its .rc is written all the same


def serve(fifo: str) -> None:
    failed = preload()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the monitors
    fd = os.open(fifo, os.O_RDWR)  # read-write: no EOF when the last writer closes
    Path(fifo + ".ready").write_text("".join(f"{f}\n" for f in failed))
    buf = b""
    while True:
        chunk = os.read(fd, 65536)
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            line = raw.decode()
            if line == "quit":
                return
            if os.fork() == 0:
                try:
                    os.close(fd)  # the runs never see the request FIFO
                    _watch(line)
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(0)


if __name__ == "__main__":
    serve(sys.argv[1])
