"""NCCL's reading of its environment, as ncclspec reproduces it (NVIDIA/nccl 2.30.7 source):
src/misc/param.cc ncclLoadParam (strtoll base 0), src/transport/net_ib/connect.cc envIbAddrFamily (strcmp),
src/misc/socket.cc ncclEnvSocketFamily, src/os/linux.cc ncclOsFindInterfaces (bootstrap interface/address)."""

from __future__ import annotations

import pytest

from rdmacheck.nccl.spec import c_strtol, ib_addr_family, nccl_param_int, socket_family, socket_interfaces


@pytest.mark.parametrize("text,value", [("-1", -1), ("3", 3), ("0x3", 3), ("010", 8), (" 7", 7), ("+2", 2),
                                        ("", None), (None, None)])
def test_param_int_like_strtoll_base0(text, value):
    assert nccl_param_int(text) == value


@pytest.mark.parametrize("text", ["abc", "3x", "08", "1.5", "-"])
def test_param_int_refuses_what_nccl_would_misread(text):
    with pytest.raises(ValueError):
        nccl_param_int(text)
    assert c_strtol(text)[1] is False


@pytest.mark.parametrize("text,fam", [("AF_INET6", "inet6"), ("AF_INET", "inet"), ("af_inet6", "inet"),
                                      ("AF_INET6 ", "inet"), (None, "inet"), ("", "inet")])
def test_ib_addr_family_is_strcmp(text, fam):
    assert ib_addr_family(text) == fam


def test_socket_family_forced_only_by_exact_names():
    assert socket_family("AF_INET6") == "inet6" and socket_family("AF_INET") == "inet"
    assert socket_family("inet6") is None and socket_family(None) is None


ADDRS = {  # getifaddrs order, as facts.net.addresses gives it
    "lo": {"ipv4": ["127.0.0.1/8"], "ipv6": ["::1"]},
    "eno1": {"ipv4": ["10.0.0.5/24"], "ipv6": ["fe80::1"]},
    "enP2p1s0f0np0": {"ipv4": ["10.99.0.1/24", "192.168.100.1/24"], "ipv6": ["fd00:100::1", "fe80::2"]},
    "enP2p1s0f1np1": {"ipv4": [], "ipv6": ["fd00:100::2"]},
}


def up(name):
    return name != "enP2p1s0f1np1"


def test_bootstrap_takes_the_first_address_of_the_first_running_match():
    assert socket_interfaces(ADDRS, up, "enP2p1s0f0np0")[0] == ("enP2p1s0f0np0", "10.99.0.1/24")
    # a prefix matches eno1 too, which comes first in getifaddrs order
    assert socket_interfaces(ADDRS, up, "en")[0] == ("eno1", "10.0.0.5/24")
    assert socket_interfaces(ADDRS, up, "^lo,eno")[0] == ("enP2p1s0f0np0", "10.99.0.1/24")
    # one address per interface; IPv6 only when forced (or when an interface has no IPv4)
    assert [i for i, _ in socket_interfaces(ADDRS, lambda n: True, "enP")] == ["enP2p1s0f0np0", "enP2p1s0f1np1"]
    assert socket_interfaces(ADDRS, up, "enP2p1s0f0np0", "inet6")[0] == ("enP2p1s0f0np0", "fd00:100::1")
    # not running: skipped; a one-character NCCL_SOCKET_IFNAME is ignored by NCCL (strlen(env) > 1)
    assert socket_interfaces(ADDRS, up, "=enP2p1s0f1np1") == []
    assert socket_interfaces(ADDRS, up, "e") == []
