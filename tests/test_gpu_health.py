"""GPU health facts (facts/gpuhealth.py) and their gates (checks/gpu_health.py).

No GPU here: the NVML device queries are answered by the stand-in of tests/test_gpu.py, and the field
values by real ``pynvml.c_nvmlFieldValue_t`` structures carrying each field's own return code (the real
``pynvml`` module and its error classes throughout).  The H100 values are those `nvidia-smi -q` printed on
the project's H100 (../shared/captures/gpu-nodes/h100-1gpu-2026-12-07) and those of the device run kept in
tests/data/gpu-health/ (read there by this very reader and by nvidia-smi in the same run); the GB10 stand-in
answers NOT_SUPPORTED where NVIDIA's GB10 has nothing to report (no PCIe link to the GPU, no ECC memory
state) and carries the clock of the DGX Spark that lost its clock governor: 600 of 3003 MHz.
"""

from __future__ import annotations

import json
from pathlib import Path

import pynvml
import pytest

import nvsmi
from conftest import REPO
from rdmacheck.preflight.checks import gpu_health as G
from rdmacheck.config import Config, build_profile
from rdmacheck.preflight.facts import gpuhealth as gh
from rdmacheck.preflight.facts import nvml as nvmlf
from rdmacheck.evidence.model import Status
from rdmacheck.preflight.nodefacts import NodeFacts, Probe
from test_gpu import GB10, H100
from test_gpu import StandIn as _StandIn

DATA = REPO / "tests" / "data" / "gpu-health"
NS = pynvml.NVML_ERROR_NOT_SUPPORTED


def field_values(values: dict[str, int]):
    """A stand-in nvmlDeviceGetFieldValues: real c_nvmlFieldValue_t structs, each with its own return code.

    ``values``: health field name -> value, or ``("ret", code)`` for a field NVML does not answer."""
    by_id = {getattr(pynvml, const): name for name, const in gh.FIELDS.items()}

    def call(handle, ids):
        arr = (pynvml.c_nvmlFieldValue_t * len(ids))()
        for k, fid in enumerate(ids):
            arr[k].fieldId = fid
            v = values.get(by_id[fid], ("ret", NS))
            if isinstance(v, tuple):
                arr[k].nvmlReturn = v[1]
            else:
                arr[k].nvmlReturn = 0
                arr[k].valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
                arr[k].value.ullVal = v
        return arr

    return call


class StandIn(_StandIn):
    """tests/test_gpu.py's stand-in; a callable value answers with the call's arguments (the field batch)."""

    def __getattr__(self, name):
        if not name.startswith("nvmlDevice"):
            raise AttributeError(name)

        def query(handle, *args):
            v = self.devices[handle][name]
            if isinstance(v, Exception):
                raise v
            return v(handle, *args) if callable(v) else v

        return query


class _Util:
    def __init__(self, gpu: int):
        self.gpu, self.memory = gpu, 0


# What the H100 answered (nvidia-smi -q of the captured H100: reasons none, remapped rows 0/0 No/No, replays 0,
# SM 1980 of 1980 MHz, retired pages N/A).
H100_FIELDS = {"pcie_replay": 0, "pcie_replay_rollover": 0, "remapped_correctable": 0, "remapped_uncorrectable": 0,
               "remap_pending": 0, "remap_failure": 0, "clocks_event_sw_power_cap_ns": 0,
               "clocks_event_sync_boost_ns": 0, "clocks_event_sw_thermal_ns": 0, "clocks_event_hw_thermal_ns": 0,
               "clocks_event_hw_power_brake_ns": 0}
H100_HEALTH = {**H100, "nvmlDeviceGetFieldValues": field_values(H100_FIELDS),
               "nvmlDeviceGetCurrentClocksEventReasons": 0, "nvmlDeviceGetClockInfo": 1980,
               "nvmlDeviceGetMaxClockInfo": 1980, "nvmlDeviceGetApplicationsClock": 1980,
               "nvmlDeviceGetUtilizationRates": _Util(1), "nvmlDeviceGetPerformanceState": 0}
# GB10 whose clock governor was lost: P0, no clock-event reason, 600 of 3003 MHz; nothing else to report.
GB10_STUCK = {**GB10, "nvmlDeviceGetFieldValues": field_values({}),
              "nvmlDeviceGetCurrentClocksEventReasons": 0, "nvmlDeviceGetClockInfo": 600,
              "nvmlDeviceGetMaxClockInfo": 3003, "nvmlDeviceGetApplicationsClock": pynvml.NVMLError(NS),
              "nvmlDeviceGetUtilizationRates": _Util(10), "nvmlDeviceGetPerformanceState": 0}


def _node(facts: dict) -> NodeFacts:
    nf = NodeFacts(live=False)
    nf.probes["nvml"] = Probe("nvml", "", facts)
    return nf


def _cfg(**profile) -> Config:
    return Config({}, {}, None, build_profile({"gpus_per_node": 1, **profile}))


def _judge(devices, **profile) -> dict[str, object]:
    facts = nvmlf.collect(timeout=5, api=StandIn(devices))
    assert facts["state"] == nvmlf.OK, facts
    return {r.id: r for r in G.gate_gpu_health(_node(facts), _cfg(**profile))}


def test_h100_health_reads_and_passes():
    facts = nvmlf.collect(timeout=5, api=StandIn([H100_HEALTH]))
    h = facts["gpus"][0]["health"]
    assert h["fields_call"] == "ok"
    assert h["fields"]["pcie_replay"] == 0 and h["fields"]["remap_failure"] == 0
    # retired pages: Hopper remaps rows instead; NVML's answer is kept with its code
    assert h["fields"]["retired_sbe"] == "n/a (NVML_ERROR_NOT_SUPPORTED=3)"
    assert h["sm_clock_mhz"] == 1980 and h["clock_event_reasons"] == 0 and h["utilization_gpu"] == 1
    r = {x.id: x for x in G.gate_gpu_health(_node(facts), _cfg())}
    assert {k: v.status for k, v in r.items()} == {"gpu.clocks": Status.PASS, "gpu.remap": Status.PASS,
                                                   "gpu.pcie_errors": Status.PASS}
    assert "SM 1980 of 1980 MHz, reasons none" in r["gpu.clocks"].observed
    assert "retired pages n/a (NVML_ERROR_NOT_SUPPORTED=3)" in r["gpu.remap"].observed


def test_gb10_stuck_clock_fails_and_na_is_na_with_the_code():
    r = _judge([GB10_STUCK])
    c = r["gpu.clocks"]
    assert c.status is Status.FAIL
    assert "SM clock 600 MHz is 20% of its 3003 MHz maximum while not idle (NVML gives no reason)" in c.observed
    assert c.remedy.startswith("DGX Spark: ")  # the GPU names itself GB10: platform detected
    for gid in ("gpu.remap", "gpu.pcie_errors"):
        assert r[gid].status is Status.SKIP, r[gid]
        assert "n/a (NVML_ERROR_NOT_SUPPORTED=3)" in r[gid].observed


def test_gb10_idle_low_clock_is_not_judged_as_stuck():
    idle = {**GB10_STUCK, "nvmlDeviceGetCurrentClocksEventReasons": gh.GPU_IDLE, "nvmlDeviceGetUtilizationRates": _Util(0)}
    c = _judge([idle])["gpu.clocks"]
    assert c.status is Status.PASS and "idle: a low clock is normal at rest" in c.observed


@pytest.mark.parametrize("mask,status,text", [
    (0x008, Status.FAIL, "held back by hw_slowdown"),
    (0x040 | 0x004, Status.FAIL, "held back by hw_thermal_slowdown"),
    (0x080, Status.FAIL, "held back by hw_power_brake_slowdown"),
    (0x020, Status.WARN, "SW Thermal Slowdown active"),
    (0x004, Status.PASS, "reasons sw_power_cap"),  # a power cap under load is the GPU doing its job
])
def test_clock_event_reasons(mask, status, text):
    c = _judge([{**H100_HEALTH, "nvmlDeviceGetCurrentClocksEventReasons": mask}])["gpu.clocks"]
    assert c.status is status and text in c.observed, c


def test_applications_clock_below_max_warns():
    dev = {**H100_HEALTH, "nvmlDeviceGetCurrentClocksEventReasons": 0x002, "nvmlDeviceGetApplicationsClock": 1410,
           "nvmlDeviceGetClockInfo": 1410}
    c = _judge([dev])["gpu.clocks"]
    assert c.status is Status.WARN and "applications clock 1410 MHz below the 1980 MHz maximum" in c.observed


@pytest.mark.parametrize("fields,status,text", [
    ({"remap_failure": 1}, Status.FAIL, "row remapping failed"),
    ({"remap_pending": 1}, Status.WARN, "row remap pending"),
    ({"remapped_uncorrectable": 2}, Status.WARN, "2 row(s) remapped for uncorrectable errors"),
    ({"remapped_correctable": 5}, Status.PASS, "remapped rows 5 correctable / 0 uncorrectable"),
    ({"retired_sbe": 40, "retired_dbe": 20, "retired_pending": 0}, Status.FAIL, "60 retired pages"),
    ({"retired_sbe": 0, "retired_dbe": 1, "retired_pending": 1}, Status.WARN, "page retirement pending"),
])
def test_remapped_rows_and_retired_pages(fields, status, text):
    dev = {**H100_HEALTH, "nvmlDeviceGetFieldValues": field_values({**H100_FIELDS, **fields})}
    r = _judge([dev])["gpu.remap"]
    assert r.status is status and text in r.observed, r


@pytest.mark.parametrize("fields,status,text", [
    ({"pcie_replay": 100}, Status.WARN, "PCIe link replayed 100 times since the driver loaded"),
    ({"pcie_replay": 1, "pcie_bad_tlp": 4}, Status.PASS, "PCIe replays 1"),  # what a healthy H200 read
    ({"pcie_replay_rollover": 1}, Status.WARN, "rolled over 1 time(s)"),
    ({"pcie_fatal_error": 1, "pcie_non_fatal_error": 0}, Status.FAIL, "PCIe fatal errors 1"),
    ({"pcie_non_fatal_error": 3, "pcie_fatal_error": 0}, Status.WARN, "non-fatal errors 3"),
    ({"pcie_bad_tlp": 0, "pcie_fatal_error": 0}, Status.PASS, "error counts all 0"),
])
def test_pcie_errors(fields, status, text):
    dev = {**H100_HEALTH, "nvmlDeviceGetFieldValues": field_values({**H100_FIELDS, **fields})}
    r = _judge([dev])["gpu.pcie_errors"]
    assert r.status is status and text in r.observed, r


def test_a_driver_without_the_field_api_is_na_with_that_code():
    dev = {**H100_HEALTH, "nvmlDeviceGetFieldValues": pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)}
    facts = nvmlf.collect(timeout=5, api=StandIn([dev]))
    h = facts["gpus"][0]["health"]
    assert h["fields_call"] == "n/a (NVML_ERROR_FUNCTION_NOT_FOUND=13)"
    assert set(h["fields"].values()) == {"n/a (NVML_ERROR_FUNCTION_NOT_FOUND=13)"}
    r = {x.id: x for x in G.gate_gpu_health(_node(facts), _cfg())}
    assert r["gpu.remap"].status is Status.SKIP and r["gpu.pcie_errors"].status is Status.SKIP
    assert r["gpu.clocks"].status is Status.PASS  # the clock calls are not field values


def test_a_lost_gpu_is_an_error_not_na():
    dev = {**H100_HEALTH, "nvmlDeviceGetFieldValues": field_values(
        {k: ("ret", pynvml.NVML_ERROR_GPU_IS_LOST) for k in gh.FIELDS})}
    r = _judge([dev])["gpu.remap"]
    assert r.status is Status.WARN and "error: NVML_ERROR_GPU_IS_LOST=15" in r.observed


def test_no_gpu_profile_and_no_nvml_and_old_records_skip():
    facts = nvmlf.collect(timeout=5, api=StandIn([H100_HEALTH]))
    for r in G.gate_gpu_health(_node(facts), _cfg(gpu_platform="none")):
        assert r.status is Status.SKIP and "no GPU" in r.observed
    for r in G.gate_gpu_health(_node({"state": "no_library", "error": "x"}), _cfg()):
        assert r.status is Status.SKIP and "see gpu.nvml" in r.observed
    old = json.loads(json.dumps(facts))
    del old["gpus"][0]["health"]  # a record taken before these facts existed
    for r in G.gate_gpu_health(_node(old), _cfg()):
        assert r.status is Status.SKIP and "older rdmacheck" in r.observed


# ---------------------------------------------------------------- against nvidia-smi -q


def test_nvidia_smi_q_parser_on_the_captured_h100(captures):
    text = (captures / "gpu-nodes/h100-1gpu-2026-12-07/nvidia-smi-q.txt").read_text()
    smi = nvsmi.parse(text)["00000000:00:06.0"]
    assert nvsmi.leaf(smi, "Clocks Event Reasons", "HW Thermal Slowdown") == "Not Active"
    assert nvsmi.number(nvsmi.leaf(smi, "Max Clocks", "SM")) == 1980
    assert nvsmi.leaf(smi, "Retired Pages", "Single Bit ECC") == "N/A"
    # the values NVML gave in that run (the captures' README) agree with nvidia-smi, field by field
    facts = nvmlf.collect(timeout=5, api=StandIn([H100_HEALTH]))
    rows = nvsmi.compare(facts["gpus"][0]["health"], smi)
    bad = [r for r in rows if not r[3]]
    assert not bad and len(rows) >= 20, bad
    # retired pages: "N/A" there, judged N/A here with NVML's code (not a pass of that part)
    r = {x.id: x for x in G.gate_gpu_health(_node(facts), _cfg())}
    assert "retired pages n/a (NVML_ERROR_NOT_SUPPORTED=3)" in r["gpu.remap"].observed


def _run(name: str):
    facts = json.loads((DATA / name / "health.json").read_text())
    smi = nvsmi.parse((DATA / name / "nvidia-smi-q.txt").read_text())
    assert facts["state"] == nvmlf.OK and facts["gpus"]
    return facts, smi


def test_reader_agrees_with_nvidia_smi_at_rest():
    """The device run (benchmarks/gpu_health_device.py on an H200, kept in tests/data/gpu-health/h200-idle/):
    rdmacheck's reader, then nvidia-smi -q right after, GPU at rest.  Every one of the 25 facts nvidia-smi -q
    shows agrees exactly: clock-event reasons (Idle active), their time counters, SM clock 345 of 1980 MHz,
    remapped rows, retired pages N/A on both sides, 1 PCIe replay."""
    facts, smi_all = _run("h200-idle")
    for g in facts["gpus"]:
        rows = nvsmi.compare(g["health"], smi_all[g["pci_bus_id"]])
        bad = [r for r in rows if not r[3]]
        assert not bad and len(rows) == 25, bad
    h = facts["gpus"][0]["health"]
    assert h["clock_event_reasons"] == gh.GPU_IDLE and h["sm_clock_mhz"] < G.CLOCK_MIN_RATIO * h["sm_clock_max_mhz"]
    r = {x.id: x for x in G.gate_gpu_health(_node(facts), _cfg())}
    # idle and low: not a stuck clock; retired pages N/A with the code; 1 replay is no warning
    assert r["gpu.clocks"].status is Status.PASS and "idle: a low clock is normal" in r["gpu.clocks"].observed
    assert r["gpu.remap"].status is Status.PASS and "retired pages n/a (NVML_ERROR_NOT_SUPPORTED=3)" in \
        r["gpu.remap"].observed
    assert r["gpu.pcie_errors"].status is Status.PASS and "PCIe replays 1" in r["gpu.pcie_errors"].observed


def test_reader_agrees_with_nvidia_smi_under_load():
    """The same H200 while a bf16 matrix-product loop ran (h200-load/): the reasons agree exactly (SW Power Cap
    active, Idle not); what moves between two reads ~0.1 s apart moves the right way: the SW Power Cap time
    counter only grows (nvidia-smi, read after, shows more: NVML's nanoseconds are its microseconds x 1000),
    and the SM clock differs by a few MHz and stays above half its maximum."""
    facts, smi_all = _run("h200-load")
    g = facts["gpus"][0]
    rows = {r[0]: r for r in nvsmi.compare(g["health"], smi_all[g["pci_bus_id"]])}
    moving = {"clocks_event_sw_power_cap_ns (us)", "sm_clock_mhz"}
    assert all(r[3] for k, r in rows.items() if k not in moving), [r for k, r in rows.items() if not r[3]]
    _, mine, theirs, _ = rows["clocks_event_sw_power_cap_ns (us)"]
    assert 0 < mine <= theirs < mine + 1_000_000  # within a second of each other
    _, mine, theirs, _ = rows["sm_clock_mhz"]
    top = g["health"]["sm_clock_max_mhz"]
    assert abs(mine - theirs) <= 0.05 * top and min(mine, theirs) >= G.CLOCK_MIN_RATIO * top
    assert gh.reason_names(g["health"]["clock_event_reasons"]) == ["sw_power_cap"]
    r = {x.id: x for x in G.gate_gpu_health(_node(facts), _cfg())}
    assert r["gpu.clocks"].status is Status.PASS and "reasons sw_power_cap" in r["gpu.clocks"].observed
