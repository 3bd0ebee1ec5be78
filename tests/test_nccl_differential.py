"""Differential: rdmacheck.nccl.spec against NCCL's own C rules, run through libc (ctypes).

The oracle below is a line-by-line transliteration of NVIDIA/nccl at 5067397c2676d5aed50042fc39e5c8ee96eb0027
(NCCL 2.30), calling the same libc functions NCCL calls (strtok_r, strsep, atoi, strncmp, strtol, strtoll,
inet_pton) through ctypes, so C's reading of odd text (signs, white space, overflow, empty fields) is C's:

- NCCL_IB_HCA: src/transport/net_ib/init.cc lines 317-324 (``searchNot``/``searchExact``, parseStringList with
  MAX_IB_DEVS) and line 370 (``matchIfList(...) ^ searchNot``); src/misc/utils.cc lines 189-244
  (parseStringList, matchIf, matchPort, matchIfList); src/transport/net_ib/common.h:112 MAX_IB_DEVS 32.
- NCCL_SOCKET_IFNAME: src/misc/socket.cc line 198 (``strlen(env) > 1``), src/os/linux.cc lines 385-389 and
  417 (the same list syntax, port -1, MAX_IFS 16 from src/include/socket.h:25).
- NCCL_IB_ADDR_RANGE: src/transport/net_ib/connect.cc lines 119-161 (envIbAddrRange) and 171-211
  (matchGidAddrPrefix).
- NCCL_IB_GID_INDEX and every integer NCCL_PARAM: src/misc/param.cc lines 93-101 (``strtoll(str, nullptr, 0)``,
  errno -> default) and connect.cc line 318 (``*gidIndex = ncclParamIbGidIndex();``: an ``int``).

Counts of inputs compared are printed at the end of the module (>= 20,000 in all).
"""

from __future__ import annotations

import collections
import ctypes
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rdmacheck.nccl.spec import (c_strtol, gid_in_range, nccl_gid_index, nccl_param_int, parse_addr_range,
                                parse_list_spec)

libc = ctypes.CDLL(None, use_errno=True)
libc.strtok_r.restype = ctypes.c_void_p
libc.strtok_r.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
libc.strsep.restype = ctypes.c_void_p
libc.strsep.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p]
libc.atoi.restype = ctypes.c_int
libc.atoi.argtypes = [ctypes.c_void_p]
libc.strncmp.restype = ctypes.c_int
libc.strncmp.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
libc.strlen.restype = ctypes.c_size_t
libc.strlen.argtypes = [ctypes.c_void_p]
libc.strtol.restype = ctypes.c_long
libc.strtol.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
libc.strtoll.restype = ctypes.c_longlong
libc.strtoll.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
libc.inet_pton.restype = ctypes.c_int
libc.inet_pton.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]

COMPARED: collections.Counter = collections.Counter()
MAX_IB_DEVS, MAX_IFS = 32, 16


@pytest.fixture(scope="module", autouse=True)
def _print_counts(request):
    yield
    text = (", ".join(f"{k}: {v}" for k, v in sorted(COMPARED.items()))
            + f"; all: {sum(COMPARED.values())} inputs compared with NCCL's C rules")
    cm = request.config.pluginmanager.getplugin("capturemanager")
    with cm.global_and_fixture_disabled():
        print(f"\n[nccl differential] {text}", flush=True)


# ------------------------------------------------------------------ src/misc/utils.cc, transliterated

class NetIf:  # struct netIf { char prefix[64]; int port; int16_t rail; int16_t plane; }
    def __init__(self, prefix: bytes, port: int):
        self.prefix, self.port = prefix, port


def _nonempty(tok) -> bool:
    return bool(tok) and ctypes.string_at(tok, 1) != b"\0"


def c_parse_string_list(string: bytes | None, max_list: int) -> list[NetIf]:
    """utils.cc:189 int parseStringList(const char* string, struct netIf* ifList, int maxList)"""
    if string is None:                                                  # if (!string) return 0;
        return []
    buf = ctypes.create_string_buffer(string)                           # char* str = strdup(string);
    out: list[NetIf] = []
    save = ctypes.c_void_p()
    entry = libc.strtok_r(ctypes.addressof(buf), b",", ctypes.byref(save))  # strtok_r(str, ",", &savePtr)
    while entry is not None and len(out) < max_list:                    # while (entry != NULL && ifNum < maxList)
        c = ctypes.c_void_p(entry)                                      # char* c = entry;
        tok = libc.strsep(ctypes.byref(c), b":")                        # ncclOsStrSep(&c, ":") (linux.cc:110 strsep)
        if _nonempty(tok):                                              # if (tok && tok[0] != '\0')
            prefix = ctypes.string_at(tok)[:63]                         # snprintf(prefix, 64, "%s", tok)
            tok = libc.strsep(ctypes.byref(c), b":")
            port = libc.atoi(tok) if _nonempty(tok) else -1             # port = (tok && tok[0]) ? atoi(tok) : -1
            out.append(NetIf(prefix, port))                             # (rail, plane: not used in matching)
        entry = libc.strtok_r(None, b",", ctypes.byref(save))
    return out


def c_match_if(string: bytes, ref: bytes, match_exact: bool) -> bool:
    """utils.cc:218 matchIf"""
    match_len = len(string) + 1 if match_exact else len(ref)            # strlen(string) + 1 : strlen(ref)
    return libc.strncmp(string, ref, match_len) == 0


def c_match_port(port1: int, port2: int) -> bool:
    """utils.cc:224 matchPort"""
    return port1 == -1 or port2 == -1 or port1 == port2


def c_match_if_list(string: bytes, port: int, if_list: list[NetIf], match_exact: bool) -> bool:
    """utils.cc:231 matchIfList"""
    if len(if_list) == 0:                                               # if (listSize == 0) return true;
        return True
    return any(c_match_if(string, i.prefix, match_exact) and c_match_port(port, i.port) for i in if_list)


def c_list_selects(env: bytes | None, name: bytes, port: int, max_list: int) -> bool:
    """init.cc:320-324 and :370 (NCCL_IB_HCA); linux.cc:385-389 and :417 (NCCL_SOCKET_IFNAME, port -1)."""
    return c_list_selector(env, max_list)(name, port)


def c_list_selector(env: bytes | None, max_list: int):
    user = env
    search_not = user is not None and user[:1] == b"^"                  # userIbEnv[0] == '^'
    if search_not:
        user = user[1:]
    search_exact = user is not None and user[:1] == b"="               # userIbEnv[0] == '='
    if search_exact:
        user = user[1:]
    ifs = c_parse_string_list(user, max_list)
    return lambda name, port: c_match_if_list(name, port, ifs, search_exact) ^ search_not


# ------------------------------------------------------------------ src/transport/net_ib/connect.cc

def c_env_ib_addr_range(env: bytes | None, af: int) -> tuple[bytes | None, int]:
    """connect.cc:119 static void* envIbAddrRange(sa_family_t af, int* mask) -> (prefix bytes or NULL, mask)"""
    mask = 0
    if env is None or len(env) == 0:
        return None, mask
    addr_string = env[:127]                                             # char addrString[128]; snprintf(.., 128, ..)
    slash = addr_string.find(b"/")                                      # strstr(addrString, "/")
    if slash < 0:
        return None, mask
    addr_str, mask_str = addr_string[:slash], addr_string[slash + 1:]
    ret = ctypes.create_string_buffer(16)
    if libc.inet_pton(af, addr_str, ret) == 0:                          # inet_pton(af, addrStrPtr, ret) == 0
        return None, mask
    mask = ctypes.c_int(libc.strtol(mask_str, None, 10)).value          # (int)strtol(maskStrPtr, NULL, 10)
    if af == socket.AF_INET and mask > 32:
        return None, 0
    if af == socket.AF_INET6 and mask > 128:
        return None, 0
    return ret.raw[:4 if af == socket.AF_INET else 16], mask


def _netmask(bits: int) -> int:
    # #define NETMASK(bits) (htonl(0xffffffff ^ ((1 << (32 - bits)) - 1)))
    return socket.htonl((0xFFFFFFFF ^ ((1 << (32 - bits)) - 1)) & 0xFFFFFFFF)


def c_match_gid_addr_prefix(af: int, prefix: bytes | None, prefixlen: int, gid: bytes) -> bool:
    """connect.cc:171 matchGidAddrPrefix (words read in host order, as s_addr / s6_addr32 are)."""
    addr6 = struct.unpack("=4I", gid)
    i = 0
    while prefixlen > 0 and i < 4:
        if af == socket.AF_INET:
            base = struct.unpack("=I", prefix)[0]
            mask = _netmask(prefixlen)
            if (base & mask) ^ (addr6[3] & mask):
                break
            prefixlen = 0
            break
        base6 = struct.unpack("=4I", prefix)
        if prefixlen >= 32:
            if base6[i] ^ addr6[i]:
                break
            prefixlen -= 32
            i += 1
        else:
            mask = _netmask(prefixlen)
            if (base6[i] & mask) ^ (addr6[i] & mask):
                break
            prefixlen = 0
    return prefixlen == 0


# ------------------------------------------------------------------ src/misc/param.cc

def c_load_param(env: bytes | None, deft: int) -> int:
    """param.cc:93-101: strtoll(str, nullptr, 0); errno -> default."""
    if env is not None and len(env) > 0:
        ctypes.set_errno(0)
        value = libc.strtoll(env, None, 0)
        return deft if ctypes.get_errno() else value
    return deft


# ------------------------------------------------------------------ inputs

DEVICES = [b"mlx5_0", b"mlx5_1", b"mlx5_10", b"roceP2p1s0f0", b"rocep1s0f0", b"roce", b"ib0", b"m", b"x" * 70,
           b" mlx5_1", b"mlx5_0:1"]
ALPHABET = st.sampled_from(list("^=,: -+0123456789mlx5_roceP") + ["mlx5_0", "mlx5_1", "roceP2p1s0f0", "\t", "x" * 60,
                                                                 "0x", "99999999999999999999", "é"])
SPEC = st.one_of(st.lists(ALPHABET, max_size=14).map("".join), st.text(max_size=40)).filter(lambda s: "\0" not in s)

def fast(n: int) -> settings:
    return settings(deadline=None, derandomize=True, database=None, max_examples=n,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _b(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


BATCH = 25  # inputs per hypothesis example: its per-example overhead, not the parsers, set the run time


@fast(7000 // BATCH)
@given(st.lists(SPEC, min_size=BATCH, max_size=BATCH))
def test_nccl_ib_hca_selection_is_nccls(specs):
    for spec in specs:
        ours = parse_list_spec(spec, "NCCL_IB_HCA", with_ports=True)
        nccl = c_list_selector(_b(spec), MAX_IB_DEVS)
        for dev in DEVICES:
            for port in (1, 2):
                assert ours.matches(dev.decode(), port) is nccl(dev, port), (spec, dev, port)
        COMPARED["NCCL_IB_HCA"] += 1


@fast(3000 // BATCH)
@given(st.lists(SPEC, min_size=BATCH, max_size=BATCH))
def test_nccl_socket_ifname_selection_is_nccls(specs):
    for spec in specs:
        ours = parse_list_spec(spec, "NCCL_SOCKET_IFNAME")
        nccl = c_list_selector(_b(spec), MAX_IFS)
        for dev in DEVICES:
            assert ours.matches(dev.decode()) is nccl(dev, -1), (spec, dev)
        COMPARED["NCCL_SOCKET_IFNAME"] += 1


@pytest.mark.parametrize("spec,dev,port,selected", [
    ("^", "mlx5_0", 1, False), ("^=", "mlx5_0", 1, False),          # an empty exclusion list: no device
    ("", "mlx5_0", 1, True),                                         # empty = unset: every device
    ("mlx5_0, mlx5_1", "mlx5_1", 1, False),                          # " mlx5_1" is kept, with its space
    ("mlx5_0,mlx5_1", "mlx5_1", 1, True),
    ("mlx5_0:1:0", "mlx5_0", 1, True), ("mlx5_0:1:0", "mlx5_0", 2, False),  # dev:port:rail
    ("mlx5_0::3", "mlx5_0", 2, True),                                # empty port: any port
    (" ^mlx5_0", "mlx5_0", 1, False), ("=mlx5_0 ", "mlx5_0", 1, False),
    ("mlx5_0:99999999999999999999", "mlx5_0", 2, True),              # atoi -> (int)LONG_MAX = -1: any port
    (",".join(f"z{i}" for i in range(32)) + ",mlx5_0", "mlx5_0", 1, False),  # the 33rd entry: past MAX_IB_DEVS
])
def test_nccl_ib_hca_cases(spec, dev, port, selected):
    assert parse_list_spec(spec, "NCCL_IB_HCA", with_ports=True).matches(dev, port) is selected
    assert c_list_selects(_b(spec), _b(dev), port, MAX_IB_DEVS) is selected


GIDS = [bytes(10) + b"\xff\xff" + bytes([192, 168, 100, 1]), bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 1]),
        bytes(10) + b"\xff\xff" + bytes([192, 168, 101, 7]), bytes.fromhex("fe800000000000000000000000000001"),
        bytes.fromhex("fd000100000000000000000000000002"), bytes.fromhex("fd000100ffff00000000000000000002"),
        bytes(16)]
RANGE = st.one_of(
    st.tuples(st.sampled_from(["192.168.100.0", "192.168.100.7", "10.0.0.0", "0.0.0.0", "fd00:100::", "fe80::",
                               "192.168.100", "1.2.3.04", "::ffff:192.168.100.1", " 192.168.100.0", "x"]),
              st.sampled_from(["/", ""]),
              st.one_of(st.integers(-40, 140).map(str),
                        st.sampled_from(["", "24x", " 16", "+8", "0x10", "99999999999999999999", "-0", "abc"]))
              ).map("".join),
    st.text(max_size=30)).filter(lambda s: "\0" not in s)


@fast(5000 // BATCH)
@given(st.lists(st.tuples(RANGE, st.sampled_from(["inet", "inet6"])), min_size=BATCH, max_size=BATCH))
def test_nccl_ib_addr_range_is_nccls(cases):
    for text, family in cases:
        _one_addr_range(text, family)


def _one_addr_range(text: str, family: str) -> None:
    af = socket.AF_INET if family == "inet" else socket.AF_INET6
    prefix, mask = c_env_ib_addr_range(_b(text), af)
    ours = parse_addr_range(text, family)
    assert (ours is None) == (prefix is None), (text, family)
    for g in GIDS:
        want = True if prefix is None else c_match_gid_addr_prefix(af, prefix, mask, g)
        assert gid_in_range(g, family, ours) is want, (text, family, g.hex())
    COMPARED["NCCL_IB_ADDR_RANGE"] += 1


@pytest.mark.parametrize("text,used", [("192.168.100.0/24", True), ("192.168.100.0", False), ("fd00::/64", False),
                                       ("192.168.100.0/33", False), ("192.168.100.0/x", True)])
def test_nccl_ib_addr_range_cases(text, used):
    assert (parse_addr_range(text, "inet") is not None) is used
    assert (c_env_ib_addr_range(_b(text), socket.AF_INET)[0] is not None) is used


INT_TEXT = st.one_of(
    st.integers(-(1 << 70), 1 << 70).map(str), st.integers(-(1 << 66), 1 << 66).map(hex),
    st.tuples(st.sampled_from(["", " ", "\t", "+", "-", "0", "0x", "00"]), st.integers(0, 1 << 68).map(str),
              st.sampled_from(["", "x", " ", "9", ".5"])).map("".join),
    st.text(alphabet="0123456789xXabcdefABCDEF+- \t", max_size=25), st.text(max_size=12),
).filter(lambda s: "\0" not in s)


@fast(8000 // BATCH)
@given(st.lists(INT_TEXT, min_size=BATCH, max_size=BATCH))
def test_nccl_param_int_is_strtoll(texts):
    for text in texts:
        _one_param_int(text)


def _one_param_int(text: str) -> None:
    nccl = c_load_param(_b(text), -1)               # NCCL_PARAM(IbGidIndex, "IB_GID_INDEX", -1)
    try:
        ours = nccl_param_int(text)
    except ValueError:
        # refused as ambiguous ("3x", "abc"): the value NCCL reads is still the strtoll prefix
        v, whole = c_strtol(text)
        assert not whole and (v or 0) == nccl, text
        COMPARED["integer NCCL_PARAM (refused as ambiguous)"] += 1
        return
    assert (-1 if ours is None else ours) == nccl, text
    # connect.cc:318 *gidIndex = ncclParamIbGidIndex(); (int), then "if (*gidIndex >= 0)" pins it
    pinned = ctypes.c_int(nccl).value
    assert nccl_gid_index(ours) == (pinned if pinned >= 0 else None), text
    COMPARED["integer NCCL_PARAM"] += 1


@pytest.mark.parametrize("text,value,index", [
    ("99999999999999999999", None, None), ("-99999999999999999999", None, None),  # strtoll ERANGE: NCCL's default
    ("0x10000000000000000", None, None),
    ("9223372036854775807", (1 << 63) - 1, None),  # (int)INT64_MAX = -1: automatic
    ("4294967299", 4294967299, 3),                 # (int) keeps the low 32 bits
    ("3", 3, 3), ("-1", -1, None)])
def test_gid_index_as_nccl_holds_it(text, value, index):
    assert nccl_param_int(text) == value
    assert nccl_gid_index(nccl_param_int(text)) == index
    assert c_load_param(_b(text), -1) == (-1 if value is None else value)


# ------------------------------------------------------------------ the gates judge what NCCL does

def _verdicts(root):
    from rdmacheck.config import load_config
    from rdmacheck import preflight
    from rdmacheck.preflight.root import HostRoot

    r = HostRoot(root)
    return {res.id: res for res in preflight.run(r, config=load_config(None, None, [], r.environ())).results}


def test_addr_range_without_mask_is_ignored_as_nccl_does(tmp_path):
    from sysfs_builder import LINK_LOCAL, ipv4_gid, roce_tree

    gids = [(LINK_LOCAL, "RoCE v2"), (ipv4_gid("10.0.0.5"), "RoCE v2"), (ipv4_gid("192.168.100.1"), "RoCE v2")]
    r = _verdicts(roce_tree(tmp_path, gids=gids, env={"NCCL_IB_ADDR_RANGE": "192.168.100.0"}))["rdma.gid"]
    # NCCL (envIbAddrRange: no "/" -> NULL) keeps its unranged pick: index 1, 10.0.0.5; before, the range steered it
    assert r.details["roceP2p1s0f0:1"]["predicted"] == 1
    assert r.status.value == "fail" and "has no /mask: NCCL ignores it" in r.observed


@pytest.mark.parametrize("env,status", [
    ({"NCCL_IB_TC": "-1", "NCCL_IB_SL": "3"}, "warn"),       # -1: NCCL's own unset, not out of range
    ({"NCCL_IB_TC": "106", "NCCL_IB_SL": "-1"}, "warn"),
    ({"NCCL_IB_TC": "106", "NCCL_IB_SL": "3", "NCCL_IB_TIMEOUT": "0"}, "pass"),  # 0: infinite, valid
    ({"NCCL_IB_TC": "-2", "NCCL_IB_SL": "3"}, "fail"),
    ({"NCCL_IB_TC": "106", "NCCL_IB_SL": "3", "NCCL_IB_TIMEOUT": "99999999999999999999"}, "pass"),  # default
])
def test_qos_reads_minus_one_as_unset(tmp_path, env, status):
    from sysfs_builder import roce_tree

    r = _verdicts(roce_tree(tmp_path, env=env))["rdma.qos"]
    assert r.status.value == status, r


@pytest.mark.parametrize("hca,status", [("^", "fail"), ("^=", "fail"), ("roceP2p1s0f0, roceP2p1s0f1", "fail"),
                                        ("roceP2p1s0f0:1:0", "pass"), ("roceP2p1s0f0::", "pass")])
def test_rdma_devices_reads_nccl_ib_hca_as_nccl(tmp_path, hca, status):
    from sysfs_builder import roce_tree

    r = _verdicts(roce_tree(tmp_path, env={"NCCL_IB_HCA": hca}))["rdma.devices"]
    assert r.status.value == status, r


@pytest.mark.parametrize("hca,needle", [
    ("roceP2p1s0f0:2", "roceP2p1s0f0 has port(s) 1, not 2: write roceP2p1s0f0:1"),  # not "bring it up"
    ("roceP2p1s0f0, mlx5_1", "remove the white space around 'mlx5_1'"),
    ("mlx5_9", "replace mlx5_9 with a present device (one of: roceP2p1s0f0)"),
])
def test_rdma_devices_remedy_names_the_real_fix(tmp_path, hca, needle):
    from sysfs_builder import roce_tree

    r = _verdicts(roce_tree(tmp_path, env={"NCCL_IB_HCA": hca}))["rdma.devices"]
    assert r.status.value == "fail" and needle in r.remedy and "bring" not in r.remedy, r
