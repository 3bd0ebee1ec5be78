"""On a GPU machine: every new GPU health fact read by rdmacheck's reader and by `nvidia-smi -q` in the same
run, the gates on them, and the preflight time the health facts add.  Changes no GPU setting.

    python3 benchmarks/gpu_health_device.py OUTDIR [--runs 7] [--load-seconds 20]

Writes into OUTDIR:
  health-idle.json, nvidia-smi-q-idle.txt   the NVML facts (facts.nvml.collect, health included), then
                                            nvidia-smi -q right after, GPU at rest
  health-load.json, nvidia-smi-q-load.txt   the same while a bf16 matrix product loop runs on every GPU
                                            (torch, in a child process: the clocks under load)
  preflight.json                            `rdmacheck preflight --only <the new gates> --json`
  timing.json                               NVML collect with and without the health reads (in-process,
                                            alternating), `rdmacheck preflight -q` wall time with and without
                                            every new health reader (fresh processes, alternating)
  log.txt                                   what ran, kernel-log files present, dmesg Xid count
tests/data/gpu-health/<card>/ keeps health-idle.json as health.json and its nvidia-smi -q beside it;
tests/test_gpu_health.py checks the reader against that text.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GATES = "gpu.nvml,gpu.clocks,gpu.remap,gpu.pcie_errors,gpu.xid,nic.pcie,nic.port_errors"
# preflight without the health readers: the same CLI with them replaced by no-ops (measurement only)
NO_HEALTH = (
    "import sys, runpy\n"
    "import rdmacheck.preflight.facts.gpuhealth as g, rdmacheck.preflight.facts.kernlog as k, rdmacheck.preflight.facts.nichealth as n\n"
    "g.device_health = lambda *a: {}\n"
    "k.read_kernel_log = lambda root: {}\n"
    "n.read_nic_health = lambda *a: {}\n"
    "sys.argv = ['rdmacheck', 'preflight', '-q']\n"
    "try:\n    runpy.run_module('rdmacheck', run_name='__main__')\nexcept SystemExit:\n    pass\n"
)
WITH_HEALTH = NO_HEALTH.split("g.device_health")[0] + (
    "sys.argv = ['rdmacheck', 'preflight', '-q']\n"
    "try:\n    runpy.run_module('rdmacheck', run_name='__main__')\nexcept SystemExit:\n    pass\n")
LOAD = (
    "import time, torch\n"
    "n = torch.cuda.device_count()\n"
    "xs = [torch.randn(8192, 8192, dtype=torch.bfloat16, device=f'cuda:{i}') for i in range(n)]\n"
    "end = time.time() + float(__import__('sys').argv[1])\n"
    "print('load on', n, 'GPU(s)', flush=True)\n"
    "while time.time() < end:\n"
    "    for x in xs:\n"
    "        x @ x\n"
    "    torch.cuda.synchronize()\n"
)


def smi(dest: Path) -> float:
    t = time.time()
    try:
        p = subprocess.run(["nvidia-smi", "-q"], capture_output=True, text=True, timeout=60)
        dest.write_text(p.stdout)
    except (OSError, subprocess.TimeoutExpired) as e:
        dest.write_text(f"nvidia-smi -q failed: {e}\n")
    return t


def read(dest: Path) -> dict:
    from rdmacheck.preflight.facts import nvml

    f = nvml.collect()
    dest.write_text(json.dumps(f, indent=1, default=str))
    return f


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--load-seconds", type=float, default=20)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "rdmacheck")], env=env, check=False)
    sys.path.insert(0, str(REPO))

    # 1. at rest: the reader, nvidia-smi -q right after, the reader again (did anything move in between?)
    a1 = read(out / "health-idle.json")
    t_smi = smi(out / "nvidia-smi-q-idle.txt")
    a2 = read(out / "health-again.json")
    moved = [(g["index"], k) for g, h in zip(a1.get("gpus", []), a2.get("gpus", []))
             for k in ("sm_clock_mhz", "clock_event_reasons") if g.get("health", {}).get(k) != h.get("health", {}).get(k)]
    log.append(f"idle read, nvidia-smi -q at {t_smi:.3f}; values that moved between two reads: {moved or 'none'}")
    (out / "health-again.json").unlink()

    # 2. timing: NVML collect with / without the health reads, alternating, in one process
    from rdmacheck.preflight.facts import gpuhealth, nvml

    real = gpuhealth.device_health
    with_h, without = [], []
    for _ in range(a.runs):
        gpuhealth.device_health = real
        with_h.append(nvml.collect()["elapsed_s"])
        gpuhealth.device_health = lambda *x: {}
        without.append(nvml.collect()["elapsed_s"])
    gpuhealth.device_health = real
    per_gpu = [g["health"]["elapsed_s"] for g in a1.get("gpus", []) if isinstance(g.get("health"), dict)]
    # fresh `rdmacheck preflight -q` processes, alternating
    cli_with, cli_without = [], []
    for _ in range(a.runs):
        for code, dest in ((WITH_HEALTH, cli_with), (NO_HEALTH, cli_without)):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120, cwd=REPO)
            dest.append(time.perf_counter() - t)
    med = statistics.median
    timing = {
        "runs": a.runs,
        "nvml_collect_with_health_s": with_h, "nvml_collect_without_health_s": without,
        "nvml_collect_added_median_s": med(with_h) - med(without),
        "health_reads_per_gpu_s": per_gpu,
        "preflight_with_health_s": cli_with, "preflight_without_health_s": cli_without,
        "preflight_added_median_s": med(cli_with) - med(cli_without),
    }
    (out / "timing.json").write_text(json.dumps(timing, indent=1))
    log.append(f"timing: {json.dumps({k: v for k, v in timing.items() if 'median' in k or k == 'health_reads_per_gpu_s'})}")

    # 3. under load: a bf16 matmul loop on every GPU; read while it runs
    load = subprocess.Popen([sys.executable, "-c", LOAD, str(a.load_seconds)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    first = load.stdout.readline().strip() if load.stdout else ""
    time.sleep(min(8.0, a.load_seconds / 2))
    read(out / "health-load.json")
    smi(out / "nvidia-smi-q-load.txt")
    rest, _ = load.communicate(timeout=a.load_seconds + 120)
    log.append(f"load: {first!r} rc={load.returncode} {rest[-300:]!r}")

    # 4. the gates on this machine (at rest again)
    p = subprocess.run([sys.executable, "-m", "rdmacheck", "preflight", "--only", GATES, "--json",
                        str(out / "preflight.json")], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    log.append(f"preflight --only {GATES}: rc={p.returncode}\n{p.stdout}")

    # 5. where this machine's kernel log is
    for f in ("/var/log/kern.log", "/var/log/messages", "/var/log/syslog", "/dev/kmsg", "/var/log/journal"):
        log.append(f"{f}: {'present' if os.path.exists(f) else 'absent'}"
                   + (f" ({os.path.getsize(f)} bytes)" if os.path.isfile(f) else ""))
    d = subprocess.run(["sh", "-c", "dmesg 2>&1 | grep -c 'NVRM: Xid' ; dmesg 2>&1 | head -2"], capture_output=True,
                       text=True, timeout=30)
    log.append(f"dmesg Xid lines / head: {d.stdout.strip()!r}")
    v = subprocess.run(["sh", "-c", "nvidia-smi -L; python3 -c 'import pynvml; print(pynvml.__file__)'; "
                        "pip show nvidia-ml-py 2>/dev/null | head -2; uname -r"],
                       capture_output=True, text=True, timeout=60)
    log.append(v.stdout)
    (out / "log.txt").write_text("\n".join(log) + "\n")
    print("\n".join(log))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
