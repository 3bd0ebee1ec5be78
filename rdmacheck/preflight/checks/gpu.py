"""GPU gates: gpu.nvml, gpu.pcie, gpu.ecc (one NVML read), gpu.memory, gpu.gdr.

Facts come from ``facts.nvml`` (time-bounded NVML), ``facts.gdr`` and
/proc/meminfo, gathered once into ``NodeFacts``; these functions only judge.  A field the GPU answers
NOT_SUPPORTED for is shown as "n/a (not supported)" and never fails a gate by
itself: the GB10 of DGX Spark has unified memory and no framebuffer, so NVML
memory info, ECC and PCIe link queries are unsupported there.
"""

from __future__ import annotations

import re
from typing import Any

from rdmacheck.preflight.facts import nvml as nvmlf
from rdmacheck.preflight.registry import ids_of
from rdmacheck.evidence.model import Result, Status, worst
from rdmacheck.nccl.spec import c_strtol

NA = nvmlf.NA

NO_GPU_REMEDY = (
    "install the NVIDIA driver (nvidia-smi must work on the host) or, on a node meant to have no GPU, "
    "set gpu_platform = \"none\" (or gpus_per_node = 0) in the profile"
)

# NVIDIA: "DGX Spark SoC is characterized by a unified memory architecture ... the GPUDirect RDMA technology
# is not supported, and the mechanisms for direct I/O based on that technology, for example nvidia-peermem,
# dma-buf or GDRCopy, do not work." https://forums.developer.nvidia.com/t/dgx-spark-gpudirect-rdma/348787/6
NO_GDR_PLATFORMS = {
    "dgx-spark": "DGX Spark (GB10, unified memory): NVIDIA states GPUDirect RDMA is not supported "
                 "(nvidia-peermem, dma-buf and GDRCopy do not work)",
}


def _expect_no_gpu(config) -> str | None:
    p = config.profile
    if (p.gpu_platform or "").lower() == "none":
        return "profile gpu_platform = none: this node is expected to have no GPU"
    if p.gpus_per_node == 0:
        return "profile gpus_per_node = 0: this node is expected to have no GPU"
    return None


def platform(config, facts: dict[str, Any] | None = None, model: str | None = None) -> str | None:
    """Profile's gpu_platform, else detected: a GPU NVML names GB10 -> dgx-spark; or a unified-memory GPU
    (NVML memory info N/A: no framebuffer of its own) on a machine whose firmware calls itself a DGX Spark
    (``model``: NodeFacts.model, from /sys/class/dmi/id/product_name or /proc/device-tree/model)."""
    p = (config.profile.gpu_platform or "auto").lower()
    if p not in ("auto", ""):
        return p
    gpus = (facts or {}).get("gpus") or []
    for g in gpus:
        name = str(g.get("name") or "")
        if "GB10" in name.upper().replace(" ", ""):
            return "dgx-spark"
    if any(nvmlf.is_na(g.get("memory_total")) for g in gpus):
        if "spark" in (model or "").lower():
            return "dgx-spark"
    return None


def _no_nvml_result(gid: str, facts: dict[str, Any]) -> Result:
    state = facts.get("state")
    err = facts.get("error", "")
    if state == "absent":
        return Result(gid, Status.SKIP, observed=err, remedy="take the snapshot with rdmacheck snapshot on the GPU node")
    if state == nvmlf.TIMEOUT:
        return Result(gid, Status.FAIL, observed=err, expected="NVML answers within seconds",
                      remedy="the GPU driver is hung: check dmesg for Xid errors, run nvidia-smi; a reboot or "
                             "driver reload may be needed")
    what = {
        nvmlf.NO_MODULE: "pynvml missing",
        nvmlf.NO_LIBRARY: "no NVIDIA driver (libnvidia-ml.so.1 not found)",
        nvmlf.NO_DRIVER: "NVIDIA kernel driver not loaded",
    }.get(state, "NVML failed")
    remedy = "pip install nvidia-ml-py" if state == nvmlf.NO_MODULE else NO_GPU_REMEDY
    return Result(gid, Status.FAIL, observed=f"{what}: {err}", expected="NVML reports the GPUs", remedy=remedy)


def parse_visible(text: str | None, gpus: list[dict[str, Any]]) -> tuple[list[int], str | None]:
    """CUDA_VISIBLE_DEVICES -> GPU indices; the error names the first entry CUDA would stop at."""
    if text is None:
        return [g["index"] for g in gpus], None
    out: list[int] = []
    for raw in text.split(","):
        e = raw.strip()
        if not e:
            continue
        if re.fullmatch(r"\d+", e):
            i = int(e)
            if i >= len(gpus):
                return out, f"entry {e!r} but this node has {len(gpus)} GPU(s)"
            out.append(i)
            continue
        hits = [g["index"] for g in gpus if isinstance(g.get("uuid"), str) and g["uuid"].startswith(e)]
        if len(hits) != 1:
            return out, f"entry {e!r} matches {'no' if not hits else 'several'} GPU UUID(s)"
        out.append(hits[0])
    return out, None


def _fmt_gib(n: Any) -> str:
    return f"{n / (1 << 30):.1f} GiB" if isinstance(n, int) else str(n)


def gate_gpu_nvml(node, config) -> list[Result]:
    """gpu.nvml (driver, count, visibility, persistence), gpu.pcie (link), gpu.ecc (errors)."""
    ids = ids_of("gpu.nvml")
    why = _expect_no_gpu(config)
    if why:
        return [Result(i, Status.SKIP, observed=why) for i in ids]
    facts = node.nvml
    if facts.get("state") != nvmlf.OK:
        first = _no_nvml_result("gpu.nvml", facts)
        return [first] + [Result(i, Status.SKIP, observed="NVML unavailable (see gpu.nvml)") for i in ids[1:]]
    return [_judge_nvml(config, facts), _judge_pcie(facts), _judge_ecc(facts)]


def _judge_nvml(config, facts: dict[str, Any]) -> Result:
    gpus = facts.get("gpus") or []
    expected = config.profile.gpus_per_node
    cvd = config.get("CUDA_VISIBLE_DEVICES")
    visible, cvd_err = parse_visible(cvd, gpus)
    names = sorted({str(g.get("name")) for g in gpus})
    obs = (f"driver {facts.get('driver_version')}, CUDA {facts.get('cuda_driver_version')}, "
           f"{len(gpus)} GPU(s): {', '.join(names) or 'none'}")
    details: dict[str, Any] = {
        "driver_version": facts.get("driver_version"), "cuda_driver_version": facts.get("cuda_driver_version"),
        "nvml_version": facts.get("nvml_version"), "gpus": gpus, "visible": visible,
        "platform": platform(config, facts),
    }
    problems: list[tuple[Status, str, str]] = []
    if cvd_err:
        problems.append((Status.FAIL, f"CUDA_VISIBLE_DEVICES={cvd}: {cvd_err}",
                         "list GPU indices or UUIDs that exist (nvidia-smi -L)"))
    n = len(visible)
    if n < expected:
        problems.append((Status.FAIL, f"{n} usable GPU(s), expected {expected}",
                         "check nvidia-smi -L, CUDA_VISIBLE_DEVICES and the profile's gpus_per_node"))
    elif n > expected:
        problems.append((Status.WARN, f"{n} usable GPU(s), profile expects {expected} per node",
                         "set CUDA_VISIBLE_DEVICES to the GPUs this node should use, or fix gpus_per_node"))
    for g in gpus:
        if g.get("error"):
            problems.append((Status.FAIL, g["error"], "check nvidia-smi and dmesg for Xid errors"))
        elif g.get("persistence_mode") is False and g["index"] in visible:
            problems.append((Status.WARN, f"GPU {g['index']} persistence mode off",
                             "sudo nvidia-smi -pm 1 (or run nvidia-persistenced): avoids driver re-init on each start"))
    status = worst(p[0] for p in problems)
    if problems:
        obs += "; " + "; ".join(p[1] for p in problems)
    return Result("gpu.nvml", status, observed=obs,
                  expected=f"{expected} GPU(s) per node, NVML answering",
                  remedy="; ".join(dict.fromkeys(p[2] for p in problems if p[0] is not Status.PASS)),
                  details=details)


def _link(cur, top, unit: str) -> str:
    """``Gen4/5``, ``x16/16``; an NVML field answered NOT_SUPPORTED reads ``n/a``, never ``Genn/a (not supported)``."""
    def one(v):
        return "n/a" if nvmlf.is_na(v) or v is None else f"{v}"
    return f"{unit}{one(cur)}/{one(top)}" if not (nvmlf.is_na(cur) or cur is None) else f"{unit} n/a"


def _judge_pcie(facts: dict[str, Any]) -> Result:
    rows, problems, notes = [], [], []
    for g in facts.get("gpus") or []:
        if g.get("error"):
            continue
        gen, gmax, w, wmax = (g.get(k) for k in ("pcie_gen", "pcie_gen_max", "pcie_width", "pcie_width_max"))
        if all(nvmlf.is_na(v) or v is None for v in (gen, gmax, w, wmax)):
            rows.append(f"GPU {g['index']}: PCIe link {NA}")
        else:
            rows.append(f"GPU {g['index']}: PCIe {_link(gen, gmax, 'Gen')} {_link(w, wmax, 'x')}")
        if all(isinstance(v, int) for v in (w, wmax)) and w < wmax:
            problems.append(f"GPU {g['index']} link x{w} of x{wmax}")
        if all(isinstance(v, int) for v in (gen, gmax)) and gen < gmax:
            # GPUs drop the link speed when idle to save power; only the width is a training fault.
            notes.append(f"GPU {g['index']} at Gen{gen} of Gen{gmax} (normal while idle)")
    if not rows:
        return Result("gpu.pcie", Status.SKIP, observed="no GPU to inspect")
    if all(r.endswith(f"PCIe link {NA}") for r in rows):
        # NVML has no PCIe link to report (GB10: the GPU sits on the SoC's C2C fabric): nothing to judge.
        return Result("gpu.pcie", Status.SKIP, observed="; ".join(rows) + " (integrated GPU: no PCIe link to judge)")
    obs = "; ".join(rows + notes)
    if problems:
        return Result("gpu.pcie", Status.WARN, observed=obs, expected="current link width = max width",
                      remedy="a downtrained PCIe link (" + ", ".join(problems) + ") halves or worse the GPU's I/O: "
                             "reseat the card/riser, check BIOS slot settings, compare lspci -vv LnkSta with LnkCap")
    return Result("gpu.pcie", Status.PASS, observed=obs, expected="current link width = max width")


def _judge_ecc(facts: dict[str, Any]) -> Result:
    rows: list[str] = []
    fails: list[str] = []
    warns: list[str] = []
    for g in facts.get("gpus") or []:
        if g.get("error"):
            continue
        i = g["index"]
        cur, pend = g.get("ecc_current"), g.get("ecc_pending")
        unc = g.get("ecc_uncorrected_volatile")
        rr = g.get("remapped_rows")
        rp = g.get("retired_pages_pending")
        ecc_txt = NA if nvmlf.is_na(cur) else ("on" if cur is True else "off" if cur is False else str(cur))
        rows.append(f"GPU {i}: ECC {ecc_txt}, volatile uncorrected {unc}, "
                    f"remapped rows {rr if not isinstance(rr, dict) else str(rr['correctable']) + '/' + str(rr['uncorrectable'])}, "
                    f"retired pages pending {rp}")
        if isinstance(unc, int) and unc > 0:
            fails.append(f"GPU {i} has {unc} volatile uncorrected ECC error(s)")
        if isinstance(rr, dict):
            if rr.get("failure"):
                fails.append(f"GPU {i} row remapping failed")
            elif rr.get("pending"):
                warns.append(f"GPU {i} row remap pending (reset the GPU)")
        if rp is True:
            warns.append(f"GPU {i} page retirement pending (reset the GPU)")
        if isinstance(cur, bool) and isinstance(pend, bool) and cur != pend:
            warns.append(f"GPU {i} ECC mode change pending a reboot")
    if not rows:
        return Result("gpu.ecc", Status.SKIP, observed="no GPU to inspect")
    obs = "; ".join(rows + fails + warns)
    if fails:
        return Result("gpu.ecc", Status.FAIL, observed=obs, expected="no uncorrected ECC errors",
                      remedy="drain the node: uncorrected memory errors corrupt results; reset the GPU "
                             "(nvidia-smi -r) and replace it if they return")
    if warns:
        return Result("gpu.ecc", Status.WARN, observed=obs, expected="no pending ECC actions",
                      remedy="reset the GPU (nvidia-smi -r) or reboot to apply the pending change")
    return Result("gpu.ecc", Status.PASS, observed=obs, expected="no uncorrected ECC errors")


# ------------------------------------------------------------------ gpu.memory

def gate_gpu_memory(node, config) -> list[Result]:
    why = _expect_no_gpu(config)
    if why:
        return [Result("gpu.memory", Status.SKIP, observed=why)]
    raw = config.get("GPU_MEMORY_UTILIZATION")
    default = raw is None
    try:
        util = 0.9 if default else float(raw)
        if not 0 < util <= 1:
            raise ValueError
    except ValueError:
        return [Result("gpu.memory", Status.FAIL, observed=f"GPU_MEMORY_UTILIZATION={raw!r}",
                       expected="a fraction in (0, 1], e.g. 0.35",
                       remedy="set GPU_MEMORY_UTILIZATION to a number such as 0.35 (vLLM --gpu-memory-utilization)")]
    src = "vLLM default 0.9 (GPU_MEMORY_UTILIZATION unset)" if default else f"GPU_MEMORY_UTILIZATION={raw}"
    facts = node.nvml
    if facts.get("state") != nvmlf.OK:
        return [Result("gpu.memory", Status.SKIP, observed="NVML unavailable (see gpu.nvml)")]
    gpus = [g for g in facts.get("gpus") or [] if not g.get("error")]
    visible, _ = parse_visible(config.get("CUDA_VISIBLE_DEVICES"), facts.get("gpus") or [])
    gpus = [g for g in gpus if g["index"] in visible]
    if not gpus:
        return [Result("gpu.memory", Status.SKIP, observed="no usable GPU (see gpu.nvml)")]
    rows, short, approx = [], [], []
    for g in gpus:
        total, free = g.get("memory_total"), g.get("memory_free")
        if isinstance(total, int) and isinstance(free, int) and total > 0:
            need = int(util * total)
            rows.append(f"GPU {g['index']}: free {_fmt_gib(free)} of {_fmt_gib(total)}, vLLM needs {_fmt_gib(need)}")
            if free < need:
                short.append((g["index"], free / total))
            continue
        # Unified memory (GB10): NVML has no framebuffer to report; the GPU allocates from system RAM,
        # so MemAvailable/MemTotal is the closest fact (page cache counts as available).
        mi = node.meminfo
        tot, avail = mi.get("MemTotal"), mi.get("MemAvailable")
        if tot and avail is not None:
            need = int(util * tot)
            rows.append(f"GPU {g['index']}: memory info {NA}; system MemAvailable {_fmt_gib(avail)} of "
                        f"{_fmt_gib(tot)} (unified memory), vLLM needs ~{_fmt_gib(need)}")
            if avail < need:
                approx.append((g["index"], avail / tot))
        else:
            rows.append(f"GPU {g['index']}: memory info {NA}")
    obs = f"{src}; " + "; ".join(rows)
    if short:
        fit = min(f for _, f in short)
        return [Result("gpu.memory", Status.FAIL, observed=obs, expected=f"free >= {util:g} x total",
                       remedy=f"lower GPU_MEMORY_UTILIZATION to <= {fit:.2f} or stop what holds GPU memory "
                              "(nvidia-smi shows the processes)")]
    if approx:
        fit = min(f for _, f in approx)
        return [Result("gpu.memory", Status.WARN, observed=obs, expected=f"available >= {util:g} x total",
                       remedy=f"free system memory (drop page cache: sync; echo 3 > /proc/sys/vm/drop_caches) "
                              f"or lower GPU_MEMORY_UTILIZATION to <= {fit:.2f}")]
    return [Result("gpu.memory", Status.PASS, observed=obs, expected=f"free >= {util:g} x total")]


# ------------------------------------------------------------------ gpu.gdr

# NCCL's path names (src/graph/topo.cc topoPathTypeStr, indices from src/graph/topo.h) up to PATH_SYS.
PATH_NAMES = ["LOC", "NVL", "NVB", "C2C", "PIX", "PXB", "P2C", "PXN", "PHB", "SYS"]
# src/graph/paths.cc levelsOldToNew: 0 LOC, 1 PIX, 2 PXB, 3 PHB, 4 SYS, 5 SYS (larger clamps to 5)
LEGACY_LEVELS = ["LOC", "PIX", "PXB", "PHB", "SYS", "SYS"]


def parse_gdr_level(text: str) -> str | None:
    """NCCL_NET_GDR_LEVEL -> path name (``5`` -> ``SYS``), None when NCCL would not understand it.

    As src/graph/paths.cc ncclGetLevel reads it: ``strcmp`` against the names (case-sensitive: ``phb`` is
    not PHB, NCCL ignores it and keeps its default), else, when the first character is a digit, the
    legacy number through ``strtol(str, NULL, 0)`` clamped to 5.
    """
    if text in PATH_NAMES:
        return text
    if text[:1].isdigit():
        v, _ = c_strtol(text)
        if v is not None:
            return LEGACY_LEVELS[min(v, len(LEGACY_LEVELS) - 1)]
    return None


def gate_gpu_gdr(node, config) -> list[Result]:
    why = _expect_no_gpu(config)
    if why:
        return [Result("gpu.gdr", Status.SKIP, observed=why)]
    raw = config.get("NCCL_NET_GDR_LEVEL")
    level = parse_gdr_level(raw) if raw is not None else None
    if raw is not None and level is None:
        fix = (f"NCCL_NET_GDR_LEVEL={raw.strip().upper()}" if raw.strip().upper() in PATH_NAMES
               else "NCCL_NET_GDR_LEVEL=SYS (5) to allow GPUDirect RDMA, or NCCL_NET_GDR_LEVEL=LOC (0) to disable it")
        return [Result("gpu.gdr", Status.FAIL,
                       observed=f"NCCL_NET_GDR_LEVEL={raw!r} is not a level NCCL knows (NCCL ignores it and keeps its default)",
                       expected="one of " + ", ".join(PATH_NAMES) + " (upper case, as NCCL compares them) or 0-5",
                       remedy=f"set {fix} in the .env")]
    paths = node.gdr
    facts = node.nvml
    plat = platform(config, facts, node.model)
    asked = "unset (NCCL's default: GPUDirect RDMA when GPU and NIC are close)" if raw is None \
        else f"NCCL_NET_GDR_LEVEL={raw} ({level})"
    have = [n for n, ok in (("nvidia_peermem", paths["nvidia_peermem"]), ("DMA-BUF", paths["dmabuf"])) if ok]
    obs_paths = (f"peer memory {'via ' + ', '.join(paths['peer_memory']) if paths['nvidia_peermem'] else 'absent (nvidia_peermem not loaded)'}; "
                 f"DMA-BUF {'available' if paths['dmabuf'] else 'unavailable'} (kernel {paths['kernel']}, "
                 f"{'open' if paths['open_kernel_module'] else 'no open'} GPU kernel module)")
    details = {"level": level, "raw": raw, "platform": plat, **paths}
    if plat in NO_GDR_PLATFORMS:
        # Not applicable, not a fault: NCCL finds no GPUDirect path on this platform whatever the level says
        # (its log: "GPU Direct RDMA Disabled for HCA"), and RDMA is staged through host memory, which is how
        # the platform reaches its bandwidth.  A PASS would claim GPUDirect works; a FAIL would send the user
        # after a module that cannot exist.
        note = NO_GDR_PLATFORMS[plat]
        effect = "has no effect here" if level not in (None, "LOC") else "agrees"
        said = f"{asked} {effect}" if raw is not None else asked
        return [Result("gpu.gdr", Status.SKIP, observed=f"N/A: {note}; {said}",
                       expected="GPUDirect RDMA where the platform supports it", details=details)]
    if not node.ib:
        return [Result("gpu.gdr", Status.SKIP,
                       observed=f"no RDMA device: GPUDirect RDMA has no NIC to pair with (see rdma.devices); {obs_paths}",
                       details=details)]
    if level == "LOC":
        return [Result("gpu.gdr", Status.PASS, observed=f"{asked}: GPUDirect RDMA disabled by configuration; {obs_paths}",
                       expected="GPUDirect RDMA path when requested", details=details)]
    if have:
        return [Result("gpu.gdr", Status.PASS, observed=f"{asked}; {obs_paths}",
                       expected="nvidia_peermem or DMA-BUF", details=details)]
    if paths.get("kernel") is None or paths.get("nvidia_driver") is None:
        # no kernel version, or no /proc/driver/nvidia/version (no NVIDIA driver loaded, or a capture without
        # it): whether DMA-BUF exists is unknown, and "kernel None" is no evidence of an old kernel
        unread = " and ".join(w for w, v in (("no kernel version", paths.get("kernel")),
                                             ("no GPU driver version (/proc/driver/nvidia/version)",
                                              paths.get("nvidia_driver"))) if v is None)
        return [Result("gpu.gdr", Status.SKIP, details=details, expected="nvidia_peermem or DMA-BUF",
                       observed=f"{asked}; nvidia_peermem not loaded and {unread} read (no NVIDIA driver loaded, "
                                "or a capture without it), so whether DMA-BUF exists is unknown: not judged",
                       remedy="see gpu.nvml; on a capture, judge the live host or take it with rdmacheck snapshot")]
    remedy = ("load nvidia_peermem (modprobe nvidia_peermem; it ships with the driver and needs MLNX_OFED/DOCA peer "
              "memory), or use DMA-BUF: kernel >= 5.12 with NVIDIA's open GPU kernel module (nvidia-open driver); "
              "or set NCCL_NET_GDR_LEVEL=LOC to state that GPUDirect RDMA is off")
    status = Status.WARN if raw is None else Status.FAIL
    return [Result("gpu.gdr", status, observed=f"{asked}; no GPUDirect RDMA path: {obs_paths}",
                   expected="nvidia_peermem or DMA-BUF", remedy=remedy, details=details)]
