#!/bin/bash
# Guest script of benchmarks/verbs_vs_perftest.py: the verbs engine (rdmacheck/verbs) on two real rxe devices,
# interleaved with ib_write_bw / ib_write_lat on the same pair and settings, in one boot.  Run by tests/softroce/guest.py as
# root inside the guest with $GUEST_OUT, $REPO and $PY set; everything it learns goes under $GUEST_OUT.
#
# Devices as in ../shared/testbeds/softroce.md: rxe0 on veth0 (10.77.0.1/24), rxe1 on veth1 (10.77.0.2/24),
# MTU 9000, both in the initial netns (rxe receives only there), policy routing so packets between the two
# local addresses cross the veth pair instead of lo (where rxe drops them).
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

DA=rxe0; DB=rxe1; A=veth0; B=veth1; IPA=10.77.0.1; IPB=10.77.0.2
PORT="${VERBS_PORT:-18600}"
# arguments from benchmarks/verbs_vs_perftest.py: which parts (all | latency) and the rounds of each
ONLY="${1:-all}"; BW_ROUNDS="${2:-5}"; LAT_ROUNDS="${3:-3}"
case "$ONLY" in all) ONLY_JSON='[]' ;; latency) ONLY_JSON='["latency"]' ;; *) echo "unknown part $ONLY"; echo fail > "$O/done"; exit 2 ;; esac
. "$REPO/tests/softroce/gids.sh"   # ZERO_GID, gid_table, ipv4_gid_index (shared with the test session)
# NCCL_IB_TC / NCCL_IB_SL as a RoCE cluster would set them; perftest gets the same (--tclass, --sl)
QP_JSON='{"traffic_class": 106, "service_level": 3}'


set -x
modprobe -a rdma_rxe ib_uverbs veth
ip link add $A type veth peer name $B
ip link set $A up; ip link set $B up
rdma link add $DA type rxe netdev $A
rdma link add $DB type rxe netdev $B
ip link set $A mtu 9000; ip link set $B mtu 9000
ip addr add $IPA/24 dev $A; ip addr add $IPB/24 dev $B
ip rule add pref 100 lookup local && ip rule del pref 0 lookup local
ip rule add pref 10 iif lo from $IPB to $IPA lookup 101; ip route add $IPA dev $B table 101
ip rule add pref 11 iif lo from $IPA to $IPB lookup 102; ip route add $IPB dev $A table 102
for i in all default $A $B; do sysctl -qw net.ipv4.conf.$i.accept_local=1 net.ipv4.conf.$i.rp_filter=0; done
sysctl -qw net.core.netdev_max_backlog=100000   # veth bursts never overflow the backlog (docs/softroce.md)
set +x
XA=""; XB=""
for _ in $(seq 100); do
    XA=$(ipv4_gid_index $DA $IPA); XB=$(ipv4_gid_index $DB $IPB)
    [ -n "$XA" ] && [ -n "$XB" ] && break
    sleep 0.1
done
echo "$XA $XB" > "$O/gid_index.txt"
gid_table $DA > "$O/gid_table_$DA.txt"; gid_table $DB > "$O/gid_table_$DB.txt"
rdma link > "$O/rdma_link.txt" 2>&1
ibv_devinfo -v > "$O/ibv_devinfo.txt" 2>&1
grep -H . /sys/class/infiniband_verbs/uverbs*/ibdev > "$O/uverbs.txt" 2>&1
ls -la /dev/infiniband > "$O/dev_infiniband.txt" 2>&1
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
