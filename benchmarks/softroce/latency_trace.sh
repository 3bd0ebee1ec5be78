#!/bin/bash
# Guest script of benchmarks/latency_trace.py: where an 8 B RDMA WRITE ping-pong spends its time, for
# ib_write_lat and for the verbs engine on the same rxe pair (benchmarks/softroce/pair.sh), with the kernel's
# function tracer on the rxe path (trace clock: mono, the clock Python's perf_counter reads).  Per round, one
# traced ib_write_lat and one traced engine ping-pong (benchmarks/softroce/pingpong.py), ITERS messages each.
# Run by tests/softroce/guest.py as root with $GUEST_OUT, $REPO and $PY set.
#     latency_trace.sh [ROUNDS [ITERS]]
set -u
O="$GUEST_OUT"
mkdir -p "$O"
exec >"$O/guest.log" 2>&1
ROUNDS="${1:-2}"; ITERS="${2:-400}"
. "$REPO/benchmarks/softroce/pair.sh"
if [ -z "$XA" ] || [ -z "$XB" ]; then echo "no RoCE v2 IPv4 GID"; echo fail > "$O/done"; exit 1; fi
T=/sys/kernel/tracing
mountpoint -q $T || mount -t tracefs nodev $T
# the steps of one message: the post's system call, the rxe requester, the wire (veth), the peer's responder
# landing the bytes (rxe_mr_copy from rxe_responder), the ACK and the completer
FUNCS="ib_uverbs_write ib_uverbs_post_send rxe_post_send rxe_requester rxe_xmit_packet veth_xmit rxe_rcv
       rxe_responder rxe_completer rxe_mr_copy rxe_cq_post"
trace_on() {
    echo 0 > $T/tracing_on; echo nop > $T/current_tracer; echo > $T/trace
    echo 16384 > $T/buffer_size_kb; echo mono > $T/trace_clock
    : > $T/set_ftrace_filter
    for f in $FUNCS; do echo $f >> $T/set_ftrace_filter; done
    echo function > $T/current_tracer; echo 1 > $T/tracing_on
}
trace_off() { echo 0 > $T/tracing_on; cp $T/trace "$1"; echo nop > $T/current_tracer; }
# ib_write_lat with the flags `link --engine perftest` passes (verbs/perftest.py), server on rxe0
FLAGS=(-F -s 8 --tclass 106 --sl 3 -u 20 -m 4096 -n "$ITERS" -p 18700)
PYENV=(env -i PATH="$PATH" HOME=/root PYTHONPATH="$REPO")
for r in $(seq "$ROUNDS"); do
    trace_on
    ib_write_lat -d $DA -x $XA "${FLAGS[@]}" > "$O/perftest_server_$r.txt" 2>&1 &
    S=$!; sleep 1
    timeout 60 ib_write_lat -d $DB -x $XB "${FLAGS[@]}" $IPA > "$O/perftest_$r.txt" 2>&1
    wait $S
    trace_off "$O/trace_perftest_$r.txt"
    D=$(mktemp -d /dev/shm/pingpong.XXXX)
    trace_on
    timeout 120 "${PYENV[@]}" "$PY" -S "$REPO/benchmarks/softroce/pingpong.py" pong $DA "$XA" "$D" "$ITERS" \
        > "$O/engine_pong_$r.txt" 2>&1 &
    S=$!
    timeout 120 "${PYENV[@]}" "$PY" -S "$REPO/benchmarks/softroce/pingpong.py" ping $DB "$XB" "$D" "$ITERS" \
        > "$O/engine_$r.txt" 2>&1
    wait $S
    trace_off "$O/trace_engine_$r.txt"
    cp "$D/result.json" "$O/engine_$r.json" 2>/dev/null
done
echo done > "$O/done"
