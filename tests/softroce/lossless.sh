# Sourced by session.sh after the data-path block (policy routing joins the two rxe devices): the lossless
# verdict on real rxe counters.  Three ib_write_bw transfers, the counter files mirrored before and after
# each (as the kernel wrote them; the host runs `rdmacheck counters --before --after` on them):
#   clean   nothing in the way                                   -> lossless
#   loss    tc netem loss 1% on the client's netdev ($B)         -> lossy: real retransmits, no pause
#   drop    iptables drops UDP 4791 (RoCE v2) on INPUT            -> the server port gets 0 packets while its
#                                                                   netdev receives the frames
# tests/test_softroce_lossless.py judges $O/lossless/<run>/...
LO="$O/lossless"; mkdir -p "$LO"
# 150 writes of 64 KiB: ~2,400 packets at MTU 4096, so netem's 1% drops ~24 of them (the loss run waits out
# one ACK timeout per lost tail packet: session.sh's WRITE_N=1000 made that run 126 s on a quiet machine)
N="${LOSSLESS_N:-150}"; S="${WRITE_S:-65536}"
# tx depth 32 (perftest's default 128): a busy emulated guest let rxe itself drop packets of a 128-deep burst
# (seen: a "clean" run with out_of_seq_request +9 and no netdev drop); the verdict said lossy, as it should
T="${WRITE_T:-32}"
modprobe -a sch_netem
XA=$(ipv4_gid_index $DA $IPA); XB=$(ipv4_gid_index $DB $IPB)
echo "$XA $XB" > "$LO/gid_index.txt"

mirror() {  # the counter files, rxe's parent (the port's netdev) and the GID ndevs, copied as read
    # (a mkdir only when the folder changes: a fork per file cost ~10 s per mirror under TCG)
    local dst="$1" f v d last=""
    for f in /sys/class/infiniband/*/ports/*/hw_counters/* /sys/class/infiniband/*/parent \
             /sys/class/infiniband/*/ports/1/gid_attrs/ndevs/0 /sys/class/net/$A/statistics/* \
             /sys/class/net/$B/statistics/*; do
        [ -f "$f" ] || continue
        d="$dst${f%/*}"
        [ "$d" = "$last" ] || { mkdir -p "$d"; last="$d"; }
        v=""; read -r v < "$f" 2>/dev/null
        printf '%s\n' "$v" > "$dst$f"
    done
}
transfer() {  # transfer NAME PORT TIMEOUT_EXP [LIMIT_S]: one ib_write_bw, counters mirrored around it
    local R="$LO/$1" port=$2 u=$3 lim=${4:-150} t0 t1 srv i
    mkdir -p "$R"
    mirror "$R/before"
    t0=$(date +%s.%N)
    timeout "$lim" ib_write_bw -F -d $DA -x "$XA" -u "$u" -t "$T" -p "$port" --report_gbits -n $N -s $S > "$R/server.txt" 2>&1 &
    srv=$!
    for i in $(seq 600); do listening "$port" && break; kill -0 $srv 2>/dev/null || break; sleep 0.1; done
    timeout "$lim" ib_write_bw -F -d $DB -x "$XB" -u "$u" -t "$T" -p "$port" --report_gbits -n $N -s $S $IPA > "$R/client.txt" 2>&1
    echo $? > "$R/client.rc"
    wait $srv; echo $? > "$R/server.rc"
    sleep 0.5   # trailing ACKs
    t1=$(date +%s.%N)
    mirror "$R/after"
    echo "$t0 $t1" > "$R/window.txt"
    echo "$N $S" > "$R/params.txt"
    ip -s link show > "$R/ip_s_link.txt" 2>&1
    stamp "$1"
}

# -u 20: QP timeout 4 us x 2^20 = 4.3 s, longer than an ACK's trip through a busy emulated guest (docs/softroce.md)
transfer clean 18516 20
tc qdisc add dev $B root netem loss 1%
tc -s qdisc show dev $B > "$LO/netem.txt" 2>&1
transfer loss 18517 20
tc -s qdisc show dev $B >> "$LO/netem.txt" 2>&1
tc qdisc del dev $B root
iptables -A INPUT -p udp --dport 4791 -j DROP
iptables -L INPUT -v -n -x > "$LO/iptables_before.txt" 2>&1
# nothing gets through: rxe's requester retransmits (completer_retry_err) until timeout(1) ends both ends after
# 20 s (seen: retry_exceeded_err never came; 906 MB reached veth0 in 155 s, so 20 s brings far more than the
# 100 kB the test asks of the netdev)
transfer drop 18518 14 20
iptables -L INPUT -v -n -x > "$LO/iptables.txt" 2>&1
iptables -D INPUT -p udp --dport 4791 -j DROP
stamp lossless-end
echo done > "$LO/done"
