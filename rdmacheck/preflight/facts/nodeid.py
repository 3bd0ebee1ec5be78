"""Which node a rank is on, decided the way NCCL decides it.

NCCL does not compare host names.  It compares a host hash (``getHostHash`` in
NCCL's ``src/misc/utils.cc``, NCCL 2.28): the hash of the string

* ``$NCCL_HOSTID`` when that variable is set (``INFO NCCL_HOSTID set by
  environment to ...``), else
* the full host name (``gethostname``) followed directly by the first word of
  ``/proc/sys/kernel/random/boot_id`` (the host name alone when that file
  cannot be read).

Ranks with equal strings are one host to NCCL (P2P/SHM between them, its
duplicate-GPU check); ranks whose strings differ talk through its network
transport, also when they share a machine.  So two ranks on one GPU with
``NCCL_HOSTID=node0`` and ``node1`` are two nodes, and two containers of one
machine with the same host name but (as usual) one kernel are one.  Older NCCL
releases hashed the host name with the UTS and mount namespace links instead of
the boot id; rdmacheck records the 2.28 rule.

rdmacheck records this string beside the host name in each rank's facts
(``context.ranks[].nccl_host_id`` and ``nccl_host_id_source``) and in each
path-proof counter sample (``node``), and the wire gate compares ranks by it.
The numeric hash is not recomputed: NCCL's hash function changed between
releases (DJB2 with ``+``, then ``^``), while equal strings give equal hashes
in every release.

A counter sample also records its ``scope``: the boot id and the network
namespace of the process that read it.  Samples with one scope read the same
``/sys/class/net`` counters (two NCCL nodes on one machine see each other's
bytes on ``lo``); the wire gate judges such samples against the sum of those
nodes' expected bytes.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Mapping

ENV = "NCCL_HOSTID"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
NETNS = "/proc/self/ns/net"

SOURCE_ENV = "NCCL_HOSTID"
SOURCE_BOOT = "hostname+boot_id"
SOURCE_HOST = "hostname"


def _boot_id(path: str = BOOT_ID) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            words = f.read().split()
    except OSError:
        return None
    return words[0] if words else None


def nccl_host_id(env: Mapping[str, str] | None = None, hostname: str | None = None,
                 boot_id_path: str = BOOT_ID) -> dict[str, str]:
    """{"id": the string NCCL hashes for this process, "source": where it came from}.

    ``NCCL_HOSTID`` counts when it is present, even empty (NCCL tests for NULL, not for "").
    """
    env = os.environ if env is None else env
    if ENV in env:
        return {"id": str(env[ENV]), "source": SOURCE_ENV}
    host = hostname if hostname is not None else socket.gethostname()
    boot = _boot_id(boot_id_path)
    if boot is None:
        return {"id": host, "source": SOURCE_HOST}
    return {"id": host + boot, "source": SOURCE_BOOT}


def rank_facts(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The keys a rank adds to its facts (context.ranks[])."""
    h = nccl_host_id(env)
    return {"nccl_host_id": h["id"], "nccl_host_id_source": h["source"]}


def counter_scope(boot_id_path: str = BOOT_ID, netns: str = NETNS) -> str | None:
    """Which kernel network namespace a counter read came from: '<boot id>/<net:[inode]>', or None."""
    boot = _boot_id(boot_id_path)
    try:
        ns = os.readlink(netns)
    except OSError:
        ns = None
    if boot is None or ns is None:
        return None
    return f"{boot}/{ns}"


def short(node_id: str, source: str | None) -> str:
    """A node id for people: NCCL_HOSTID as given; host name + boot id as 'host (boot 1a2b3c4d)'."""
    if source == SOURCE_BOOT and len(node_id) > 36 and node_id[-36:].count("-") == 4:
        return f"{node_id[:-36]} (boot {node_id[-36:][:8]})"
    return node_id


def rank_node(rank: Mapping[str, Any]) -> str | None:
    """A rank's node key: its NCCL host id where recorded, else its host name (evidence before the id)."""
    v = rank.get("nccl_host_id")
    if isinstance(v, str):
        return v
    h = rank.get("host")
    return str(h) if h is not None else None


def describe_sources(sources: set[str | None]) -> str:
    """'NCCL host id (NCCL_HOSTID)', 'NCCL host id (host name + boot id)', or 'host name' for old evidence."""
    s = {x for x in sources if x}
    if not s:
        return "host name (no NCCL host id recorded)"
    names = {SOURCE_ENV: "NCCL_HOSTID", SOURCE_BOOT: "host name + boot id", SOURCE_HOST: "host name"}
    return "NCCL host id (" + ", ".join(names.get(x, x) for x in sorted(s)) + ")"
