#!/bin/bash
# Sourced by the soft-RoCE guest scripts of benchmarks/ (verbs_vs_perftest.sh, latency_trace.sh): the pair of rxe
# devices as in ../shared/testbeds/softroce.md -- rxe0 on veth0 (10.77.0.1/24), rxe1 on veth1 (10.77.0.2/24),
# MTU 9000, both in the initial netns (rxe receives only there), policy routing so packets between the two
# local addresses cross the veth pair instead of lo (where rxe drops them).  Needs $O (the output folder) and
# $REPO; sets DA DB A B IPA IPB and XA XB (each device's RoCE v2 IPv4 GID index, empty when none appeared) and
# records the GID tables and device views under $O.
DA=rxe0; DB=rxe1; A=veth0; B=veth1; IPA=10.77.0.1; IPB=10.77.0.2
. "$REPO/tests/softroce/gids.sh"   # ZERO_GID, gid_table, ipv4_gid_index (shared with the test session)

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
