#!/bin/bash
# One soft-RoCE guest session: sets up devices named as on the reference cluster, then runs every
# scenario and leaves its evidence in $GUEST_OUT (the --rwdir) for tests/test_softroce.py.
# Run by tests/softroce/guest.py inside the guest, as root, with $GUEST_OUT, $REPO and $PY set.
#
# Under QEMU TCG everything is slow: a boot ~30 s, a Python start ~4 s, every fork counts.  So: one
# session for everything, one warm Python that forks each rdmacheck run (runs.sh), shell builtins in
# loops, independent runs in parallel, no xtrace.
set -u
O="$GUEST_OUT"
mkdir -p "$O/facts" "$O/preflight" "$O/counters"
exec >"$O/session.log" 2>&1

A=enP2p1s0f0np0;  B=enP2p1s0f1np1      # netdevs (a veth pair) named as on the reference nodes
DA=roceP2p1s0f0;  DB=roceP2p1s0f1      # rxe devices on top of them
IPA=192.168.100.1; IPB=192.168.100.2
ENVFILE="$REPO/tests/softroce/reference.env"
# ib_write_bw transfer: N RDMA writes of S bytes each (the known byte count of the counter math; rxe computes
# every packet's ICRC in emulated CPU, so 300 writes, not 1000: ~20 MiB).
WRITE_N="${WRITE_N:-300}"; WRITE_S="${WRITE_S:-65536}"
. "$REPO/tests/softroce/gids.sh"   # ZERO_GID, gid_table, ipv4_gid_index

stamp() { echo "$(date +%s.%N) $*" >> "$O/timings.txt"; echo "== $*"; }
stamp start

# wait_gid DEV INDEX present|absent: the GID table follows address changes asynchronously.
wait_gid() {
    local f="/sys/class/infiniband/$1/ports/1/gids/$2" g i
    for i in $(seq 50); do
        g=""; read -r g < "$f" 2>/dev/null
        if [ "$3" = present ] && [ -n "$g" ] && [ "$g" != $ZERO_GID ]; then return 0; fi
        if [ "$3" = absent ] && { [ -z "$g" ] || [ "$g" = $ZERO_GID ]; }; then return 0; fi
        sleep 0.1
    done
    echo "GID $1/$2 not $3 after 5 s"
    return 1
}

# a TCP port in LISTEN (read from /proc/net/tcp{,6}: builtins only): perftest's server is up
listening() {
    local hex _ l st
    hex=$(printf '%04X' "$1")
    for f in /proc/net/tcp /proc/net/tcp6; do
        while read -r _ l _ st _; do
            [[ $l == *:$hex && $st == 0A ]] && return 0
        done < "$f"
    done 2>/dev/null
    return 1
}


# ---- devices -----------------------------------------------------------------------------------------
# rdma_ucm gives /dev/infiniband/rdma_cm, which real nodes have (rdma.devfiles checks it).
set -x
modprobe -a rdma_rxe ib_uverbs rdma_ucm veth
ip link add $A type veth peer name $B
ip link set $A up; ip link set $B up
rdma link add $DA type rxe netdev $A
rdma link add $DB type rxe netdev $B
ip link set $A mtu 9000; ip link set $B mtu 9000
ip addr add $IPA/24 dev $A; ip addr add $IPB/24 dev $B
# Both "nodes" live in this one kernel, so both rails share a subnet here: answer ARP only on the netdev
# that holds the address (net.arp fails the kernel's defaults; the arp scenario shows that verdict).
sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
set +x
wait_gid $DA 1 present && wait_gid $DB 1 present
echo $? > "$O/facts/setup.rc"
stamp devices

# ---- rdmacheck runs: the `rdmacheck OUTBASE [VAR=VALUE...] -- ARGS...` function (tests/softroce/runs.sh)
. "$REPO/tests/softroce/runs.sh"
P="$O/preflight"
forkserver_ready; stamp "forkserver $([ -n "$FORKSERVER" ] && echo ready || echo absent)"
HAVE_PREFLIGHT=0; [ -f "$REPO/rdmacheck/commands/preflight.py" ] && HAVE_PREFLIGHT=1

# Good state (MTU 9000, addresses): in parallel the snapshot (the slowest: it copies 3 x 1024 GID-table
# files per rxe port), the passing preflight and the missing-HCA run (NCCL_IB_HCA in the process env
# wins over the .env, as in compose).  pyverbs answers come back in the snapshot's rdmacheck/verbs.json.
if [ $HAVE_PREFLIGHT = 1 ]; then
    # --timeout: the sysfs copy deadline (default 30 s) is far too short under emulation
    rdmacheck "$O/snapshot" -- snapshot --env "$ENVFILE" --timeout "${SNAPSHOT_TIMEOUT:-280}" -o "$O/snapshot.tar.gz" &
    rdmacheck "$P/pass" -- preflight -q --env "$ENVFILE" --json "$P/pass.json" &
    rdmacheck "$P/badhca" NCCL_IB_HCA=mlx5_9 -- preflight -q --env "$ENVFILE" --json "$P/badhca.json" &
fi
# Meanwhile the cheap facts (shell and C tools).  The GID tables are read before and after the runs: a
# table that moved in between (an address event under load) makes the tests judge against both readings.
gid_table $DA > "$O/facts/gid_table_${DA}_before.txt"; gid_table $DB > "$O/facts/gid_table_${DB}_before.txt"
rdma link > "$O/facts/rdma_link.txt" 2>&1
rdma dev > "$O/facts/rdma_dev.txt" 2>&1
ibv_devinfo -v > "$O/facts/ibv_devinfo_v.txt" 2>&1
ulimit -Sl > "$O/facts/memlock_soft.txt"; ulimit -Hl > "$O/facts/memlock_hard.txt"
ip -d link show > "$O/facts/ip_link.txt" 2>&1; ip addr show > "$O/facts/ip_addr.txt" 2>&1
uname -r > "$O/facts/uname.txt"
{
    for d in /sys/class/infiniband/*; do
        echo "== $d -> $(readlink "$d")"; ls -la "$d/"
        grep -H . "$d"/* 2>&1
        for p in "$d"/ports/*; do
            ls "$p" "$p/gid_attrs"
            grep -H . "$p"/* "$p"/hw_counters/* 2>&1
            grep -H . "$p"/gids/[0-3] "$p"/gid_attrs/types/[0-3] "$p"/gid_attrs/ndevs/[0-3] 2>&1
            echo "$p/gids count: $(ls "$p/gids" | wc -l)"
        done
    done
    for n in /sys/class/net/$A /sys/class/net/$B; do
        echo "== $n -> $(readlink "$n")"; ls "$n"
        grep -H . "$n"/* 2>&1
    done
    echo "== /sys/class/infiniband_verbs"; ls -la /sys/class/infiniband_verbs/; grep -H . /sys/class/infiniband_verbs/*/* 2>&1
    echo "== /dev/infiniband"; ls -laR /dev/infiniband
    echo "== /etc/rdma"; ls -laR /etc/rdma
    echo "== limits"; cat /proc/self/limits; df -k /dev/shm
    echo "== modules"; grep -E '^(rdma|ib_|rxe|veth)' /proc/modules
} > "$O/facts/sysfs.txt" 2>&1
wait
gid_table $DA > "$O/facts/gid_table_${DA}_after.txt"; gid_table $DB > "$O/facts/gid_table_${DB}_after.txt"
stamp good-state

if [ $HAVE_PREFLIGHT = 1 ]; then
    # MTU 1500 on both ends: rxe then runs active_mtu 1024
    ip link set $A mtu 1500; ip link set $B mtu 1500
    ibv_devinfo -d $DA > "$O/facts/ibv_devinfo_mtu1500.txt" 2>&1
    rdmacheck "$P/mtu1500" -- preflight -q --env "$ENVFILE" --json "$P/mtu1500.json"
    ip link set $A mtu 9000; ip link set $B mtu 9000
    stamp mtu1500
    # No IPv4 address on the selected port's netdev: only the fe80 GID is left
    ip addr del $IPA/24 dev $A
    wait_gid $DA 1 absent
    grep -H . /sys/class/infiniband/$DA/ports/1/gids/[0-2] > "$O/facts/gids_noip.txt" 2>&1
    rdmacheck "$P/noip" -- preflight -q --env "$ENVFILE" --json "$P/noip.json"
    ip addr add $IPA/24 dev $A
    wait_gid $DA 1 present
    stamp noip
fi

# ---- further scenarios: tests/softroce/scenarios/*.sh, in name order, in this same boot ---------------
# Each file is sourced here with the good state set up (MTU 9000, addresses, both rxe ports ACTIVE) and the
# helpers above (rdmacheck, wait_gid, stamp); it writes under "$O/<its own folder>" and must leave the good
# state as it found it.  A new scenario is a new file: the suite never boots a second guest.
for f in "$REPO"/tests/softroce/scenarios/*.sh; do
    [ -f "$f" ] || continue
    . "$f"
    stamp "scenario ${f##*/}"
done

# ---- ib_write_bw counter math ------------------------------------------------------------------------
# Packets between two local addresses go through lo, where rxe drops them (ib_write_bw then exits 0
# with 0 iterations).  Policy routing sends them across the veth pair instead.
set -x
ip rule add pref 100 lookup local && ip rule del pref 0 lookup local
ip rule add pref 10 iif lo from $IPB to $IPA lookup 101; ip route add $IPA dev $B table 101
ip rule add pref 11 iif lo from $IPA to $IPB lookup 102; ip route add $IPB dev $A table 102
for i in all default $A $B; do sysctl -qw net.ipv4.conf.$i.accept_local=1 net.ipv4.conf.$i.rp_filter=0; done
# veth hands every frame to the peer's per-CPU backlog (netdev_max_backlog, 1000 by default); rxe
# bursts of TX depth x 16 packets under slow emulated softirqs overflow it, and the drops end in
# retries or a failed completion.  A deep backlog keeps the transfer lossless.
sysctl -qw net.core.netdev_max_backlog=100000
set +x
ip rule show > "$O/counters/ip_rule.txt"
# the data path: rdma.datapath, `rdmacheck link` and each failure it must name (tests/softroce/datapath.sh)
[ $HAVE_PREFLIGHT = 1 ] && [ -f "$REPO/tests/softroce/datapath.sh" ] && . "$REPO/tests/softroce/datapath.sh"
# the lossless verdict on real retransmit and drop counters (tests/softroce/lossless.sh)
[ -f "$REPO/tests/softroce/lossless.sh" ] && . "$REPO/tests/softroce/lossless.sh"

mirror_counters() {  # copy the counter files to DIR/sys/... (builtins only) to read them through HostRoot
    local dst="$1" f v d last=""
    for f in /sys/class/infiniband/*/ports/*/hw_counters/* /sys/class/infiniband/*/ports/*/counters/* \
             /sys/class/net/$A/statistics/* /sys/class/net/$B/statistics/*; do
        [ -f "$f" ] || continue
        d="$dst${f%/*}"
        [ "$d" = "$last" ] || { mkdir -p "$d"; last="$d"; }
        v=""; read -r v < "$f" 2>/dev/null
        printf '%s\n' "$v" > "$dst$f"
    done
}
C="$O/counters"
echo "$WRITE_N $WRITE_S" > "$C/params.txt"
# The GID index each side uses is the one its IPv4 address has now (not a constant: an extra link-local
# entry under load moves it); the test checks it against the table written beside it.
XA=$(ipv4_gid_index $DA $IPA); XB=$(ipv4_gid_index $DB $IPB)
echo "$XA $XB" > "$C/gid_index.txt"
gid_table $DA > "$C/gid_table_$DA.txt"; gid_table $DB > "$C/gid_table_$DB.txt"
snmp6() { cat /proc/net/dev_snmp6/$A > "$1_$A.txt"; cat /proc/net/dev_snmp6/$B > "$1_$B.txt"; }
cat /proc/net/softnet_stat > "$C/softnet_before.txt"
snmp6 "$C/snmp6_before"
mirror_counters "$C/before"
# -u 20: QP timeout 4 us x 2^20 = 4.3 s.  perftest's default (14: 67 ms) is shorter than an ACK's trip
# through a busy emulated guest, so rxe retransmits (seen: 5% extra packets, once a failed completion).
timeout 120 ib_write_bw -F -d $DA -x "${XA:-1}" -u 20 -p 18516 --report_gbits -n $WRITE_N -s $WRITE_S > "$C/server.txt" 2>&1 &
srv=$!
# the client connects once and gives up (listening(), defined above with the helpers) ("Couldn't connect"): start it only when the server listens,
# which under a loaded host can take longer than any fixed sleep (read from /proc/net/tcp{,6}: builtins only)
for i in $(seq 1200); do listening 18516 && break; kill -0 $srv 2>/dev/null || break; sleep 0.1; done
echo "server listening after ~$((i / 10)) s" > "$C/server_wait.txt"
timeout 120 ib_write_bw -F -d $DB -x "${XB:-1}" -u 20 -p 18516 --report_gbits -n $WRITE_N -s $WRITE_S $IPA > "$C/client.txt" 2>&1
echo $? > "$C/client.rc"
wait $srv; echo $? > "$C/server.rc"
sleep 0.5   # trailing ACKs
mirror_counters "$C/after"
cat /proc/net/softnet_stat > "$C/softnet_after.txt"
snmp6 "$C/snmp6_after"
ip -s link show > "$C/ip_s_link.txt"
stamp ib_write_bw

forkserver_stop
dmesg > "$O/facts/dmesg.txt" 2>&1
stamp end
echo done > "$O/done"
