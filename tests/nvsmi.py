"""`nvidia-smi -q` text -> values, to cross-check rdmacheck's NVML health reader (facts/gpuhealth.py).

nvidia-smi is an independent reader of the same driver: its text is the ground truth the tests compare
with (tests/test_gpu_health.py on the captured and the device-run outputs).  The layout: a line
``<indent>Key<spaces>: value`` is a value, a line without `` : `` opens a section; 4 spaces per level.
"""

from __future__ import annotations

import re
from typing import Any

_KV = re.compile(r"^(\s*)(\S.*?)\s+:(?: (.*))?$")


def parse(text: str) -> dict[str, dict[tuple[str, ...], str]]:
    """{bus id ("00000000:00:06.0"): {(section, ..., key): value}} for every ``GPU <bus id>`` block."""
    gpus: dict[str, dict[tuple[str, ...], str]] = {}
    cur: dict[tuple[str, ...], str] | None = None
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("="):
            continue
        if line.startswith("GPU "):
            cur = gpus.setdefault(line[4:].strip(), {})
            stack = []
            continue
        if cur is None:
            continue
        ind = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= ind:
            stack.pop()
        m = _KV.match(line)
        if m and " : " in line + " ":
            cur[tuple(s for _, s in stack) + (m.group(2).strip(),)] = (m.group(3) or "").strip()
        else:
            stack.append((ind, line.strip()))
    return gpus


def leaf(values: dict[tuple[str, ...], str], section: str, key: str) -> str | None:
    """The value of ``key`` anywhere under the top-level ``section`` (nested sub-sections allowed)."""
    for path, v in values.items():
        if path[0] == section and path[-1] == key:
            return v
    return None


def number(v: str | None) -> int | None:
    """``"1980 MHz"`` -> 1980, ``"0 us"`` -> 0; None for N/A and words."""
    if v is None:
        return None
    m = re.match(r"^(-?\d+)\b", v.strip())
    return int(m.group(1)) if m else None


REASON_KEYS = {  # nvidia-smi's names under "Clocks Event Reasons" -> facts.gpuhealth.REASONS names
    "Idle": "gpu_idle", "Applications Clocks Setting": "applications_clocks_setting", "SW Power Cap": "sw_power_cap",
    "HW Slowdown": "hw_slowdown", "HW Thermal Slowdown": "hw_thermal_slowdown",
    "HW Power Brake Slowdown": "hw_power_brake_slowdown", "Sync Boost": "sync_boost",
    "SW Thermal Slowdown": "sw_thermal_slowdown", "Display Clock Setting": "display_clock_setting",
}
COUNTER_KEYS = {  # "Clocks Event Reasons Counters" (us) -> health field (ns)
    "SW Power Capping": "clocks_event_sw_power_cap_ns", "Sync Boost": "clocks_event_sync_boost_ns",
    "SW Thermal Slowdown": "clocks_event_sw_thermal_ns", "HW Thermal Slowdown": "clocks_event_hw_thermal_ns",
    "HW Power Braking": "clocks_event_hw_power_brake_ns",
}


def compare(health: dict[str, Any], smi: dict[tuple[str, ...], str]) -> list[tuple[str, Any, Any, bool]]:
    """(fact, rdmacheck's value, nvidia-smi's value, agree) for every health fact nvidia-smi -q shows."""
    from rdmacheck.preflight.facts.gpuhealth import reason_names

    f = health.get("fields") or {}
    out: list[tuple[str, Any, Any, bool]] = []

    def yes_no(v: str | None) -> Any:
        return {"Yes": 1, "No": 0}.get(v or "", v)

    def add(fact: str, mine: Any, theirs: Any, ok: bool | None = None) -> None:
        out.append((fact, mine, theirs, (mine == theirs) if ok is None else ok))

    mask = health.get("clock_event_reasons")
    active = set(reason_names(mask)) if isinstance(mask, int) else set()
    for key, name in REASON_KEYS.items():
        v = leaf(smi, "Clocks Event Reasons", key)
        if v is not None:
            add(f"clock event reason {name}", name in active, v == "Active")
    for key, name in COUNTER_KEYS.items():
        v = number(leaf(smi, "Clocks Event Reasons Counters", key))
        mine = f.get(name)
        if v is not None:
            add(f"{name} (us)", mine // 1000 if isinstance(mine, int) else mine, v)
    add("sm_clock_mhz", health.get("sm_clock_mhz"), number(leaf(smi, "Clocks", "SM")))
    add("sm_clock_max_mhz", health.get("sm_clock_max_mhz"), number(leaf(smi, "Max Clocks", "SM")))
    for key, name in (("Correctable Error", "remapped_correctable"), ("Uncorrectable Error", "remapped_uncorrectable")):
        add(name, f.get(name), number(leaf(smi, "Remapped Rows", key)))
    add("remap_pending", f.get("remap_pending"), yes_no(leaf(smi, "Remapped Rows", "Pending")))
    add("remap_failure", f.get("remap_failure"), yes_no(leaf(smi, "Remapped Rows", "Remapping Failure Occurred")))
    for key, name in (("Single Bit ECC", "retired_sbe"), ("Double Bit ECC", "retired_dbe")):
        v = leaf(smi, "Retired Pages", key)
        mine = f.get(name)
        # both N/A, or both the same number
        add(name, mine, v, (isinstance(mine, str) and mine.startswith("n/a") and v == "N/A") or mine == number(v))
    pend = leaf(smi, "Retired Pages", "Pending Page Blacklist") or leaf(smi, "Retired Pages", "Pending Page Retirement")
    mine = f.get("retired_pending")
    add("retired_pending", mine, pend,
        (isinstance(mine, str) and mine.startswith("n/a") and pend == "N/A") or mine == yes_no(pend))
    add("pcie_replay", f.get("pcie_replay"), number(leaf(smi, "PCI", "Replays Since Reset")))
    add("pcie_replay_rollover", f.get("pcie_replay_rollover"), number(leaf(smi, "PCI", "Replay Number Rollovers")))
    return out
