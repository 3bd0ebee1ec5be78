"""Real NVML on real GPUs (marked ``gpu``): runs on the device machines, skips here with the reason.

Run on a GPU machine from the repository root:

    RDMACHECK_REQUIRE_GPU=1 RDMACHECK_RECORD_DIR=${OUT:-/tmp} python -m pytest -q -m gpu tests/test_gpu_nvml_real.py -rA

It checks what NVML reports against nvidia-smi (an independent reader of the
same driver), runs the GPU gates live and through the CLI, and writes a short
record ``nvml-<card>.md`` into RDMACHECK_RECORD_DIR (copy it to
benchmarks/results/).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from rdmacheck.preflight.checks import gpu
from rdmacheck.config import Config, build_profile
from rdmacheck.preflight.facts import nvml as nvmlf
from rdmacheck.evidence.model import Status
from rdmacheck.preflight.gather import gather
from rdmacheck.preflight.root import HostRoot

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def facts():
    f = nvmlf.collect()
    if f["state"] != nvmlf.OK:
        reason = f"no usable NVIDIA GPU here: NVML says {f['state']}: {f.get('error')}"
        # CI has no GPU (it skips there too); on the device machine RDMACHECK_REQUIRE_GPU=1 turns this into a failure.
        if os.environ.get("RDMACHECK_REQUIRE_GPU") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return f


def _smi() -> list[dict]:
    if not shutil.which("nvidia-smi"):
        return []
    q = "index,name,uuid,memory.total,pcie.link.width.max,persistence_mode"
    p = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader,nounits"],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        return []
    rows = []
    for line in p.stdout.strip().splitlines():
        parts = [x.strip() for x in line.split(",")]
        rows.append(dict(zip(q.split(","), parts)))
    return rows


def test_nvml_facts_match_nvidia_smi(facts):
    assert facts["count"] == len(facts["gpus"]) >= 1
    assert re.match(r"\d+\.\d+", str(facts["driver_version"]))
    assert re.match(r"\d+\.\d+", str(facts["cuda_driver_version"]))
    assert facts["elapsed_s"] < nvmlf.DEFAULT_TIMEOUT_S
    smi = _smi()
    for g in facts["gpus"]:
        assert "error" not in g, g
        assert isinstance(g["name"], str) and g["name"]
        if smi:
            s = smi[g["index"]]
            assert s["name"] == g["name"] and s["uuid"] == g["uuid"]
            if isinstance(g["memory_total"], int) and s["memory.total"].isdigit():
                assert abs(g["memory_total"] // (1 << 20) - int(s["memory.total"])) <= 1
            if isinstance(g["pcie_width_max"], int) and s["pcie.link.width.max"].isdigit():
                assert g["pcie_width_max"] == int(s["pcie.link.width.max"])


def test_gates_live_and_record(facts, tmp_path):
    n = facts["count"]
    env = {"GPU_MEMORY_UTILIZATION": "0.35"}
    if os.environ.get("CUDA_VISIBLE_DEVICES"):  # the CLI below sees the process env: judge the same
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    cfg = Config(env, {}, None, build_profile({"gpus_per_node": n}))
    args = (gather(HostRoot("/"), cfg), cfg)
    results = gpu.gate_gpu_nvml(*args) + gpu.gate_gpu_memory(*args) + gpu.gate_gpu_gdr(*args)
    by = {r.id: r for r in results}
    assert set(by) == {"gpu.nvml", "gpu.pcie", "gpu.ecc", "gpu.memory", "gpu.gdr"}
    # the count matches the profile: only persistence mode may warn on a healthy machine
    assert by["gpu.nvml"].status in (Status.PASS, Status.WARN), by["gpu.nvml"]
    assert by["gpu.nvml"].status is Status.PASS or "persistence" in by["gpu.nvml"].observed
    assert by["gpu.pcie"].status in (Status.PASS, Status.WARN)
    for r in results:
        assert r.observed

    out = tmp_path / "gpu.json"
    empty_env = tmp_path / "empty.env"  # not the checkout's docker/.env: judge the same inputs as above
    empty_env.write_text("")
    p = run_cli("preflight", "--only", "gpu.nvml,gpu.pcie,gpu.ecc,gpu.memory,gpu.gdr", "--env", str(empty_env),
                "--expect", f"gpus_per_node={n}", "--json", str(out),
                env={"GPU_MEMORY_UTILIZATION": "0.35"})
    assert p.returncode in (0, 1) and "Traceback" not in p.stderr, p.stderr
    cli = {r["id"]: r["status"] for r in json.loads(out.read_text())["results"]}
    assert cli["gpu.nvml"] == by["gpu.nvml"].status.value

    g0 = facts["gpus"][0]
    card = re.sub(r"[^a-z0-9]+", "-", str(g0["name"]).lower()).strip("-")
    lines = [
        f"# NVML gates on {g0['name']} x{n}",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- host: {platform.node()} ({platform.machine()}, kernel {platform.release()}, Python {sys.version.split()[0]})",
        f"- driver {facts['driver_version']}, CUDA driver {facts['cuda_driver_version']}, NVML {facts['nvml_version']}",
        f"- NVML collect took {facts['elapsed_s']} s (bound {nvmlf.DEFAULT_TIMEOUT_S} s)",
        "- command: `RDMACHECK_REQUIRE_GPU=1 RDMACHECK_RECORD_DIR=$OUT python -m pytest -q -m gpu tests/test_gpu_nvml_real.py -rA`",
        "",
        "| gate | status | observed |",
        "|---|---|---|",
    ]
    lines += [f"| {r.id} | {r.status.value} | {r.observed.replace('|', '/')} |" for r in results]
    lines += ["", "Per-GPU NVML fields:", "", "```json", json.dumps(facts["gpus"], indent=1, default=str), "```", ""]
    dest = Path(os.environ.get("RDMACHECK_RECORD_DIR") or tmp_path)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"nvml-{card}.md").write_text("\n".join(lines))
    print(f"record written: {dest / f'nvml-{card}.md'}")
