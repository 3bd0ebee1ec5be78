# Issue 17 (right verdicts on real fabrics), sourced by tests/softroce/session.sh in the one guest boot.
# Judged by tests/test_softroce_verdicts.py.  Everything lands in $O/i17/; the good state (MTU 9000,
# 192.168.100.1/24 on $A, .2/24 on $B, both links up) is restored at the end.
# Ground truth is written next to each run (GID tables, ibv_devinfo, ip addr) so the tests derive their
# expectations from the guest itself.
V="$O/i17"; mkdir -p "$V"
REF_ENV="$REPO/docker/.env.example"
gids_of() {  # gids_of DEV FILE: the non-zero GID entries with their types (index gid type)
    local d="/sys/class/infiniband/$1/ports/1" f g t i
    for f in "$d"/gids/*; do
        read -r g < "$f" 2>/dev/null || continue
        [ "$g" = $ZERO_GID ] && continue
        i=${f##*/}; t=""; read -r t < "$d/gid_attrs/types/$i" 2>/dev/null
        echo "$i $g $t"
    done > "$2"
}
wait_gid_value() {  # wait_gid_value DEV PREFIX: a GID starting with PREFIX appears (IPv6 addresses)
    local i
    for i in $(seq 80); do
        grep -q "^$2" /sys/class/infiniband/$1/ports/1/gids/* 2>/dev/null && return 0
        sleep 0.1
    done
    echo "no GID $2 on $1 after 8 s"; return 1
}
SHM_KB=$(df -k --output=size /dev/shm | tail -1 | tr -d ' ')
ONLY_NET=rdma.devices,rdma.port,rdma.netdev,rdma.gid,rdma.mtu,nccl.env,net.peer

# ---- 1. the reference docker/.env.example on a correctly configured node -----------------------------
# The reference node has memlock unlimited, a 64 MiB stack and a /dev/shm of at least 1 GiB; this guest
# inherits 8 MiB limits and a 982 MiB /dev/shm.  Raised here for this run only (a subshell for the limits,
# a remount for /dev/shm, restored below), as the reference node is set up: the limits gates then judge
# the real values the kernel reports, not a waiver.
mount -o remount,size=1100M /dev/shm
getent hosts spark-01-mesh > "$V/hosts.txt" 2>&1
gids_of $DA "$V/gids_good_$DA.txt"
ip -j addr show > "$V/ip_addr_good.json"
( ulimit -l unlimited && ulimit -s 65536 && ulimit -l > "$V/ref_memlock.txt" && \
  rdmacheck "$V/ref" -- preflight -q --env "$REF_ENV" --json "$V/ref.json" ) &
# NCCL_IB_ROCE_VERSION_NUM=1 on a v2-only (rxe) table: the remedy is the variable
rdmacheck "$V/rocev1" NCCL_IB_ROCE_VERSION_NUM=1 -- preflight -q --env "$ENVFILE" --only rdma.gid --json "$V/rocev1.json" &
# NCCL_IB_GID_INDEX=-1: NCCL's own automatic selection, not an "empty entry"
rdmacheck "$V/gidauto" NCCL_IB_GID_INDEX=-1 -- preflight -q --env "$ENVFILE" --only rdma.gid,nccl.env --json "$V/gidauto.json" &
# The other node's names (B): GLOO_SOCKET_IFNAME wrong -> the remedy names NCCL_SOCKET_IFNAME's netdev ($B),
# not the first interface in address order ($A)
rdmacheck "$V/gloo" NCCL_IB_HCA="=$DB:1" NCCL_SOCKET_IFNAME=$B GLOO_SOCKET_IFNAME=lo MASTER_ADDR=$IPA \
    -- preflight -q --env "$ENVFILE" --only nccl.env --json "$V/gloo.json" &
rdmacheck "$V/gloo_a" GLOO_SOCKET_IFNAME=lo -- preflight -q --env "$ENVFILE" --only nccl.env --json "$V/gloo_a.json" &
wait
mount -o remount,size=${SHM_KB}k /dev/shm
stamp "i17 reference + env spellings"

# ---- 2. a stray address before the mesh address: NCCL's bootstrap advertises the stray one -------------
ip addr del $IPA/24 dev $A; wait_gid $DA 1 absent
ip addr add 10.99.0.1/24 dev $A; ip addr add $IPA/24 dev $A
wait_gid $DA 1 present; wait_gid $DA 2 present
ip -j addr show dev $A > "$V/ip_addr_stray.json"
gids_of $DA "$V/gids_stray_$DA.txt"
rdmacheck "$V/stray" -- preflight -q --env "$ENVFILE" --only nccl.env,rdma.gid --json "$V/stray.json"
ip addr del 10.99.0.1/24 dev $A
ip addr del $IPA/24 dev $A 2>/dev/null; ip addr add $IPA/24 dev $A
wait_gid $DA 1 present
stamp "i17 stray address"

# ---- 3. an IPv6 mesh: NCCL_IB_ADDR_FAMILY=AF_INET6, --expect subnet=fd00:100::/64 ----------------------
sysctl -qw net.ipv6.conf.$A.disable_ipv6=0 net.ipv6.conf.$B.disable_ipv6=0
ip addr del $IPA/24 dev $A; ip addr del $IPB/24 dev $B
ip -6 addr add fd00:100::1/64 dev $A nodad; ip -6 addr add fd00:100::2/64 dev $B nodad
wait_gid_value $DA fd00:0100
gids_of $DA "$V/gids_v6_$DA.txt"
ip -j addr show > "$V/ip_addr_v6.json"
rdmacheck "$V/ipv6" NCCL_IB_ADDR_FAMILY=AF_INET6 MASTER_ADDR=fd00:100::1 "RAY_ADDRESS=[fd00:100::1]:6379" \
    -- preflight -q --env "$ENVFILE" --expect subnet=fd00:100::/64 --only $ONLY_NET --json "$V/ipv6.json"
ip -6 addr del fd00:100::1/64 dev $A; ip -6 addr del fd00:100::2/64 dev $B
ip addr add $IPA/24 dev $A; ip addr add $IPB/24 dev $B
wait_gid $DA 1 present && wait_gid $DB 1 present
stamp "i17 ipv6"

# ---- 4. a down twin, as on DGX Spark (rocep1s0f1 -> enp1s0f1np1 Down): NCCL skips it --------------------
ip link add enp1s0f1np1 type veth peer name enp1s0f1np1x
rdma link add rocep1s0f1 type rxe netdev enp1s0f1np1
rdma link show > "$V/rdma_link_twin.txt" 2>&1
ibv_devinfo -d rocep1s0f1 > "$V/ibv_devinfo_twin.txt" 2>&1
rdmacheck "$V/twin_prefix" NCCL_IB_HCA=roce -- preflight -q --env "$ENVFILE" --only $ONLY_NET --json "$V/twin_prefix.json" &
rdmacheck "$V/twin_unset" NCCL_IB_HCA= -- preflight -q --env "$ENVFILE" --only rdma.port,nccl.env --json "$V/twin_unset.json" &
rdmacheck "$V/twin_pinned" NCCL_IB_HCA=rocep1s0f1 -- preflight -q --env "$ENVFILE" --only rdma.port --json "$V/twin_pinned.json" &
wait
rdma link delete rocep1s0f1; ip link del enp1s0f1np1
stamp "i17 down twin"

# ---- 5. the mesh link down: rdma.port names the netdev, net.peer does not pass the own address ----------
ip link set $A down
cat /sys/class/infiniband/$DA/ports/1/state > "$V/linkdown_state.txt" 2>&1
rdmacheck "$V/linkdown" -- preflight -q --env "$ENVFILE" --only rdma.port,net.peer --json "$V/linkdown.json"
ip link set $A up
wait_gid $DA 1 present
stamp "i17 link down"

# ---- 6. rxe's RoCE MTU overhead: netdev 4176 -> active MTU 4096 (mlx5's 88 bytes would give 2048) -------
ip link set $A mtu 4176; ip link set $B mtu 4176
ibv_devinfo -d $DA > "$V/ibv_devinfo_4176.txt" 2>&1
ip link set $A mtu 4175; ip link set $B mtu 4175
ibv_devinfo -d $DA > "$V/ibv_devinfo_4175.txt" 2>&1
ip link set $A mtu 9000; ip link set $B mtu 9000
stamp "i17 mtu overhead"
