"""Boot the soft-RoCE guest and run one shell script inside it.

This machine's kernel has no RDMA stack.  A QEMU guest booted by virtme-ng
(``vng``) with Debian's stock kernel has ``rdma_rxe``, which gives real RDMA
devices: real sysfs, real verbs, pyverbs and perftest.  ``.ci/softroce-setup.sh``
unpacks that kernel into ``.cache/softroce/kroot``.

The guest sees the host root read-only (same Python, same packages, same
checkout); only ``--rwdir`` folders are writable from inside, so a script
leaves its results there and :func:`run_in_guest` hands them back.

Quirk: ``/dev/kvm`` on these machines is a PVM backend (``/sys/module/kvm_pvm``)
under which a stock kernel is >100x slower than plain TCG and never reaches a
console, so we always pass ``--disable-kvm``.  Under TCG a boot costs ~20 s of
CPU (more when the 2 cores are shared): boot once, run every scenario.

Usage from the shell (debugging):  [GUEST_OUT=DIR] [GUEST_TIMEOUT=S] python tests/softroce/guest.py SCRIPT [ARGS...]
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Guests still running (their QEMU is in its own process group, so a Ctrl-C to pytest never reaches it):
# kill_running() ends them when the test session ends early.
_RUNNING: set[subprocess.Popen] = set()
CACHE = Path(os.environ.get("SOFTROCE_CACHE", REPO / ".cache" / "softroce"))
SETUP = REPO / ".ci" / "softroce-setup.sh"


def kernel_image(cache: Path = CACHE) -> Path | None:
    """The unpacked stock kernel image, or None when setup has not run."""
    try:
        version = (cache / "kernel-version").read_text().strip()
    except OSError:
        return None
    image = cache / "kroot" / "boot" / f"vmlinuz-{version}"
    deps = cache / "kroot" / "lib" / "modules" / version / "modules.dep"
    if image.is_file() and deps.is_file() and deps.stat().st_size > 0:
        return image
    return None


def missing_reason(cache: Path = CACHE) -> str | None:
    """Why the guest cannot boot here, or None when it can."""
    if kernel_image(cache) is None:
        return f"soft-RoCE guest kernel not unpacked in {cache}/kroot (run {SETUP.relative_to(REPO)})"
    for tool, pkg in (("vng", "pip install virtme-ng"), ("qemu-system-x86_64", "apt-get install qemu-system-x86"),
                      ("busybox", "apt-get install busybox-static")):
        if not shutil.which(tool):
            return f"{tool} not found on PATH ({pkg}; or run {SETUP.relative_to(REPO)})"
    return None


@dataclasses.dataclass
class GuestRun:
    returncode: int | None       # the script's exit code (vng returns it); None on timeout
    output: str                  # vng's console output (stdout and stderr together)
    outdir: Path                 # the --rwdir: whatever the script wrote
    seconds: float
    timed_out: bool = False

    @property
    def files(self) -> dict[str, Path]:
        """Every file the script wrote, by path relative to ``outdir``."""
        return {str(p.relative_to(self.outdir)): p for p in sorted(self.outdir.rglob("*")) if p.is_file()}

    def read(self, name: str) -> str:
        return (self.outdir / name).read_text(errors="replace")


def vng_command(script_cmd: str, outdir: Path, image: Path, memory: str = "2G", cpus: int = 2,
                vng_args: list[str] | tuple[str, ...] = ()) -> list[str]:
    return [
        "vng", "--run", str(image),
        "--disable-kvm",            # PVM /dev/kvm: see module docstring
        "--memory", memory, "--cpus", str(cpus),
        "--rwdir", str(outdir),
        *vng_args,                  # e.g. another machine type and its devices (tests/test_pci.py)
        "--exec", script_cmd,
    ]


def run_in_guest(
    script: str | os.PathLike,
    args: list[str] | tuple[str, ...] = (),
    outdir: str | os.PathLike | None = None,
    timeout: float = 300,
    memory: str = "2G",
    cpus: int = 2,
    vng_args: list[str] | tuple[str, ...] = (),
) -> GuestRun:
    """Boot the guest, run ``bash SCRIPT ARGS...`` as root inside it, return what happened.

    ``outdir`` (created when None) is the guest's writable folder; the script
    finds it in ``$GUEST_OUT``, the checkout in ``$REPO`` and the Python that
    runs the tests in ``$PY``.  A hard ``timeout`` kills QEMU and everything
    vng started (their own process group), so nothing outlives the call.
    ``vng_args`` go to vng as they are (a q35 machine with a PCIe root port).
    """
    image = kernel_image()
    if image is None:
        raise RuntimeError(missing_reason() or "no guest kernel")
    out = Path(outdir) if outdir else Path(tempfile.mkdtemp(prefix="softroce-"))
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    exports = {
        "GUEST_OUT": str(out),
        "REPO": str(REPO),
        "PY": sys.executable,
        # The guest's default PATH lacks pyenv's; keep the host's so the same tools resolve.
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin") + ":/usr/sbin:/sbin",
    }
    env_prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in exports.items())
    script_cmd = f"cd {shlex.quote(str(REPO))} && env {env_prefix} bash {shlex.quote(str(Path(script).resolve()))} " + " ".join(
        shlex.quote(a) for a in args
    )
    cmd = vng_command(script_cmd, out, image, memory=memory, cpus=cpus, vng_args=vng_args)
    # The guest sees the checkout read-only and cannot cache bytecode: compile it here (a stale or
    # missing .pyc costs seconds of emulated CPU in every Python the guest starts).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "rdmacheck")],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=False,
                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, cwd=REPO,  # own process group: a timeout kills QEMU too
    )
    _RUNNING.add(proc)
    try:
        output, _ = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
        timed_out = False
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        output, _ = proc.communicate()
        rc, timed_out = None, True
    finally:
        _RUNNING.discard(proc)
    return GuestRun(
        returncode=rc,
        output=output.decode("utf-8", errors="replace"),
        outdir=out,
        seconds=time.monotonic() - t0,
        timed_out=timed_out,
    )


def boot_for(prog: str, script: str | os.PathLike, args: list[str] | tuple[str, ...] = (), timeout: float = 1800,
             vng_args: list[str] | tuple[str, ...] = ()) -> Path | None:
    """The benchmarks' boot: one run of ``script`` in the guest, its folder; None (after saying why on stderr,
    prefixed with ``prog``) when the guest cannot boot here."""
    reason = missing_reason()
    if reason:
        print(f"{prog}: {reason}", file=sys.stderr)
        return None
    run = run_in_guest(script, args, timeout=timeout, vng_args=vng_args)
    print(f"guest: {run.seconds:.0f} s, rc {run.returncode}, folder {run.outdir}")
    return run.outdir


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_running() -> None:
    """Kill every guest this process started that is still running (QEMU and what vng started)."""
    for proc in list(_RUNNING):
        _kill_group(proc)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    reason = missing_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    run = run_in_guest(argv[0], argv[1:], outdir=os.environ.get("GUEST_OUT") or None,
                       timeout=float(os.environ.get("GUEST_TIMEOUT", "300")))
    sys.stdout.write(run.output)
    print(f"\n[guest] rc={run.returncode} timed_out={run.timed_out} {run.seconds:.1f}s out={run.outdir}", file=sys.stderr)
    for name in run.files:
        print(f"[guest] wrote {name}", file=sys.stderr)
    return 1 if run.returncode is None else run.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
