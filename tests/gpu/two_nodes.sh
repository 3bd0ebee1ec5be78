#!/usr/bin/env bash
# Two NCCL "nodes" on one GPU (docs/gpu-two-nodes.md): the GPU suite and, given an nccl-tests build, the
# side-by-side benchmark, with the MPS control daemon running for the length of the run.
#
#   bash tests/gpu/two_nodes.sh OUTDIR [--suite] [--vs ALL_REDUCE_PERF] [--rounds N] [--max-size E] [-- PYTEST_ARGS...]
#
# --suite (the default when neither is named): python3 -m pytest -m gpu tests/test_gpu_two_nodes.py, evidence,
#   logs and the report kept in OUTDIR/suite (RDMACHECK_GPU_OUT).  Ray must be importable for the cluster tests
#   (python3 -m pip install -e '.[cluster]', or a PYTHONPATH that has it).
# --vs BINARY: benchmarks/vs_nccl_tests.py --nodes 2 against an all_reduce_perf built with MPI=1 (build it
#   yourself from the public nccl-tests sources; this repository ships none), 1K..E (default 1G), results in OUTDIR/vs.
# Changes no GPU setting: MPS is a user-space daemon, started here only when none answers, stopped at the end.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: bash tests/gpu/two_nodes.sh OUTDIR [--suite] [--vs ALL_REDUCE_PERF] [--rounds N] [-- PYTEST_ARGS]}
shift
suite=0; vs=""; rounds=3; maxsize=1G; extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --suite) suite=1 ;;
        --vs) vs=$2; shift ;;
        --rounds) rounds=$2; shift ;;
        --max-size) maxsize=$2; shift ;;
        --) shift; extra=("$@"); break ;;
        *) echo "two_nodes.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ -z "$vs" ] && suite=1
mkdir -p "$out"
out=$(cd "$out" && pwd)

# NVLink multicast stays off: on shared machines it can take the host's GPUs down
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

started_mps=0
mps_up() { echo get_server_list | nvidia-cuda-mps-control >/dev/null 2>&1; }
export CUDA_MPS_PIPE_DIRECTORY=${CUDA_MPS_PIPE_DIRECTORY:-/tmp/rdmc-mps/pipe}
export CUDA_MPS_LOG_DIRECTORY=${CUDA_MPS_LOG_DIRECTORY:-/tmp/rdmc-mps/log}
if ! mps_up; then
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    nvidia-cuda-mps-control -d || { echo "two_nodes.sh: could not start the MPS control daemon" >&2; exit 1; }
    started_mps=1
fi
stop_mps() { if [ "$started_mps" = 1 ]; then echo quit | nvidia-cuda-mps-control; fi; }
trap stop_mps EXIT
echo "two_nodes.sh: MPS control daemon $([ $started_mps = 1 ] && echo started || echo already running) ($CUDA_MPS_PIPE_DIRECTORY)"
nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv | tee "$out/gpu.csv"

rc=0
if [ "$suite" = 1 ]; then
    mkdir -p "$out/suite"
    RDMACHECK_GPU_OUT="$out/suite" timeout 900 python3 -m pytest -q -m gpu -p no:cacheprovider \
        -o addopts="-ra --durations=20" tests/test_gpu_two_nodes.py "${extra[@]}" 2>&1 | tee "$out/suite.log"
    rc=${PIPESTATUS[0]}
fi
if [ -n "$vs" ]; then
    timeout 900 python3 benchmarks/vs_nccl_tests.py --nodes 2 --nccl-tests "$vs" --rounds "$rounds" -e "$maxsize" --out "$out/vs" \
        2>&1 | tee "$out/vs.log"
    vrc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] && rc=$vrc
fi
exit "$rc"
