#!/bin/bash
# Guest script of benchmarks/verbs_vs_perftest.py: the verbs engine (rdmacheck/verbs) on two real rxe devices,
# interleaved with ib_write_bw / ib_write_lat on the same pair and settings, in one boot.  Run by tests/softroce/guest.py as
# root inside the guest with $GUEST_OUT, $REPO and $PY set; everything it learns goes under $GUEST_OUT.
#
# The devices: benchmarks/softroce/pair.sh.
# Python costs ~20 s per start under TCG: two processes, started side by side -- the link server (rxe0) and
# the client driver that measures.
set -u
O="$GUEST_OUT"
mkdir -p "$O"
exec >"$O/guest.log" 2>&1
stamp() { echo "$(date +%s.%N) $*" >> "$O/timings.txt"; echo "== $*"; }
stamp start
# the kernel's messages as they come: a crash or an rxe warning still leaves its trace here
( dmesg -w > "$O/dmesg_live.txt" 2>&1 & )

. "$REPO/benchmarks/softroce/pair.sh"   # DA DB A B IPA IPB XA XB: the rxe pair, set up
PORT="${VERBS_PORT:-18600}"
# arguments from benchmarks/verbs_vs_perftest.py: which parts (all | latency) and the rounds of each
ONLY="${1:-all}"; BW_ROUNDS="${2:-5}"; LAT_ROUNDS="${3:-3}"
case "$ONLY" in all) ONLY_JSON='[]' ;; latency) ONLY_JSON='["latency"]' ;; *) echo "unknown part $ONLY"; echo fail > "$O/done"; exit 2 ;; esac
# NCCL_IB_TC / NCCL_IB_SL as a RoCE cluster would set them; perftest gets the same (--tclass, --sl)
QP_JSON='{"traffic_class": 106, "service_level": 3}'

stamp devices
if [ -z "$XA" ] || [ -z "$XB" ]; then echo "no RoCE v2 IPv4 GID"; echo fail > "$O/done"; exit 1; fi

cat > "$O/config.json" <<JSON
{"a": {"dev": "$DA", "gidx": $XA, "ip": "$IPA"}, "b": {"dev": "$DB", "gidx": $XB, "ip": "$IPB"},
 "port": $PORT, "qp": $QP_JSON,
 "bw_sizes": [65536, 1048576, 8388608], "bw_target_bytes": 50331648, "num_qps": 2, "depth": 4, "rounds": $BW_ROUNDS,
 "lat_sizes": [8, 4096, 65536], "lat_iters": 1000, "lat_rounds": $LAT_ROUNDS, "only": $ONLY_JSON}
JSON

PYENV=(env -i PATH="$PATH" HOME=/root PYTHONPATH="$REPO")
# 1. the probe's server on the rxe0 side (a bounded lifetime; SIGTERM ends it sooner)
"${PYENV[@]}" "$PY" -S "$REPO/benchmarks/softroce/verbs_vs_perftest.py" serve "$O" $DA "$XA" $IPA "$PORT" 1500 "$QP_JSON" \
    > "$O/server.out" 2>&1 &
SRV=$!
# 2. the client driver: bandwidth and latency, each interleaved with perftest
timeout 1300 "${PYENV[@]}" "$PY" -S "$REPO/benchmarks/softroce/verbs_vs_perftest.py" client "$O" "$O/config.json" \
    > "$O/client.out" 2>&1
echo $? > "$O/client.rc"
stamp client
kill -TERM $SRV 2>/dev/null
for _ in $(seq 100); do kill -0 $SRV 2>/dev/null || break; sleep 0.1; done
kill -9 $SRV 2>/dev/null
wait $SRV; echo $? > "$O/server.rc"
for d in $DA $DB; do grep -H . /sys/class/infiniband/$d/ports/1/hw_counters/* > "$O/hw_counters_$d.txt" 2>&1; done
dmesg | tail -100 > "$O/dmesg.txt" 2>&1
stamp end
echo done > "$O/done"
