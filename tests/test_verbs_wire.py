"""rdmacheck.verbs.wire without RDMA: framing, schema and limits on 127.0.0.1, and the engine's pure parts.

Every malformed, oversize, slow or hostile message must end in one WireError with a one-line message
within its bound -- on the server (its report) and on the client (what request/Channel raise).  The
real devices are exercised in tests/test_verbs_engine.py (the soft-RoCE guest).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from rdmacheck.verbs import engine as eng
from rdmacheck.verbs import perftest, wire

GOOD_INFO = {"device": "rxe1", "port": 1, "gid_index": 1, "gid": "00" * 10 + "ffff" + "0a4d0002", "qpns": [17, 18],
             "psn": 5, "rkey": 0x1234, "addr": 0x7F0000001000, "mr_size": 1 << 20, "mtu": 4096}
QP = {"traffic_class": 106, "service_level": 3, "timeout": 20, "retry_cnt": 7}


def hello(**info_changes) -> dict:
    return wire.message("hello", info=dict(GOOD_INFO, **info_changes), mr_size=1 << 20, qp=dict(QP))


def frame(body: bytes, length: int | None = None, magic: bytes = wire.MAGIC) -> bytes:
    return wire.HEADER.pack(magic, len(body) if length is None else length) + body


def one_line(e: BaseException) -> str:
    s = str(e)
    assert "\n" not in s and "Traceback" not in s and 0 < len(s) <= 600, s
    return s


@contextmanager
def server(handler=None, *, io_timeout_s: float = 1.0, idle_timeout_s: float = 3.0, lifetime_s: float = 60.0):
    """serve() in a thread on 127.0.0.1:<free port>; yields (port, report holder)."""
    def echo(msg, s):
        if msg["type"] == "verify":
            return wire.message("verified", ok=True, error=None)
        if msg["type"] == "hello":
            return wire.message("hello_ok", info=msg["info"])
        raise wire.WireError(f"unexpected {msg['type']}")

    ports: list[int] = []
    out: dict = {}
    stop = threading.Event()
    t = threading.Thread(target=lambda: out.update(report=wire.serve(
        "127.0.0.1", 0, lifetime_s, handler or echo, io_timeout_s=io_timeout_s, idle_timeout_s=idle_timeout_s,
        stop=stop, on_listen=ports.append)), daemon=True)
    t.start()
    end = time.monotonic() + 10
    while not ports and time.monotonic() < end:
        time.sleep(0.01)
    assert ports, "server did not listen"
    try:
        yield ports[0], out
    finally:
        stop.set()
        t.join(10)
        assert not t.is_alive(), "serve() did not end within 10 s of stop"


def raw_exchange(port: int, data: list[bytes], gap_s: float = 0.0, timeout: float = 10.0):
    """Send raw bytes; return (answer or WireError, seconds)."""
    t0 = time.monotonic()
    ch = wire.Channel.connect("127.0.0.1", port, 5.0)
    try:
        for part in data:
            try:
                ch.sock.sendall(part)
            except OSError:
                break
            if gap_s:
                time.sleep(gap_s)
        try:
            return ch.recv(timeout), time.monotonic() - t0
        except wire.WireError as e:
            return e, time.monotonic() - t0
    finally:
        ch.close()


# ------------------------------------------------------------------------------------------- schema
def test_good_messages_round_trip():
    for msg in (hello(), wire.message("hello_ok", info=GOOD_INFO),
                wire.message("verify", run="ab" * 8, size=1 << 20, slots=8),
                wire.message("verified", ok=False, error="content mismatch"),
                wire.message("latency", sizes=[8, 4096], iters=1000, stall_s=2.0, start_s=10),
                wire.message("ready"), wire.message("latency_done", ok=True, error=None),
                wire.message("result", result={"ok": True, "bandwidth": [[1, 2.5, True]]}),
                wire.message("error", error="x", stage="open"), wire.message("error", error="x"),
                wire.message("bye")):
        data = wire.encode(msg)
        magic, n = wire.HEADER.unpack(data[:wire.HEADER.size])
        assert magic == wire.MAGIC and n == len(data) - wire.HEADER.size
        assert wire.decode(data[wire.HEADER.size:]) == msg


@pytest.mark.parametrize("msg, needle", [
    (hello(qpns=[1 << 24]), "qpn must be an integer in [1, 16777215]"),
    (hello(qpns=[0]), "qpn"),
    (hello(qpns=[]), "qpns must be a list of 1 to 64"),
    (hello(qpns=list(range(1, 66))), "qpns must be a list of 1 to 64"),
    (hello(qpns=[True]), "qpn"),
    (hello(gid="00" * 15), "gid must be 32 lowercase hex"),
    (hello(gid="zz" * 16), "gid must be 32 lowercase hex"),
    (hello(gid="00" * 10 + "FFFF" + "0a4d0002"), "gid must be 32 lowercase hex"),
    (hello(rkey=1 << 32), "rkey"),
    (hello(rkey=-1), "rkey"),
    (hello(addr=1 << 64), "addr"),
    (hello(psn=1 << 24), "psn"),
    (hello(mtu=9000), "mtu"),
    (hello(device="rxe0; rm -rf /"), "not an RDMA device name"),
    (hello(extra=1), "unknown"),
    ({**hello(), "mr_size": 0}, "mr_size"),
    ({**hello(), "mr_size": 1 << 40}, "mr_size"),
    ({**hello(), "qp": {**QP, "service_level": 16}}, "qp.service_level"),
    ({**hello(), "qp": {**QP, "bogus": 1}}, "unknown field qp.'bogus'"),
    ({k: v for k, v in hello().items() if k != "qp"}, "missing field 'qp'"),
    (wire.message("verify", run="ab" * 8, size=0, slots=1), "size"),
    (wire.message("verify", run="ab" * 8, size=1 << 31, slots=1), "size"),
    (wire.message("verify", run="AB" * 8, size=1, slots=1), "run"),
    (wire.message("verify", run="ab" * 8, size=1, slots=1, more=2), "unknown field"),
    (wire.message("latency", sizes=[8], iters=10, stall_s=float("inf"), start_s=1), "stall_s"),
    (wire.message("latency", sizes=[], iters=10, stall_s=1, start_s=1), "sizes"),
    (wire.message("verified", ok=1, error=None), "true or false"),
    ({"type": "nonsense", "version": 1}, "unknown message type"),
    ({"type": "bye", "version": 2}, "protocol version 2"),
    ({"type": "bye", "version": True}, "protocol version"),
    ({"type": "bye"}, "protocol version"),
    ([1, 2], "must be a JSON object"),
])
def test_schema_rejects_with_one_line(msg, needle):
    with pytest.raises(wire.WireError) as ei:
        wire.validate(msg)
    assert needle in one_line(ei.value)


@pytest.mark.parametrize("body, needle", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"type":"bye","version":1,"type":"bye"}', "duplicate key"),
    (b'{"type":"bye","version":NaN}', "NaN is not a number JSON allows"),
    (b'{"type":"bye","version":1e999}', "not finite"),
    (b'{"type":"bye","version":' + b"9" * 5000 + b"}", "integer of 5000 digits"),
    (b"[" * 100000 + b"]" * 100000, "nested"),
    (b'{"type":"result","version":1,"result":' + b'{"a":' * 20 + b"1" + b"}" * 20 + b"}", "nested deeper"),
    (b'"just a string"', "must be a JSON object"),
])
def test_decode_rejects_hostile_bodies(body, needle):
    with pytest.raises(wire.WireError) as ei:
        wire.decode(body)
    assert needle in one_line(ei.value)


def test_encode_refuses_oversize_and_invalid():
    big = wire.message("result", result={"blob": "x" * (wire.MAX_MESSAGE + 1)})
    with pytest.raises(wire.WireError, match="exceeds the 65536 byte limit"):
        wire.encode(big)
    with pytest.raises(wire.WireError, match="qpn"):
        wire.encode(hello(qpns=[1 << 24]))


# ------------------------------------------------------------------------------------------- over TCP
def test_request_and_channel_conversation():
    with server() as (port, out):
        ans = wire.request("127.0.0.1", port, wire.message("verify", run="ab" * 8, size=4096, slots=1))
        assert ans == wire.message("verified", ok=True, error=None)
        with wire.Channel.connect("127.0.0.1", port) as ch:
            assert ch.call(hello(), expect="hello_ok")["info"] == GOOD_INFO
            assert ch.call(wire.message("verify", run="cd" * 8, size=1, slots=1), expect="verified")["ok"]
            ch.send(wire.message("bye"))
    rep = out["report"]
    assert rep.sessions == 2 and rep.errors == [] and rep.ended == "stopped"


@pytest.mark.parametrize("name, data, needle", [
    ("oversize", [frame(b"{" * 100, length=10 << 20)], "message of 10485760 bytes exceeds the 65536 byte limit"),
    ("bad_json", [frame(b"{not json")], "message is not JSON"),
    ("bad_magic", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"], "not an rdmacheck peer"),
    ("empty", [frame(b"")], "empty message"),
    ("qpn", [frame(json.dumps(hello(qpns=[1 << 24])).encode())], "qpn must be an integer in [1, 16777215]"),
    ("gid", [frame(json.dumps(hello(gid="12")).encode())], "gid must be 32 lowercase hex"),
    ("unknown_type", [frame(b'{"type":"shutdown","version":1}')], "unknown message type"),
])
def test_hostile_clients_get_one_line_and_server_goes_on(name, data, needle):
    with server() as (port, out):
        answer, secs = raw_exchange(port, data)
        assert isinstance(answer, wire.WireError), answer
        assert needle in one_line(answer)
        assert secs < 3.0
        # the server survived and still answers a good client
        assert wire.request("127.0.0.1", port, wire.message("verify", run="ab" * 8, size=1, slots=1), timeout=5)["ok"]
    errors = out["report"].errors
    assert len(errors) == 1 and needle in errors[0] and "\n" not in errors[0]


def test_slowloris_is_cut_at_the_message_deadline():
    body = json.dumps(wire.message("bye")).encode()
    with server(io_timeout_s=1.0) as (port, out):
        parts = [wire.HEADER.pack(wire.MAGIC, len(body))] + [bytes([b]) for b in body]
        answer, secs = raw_exchange(port, parts, gap_s=0.3)  # 0.3 s per byte: each recv alone would be in time
        assert isinstance(answer, wire.WireError)
        assert "too slow" in one_line(answer)
    assert secs < 1.0 + 0.3 * 3 + 2.0
    assert any("too slow" in e for e in out["report"].errors)


def test_silent_client_is_dropped_after_the_idle_limit():
    with server(idle_timeout_s=1.0) as (port, out):
        t0 = time.monotonic()
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.settimeout(5)
        data = s.recv(65536)  # the server's error message, then EOF
        s.close()
        assert time.monotonic() - t0 < 3.0
        assert b"no message from the peer within" in data
    assert any("no message from the peer" in e for e in out["report"].errors)


def test_handler_exception_is_one_line_to_the_client():
    def bad(msg, s):
        raise RuntimeError("boom\nwith a second line")

    with server(bad) as (port, out):
        with pytest.raises(wire.WireError) as ei:
            wire.request("127.0.0.1", port, wire.message("bye") | {"type": "ready"}, timeout=5)
        assert "handler failed: RuntimeError: boom with a second line" in one_line(ei.value)


def test_client_side_errors_are_bounded_and_one_line():
    # nothing listens
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.monotonic()
    with pytest.raises(wire.WireError) as ei:
        wire.request("127.0.0.1", port, wire.message("bye"), timeout=2)
    assert "cannot reach" in one_line(ei.value) and time.monotonic() - t0 < 2.5
    # a listener that never answers
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        t0 = time.monotonic()
        with pytest.raises(wire.WireError) as ei:
            wire.request("127.0.0.1", silent.getsockname()[1], wire.message("bye"), timeout=1.0)
        assert "no message from the peer within 1.0 s" in one_line(ei.value)
        assert time.monotonic() - t0 < 2.5
    finally:
        silent.close()


@pytest.mark.parametrize("reply, needle", [
    (frame(b"x", length=1 << 30), "exceeds the 65536 byte limit"),
    (frame(b'{"type":"hello_ok","version":1,"info":{}}'), "endpoint info: missing"),
    (b"HTTP/1.1 200 OK\r\n\r\n", "not an rdmacheck peer"),
    (frame(b'{"type":"verified","version":1,"ok":true,"error":null}')[:-3], "connection closed by the peer"),
])
def test_hostile_server_replies_end_in_wireerror(reply, needle):
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)

    def answer():
        c, _ = lst.accept()
        c.settimeout(5)
        try:
            c.recv(65536)
            c.sendall(reply)
        finally:
            c.close()

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(wire.WireError) as ei:
            wire.request("127.0.0.1", lst.getsockname()[1], wire.message("bye") | {"type": "ready"}, timeout=3)
        assert needle in one_line(ei.value)
        assert time.monotonic() - t0 < 3.5
    finally:
        t.join(5)
        lst.close()


def test_serve_ends_at_its_lifetime_even_with_a_client_holding_on():
    ports: list[int] = []
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(r=wire.serve("127.0.0.1", 0, 1.5, lambda m, s: None,
                                                                 io_timeout_s=1.0, idle_timeout_s=30,
                                                                 on_listen=ports.append)), daemon=True)
    t0 = time.monotonic()
    t.start()
    while not ports:
        time.sleep(0.01)
    s = socket.create_connection(("127.0.0.1", ports[0]))  # connects and says nothing
    t.join(10)
    s.close()
    assert not t.is_alive()
    assert out["r"].ended == "lifetime" and time.monotonic() - t0 < 4.0
    assert any("lifetime ended" in e or "no message" in e for e in out["r"].errors)


def test_serve_port_in_use_is_a_wireerror():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        with pytest.raises(wire.WireError, match="cannot listen on 127.0.0.1"):
            wire.serve("127.0.0.1", s.getsockname()[1], 1.0, lambda m, x: None)
    finally:
        s.close()


def test_run_link_without_a_device_fails_in_open_or_without_a_server_in_wire():
    res = wire.run_link(eng.QpParams(device="nonexistent0"), "127.0.0.1", 9, wire.LinkConfig(io_timeout_s=1))
    assert not res.ok and res.stage == "open" and "\n" not in res.error
    d = wire.LinkResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert d.stage == "open" and d.failure.stage == "open"


# ------------------------------------------------------------------------------------------- engine, pure
def test_qp_params_from_env_and_ranges():
    p = eng.QpParams.from_env("rxe0", 3, env={"NCCL_IB_TC": "106", "NCCL_IB_SL": "3", "NCCL_IB_TIMEOUT": "22",
                                              "NCCL_IB_RETRY_CNT": "5"})
    assert (p.traffic_class, p.service_level, p.timeout, p.retry_cnt, p.rnr_retry) == (106, 3, 22, 5, 7)
    d = eng.QpParams.from_env("rxe0", 1, env={"NCCL_IB_TC": "-1"})
    assert (d.traffic_class, d.service_level, d.timeout, d.retry_cnt) == (0, 0, 20, 7)  # NCCL's defaults
    assert eng.QpParams.from_dict(p.to_dict()) == p
    for bad in ({"service_level": 16}, {"timeout": 32}, {"retry_cnt": 8}, {"mtu": 9000}, {"gid_index": -1}):
        with pytest.raises(ValueError):
            eng.QpParams(device="rxe0", **bad).validate()
    with pytest.raises(ValueError, match="NCCL_IB_TC"):
        eng.QpParams.from_env("rxe0", 1, env={"NCCL_IB_TC": "high"})


def test_pattern_is_deterministic_and_position_sensitive():
    a = eng.pattern(eng.pattern_seed("r1", 1 << 20, 0), 1 << 20)
    assert a == eng.pattern(eng.pattern_seed("r1", 1 << 20, 0), 1 << 20) and len(a) == 1 << 20
    assert a != eng.pattern(eng.pattern_seed("r1", 1 << 20, 1), 1 << 20)
    assert a != eng.pattern(eng.pattern_seed("r2", 1 << 20, 0), 1 << 20)
    blocks = {a[i:i + 65536] for i in range(0, len(a), 65536)}
    assert len(blocks) == 16  # a block written at the wrong offset cannot compare equal
    assert eng.pattern(7, 10) == eng.pattern(7, 100)[:10]


def test_failures_are_json_and_name_the_wc_status():
    f = eng.VerbsFailure(stage="transfer", kind="wc_error", message="x", wc_status="IBV_WC_RETRY_EXC_ERR")
    assert eng.VerbsFailure.from_dict(json.loads(json.dumps(f.to_dict()))) == f
    name, text, cause = eng.WC_STATUS[12]
    assert name == "IBV_WC_RETRY_EXC_ERR" and text == "transport retry counter exceeded" and "UDP 4791" in cause
    r = eng.CheckResult(ok=False, stage="open", error="e", elapsed_ms=1.0, failure=f)
    assert eng.CheckResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_open_without_a_device_is_a_typed_failure():
    with pytest.raises(eng.VerbsError) as ei:
        eng.Endpoint(eng.QpParams(device="nonexistent0"), 4096)
    f = ei.value.failure
    assert f.stage == "open" and "\n" not in f.message
    res = eng.loopback_check(eng.QpParams(device="nonexistent0"), eng.QpParams(device="nonexistent1"))
    assert not res.ok and res.stage == "open" and res.elapsed_ms >= 0


def _fake_sysfs(tmp: Path) -> Path:
    port = tmp / "class" / "infiniband" / "rxe0" / "ports" / "1"
    (port / "gids").mkdir(parents=True)
    (port / "gid_attrs" / "types").mkdir(parents=True)
    gids = {0: "fe80:0000:0000:0000:0024:13ff:fec5:518f", 1: "fe80:0000:0000:0000:0000:0000:0000:0001",
            2: "0000:0000:0000:0000:0000:ffff:0a4d:0001", 3: "0000:0000:0000:0000:0000:0000:0000:0000"}
    for i, g in gids.items():
        (port / "gids" / str(i)).write_text(g + "\n")
        if i != 3:
            (port / "gid_attrs" / "types" / str(i)).write_text("RoCE v2\n")
    v = tmp / "class" / "infiniband_verbs" / "uverbs3"
    v.mkdir(parents=True)
    (v / "ibdev").write_text("rxe0\n")
    return tmp


def test_gid_index_and_uverbs_node_from_sysfs(tmp_path):
    root = _fake_sysfs(tmp_path)
    assert eng.roce_v2_ipv4_gid_index("rxe0", 1, "10.77.0.1", sysfs=str(root)) == 2
    assert eng.roce_v2_ipv4_gid_index("rxe0", 1, None, sysfs=str(root)) == 2
    assert eng.roce_v2_ipv4_gid_index("rxe0", 1, "10.77.0.9", sysfs=str(root)) is None
    assert eng.uverbs_node("rxe0", sysfs=str(root)) == "/dev/infiniband/uverbs3"
    assert eng.uverbs_node("mlx5_0", sysfs=str(root)) is None


def test_perftest_tables_parse():
    bw = """
---------------------------------------------------------------------------------------
 #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]
 1048576    388              0.00               15.92              0.000065
---------------------------------------------------------------------------------------
"""
    assert perftest.parse_table(bw, perftest.BW_COLUMNS) == [
        {"bytes": 1048576.0, "iterations": 388.0, "bw_peak_mib_s": 0.0, "bw_avg_mib_s": 15.92,
         "msg_rate_mpps": 0.000065}]
    lat = """
 #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec]
 8       1000          45.10          2100.55      80.33              95.12          60.1            300.20                 2000.10
"""
    row = perftest.parse_table(lat, perftest.LAT_COLUMNS)[0]
    assert row["t_typical_us"] == 80.33 and row["p99_us"] == 300.20


# ------------------------------------------------------------------------------------------- the ping-pong, on fake verbs
class _FakeWC:
    def __init__(self, status: int = 0, wr_id: int = 0):
        self.status, self.wr_id, self.vendor_err, self.qp_num = status, wr_id, 0, 7


class _FakeCQ:
    def __init__(self):
        self.wcs: list[_FakeWC] = []

    def poll(self, n: int = 1):
        got, self.wcs = self.wcs[:n], self.wcs[n:]
        return len(got), got


class _FakeQP:
    """RDMA WRITE as a memory copy into the peer's buffer (what the HCA does), completions on our CQ."""

    def __init__(self, ep: "_FakeEndpoint"):
        self.ep, self.qp_num, self.dead, self.status = ep, 7, False, 0

    def post_send(self, wr):
        local_off, length, remote_addr, signaled, wr_id = wr
        peer = self.ep.peer
        if self.dead:
            return
        off = remote_addr - peer.addr
        peer.buf[off:off + length] = self.ep.buf[local_off:local_off + length]
        if signaled:
            self.ep.cq.wcs.append(_FakeWC(self.status, wr_id))


class _FakeEndpoint:
    fill, check, check_slots = eng.Endpoint.fill, eng.Endpoint.check, eng.Endpoint.check_slots

    def __init__(self, addr: int, mr_size: int = 1 << 17):
        self.addr, self.mr_size, self.buf = addr, mr_size, memoryview(bytearray(mr_size))
        self.cq, self.max_send_wr, self.max_inline, self.node = _FakeCQ(), 32, 0, None
        self.params = eng.QpParams(device="fake0")
        self.qps = [_FakeQP(self)]
        self.peer: _FakeEndpoint | None = None
        self.remote = None

    def to_error(self):
        pass

    def drain(self, seconds: float = 0.5):
        return 0


def _fake_pair():
    a, b = _FakeEndpoint(0x10000), _FakeEndpoint(0x90000)
    a.peer, b.peer = b, a
    for x, y in ((a, b), (b, a)):
        x.remote = eng.EndpointInfo(device="fake0", port=1, gid_index=0, gid="00" * 16, qpns=[7], psn=0, rkey=1,
                                    addr=y.addr, mr_size=y.mr_size, mtu=4096)
    return a, b


@pytest.fixture
def fake_verbs(monkeypatch):
    import sys
    # WRs as plain tuples: (local offset, length, remote address, signaled, wr_id)
    monkeypatch.setattr(eng, "_make_wr", lambda local, opcode, wr_id, off, n, raddr, rkey, signaled=True, inline=False:
                        (off, n, raddr, signaled, wr_id))
    monkeypatch.setattr(eng, "_pyverbs", lambda: type("PV", (), {"enums": type("E", (), {"IBV_WR_RDMA_WRITE": 0})}))
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # two spinning threads share the GIL
    yield
    sys.setswitchinterval(old)


def test_ping_pong_protocol_on_fake_verbs(fake_verbs):
    a, b = _fake_pair()
    # stale content where the poll bytes are (a bandwidth run wrote patterns there): reset must clear it
    a.buf[:] = b"\x01" * a.mr_size
    b.buf[:] = b"\x01" * b.mr_size
    eng.latency_reset(b, 4096)
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(r=eng.write_latency(b, [4096, 8], 40, initiator=False,
                                                                        stall_s=5, reset=False)))
    t.start()
    res = eng.write_latency(a, [4096, 8], 40, initiator=True, stall_s=5)
    t.join(30)
    assert res.ok and out["r"].ok, (res.failure, out["r"].failure)
    assert [p.size for p in res.points] == [8, 4096]            # ascending, whatever the order asked
    assert all(p.iters == 40 and 0 < p.min_us <= p.p50_us <= p.p99_us <= p.max_us for p in res.points)
    assert out["r"].points == []                                 # only the initiator times
    assert not a.cq.wcs and not b.cq.wcs                         # every signaled completion reaped


def test_ping_pong_silent_peer_ends_in_a_typed_timeout(fake_verbs):
    a, b = _fake_pair()
    a.qps[0].dead = True                                          # writes go nowhere: the peer never answers
    t0 = time.monotonic()
    res = eng.write_latency(a, [8], 100, initiator=True, stall_s=0.3, start_s=0.3)
    assert not res.ok and res.failure.stage == "transfer" and res.failure.kind == "timeout"
    assert "no write from the peer within 0.3 s" in res.failure.message and "UDP 4791" in res.failure.message
    assert time.monotonic() - t0 < 3.0
    # an overall deadline caps a peer that answers just in time
    res = eng.write_latency(a, [8], 100, initiator=True, stall_s=60, start_s=60, deadline_s=0.3)
    assert not res.ok and "did not end within its deadline" in res.failure.message


def test_bandwidth_on_fake_verbs_verifies_content_and_types_failures(fake_verbs):
    a, b = _fake_pair()
    res = eng.write_bandwidth(a, [4096, 16384], count=40, depth=4, verify=lambda spec: b.check_slots(
        spec["run"], spec["size"], spec["slots"]))
    assert res.ok, res.failure
    assert [(p.size, p.messages, p.bytes, p.verified, p.slots) for p in res.points] == [
        (4096, 40, 40 * 4096, True, 1), (16384, 40, 40 * 16384, True, 1)]
    # the receiver's memory is what is checked: a flipped byte there is a mismatch in stage verify
    def corrupt(spec):
        b.buf[5] ^= 0xFF
        return b.check_slots(spec["run"], spec["size"], spec["slots"])

    res = eng.write_bandwidth(a, [4096], count=8, verify=corrupt)
    assert not res.ok and res.failure.stage == "verify" and res.failure.kind == "mismatch"
    assert "content mismatch in slot 0" in res.failure.message and "at byte 5" in res.failure.message
    # an error completion is named by its status
    a.qps[0].status = 12
    res = eng.write_bandwidth(a, [4096], count=8)
    assert not res.ok and res.failure.wc_status == "IBV_WC_RETRY_EXC_ERR" and res.failure.kind == "wc_error"
    assert "transport retry counter exceeded" in res.failure.message and "UDP 4791" in res.failure.message
    # no completion at all: a typed timeout within the stall bound
    a.qps[0].status, a.qps[0].dead = 0, True
    t0 = time.monotonic()
    res = eng.write_bandwidth(a, [4096], count=8, stall_s=0.3)
    assert not res.ok and res.failure.kind == "timeout" and "no completion within 0.3 s" in res.failure.message
    assert time.monotonic() - t0 < 3.0
    d = eng.BandwidthResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert d.failure == res.failure
