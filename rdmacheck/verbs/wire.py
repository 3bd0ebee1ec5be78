"""The TCP side channel of a two-node probe (what perftest's TCP exchange does), and the two-process flow.

Framing: ``b"RDCK"`` + a 4-byte big-endian length + that many bytes of UTF-8 JSON, at most
``MAX_MESSAGE`` (64 KiB).  Every message is an object ``{"type": ..., "version": 1, ...}`` checked against
``SCHEMA`` before anything acts on it: QPNs are 24-bit, GIDs 32 hex characters, rkeys 32-bit, addresses
64-bit, sizes and counts bounded, no unknown fields, no duplicate keys, no NaN, no deep nesting.

Anything wrong on the wire -- an oversize or malformed message, a peer too slow to finish one (a
slow-loris), a peer that never answers or goes away -- raises one :class:`WireError` whose message is a
single line.  Every socket operation runs under a deadline, so nothing waits unbounded.

:func:`serve` answers one client at a time for a bounded lifetime; :func:`request` (one message, one
answer) and :class:`Channel` (a conversation) are the client side.  :func:`serve_link` and
:func:`run_link` are the probe itself: the client's and the server's endpoints exchange their connection
info here, connect their QPs, run RDMA WRITE bandwidth (verified on the server's side, in its own memory)
and ping-pong latency, and exchange the result.
"""

from __future__ import annotations

import dataclasses
import json
import math
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import engine as eng

MAGIC = b"RDCK"
VERSION = 1
MAX_MESSAGE = 64 * 1024
MAX_DEPTH = 8
HEADER = struct.Struct("!4sI")
MAX_MSG_SIZE = 1 << 30          # one RDMA message in a probe
MAX_MR = 1 << 30
# inline data per send WR asked of both ends' QPs (ib_write_lat's default on the HCAs it knows is 220 too); an
# HCA that offers less, or a software device (engine.SOFT_VENDOR_IDS), gets QPs without inline and the
# ping-pong writes from the MR instead
INLINE_BYTES = 220


class WireError(Exception):
    """Anything wrong on the side channel; the message is always one line.  ``stage`` is set when the peer
    answered with an error naming the verbs stage that failed on its side."""

    def __init__(self, message: str, stage: str | None = None) -> None:
        super().__init__(eng.one_line(message, 600))
        self.stage = stage


# ---------------------------------------------------------------------------------------------- schema
def _int(lo: int, hi: int) -> Callable[[str, Any], int]:
    def check(name: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise WireError(f"field {name!r}: expected an integer in [{lo}, {hi}], got {_show(v)}")
        return v
    return check


def _float(lo: float, hi: float) -> Callable[[str, Any], float]:
    def check(name: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
            raise WireError(f"field {name!r}: expected a number in [{lo}, {hi}], got {_show(v)}")
        return float(v)
    return check


def _str(maxlen: int, charset: str | None = None, minlen: int = 0) -> Callable[[str, Any], str]:
    def check(name: str, v: Any) -> str:
        if not isinstance(v, str) or not minlen <= len(v) <= maxlen:
            raise WireError(f"field {name!r}: expected a string of {minlen} to {maxlen} characters, got {_show(v)}")
        if charset is not None and any(c not in charset for c in v):
            raise WireError(f"field {name!r}: characters outside [{charset[:20]}...] in {_show(v)}")
        return v
    return check


def _bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise WireError(f"field {name!r}: expected true or false, got {_show(v)}")
    return v


def _opt(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda name, v: None if v is None else check(name, v)


def _list(item: Callable[[str, Any], Any], lo: int, hi: int) -> Callable[[str, Any], list]:
    def check(name: str, v: Any) -> list:
        if not isinstance(v, list) or not lo <= len(v) <= hi:
            raise WireError(f"field {name!r}: expected a list of {lo} to {hi} items, got {_show(v)}")
        return [item(f"{name}[{i}]", x) for i, x in enumerate(v)]
    return check


def _object(name: str, v: Any) -> dict:
    if not isinstance(v, dict):
        raise WireError(f"field {name!r}: expected an object, got {_show(v)}")
    return v


def _info(name: str, v: Any) -> dict:
    try:
        return eng.EndpointInfo.from_dict(v).to_dict()
    except ValueError as e:
        raise WireError(f"field {name!r}: {e}") from None


_QP_REQUEST = {"traffic_class": _int(0, 255), "service_level": _int(0, 15), "timeout": _int(0, 31),
               "retry_cnt": _int(0, 7)}


def _qp_request(name: str, v: Any) -> dict:
    _object(name, v)
    _fields(v, _QP_REQUEST, f"{name}.")
    return v


HEX = "0123456789abcdef"
SIZE = _int(1, MAX_MSG_SIZE)
SCHEMA: dict[str, dict[str, Callable[[str, Any], Any]]] = {
    "hello": {"info": _info, "mr_size": _int(1, MAX_MR), "qp": _qp_request},
    "hello_ok": {"info": _info},
    "verify": {"run": _str(32, HEX, 8), "size": SIZE, "slots": _int(1, 4096)},
    "verified": {"ok": _bool, "error": _opt(_str(500))},
    "latency": {"sizes": _list(_int(1, 16 << 20), 1, 16), "iters": _int(2, 1_000_000),
                "stall_s": _float(0.01, 600), "start_s": _float(0.01, 600)},
    "ready": {},
    "latency_done": {"ok": _bool, "error": _opt(_str(500))},
    "result": {"result": _object},
    "result_ok": {"result": _object},
    "error": {"error": _str(500), "stage": _opt(_str(32))},
    "bye": {},
}
OPTIONAL = {("error", "stage")}


def _show(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, (int, float, str, bool, type(None))) else type(v).__name__
    return s if len(s) <= 40 else s[:37] + "..."


def _fields(msg: dict, spec: dict[str, Callable[[str, Any], Any]], prefix: str = "", kind: str = "") -> None:
    extra = sorted(k for k in msg if k not in spec and (prefix or k not in ("type", "version")))
    if extra:
        raise WireError(f"unknown field {prefix}{extra[0]!r}{' in ' + kind if kind else ''}")
    for name, check in spec.items():
        if name not in msg:
            if (kind, name) in OPTIONAL:
                continue
            raise WireError(f"missing field {prefix}{name!r}{' in ' + kind if kind else ''}")
        check(prefix + name, msg[name])


def validate(msg: Any) -> dict:
    """The message if it follows the schema, else WireError naming the first problem."""
    if not isinstance(msg, dict):
        raise WireError(f"a message must be a JSON object, got {_show(msg)}")
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in SCHEMA:
        raise WireError(f"unknown message type {_show(kind)}")
    if msg.get("version") != VERSION or isinstance(msg.get("version"), bool):
        raise WireError(f"protocol version {_show(msg.get('version'))} is not {VERSION}")
    _fields(msg, SCHEMA[kind], kind=kind)
    if kind in ("result", "result_ok") and _depth(msg) > MAX_DEPTH:
        raise WireError(f"message nested deeper than {MAX_DEPTH} levels")
    return msg


def _depth(doc: Any) -> int:
    deepest, stack = 0, [(doc, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                return d
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def _no_dup(pairs: list[tuple[str, Any]]) -> dict:
    d: dict = {}
    for k, v in pairs:
        if k in d:
            raise WireError(f"duplicate key {_show(k)}")
        d[k] = v
    return d


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > 20:
        raise WireError(f"integer of {len(text)} digits")
    return int(text)


def _parse_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise WireError(f"number {text[:24]} is not finite")
    return v


def _parse_constant(text: str) -> Any:
    raise WireError(f"{text} is not a number JSON allows")


def message(kind: str, **fields: Any) -> dict:
    return {"type": kind, "version": VERSION, **fields}


def encode(msg: dict) -> bytes:
    validate(msg)
    try:
        body = json.dumps(msg, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise WireError(f"message not serialisable: {e}") from None
    if len(body) > MAX_MESSAGE:
        raise WireError(f"message of {len(body)} bytes exceeds the {MAX_MESSAGE} byte limit")
    return HEADER.pack(MAGIC, len(body)) + body


def decode(body: bytes) -> dict:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WireError(f"message is not UTF-8 (byte {e.start})") from None
    try:
        doc = json.loads(text, object_pairs_hook=_no_dup, parse_int=_parse_int, parse_float=_parse_float,
                         parse_constant=_parse_constant)
    except WireError:
        raise
    except RecursionError:
        raise WireError("message nested too deeply") from None
    except ValueError as e:  # JSONDecodeError
        raise WireError(f"message is not JSON: {e}") from None
    if _depth(doc) > MAX_DEPTH:
        raise WireError(f"message nested deeper than {MAX_DEPTH} levels")
    return validate(doc)


# ---------------------------------------------------------------------------------------------- transport
def _recv_exact(sock: socket.socket, n: int, deadline: float, what: str, first_deadline: float | None = None) -> bytes:
    chunks, got = [], 0
    t0 = time.monotonic()
    while got < n:
        limit = first_deadline if (got == 0 and first_deadline is not None) else deadline
        remaining = limit - time.monotonic()
        if remaining <= 0:
            raise _too_slow(got, n, what, t0)
        sock.settimeout(remaining)
        try:
            b = sock.recv(min(n - got, 65536))
        except socket.timeout:
            raise _too_slow(got, n, what, t0) from None
        except OSError as e:
            raise WireError(f"receiving the {what} failed: {e.strerror or e}") from None
        if not b:
            raise WireError(f"connection closed by the peer after {got} of {n} bytes of the {what}")
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def _too_slow(got: int, n: int, what: str, t0: float) -> WireError:
    if got == 0:
        return WireError(f"no {what} from the peer within {time.monotonic() - t0:.1f} s")
    return WireError(f"peer sent {got} of {n} bytes of the {what} in {time.monotonic() - t0:.1f} s (too slow)")


def send_msg(sock: socket.socket, msg: dict, timeout: float) -> None:
    data = encode(msg)
    sock.settimeout(max(timeout, 0.001))
    try:
        sock.sendall(data)
    except socket.timeout:
        raise WireError(f"sending a {msg.get('type')} message took longer than {timeout:.1f} s") from None
    except OSError as e:
        raise WireError(f"sending a {msg.get('type')} message failed: {e.strerror or e}") from None


def recv_msg(sock: socket.socket, timeout: float, first_byte_timeout: float | None = None) -> dict:
    """One message: its first byte within ``first_byte_timeout`` (default ``timeout``), all of it within
    ``timeout`` of its first byte.  A peer trickling bytes cannot stretch that."""
    now = time.monotonic()
    first = now + (first_byte_timeout if first_byte_timeout is not None else timeout)
    head = _recv_exact(sock, 1, first, "message")
    deadline = time.monotonic() + timeout
    head += _recv_exact(sock, HEADER.size - 1, deadline, "message header")
    magic, length = HEADER.unpack(head)
    if magic != MAGIC:
        raise WireError(f"not an rdmacheck peer (header {magic!r})")
    if length > MAX_MESSAGE:
        raise WireError(f"message of {length} bytes exceeds the {MAX_MESSAGE} byte limit")
    if length == 0:
        raise WireError("empty message")
    return decode(_recv_exact(sock, length, deadline, "message"))


class Channel:
    """A client's conversation with a :func:`serve` peer; every call has a timeout."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer

    @classmethod
    def connect(cls, addr: str, port: int, timeout: float = 10.0) -> "Channel":
        try:
            sock = socket.create_connection((addr, port), timeout=timeout)
        except socket.timeout:
            raise WireError(f"cannot reach {addr}:{port}: no answer within {timeout:.1f} s") from None
        except OSError as e:
            raise WireError(f"cannot reach {addr}:{port}: {e.strerror or e}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, f"{addr}:{port}")

    def send(self, msg: dict, timeout: float = 10.0) -> None:
        send_msg(self.sock, msg, timeout)

    def recv(self, timeout: float = 10.0, expect: str | tuple[str, ...] | None = None) -> dict:
        msg = recv_msg(self.sock, timeout)
        if msg["type"] == "error":
            raise WireError(f"{self.peer} answered: {msg['error']}", stage=msg.get("stage"))
        if expect is not None and msg["type"] not in ((expect,) if isinstance(expect, str) else expect):
            raise WireError(f"{self.peer} answered {msg['type']!r}, expected {expect!r}")
        return msg

    def call(self, msg: dict, timeout: float = 10.0, expect: str | tuple[str, ...] | None = None) -> dict:
        self.send(msg, timeout)
        return self.recv(timeout, expect)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def request(addr: str, port: int, msg: dict, timeout: float = 10.0) -> dict:
    """Connect, send one message, return the answer; WireError on anything else, within ~2x timeout."""
    with Channel.connect(addr, port, timeout) as ch:
        return ch.call(msg, timeout)


# ---------------------------------------------------------------------------------------------- server
@dataclass
class Session:
    """One client's connection, as a handler sees it: ``send`` for extra messages, ``state`` for its own
    per-connection data, ``on_close`` for cleanups that run when the connection ends (whatever ends it)."""

    peer: str
    sock: socket.socket
    io_timeout_s: float
    state: dict[str, Any] = field(default_factory=dict)
    on_close: list[Callable[[], None]] = field(default_factory=list)

    def send(self, msg: dict) -> None:
        send_msg(self.sock, msg, self.io_timeout_s)


@dataclass
class ServeReport:
    sessions: int = 0
    errors: list[str] = field(default_factory=list)   # one line each: "peer: what went wrong"
    ended: str = ""                                   # lifetime | stopped | max_sessions
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Handler = Callable[[dict, Session], "dict | None"]


def serve(bind_addr: str, port: int, lifetime_s: float, handler: Handler, *, io_timeout_s: float = 10.0,
          idle_timeout_s: float = 30.0, max_sessions: int | None = None, stop: threading.Event | None = None,
          on_listen: Callable[[int], None] | None = None, log: Callable[[str], None] | None = None) -> ServeReport:
    """Answer clients one at a time until ``lifetime_s`` has passed (or ``stop`` is set, or ``max_sessions``
    sessions ended).  For each message ``handler(msg, session)`` returns the answer (None: none).

    A bad message, a slow or silent client, or a handler error ends that client's session with one
    ``error`` message to it (best effort) and one line in ``ServeReport.errors``; the server goes on.
    ``bye`` ends a session.  A handler's own work is bounded by the handler (the engine's deadlines);
    the lifetime is checked between messages, so the server ends within lifetime_s + one handler call.
    """
    t0 = time.monotonic()
    end = t0 + lifetime_s
    report = ServeReport()
    say = log or (lambda line: None)
    try:
        srv = socket.socket(socket.AF_INET6 if ":" in bind_addr else socket.AF_INET, socket.SOCK_STREAM)
    except OSError as e:
        raise WireError(f"cannot open a socket: {e.strerror or e}") from None
    try:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            srv.bind((bind_addr, port))
            srv.listen(4)
        except OSError as e:
            raise WireError(f"cannot listen on {bind_addr}:{port}: {e.strerror or e}") from None
        if on_listen is not None:
            on_listen(srv.getsockname()[1])
        say(f"listening on {bind_addr}:{srv.getsockname()[1]} for {lifetime_s:.0f} s")
        while True:
            now = time.monotonic()
            if stop is not None and stop.is_set():
                report.ended = "stopped"
                break
            if now >= end:
                report.ended = "lifetime"
                break
            if max_sessions is not None and report.sessions >= max_sessions:
                report.ended = "max_sessions"
                break
            srv.settimeout(min(0.25, end - now))
            try:
                conn, addr = srv.accept()
            except socket.timeout:
                continue
            except OSError as e:
                report.errors.append(eng.one_line(f"accept: {e.strerror or e}"))
                continue
            report.sessions += 1
            peer = f"{addr[0]}:{addr[1]}"
            err = _session(conn, peer, handler, io_timeout_s, idle_timeout_s, end, stop)
            if err:
                report.errors.append(eng.one_line(f"{peer}: {err}"))
                say(f"session {peer}: {err}")
            else:
                say(f"session {peer}: ended")
    finally:
        srv.close()
    report.seconds = round(time.monotonic() - t0, 3)
    return report


def _session(conn: socket.socket, peer: str, handler: Handler, io_timeout_s: float, idle_timeout_s: float,
             end: float, stop: threading.Event | None) -> str | None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sess = Session(peer=peer, sock=conn, io_timeout_s=io_timeout_s)
    err: str | None = None
    try:
        while True:
            # wait for the next message in slices: the lifetime or a stop ends an idle session only
            idle_end = time.monotonic() + idle_timeout_s
            why = None
            while True:
                now = time.monotonic()
                if select.select([conn], [], [], max(0.0, min(0.25, idle_end - now, end - now)))[0]:
                    break
                now = time.monotonic()
                if stop is not None and stop.is_set():
                    why = "server stopped while the session was idle"
                elif now >= end:
                    why = "server lifetime ended while the session was idle"
                elif now >= idle_end:
                    why = f"no message from the peer within {idle_timeout_s:.1f} s"
                if why:
                    break
            if why:
                err = why
                _try_send(conn, message("error", error=why))
                break
            try:
                msg = recv_msg(conn, io_timeout_s)
            except WireError as e:
                err = str(e)
                if str(e).startswith("connection closed by the peer after 0 of"):
                    err = None  # closed between messages: an ordinary end (request() sends no bye)
                else:
                    _try_send(conn, message("error", error=err))
                break
            if msg["type"] == "bye":
                break
            try:
                answer = handler(msg, sess)
            except WireError as e:
                err = str(e)
                _try_send(conn, message("error", error=err))
                break
            except eng.VerbsError as e:
                err = e.failure.message
                _try_send(conn, message("error", error=eng.one_line(err, 500), stage=e.failure.stage))
                break
            except Exception as e:  # a handler bug is still one line to the client and in the report
                err = eng.one_line(f"handler failed: {type(e).__name__}: {e}")
                _try_send(conn, message("error", error=err[:500]))
                break
            if answer is not None:
                try:
                    sess.send(answer)
                except WireError as e:
                    err = str(e)
                    break
    finally:
        for fn in reversed(sess.on_close):
            try:
                fn()
            except Exception:
                pass
        _close(conn)
    return err


def _try_send(conn: socket.socket, msg: dict) -> None:
    try:
        send_msg(conn, msg, 1.0)
    except WireError:
        pass


def _close(conn: socket.socket, linger_s: float = 0.2) -> None:
    """Close after our last message reached the peer: a close with unread input (the rest of an oversize
    message) would send a reset that can overtake our error message.  Bounded by ``linger_s``."""
    try:
        conn.shutdown(socket.SHUT_WR)
        end = time.monotonic() + linger_s
        while (left := end - time.monotonic()) > 0:
            conn.settimeout(left)
            if not conn.recv(65536):
                break
    except OSError:
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------- the probe
@dataclass
class LinkConfig:
    """What the client runs against a :func:`serve_link` peer."""

    bw_sizes: list[int] = field(default_factory=lambda: list(eng.DEFAULT_BW_SIZES))
    bw_duration_s: float | None = 2.0       # per size; None: bw_count messages
    bw_count: int | None = None
    lat_sizes: list[int] = field(default_factory=lambda: list(eng.DEFAULT_LAT_SIZES))
    lat_iters: int = 1000
    num_qps: int = 2
    depth: int = 4                          # WRs in flight per QP
    slots_per_qp: int = 1                   # message-sized buffers per QP (the MRs: num_qps x this x size)
    # no completion (or no ping-pong answer) within this: a timeout.  Longer than one retransmission at
    # NCCL's ACK timeout (4.3 s), so a single lost packet on a slow link is not called a dead path
    stall_s: float = 10.0
    io_timeout_s: float = 10.0              # each side-channel message
    verify_timeout_s: float = 120.0         # the server checks num_qps x slots_per_qp slots of each size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LinkConfig":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclass
class LinkResult:
    ok: bool
    stage: str | None = None                # the failed stage: open/.../transfer/verify, or wire
    error: str | None = None                # one line
    failure: eng.VerbsFailure | None = None
    local: dict[str, Any] | None = None
    remote: dict[str, Any] | None = None
    path_mtu: int | None = None
    bandwidth: eng.BandwidthResult | None = None
    latency: eng.LatencyResult | None = None
    server: dict[str, Any] | None = None    # the server's own view (what it verified in its memory)
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "stage": self.stage, "error": self.error,
                "failure": self.failure.to_dict() if self.failure else None, "local": self.local,
                "remote": self.remote, "path_mtu": self.path_mtu,
                "bandwidth": self.bandwidth.to_dict() if self.bandwidth else None,
                "latency": self.latency.to_dict() if self.latency else None, "server": self.server,
                "timings_s": self.timings_s}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LinkResult":
        return cls(ok=d["ok"], stage=d.get("stage"), error=d.get("error"),
                   failure=eng.VerbsFailure.from_dict(d["failure"]) if d.get("failure") else None,
                   local=d.get("local"), remote=d.get("remote"), path_mtu=d.get("path_mtu"),
                   bandwidth=eng.BandwidthResult.from_dict(d["bandwidth"]) if d.get("bandwidth") else None,
                   latency=eng.LatencyResult.from_dict(d["latency"]) if d.get("latency") else None,
                   server=d.get("server"), timings_s=d.get("timings_s") or {})


def link_handler(params: eng.QpParams, max_mr: int = 256 << 20, max_op_s: float = 300.0) -> Handler:
    """The server side of the probe: one endpoint per session, released when the session ends.  No single
    request keeps it longer than ``max_op_s`` (a client pacing its ping-pong writes just inside the stall
    bound cannot hold the server)."""

    def handle(msg: dict, s: Session) -> dict | None:
        kind = msg["type"]
        ep: eng.Endpoint | None = s.state.get("ep")
        if kind == "hello":
            if ep is not None:
                raise WireError("hello twice in one session")
            if msg["mr_size"] > max_mr:
                raise WireError(f"requested MR of {msg['mr_size']} bytes exceeds this server's {max_mr}")
            q = msg["qp"]
            p = dataclasses.replace(params, traffic_class=q["traffic_class"], service_level=q["service_level"])
            info = msg["info"]
            # inline sends as the client's (and as ib_write_lat's): a small ping-pong answer is copied at the post
            ep = eng.Endpoint(p, mr_size=msg["mr_size"], num_qps=len(info["qpns"]), max_inline=INLINE_BYTES)
            s.state["ep"] = ep
            s.on_close.append(ep.close)
            s.state["log"] = {"verified": [], "latency": None, "client_result": None}
            eng.connect(ep, info)
            return message("hello_ok", info=ep.info())
        if ep is None or ep.remote is None:
            raise WireError(f"{kind} before hello")
        log = s.state["log"]
        if kind == "verify":
            ok, err = ep.check_slots(msg["run"], msg["size"], msg["slots"])
            log["verified"].append({"size": msg["size"], "slots": msg["slots"], "ok": ok, "error": err})
            return message("verified", ok=ok, error=err)
        if kind == "latency":
            sizes = msg["sizes"]
            if 2 * max(sizes) > ep.mr_size:
                raise WireError(f"a {max(sizes)} B ping-pong needs a {2 * max(sizes)} B MR")
            eng.latency_reset(ep, max(sizes))
            s.send(message("ready"))
            res = eng.write_latency(ep, sizes, msg["iters"], initiator=False, stall_s=msg["stall_s"],
                                    start_s=msg["start_s"], deadline_s=max_op_s, reset=False)
            log["latency"] = {"ok": res.ok, "error": res.failure.message if res.failure else None}
            return message("latency_done", ok=res.ok,
                           error=eng.one_line(res.failure.message, 500) if res.failure else None)
        if kind == "result":
            log["client_result"] = msg["result"]
            return message("result_ok", result={"verified": log["verified"], "latency": log["latency"],
                                                "device": ep.params.device, "info": ep.info()})
        raise WireError(f"unexpected {kind} message")

    return handle


def serve_link(params: eng.QpParams, bind_addr: str, port: int, lifetime_s: float, *, max_mr: int = 256 << 20,
               max_op_s: float = 300.0, io_timeout_s: float = 10.0, idle_timeout_s: float = 60.0,
               max_sessions: int | None = None,
               stop: threading.Event | None = None, on_listen: Callable[[int], None] | None = None,
               log: Callable[[str], None] | None = None) -> ServeReport:
    """The probe's server: answers :func:`run_link` clients one at a time for ``lifetime_s``."""
    eng._pyverbs()  # fail here, once, if pyverbs is missing
    return serve(bind_addr, port, lifetime_s, link_handler(params, max_mr, max_op_s), io_timeout_s=io_timeout_s,
                 idle_timeout_s=idle_timeout_s, max_sessions=max_sessions, stop=stop, on_listen=on_listen, log=log)


def run_link(params: eng.QpParams, addr: str, port: int, config: LinkConfig | None = None) -> LinkResult:
    """The probe's client: open an endpoint, exchange info with the server over TCP, connect the QPs, RDMA
    WRITE bandwidth (the server verifies its memory after each size), ping-pong latency, exchange results.
    Never raises for a verbs or side-channel problem: the result names the stage and the one-line error."""
    cfg = config or LinkConfig()
    res = LinkResult(ok=False)
    t0 = time.monotonic()
    mark = t0
    ep: eng.Endpoint | None = None
    ch: Channel | None = None

    def lap(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        res.timings_s[name] = round(now - mark, 3)
        mark = now

    try:
        bw_need = cfg.num_qps * cfg.slots_per_qp * max(cfg.bw_sizes) if cfg.bw_sizes else 0
        lat_need = 2 * max(cfg.lat_sizes) if cfg.lat_sizes else 0
        mr_size = max(bw_need, lat_need, 4096)
        ep = eng.Endpoint(params, mr_size=mr_size, num_qps=cfg.num_qps, max_send_wr=max(32, cfg.depth * 2),
                          max_inline=INLINE_BYTES)
        res.local = ep.info()
        lap("open")
        res.stage = "wire"
        ch = Channel.connect(addr, port, cfg.io_timeout_s)
        hello = ch.call(message("hello", info=ep.info(), mr_size=mr_size,
                                qp={"traffic_class": params.traffic_class, "service_level": params.service_level,
                                    "timeout": params.timeout, "retry_cnt": params.retry_cnt}),
                        timeout=cfg.io_timeout_s + 30, expect="hello_ok")
        res.remote = hello["info"]
        lap("hello")
        res.stage = "connect"
        res.path_mtu = eng.connect(ep, res.remote)
        lap("connect")
        res.stage = None
        if cfg.bw_sizes:
            def verify(spec: dict) -> tuple[bool, str | None]:
                ans = ch.call(message("verify", **spec), timeout=cfg.verify_timeout_s, expect="verified")
                return ans["ok"], ans["error"]

            res.bandwidth = eng.write_bandwidth(ep, cfg.bw_sizes, count=cfg.bw_count, duration_s=cfg.bw_duration_s,
                                                depth=cfg.depth, slots_per_qp=cfg.slots_per_qp, stall_s=cfg.stall_s,
                                                verify=verify)
            lap("bandwidth")
            if not res.bandwidth.ok:
                res.failure = res.bandwidth.failure
        if cfg.lat_sizes and res.failure is None:
            start_s = cfg.io_timeout_s
            ch.call(message("latency", sizes=sorted(cfg.lat_sizes), iters=cfg.lat_iters, stall_s=cfg.stall_s,
                            start_s=start_s), timeout=cfg.io_timeout_s, expect="ready")
            res.latency = eng.write_latency(ep, cfg.lat_sizes, cfg.lat_iters, initiator=True, stall_s=cfg.stall_s,
                                            start_s=start_s)
            done = ch.recv(timeout=cfg.io_timeout_s + cfg.stall_s, expect="latency_done")
            lap("latency")
            if not res.latency.ok:
                res.failure = res.latency.failure
            elif not done["ok"]:
                res.failure = eng.VerbsFailure(stage="transfer",
                                               message=f"server side of the ping-pong: {done['error']}")
        res.ok = res.failure is None
        if res.failure is not None:
            res.stage, res.error = res.failure.stage, res.failure.message
        # the result goes to the server over the same TCP channel (it still works when RoCE does not)
        bw_points = res.bandwidth.points if res.bandwidth else []
        lat_points = res.latency.points if res.latency else []
        summary = {"ok": res.ok, "stage": res.stage, "error": res.error,
                   "bandwidth": [[p.size, p.gb_per_s, p.verified] for p in bw_points],
                   "latency": [[p.size, p.p50_us, p.p99_us] for p in lat_points]}
        ans = ch.call(message("result", result=summary), timeout=cfg.io_timeout_s, expect="result_ok")
        res.server = ans["result"]
        lap("result")
        try:
            ch.send(message("bye"), timeout=cfg.io_timeout_s)
        except WireError:
            pass
    except eng.VerbsError as e:
        res.ok, res.failure, res.stage, res.error = False, e.failure, e.failure.stage, e.failure.message
    except WireError as e:
        res.ok = False
        if e.stage:  # the server's verbs failed (it could not open its device, connect, ...)
            res.stage = e.stage
        res.stage = res.stage or "wire"
        if res.failure is None:
            res.failure = eng.VerbsFailure(stage=res.stage, message=str(e),
                                           detail={"side": "server" if e.stage else "wire"})
            res.error = str(e)
        else:
            res.error = f"{res.failure.message}; then the side channel failed: {e}"
    finally:
        if ch is not None:
            ch.close()
        if ep is not None:
            ep.close()
        res.timings_s["total"] = round(time.monotonic() - t0, 3)
    return res


__all__ = [
    "Channel", "LinkConfig", "LinkResult", "MAX_MESSAGE", "SCHEMA", "ServeReport", "Session", "VERSION",
    "WireError", "decode", "encode", "link_handler", "message", "recv_msg", "request", "run_link", "send_msg",
    "serve", "serve_link", "validate",
]
