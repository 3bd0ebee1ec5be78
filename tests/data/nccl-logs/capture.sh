#!/usr/bin/env bash
# How the h100x2-*.txt/.log excerpts beside this script were produced (provenance, and the command to redo them).
# Run as root from the repository root on a machine with 2 GPUs and no RDMA NIC:
#     OUT=/tmp/nccl-capture bash tests/data/nccl-logs/capture.sh
# 0) rdmacheck preflight --json (cross-referenced by the path proof's socket fall-back causes).
# 1) one node, two ranks (--nproc 2): NCCL's intra-node paths (NVLink: P2P/CUMEM or P2P/IPC).
# 2) two "nodes" of one GPU each, NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 so NCCL must use its network; with
#    no RDMA NIC that is NET/Socket, and bench.transport must fail with that diagnosis.  Where namespaces
#    can be made, each node is one with its own host name, joined by a veth pair (MTU 9000, 10.199.0.0/24),
#    so bench.wire counts NCCL's bytes on the veth; else both use loopback.  The 2026-11-27 capture ran with
#    BUSYBOX=.p5tools/busybox (Debian's busybox-static 1.35, carried: that GPU image has no `ip`).
# The runs use the path-proof hook: NCCL_DEBUG=INFO, NCCL_DEBUG_SUBSYS=INIT,NET,GRAPH,
# NCCL_DEBUG_FILE=<dir>/nccl.%h.%p.log.  Everything lands in $OUT/capture.tgz.
set -u
OUT=${OUT:-/tmp/nccl-capture}
W=$(mktemp -d)
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
HOOK=(--hook rdmacheck.bench.path_proof:install)
SIZES=(--sizes 1M,64M --iters 20 --warmup 2)
{ nvidia-smi -L; python3 -c 'import torch; print("torch", torch.__version__, "gpus", torch.cuda.device_count(), "nccl", torch.cuda.nccl.version())'; } > "$W/env.txt" 2>&1
timeout 60 python3 -m rdmacheck preflight --json "$W/preflight.json" > "$W/preflight.out" 2>&1
echo "preflight rc=$?" >> "$W/env.txt"
RDMACHECK_PATH_DIR=$W/nvlink timeout 300 python3 -m rdmacheck bench --nproc 2 "${SIZES[@]}" "${HOOK[@]}" \
    --json "$W/nvlink.json" > "$W/nvlink.out" 2>&1
echo "nvlink rc=$?" >> "$W/env.txt"

port=29655
# Two "nodes": each a holder process with its own network, UTS and mount namespaces (own host name, and a
# sysfs mounted inside so /sys/class/net shows that namespace's interfaces, as `ip netns exec` does),
# joined by a veth pair.  iproute2 when present, else a static busybox ($BUSYBOX): GPU images often lack `ip`.
IPT=""
if command -v ip >/dev/null; then IPT="ip"; elif [ -x "${BUSYBOX:-}" ]; then IPT="$BUSYBOX ip"; fi
H=()
if [ -n "$IPT" ] && command -v nsenter >/dev/null; then
  unshare --net --uts --mount sleep 900 & H+=($!)
  unshare --net --uts --mount sleep 900 & H+=($!)
  sleep 0.5
  nsenter -t ${H[0]} -n $IPT link add vA type veth peer name vB
  peer=$(nsenter -t ${H[0]} -n $IPT -o link | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -v -x -e lo -e vA | head -1)
  nsenter -t ${H[0]} -n $IPT link set "$peer" netns ${H[1]}
  nsenter -t ${H[1]} -n $IPT link set "$peer" name vB
  IFS_=(vA vB); ADDR=(10.199.0.1 10.199.0.2)
  for i in 0 1; do
    nsenter -t ${H[$i]} -n $IPT link set lo up
    nsenter -t ${H[$i]} -n $IPT link set ${IFS_[$i]} mtu 9000
    nsenter -t ${H[$i]} -n $IPT addr add ${ADDR[$i]}/24 dev ${IFS_[$i]}
    nsenter -t ${H[$i]} -n $IPT link set ${IFS_[$i]} up
    nsenter -t ${H[$i]} -u hostname node-$i
    nsenter -t ${H[$i]} -n -m mount -t sysfs sysfs /sys
  done
  echo "socket run: two namespaces (net+uts+mount) over a veth pair, MTU 9000, with $IPT" >> "$W/env.txt"
else
  IFS_=(lo lo); ADDR=(127.0.0.1 127.0.0.1)
  echo "socket run: loopback (no ip tool or nsenter here)" >> "$W/env.txt"
fi
pids=()
for r in 0 1; do
  cmd=(env CUDA_VISIBLE_DEVICES=$r NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_SOCKET_IFNAME=${IFS_[$r]}
       GLOO_SOCKET_IFNAME=${IFS_[$r]} RDMACHECK_PATH_DIR=$W/socket RDMACHECK_PREFLIGHT=$W/preflight.json
       timeout 300 torchrun --nnodes 2 --nproc-per-node 1 --node-rank $r
       --rdzv-backend c10d --rdzv-endpoint ${ADDR[0]}:$port --rdzv-id cap$port --rdzv-conf is_host=$((1 - r))
       --local-addr ${ADDR[$r]} --max-restarts 0
       -m rdmacheck bench "${SIZES[@]}" "${HOOK[@]}" --json "$W/socket.json")
  if [ ${#H[@]} -eq 2 ]; then
    nsenter -t ${H[$r]} -n -u -m "${cmd[@]}" > "$W/socket.$r.out" 2>&1 &
  else
    "${cmd[@]}" > "$W/socket.$r.out" 2>&1 &
  fi
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; echo "socket pid $p rc=$?" >> "$W/env.txt"; done
[ ${#H[@]} -eq 2 ] && kill "${H[@]}"
mkdir -p "$OUT"
tar czf "$OUT/capture.tgz" -C "$W" .
cat "$W/env.txt"
