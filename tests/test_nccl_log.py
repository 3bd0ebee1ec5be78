"""NCCL_DEBUG=INFO parser: real captured lines first, then every line shape NCCL's sources print.

Real lines: ../shared/captures/text/nccl-debug-*.txt (IB, IB + RoCE bond, mixed IB/RoCE ending in a
NET/IB completion error whose WARN is wrapped over two lines in the source).
Shapes the captures lack (channel paths, GDR, version, NET/Socket, GID) are written here from the
format strings in NVIDIA/nccl src/ at 5067397c (2026-06) and the v2.18.3-1 / v2.21.5-1 / v2.27.3-1 tags,
with the file each comes from; they are constructed lines, not captures, and say so.
The real GPU runs' logs (tests/data/nccl-logs/) are parsed in tests/test_path_gpu_logs.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rdmacheck.util.errors import UsageError
from rdmacheck.nccl.log import parse_file, parse_files, parse_text

# ---------------------------------------------------------------- real captures


def test_azure_ib_plus_roce_completion_error(captures):
    log = parse_file(captures / "text" / "nccl-debug-azure-ib-plus-roce-net-ib-fail.txt")
    assert log.hosts == ["node-2"]
    assert [(d.index, d.name, d.port, d.link) for d in log.ib_devices] == [
        (0, "ibP111p0s0", 1, "IB"), (1, "rdmaP1111p0s2", 1, "RoCE")]
    assert log.relaxed_ordering is True
    assert log.oob == "eth0:10.2.0.4<0>"
    assert log.net_plugin == "IB"  # only the NET/IB device list says so: no 'Using network' line in the excerpt
    assert log.ib_links == ["IB", "RoCE"]
    # the WARN is wrapped after "len" in the source: joined back into one message
    (err,) = log.completion_errors
    assert err.message == ("NET/IB : Got completion from peer 10.2.0.5<33092> with error 12, opcode 0, len 0, "
                           "vendor err 129 (Recv)")
    assert (err.peer, err.status, err.status_name, err.opcode, err.vendor_err) == (
        "10.2.0.5<33092>", 12, "IBV_WC_RETRY_EXC_ERR", 0, 129)
    assert err.source == "transport/net_ib.cc:1296" and err.host == "node-2"
    assert len(log.errors) == 1  # the '-> 6' INFO unwinding lines are not errors
    assert log.nccl_lines == 5
    assert log.channels == [] and log.version is None


def test_8x_ib_plus_bond_roce(captures):
    text = (captures / "text" / "nccl-debug-net-ib-8xIB-plus-bond-roce.txt").read_text()
    first, second = [l for l in text.splitlines() if l.startswith("NCCL INFO")]
    a, b = parse_text(first), parse_text(second)
    assert [d.name for d in a.ib_devices] == [f"mlx5_{i}" for i in range(8)]
    assert {d.link for d in a.ib_devices} == {"IB"} and {d.port for d in a.ib_devices} == {1}
    assert a.oob == "eno1:101.262.0.9<0>"  # printed so in the source (not a valid IPv4 address)
    assert [(d.index, d.name, d.link) for d in b.ib_devices][-1] == (8, "mlx5_bond_0", "RoCE")
    assert len(b.ib_devices) == 9 and b.ib_links == ["IB", "RoCE"]
    assert b.oob == "ibp25s0:10.0.12.82<0>" and b.relaxed_ordering is True
    assert a.hosts == [] and a.nccl_lines == 1  # no host:pid:tid prefix in these excerpts


# ---------------------------------------------------------------- shapes from NCCL's format strings

# host:pid:tid [dev] NCCL INFO <msg>  (src/debug.cc); messages below cite their source file.
CONSTRUCTED = """\
gpu-a:4242:4242 [0] NCCL INFO NCCL version 2.21.5+cuda12.4
gpu-a:4242:4242 [0] NCCL INFO NCCL_IB_HCA set to =roceP2p1s0f0:1
gpu-a:4242:4242 [0] NCCL INFO NCCL_IB_GID_INDEX set by environment to 3.
gpu-a:4242:4300 [0] NCCL INFO NET/IB : Using [0]roceP2p1s0f0:1/RoCE [RO]; OOB enP2p1s0f0np0:192.168.100.1<0>
gpu-a:4242:4300 [0] NCCL INFO Using network IB
gpu-a:4242:4300 [0] NCCL INFO NET/IB : GPU Direct RDMA Enabled for HCA 0 'roceP2p1s0f0'
gpu-a:4242:4300 [0] NCCL INFO GPU Direct RDMA Enabled for GPU 0 / HCA 0 (distance 4 <= 5), read 0 mode Default
gpu-a:4242:4300 [0] NCCL INFO Channel 00/0 : 1[0] -> 0[0] [receive] via NET/IB/0/GDRDMA
gpu-a:4242:4300 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[0] [send] via NET/IB/0/GDRDMA
gpu-a:4242:4300 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[0] [send] via NET/IB/0(1)/GDRDMA(PCI)/Shared
gpu-a:4242:4310 [0] NCCL INFO NET/IB: NCCL Dev 0 IbDev 0 Port 1 qpn 1234 mtu 5 query_ece={supported=1, vendor_id=0x15b3, options=0x30000002, comp_mask=0x0} GID 3 (80FE/6401A8C0FFFF0000) fifoRkey=0x1 fifoLkey=0x2
"""


def test_roce_gdr_run_constructed():
    log = parse_text(CONSTRUCTED)
    assert log.version == "2.21.5+cuda12.4"          # init.cc VERSION_STRING
    assert log.networks == ["IB"] and log.net_plugin == "IB"  # init.cc "Using network %s"
    assert log.env == {"NCCL_IB_HCA": "=roceP2p1s0f0:1", "NCCL_IB_GID_INDEX": "3"}  # net_ib init, param.cc
    assert [(d.name, d.port, d.link) for d in log.ib_devices] == [("roceP2p1s0f0", 1, "RoCE")]
    assert log.oob == "enP2p1s0f0np0:192.168.100.1<0>"
    # graph/topo.cc per-HCA line and graph/paths.cc per-GPU line
    assert [(g.enabled, g.hca_index, g.hca_name) for g in log.gdr] == [(True, 0, "roceP2p1s0f0"), (True, 0, None)]
    assert (log.gdr[1].distance, log.gdr[1].level, log.gdr[1].gpu) == (4, 5, "0")
    # transport/net.cc channel lines (incl. the PXN proxy "(1)" and "(PCI)/Shared" suffixes)
    assert [(c.channel, c.conn, c.src_rank, c.dst_rank, c.direction) for c in log.channels] == [
        (0, 0, 1, 0, "receive"), (0, 0, 0, 1, "send"), (1, 0, 0, 1, "send")]
    assert {c.kind for c in log.channels} == {"NET/IB/GDRDMA"}
    assert [c.net_dev for c in log.channels] == [0, 0, 0]
    assert log.gdr_enabled is True
    assert log.used_hcas() == ["roceP2p1s0f0"]
    assert log.gid_indexes == [3, 3]  # env line and net_ib.cc QP line (2.21: with query_ece)
    assert log.hosts == ["gpu-a"] and log.channels[0].pid == 4242
    assert log.summary()["paths"] == {"NET/IB/GDRDMA": 3}


def test_socket_fallback_constructed():
    text = """\
h1:7:7 [0] NCCL INFO NET/IB : No device found.
h1:7:7 [0] NCCL INFO NET/Socket : Using [0]eth0:10.0.0.1<0> [1]eth1:fe80::1%eth1<0>
h1:7:7 [0] NCCL INFO Using network Socket
h1:7:9 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] [send] via NET/Socket/0
h1:7:9 [0] NCCL INFO Channel 00/0 : 1[1] -> 0[0] [receive] via NET/Socket/1
"""
    log = parse_text(text)
    assert log.ib_no_device is True and log.ib_devices == []        # net_ib init.cc
    assert [(d.index, d.name, d.addr) for d in log.socket_devices] == [(0, "eth0", "10.0.0.1<0>"),
                                                                        (1, "eth1", "fe80::1%eth1<0>")]  # net_socket.cc
    assert log.net_plugin == "Socket"
    assert [c.net for c in log.channels] == ["Socket", "Socket"] and [c.net_dev for c in log.channels] == [0, 1]
    assert log.gdr_enabled is False and log.path_kinds == {"NET/Socket": 2}


def test_intra_node_paths_constructed():
    # transport/p2p.cc (IPC legacy, CUMEM, direct pointer, indirect) and transport/shm.cc
    text = """\
n:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/IPC/read
n:1:1 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[1] via P2P/CUMEM/read
n:1:1 [0] NCCL INFO Channel 02/0 : 0[0] -> 1[1] via P2P/direct pointer/read
n:1:1 [0] NCCL INFO Channel 03/0 : 0[0] -> 2[2] via P2P/indirect/1[1]
n:1:1 [0] NCCL INFO Channel 04 : 0[0] -> 1[1] via SHM/direct/direct
n:1:1 [0] NCCL INFO Channel 05/1 : 0[0] -> 1[1] via P2P/CUMEM/CE
"""
    log = parse_text(text)
    assert [c.kind for c in log.channels] == ["P2P/IPC", "P2P/CUMEM", "P2P/direct", "P2P/indirect", "SHM/direct",
                                              "P2P/CUMEM"]
    assert [c.via for c in log.channels][2] == "P2P/direct pointer/read"
    assert log.channels[4].conn is None and log.channels[5].conn == 1
    assert log.net_channels == [] and log.net_plugin is None and log.gdr_enabled is None


def test_gdr_disabled_and_old_gid_line():
    text = """\
a:1:1 [0] NCCL INFO NET/IB : GPU Direct RDMA Disabled for HCA 0 'mlx5_0'
a:1:1 [0] NCCL INFO GPU Direct RDMA Disabled for GPU 1b000 / HCA 0 (distance 5 > 4)
a:1:1 [0] NCCL INFO NET/IB: Dev 0 Port 1 qpn 4711 mtu 5 GID 3 (80FE/1234)
a:1:1 [0] NCCL INFO Channel 00/0 : 0[1b000] -> 1[1b000] [send] via NET/IB/0
"""
    log = parse_text(text)  # graph/topo.cc, paths.cc (2.18: GPU %lx busId), net_ib.cc 2.18 QP line
    assert [g.enabled for g in log.gdr] == [False, False]
    assert (log.gdr[1].gpu, log.gdr[1].distance, log.gdr[1].level) == ("1b000", 5, 4)
    assert log.gid_indexes == [3]
    assert log.channels[0].src_rank == 0 and log.channels[0].gdr is False
    assert log.gdr_enabled is False


def test_new_style_completion_error_and_launcher_prefixes():
    text = (
        "[1,0]<stdout>:node-1:99:120 [3] transport/net_ib.cc:2449 NCCL WARN NET/IB: Got completion from peer "
        "10.0.0.2<4000> with status=12 opcode=1 len=0 vendor err 129 (Send) localGid fe80::1 remoteGids ::ffff:10.0.0.2 "
        "hca mlx5_3\n"
        "[rank0]: node-1:99:99 [3] NCCL INFO NCCL version 2.27.3+cuda12.9\n"
        "h:1:1 [0] misc/ibvwrap.cc:376 NCCL WARN Call to ibv_modify_qp failed with 110 Connection timed out, on dev mlx5_3:1\n"
        "h:1:1 [0] misc/ibvsymbols.cc:80 NCCL WARN Failed to open libibverbs.so[.1]\n"
    )
    log = parse_text(text)
    assert log.version == "2.27.3+cuda12.9" and log.hosts == ["node-1", "h"]
    e = log.completion_errors[0]
    assert (e.status, e.opcode, e.vendor_err, e.peer, e.hca) == (12, 1, 129, "10.0.0.2<4000>", "mlx5_3")
    assert e.source == "transport/net_ib.cc:2449"
    assert len(log.errors) == 3 and log.libibverbs_missing is True
    # newer NCCL logs each name it tries: only libibverbs.so.1 failing means the library is missing
    assert parse_text("h:1:1 [0] NCCL INFO Count not open libibverbs.so\n").libibverbs_missing is False
    assert parse_text("h:1:1 [0] NCCL INFO Count not open libibverbs.so\n"
                      "h:1:1 [0] NCCL INFO Count not open libibverbs.so.1\n").libibverbs_missing is True


def test_non_nccl_noise_ignored_and_merge(tmp_path):
    a = tmp_path / "nccl.a.1.log"
    b = tmp_path / "nccl.b.2.log"
    a.write_text("random text\nTraceback (most recent call last):\n" + CONSTRUCTED.splitlines()[3] + "\n")
    b.write_text("b:2:2 [0] NCCL INFO Channel 00/0 : 1[0] -> 0[0] [send] via NET/IB/0/GDRDMA\n")
    log = parse_files([a, b])
    assert log.sources == [str(a), str(b)] and log.nccl_lines == 2
    assert log.hosts == ["gpu-a", "b"] and log.used_hcas() == ["roceP2p1s0f0"]
    with pytest.raises(UsageError, match="not found"):
        parse_file(tmp_path / "missing.log")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400))
def test_parser_never_raises_on_junk(text):
    log = parse_text(text)
    assert log.nccl_lines >= 0
    log.summary()
