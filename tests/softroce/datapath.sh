# Sourced by session.sh once policy routing carries traffic between the two rxe devices across the veth
# pair (rxe on this kernel receives only in the initial namespace: both "nodes" live here).  Proves what
# a PASS of rdma.datapath and `rdmacheck link` means, and what each failure looks like, against ground
# truth taken in the same boot: the guest's own GID table, perftest on the same pair.
D="$O/datapath"; mkdir -p "$D"
HCA_A="NCCL_IB_HCA==$DA:1"; HCA_B="NCCL_IB_HCA==$DB:1"
# NCCL_SOCKET_IFNAME picks the address the server listens on (its bootstrap address)
SRV_ENV=("$HCA_A" "NCCL_SOCKET_IFNAME=$A"); CLI_ENV=("$HCA_B" "NCCL_SOCKET_IFNAME=$B")
gid_table $DA > "$D/gid_table_$DA.txt"; gid_table $DB > "$D/gid_table_$DB.txt"
cat /sys/class/net/$A/address > "$D/mac_$A.txt"; cat /sys/class/net/$B/address > "$D/mac_$B.txt"

# both devices through rdma.datapath (NCCL_IB_HCA unset: NCCL would use every ACTIVE port)
rdmacheck "$D/both" NCCL_IB_HCA= -- preflight -q --env "$ENVFILE" --json "$D/both.json"

link_pair() {  # link_pair NAME [client args...]: a server for one client, then the client; both bounded
    local name="$1"; shift
    # a long lifetime (under TCG beside a busy host the client's start alone can take a minute) and one client:
    # the server ends once its client is done, so the next pair finds the port free
    local clients=(--clients 1); [ "${1:-}" = "--engine" ] && clients=()
    rdmacheck "$D/$name.server" "${SRV_ENV[@]}" -- link --serve --lifetime 600 "${clients[@]}" --env "$ENVFILE" "$@" &
    local s=$!
    for _ in $(seq 1 600); do grep -q "listening on\|server on port" "$D/$name.server.out" 2>/dev/null && break; sleep 0.2; done
    # the client device's rxe counters around the client: ground truth for link.lossless's window
    grep -H . /sys/class/infiniband/$DB/ports/1/hw_counters/* > "$D/$name.hw_before.txt" 2>&1
    rdmacheck "$D/$name" "${CLI_ENV[@]}" -- link --peer $IPA --env "$ENVFILE" --duration 0.5 --lat-iters 100 \
        --min-bandwidth 0.001 --max-latency 100000 100000 --json "$D/$name.json" "$@"
    grep -H . /sys/class/infiniband/$DB/ports/1/hw_counters/* > "$D/$name.hw_after.txt" 2>&1
    wait $s 2>/dev/null
}
link_pair good
link_pair perftest --engine perftest
stamp datapath-good

# ground truth on the same pair, GIDs, sizes and QP settings (TC 106, SL 3, timeout 22)
XA=$(ipv4_gid_index $DA $IPA); XB=$(ipv4_gid_index $DB $IPB); echo "$XA $XB" > "$D/gid_index.txt"
for s in 1048576 4194304; do
    timeout 60 ib_write_bw -F -d $DA -x "$XA" --tclass 106 --sl 3 -u 22 -p 18600 --report_gbits -D 3 -f 1 -s $s > "$D/ib_write_bw_$s.server.txt" 2>&1 &
    w=$!; for _ in $(seq 1 100); do listening 18600 && break; sleep 0.2; done
    timeout 60 ib_write_bw -F -d $DB -x "$XB" --tclass 106 --sl 3 -u 22 -p 18600 --report_gbits -D 3 -f 1 -s $s $IPA > "$D/ib_write_bw_$s.txt" 2>&1
    wait $w
done
timeout 60 ib_write_lat -F -d $DA -x "$XA" --tclass 106 --sl 3 -p 18601 -n 1000 -s 8 > "$D/ib_write_lat.server.txt" 2>&1 &
w=$!; for _ in $(seq 1 100); do listening 18601 && break; sleep 0.2; done
timeout 60 ib_write_lat -F -d $DB -x "$XB" --tclass 106 --sl 3 -p 18601 -n 1000 -s 8 $IPA > "$D/ib_write_lat.txt" 2>&1
wait $w
stamp datapath-perftest

# RoCE v2 dropped by the head's packet filter: ping and TCP pass, RDMA does not
iptables -A INPUT -p udp --dport 4791 -j DROP
rdmacheck "$D/drop.preflight" "${SRV_ENV[@]}" -- preflight -q --env "$ENVFILE" --json "$D/drop.preflight.json"
t0=$(date +%s.%N); link_pair drop; echo "$t0 $(date +%s.%N)" > "$D/drop.time"
iptables -D INPUT -p udp --dport 4791 -j DROP
stamp datapath-drop

# two rails in one subnet with the kernel's default ARP sysctls (ARP flux), and a peer holding the wrong MAC
sysctl -qw net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.all.arp_announce=0
rdmacheck "$D/arpflux" -- preflight -q --env "$ENVFILE" --json "$D/arpflux.json"
sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
ip neigh replace $IPA lladdr 02:00:00:00:0b:ad dev $B nud permanent
link_pair wrongmac
ip neigh del $IPA dev $B
stamp datapath-arp

# the device node unreadable for the job's user, and memlock at 64 KiB
N=$(basename "$(ls -d /sys/class/infiniband/$DA/device/infiniband_verbs/uverbs* /sys/class/infiniband_verbs/uverbs* 2>/dev/null \
    | while read -r u; do [ "$(cat "$u/ibdev" 2>/dev/null)" = "$DA" ] && echo "$u"; done | head -1)")
echo "/dev/infiniband/$N" > "$D/node.txt"
# root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (out of the bounding set: gone after exec) is held to the
# node's mode bits like any user, and can still run this host's Python under /root
chmod 000 "/dev/infiniband/$N"
# the two fresh Pythons (not forked from the warm one: their capabilities differ) run side by side
timeout 120 setpriv --bounding-set=-dac_override,-dac_read_search --inh-caps=-dac_override,-dac_read_search \
    env -i "${BASE_ENV[@]}" "$HCA_A" \
    "$PY" -m rdmacheck preflight -q --only rdma.datapath --env "$ENVFILE" --json "$D/perm.json" > "$D/perm.out" 2>&1 &
perm=$!
# memlock 64 KiB: root registers memory past any memlock limit (CAP_IPC_LOCK), so the capability goes too
( ulimit -l 64
  timeout 120 setpriv --bounding-set=-ipc_lock --inh-caps=-ipc_lock env -i "${BASE_ENV[@]}" "$HCA_B" \
      "$PY" -m rdmacheck preflight -q --only rdma.datapath,limits.memlock --env "$ENVFILE" --json "$D/memlock.json" \
      > "$D/memlock.out" 2>&1; echo $? > "$D/memlock.rc" ) &
mem=$!
wait $perm; echo $? > "$D/perm.rc"
wait $mem
chmod 666 "/dev/infiniband/$N"
stamp datapath-device

# the mesh address on a VLAN at MTU 1500 over the 9000 base netdev (a short name: IFNAMSIZ is 16)
V=vlan100
ip link add link $A name $V type vlan id 100 && ip link set $V mtu 1500 up
ip addr del $IPA/24 dev $A; ip addr add $IPA/24 dev $V
for _ in $(seq 1 100); do grep -qs "$V" /sys/class/infiniband/$DA/ports/1/gid_attrs/ndevs/* && break; sleep 0.1; done
rdmacheck "$D/vlan" "${SRV_ENV[@]}" -- preflight -q --only rdma.mtu,rdma.gid --env "$ENVFILE" --json "$D/vlan.json"
gid_table $DA > "$D/gid_table_vlan.txt"
ip addr del $IPA/24 dev $V; ip link del $V; ip addr add $IPA/24 dev $A
wait_gid $DA 1 present
stamp datapath-vlan
