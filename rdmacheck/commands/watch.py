"""``rdmacheck watch``: periodic re-validation of this node, exported to Prometheus."""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import threading

from rdmacheck.util.errors import UsageError
from rdmacheck.util.units import seconds_type

DESCRIPTION = """\
Re-run every preflight gate every --interval seconds (never the bench), sample
the RDMA port and netdev counters of the selected ports, and serve the latest
state as Prometheus metrics at http://HOST:PORT/metrics:

  rdmacheck_gate_status{gate}            0 pass, 1 warn, 2 fail, 3 skip
  rdmacheck_netdev_mtu / _netdev_up      per netdev
  rdmacheck_port_active_mtu / _port_gid_index (predicted) / _port_up
  rdmacheck_counter_total / _counter_rate{kind,device,counter,category}
                                         errors, link_downs, retransmits, pause, cnp_ecn
  rdmacheck_last_run_timestamp_seconds, _run_duration_seconds, _runs_total

A gate that changes state logs one line on stderr.  Links flap, counters climb
and a GID index moves after a restart: this notices before a job hangs.
Example scrape config and alert rules: docker/prometheus/ (docs/watch.md).
"""

EPILOG = """\
examples:
  rdmacheck watch --interval 60 --listen 0.0.0.0:9109 --env docker/.env
  rdmacheck watch --interval 5 --listen 127.0.0.1:9109 --root /tmp/node1   an unpacked snapshot
  docker compose -f docker/compose.yaml --profile watch up -d rdmacheck-watch

exit codes: runs until SIGTERM/SIGINT, then 0; 2 usage error (bad --listen, port in use, bad config).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rdmacheck.preflight.judge import add_config_arguments

    p.add_argument("--interval", type=seconds_type("--interval", minimum=1.0, maximum=7 * 86400.0, allow_zero=True),
                   default=60.0, metavar="S",
                   help="seconds between the starts of two runs (default 60; at least 1)")
    p.add_argument("--listen", default="127.0.0.1:9109", metavar="HOST:PORT",
                   help="where to serve /metrics (default 127.0.0.1:9109; 0.0.0.0:9109 for a scraper elsewhere)")
    add_config_arguments(p)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise UsageError(f"--listen {text!r}: write HOST:PORT, e.g. 127.0.0.1:9109")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise UsageError(f"--listen {text!r}: {host!r} is not an IP address; write e.g. 0.0.0.0:9109") from None
    try:
        n = int(port)
    except ValueError:
        raise UsageError(f"--listen {text!r}: {port!r} is not a port number") from None
    if not 0 < n < 65536:
        raise UsageError(f"--listen {text!r}: port must be 1..65535")
    return host, n


def run(args: argparse.Namespace) -> int:
    import os

    if not args.interval >= 1 or args.interval != args.interval:
        raise UsageError("--interval must be at least 1 second")
    host, port = parse_listen(args.listen)
    if not os.path.isdir(args.root or "/"):
        raise UsageError(f"--root {args.root}: not a folder; unpack the snapshot first (tar xzf FILE -C DIR)")
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise UsageError("prometheus-client is not installed; pip install prometheus-client (a dependency of rdmacheck)") from None
    from ..watch.prometheus import serve
    from ..watch import Watcher, preflight_judge

    watcher = Watcher(preflight_judge(args.root or "/", args.env, args.profile, args.expect))
    try:
        server, _thread = serve(lambda: watcher.state, host, port)
    except OSError as e:
        raise UsageError(f"--listen {args.listen}: cannot listen ({e.strerror or e}); choose a free port") from None
    stop = threading.Event()

    def _stop(signum, _frame) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"rdmacheck watch: serving http://{host}:{port}/metrics, preflight every {args.interval:g} s"
          + (f" on --root {args.root}" if args.root not in (None, "/") else ""), file=sys.stderr, flush=True)
    try:
        watcher.run_forever(args.interval, stop)
    finally:
        server.shutdown()
    print(f"rdmacheck watch: stopped after {watcher.cycles} run(s)", file=sys.stderr, flush=True)
    return 0
