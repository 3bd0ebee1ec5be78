#!/usr/bin/env bash
# How the h100x2-*.txt excerpts beside this script were produced (provenance, and the command to redo them).
# Run from the repository root on a machine with 2 GPUs and no RDMA NIC:
#     OUT=/tmp/nccl-capture bash tests/data/nccl-logs/capture.sh
# 1) one node, two ranks (--nproc 2): NCCL's intra-node paths (NVLink: P2P/CUMEM or P2P/IPC).
# 2) two "nodes" of one GPU each (two torchrun agents, c10d rendezvous on loopback) with
#    NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1, so NCCL must use its network; with no RDMA NIC that is NET/Socket
#    and bench.transport must fail with that diagnosis.
# Both runs use the path-proof hook, which sets NCCL_DEBUG=INFO, NCCL_DEBUG_SUBSYS=INIT,NET,GRAPH and
# NCCL_DEBUG_FILE=<dir>/nccl.%h.%p.log.  Everything lands in $OUT/capture.tgz.
set -u
OUT=${OUT:-/tmp/nccl-capture}
W=$(mktemp -d)
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
HOOK=(--hook rdmacheck.bench.path_proof:install)
SIZES=(--sizes 1M,64M --iters 20 --warmup 2)
{ nvidia-smi -L; python3 -c 'import torch; print("torch", torch.__version__, "gpus", torch.cuda.device_count(), "nccl", torch.cuda.nccl.version())'; } > "$W/env.txt" 2>&1
RDMACHECK_PATH_DIR=$W/nvlink timeout 300 python3 -m rdmacheck bench --nproc 2 "${SIZES[@]}" "${HOOK[@]}" \
    --json "$W/nvlink.json" > "$W/nvlink.out" 2>&1
echo "nvlink rc=$?" >> "$W/env.txt"
port=29655
pids=()
for r in 0 1; do
  CUDA_VISIBLE_DEVICES=$r NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_SOCKET_IFNAME=lo GLOO_SOCKET_IFNAME=lo \
  RDMACHECK_PATH_DIR=$W/socket timeout 300 torchrun --nnodes 2 --nproc-per-node 1 --node-rank $r \
      --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:$port --rdzv-id cap$port --rdzv-conf is_host=$((1 - r)) \
      --local-addr 127.0.0.1 --max-restarts 0 \
      -m rdmacheck bench "${SIZES[@]}" "${HOOK[@]}" --json "$W/socket.json" > "$W/socket.$r.out" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; echo "socket pid $p rc=$?" >> "$W/env.txt"; done
mkdir -p "$OUT"
tar czf "$OUT/capture.tgz" -C "$W" .
cat "$W/env.txt"
