"""Expectations that are not environment variables: the cluster profile.

A profile is a small TOML file; every key is optional and the built-in
defaults describe the reference cluster (two DGX Spark-class nodes, one GPU
each, RoCE over a 192.168.100.0/24 mesh at MTU 9000).  ``--expect KEY=VALUE``
overrides one value from the command line.

Example (docs/profile.md lists every key)::

    mtu = 9000
    subnet = "192.168.100.0/24"
    memlock = "unlimited"
    stack_min = "64MiB"
    gpus_per_node = 1
    nodes = 2
    min_busbw = "12GB/s"
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from pathlib import Path
from typing import Any, ClassVar

from rdmacheck.util.errors import UsageError

MAX_BYTES = 1 << 50      # 1 PiB: no buffer, limit or threshold here is larger
MAX_GBS = 1e6            # 1 PB/s: a typo, not a link
def _show(v: Any) -> str:
    """A value in a message, cut short: the line must stay one line."""
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


_BIN = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str | int, what: str = "size") -> int:
    """``64MiB``, ``64M``, ``1G``, ``4096`` -> bytes.  K/M/G are binary (as nccl-tests)."""
    if isinstance(text, bool):
        raise UsageError(f"{what}: expected a size such as 64MiB, got {_show(text)}")
    if isinstance(text, int):
        if text < 0:
            raise UsageError(f"{what}: must not be negative")
        if text > MAX_BYTES:
            raise UsageError(f"{what}: {text} is larger than 1 PiB; write a real size")
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", str(text))
    if not m:
        raise UsageError(f"{what}: {_show(text)} is not a size; write e.g. 64MiB, 1G or 4096")
    n = int(float(m.group(1)) * _BIN[m.group(2).lower()]) if len(m.group(1)) < 20 else MAX_BYTES + 1
    if n > MAX_BYTES:
        raise UsageError(f"{what}: {_show(text)} is larger than 1 PiB; write a real size")
    return n


def parse_bandwidth(text: str | int | float, what: str = "bandwidth") -> float:
    """``12GB/s``, ``12``, ``12.5 GB/s`` -> GB/s (1e9 bytes/s, as nccl-tests prints)."""
    if isinstance(text, bool):
        raise UsageError(f"{what}: expected e.g. 12GB/s, got {_show(text)}")
    if isinstance(text, (int, float)):
        try:
            v = float(text)
        except OverflowError:
            v = math.inf
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(GB/s|GB|G)?\s*", str(text), re.IGNORECASE)
        if not m:
            raise UsageError(f"{what}: {_show(text)} is not a bandwidth; write e.g. 12GB/s")
        v = float(m.group(1))
    # NaN compares false with everything: a NaN threshold would pass any bandwidth
    if not math.isfinite(v) or v > MAX_GBS:
        raise UsageError(f"{what}: {_show(text)} is not a finite bandwidth; write e.g. 12GB/s")
    if v < 0:
        raise UsageError(f"{what}: must not be negative")
    return v


# all_reduce over one 100 Gb/s RoCE link, two nodes x one GPU: twice the published out-of-place times of
# rccl-tests all_reduce_perf (the nccl-tests fork, same table) in ROCm/ROCm issue #5571, rounded up to 5 us
# (8K 45.5, 16K 47.3, 32K 50.3, 64K 51.0, 128K 61.4, 256K 77.6, 512K 85.5, 1M 163.8 us at a 10.8 GB/s plateau).
REFERENCE_LATENCY = [("all_reduce", 8 << 10, 95.0), ("all_reduce", 16 << 10, 95.0), ("all_reduce", 32 << 10, 105.0),
                     ("all_reduce", 64 << 10, 105.0), ("all_reduce", 128 << 10, 125.0),
                     ("all_reduce", 256 << 10, 160.0), ("all_reduce", 512 << 10, 175.0),
                     ("all_reduce", 1 << 20, 330.0)]


@dataclasses.dataclass
class Profile:
    # Network
    mtu: int = 9000
    # RoCE active MTU expected on each selected port (ibv enum value in bytes).
    active_mtu: int = 4096
    subnet: str = "192.168.100.0/24"
    roce_version: int = 2
    # Limits: "unlimited" or a byte size.
    memlock: str = "unlimited"
    stack_min: int = 64 << 20
    shm_min: int = 1 << 30
    # Cluster shape
    nodes: int = 2
    gpus_per_node: int = 1
    # Bench
    min_busbw: float = 12.0
    plateau_min_bytes: int = 64 << 20
    # "auto", "none" (expect no GPU), or a platform tag such as "dgx-spark".
    gpu_platform: str = "auto"
    # bench.latency ceilings (op or None, bytes, microseconds); TOML: [latency] "all_reduce:8K" = "95us".
    # Cited, not measured here: docs/latency.md#reference-values gives the source and the rule.
    latency: list = dataclasses.field(default_factory=lambda: list(REFERENCE_LATENCY))

    # Keys a profile file or --expect set (the rest are defaults): a gate the user asked for
    # must be judged, a default one may skip.  A class variable, so not part of to_dict().
    explicit: ClassVar[frozenset] = frozenset()

    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.subnet, strict=False)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(Profile)}


def _coerce(key: str, value: Any) -> Any:
    where = f"profile key {key!r}"
    if key in ("stack_min", "shm_min", "plateau_min_bytes"):
        return parse_bytes(value, where)
    if key == "min_busbw":
        return parse_bandwidth(value, where)
    if key == "memlock":
        s = str(value).strip().lower()
        if s in ("unlimited", "-1", "infinity"):
            return "unlimited"
        return str(parse_bytes(value, where))
    if key == "subnet":
        try:
            ipaddress.ip_network(str(value), strict=False)
        except ValueError:
            raise UsageError(f"{where}: {value!r} is not a subnet; write e.g. 192.168.100.0/24") from None
        return str(value)
    if key in ("mtu", "active_mtu", "roce_version", "nodes", "gpus_per_node"):
        try:
            v = int(str(value).strip())
        except ValueError:
            raise UsageError(f"{where}: {value!r} is not a whole number") from None
        if v < 0 or (key == "mtu" and not 68 <= v <= 65535):
            raise UsageError(f"{where}: {v} is out of range")
        if key == "active_mtu" and v not in (256, 512, 1024, 2048, 4096):
            raise UsageError(f"{where}: {v} is not a RoCE MTU; use 256, 512, 1024, 2048 or 4096")
        if key == "roce_version" and v not in (1, 2):
            raise UsageError(f"{where}: RoCE version must be 1 or 2")
        return v
    if key == "gpu_platform":
        return str(value).strip().lower()
    if key == "latency":
        from .latency import parse_latency_table

        # a table (TOML), a string (--expect), or the rows Profile.to_dict() recorded in evidence (--facts)
        if not isinstance(value, (str, dict, list, tuple)):
            raise UsageError(f"{where}: write a table such as [latency] \"all_reduce:8K\" = \"95us\"")
        return parse_latency_table(value, where)
    return value


def build_profile(data: dict[str, Any] | None = None, overrides: list[str] | None = None) -> Profile:
    p = Profile()
    keys = set((data or {}).keys())
    for key, value in (data or {}).items():
        if key not in _FIELDS:
            raise UsageError(f"unknown profile key {key!r}; known keys: {', '.join(sorted(_FIELDS))}")
        setattr(p, key, _coerce(key, value))
    for item in overrides or []:
        if "=" not in item:
            raise UsageError(f"--expect {item!r}: write KEY=VALUE, e.g. --expect mtu=1500")
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in _FIELDS:
            raise UsageError(f"--expect: unknown key {key!r}; known keys: {', '.join(sorted(_FIELDS))}")
        setattr(p, key, _coerce(key, value.strip()))
        keys.add(key)
    p.explicit = frozenset(keys)
    return p


# Profiles that ship with the package (rdmacheck/data/profile-<name>.toml): --profile NAME.
BUILTIN_PROFILES = ("reference", "dgx-spark")


def builtin_profile_text(name: str) -> str | None:
    """The TOML of a built-in profile, None when ``name`` is not one."""
    if name not in BUILTIN_PROFILES:
        return None
    from importlib import resources

    return resources.files("rdmacheck").joinpath("data", f"profile-{name}.toml").read_text(encoding="utf-8")


def load_profile(path: str | Path | None, overrides: list[str] | None = None) -> Profile:
    """``path``: a TOML file, or the name of a built-in profile (a file of that name wins)."""
    data: dict[str, Any] = {}
    if path:
        from rdmacheck.util.inputs import PROFILE_MAX, read_input_text

        p = Path(path)
        builtin = None if (p.exists() or p.is_symlink()) else builtin_profile_text(str(path))
        if builtin is None:
            if not p.exists() and not p.is_symlink():
                if not str(path).endswith(".toml") and "/" not in str(path):
                    raise UsageError(f"profile {path!r} is neither a file nor a built-in profile "
                                     f"({', '.join(BUILTIN_PROFILES)}); pass a TOML file or one of those names")
                raise UsageError(f"profile {p} not found; pass an existing TOML file or drop --profile")
            text = read_input_text(p, "profile", PROFILE_MAX)
        else:
            text = builtin
        try:
            data = tomllib.loads(text)
        except RecursionError:
            raise UsageError(f"profile {p} nests tables too deeply to be a profile; fix the file") from None
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"profile {p} is not valid TOML ({e}); fix the line named") from None
        if isinstance(data.get("expect"), dict):  # allow an [expect] table too
            data = {**{k: v for k, v in data.items() if k != "expect"}, **data["expect"]}
    return build_profile(data, overrides)
