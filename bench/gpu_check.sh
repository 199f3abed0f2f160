#!/usr/bin/env bash
# The GPU check of docs/performance.md, as one script for a node with an
# NVIDIA GPU, NCCL and a CUDA LibTorch:
#
#   bench/gpu_check.sh [OUT_DIR]        # default: bench/gpu-results
#
# 1. configures and builds llmrec against the CUDA LibTorch ($LIBTORCH, else
#    the one of an installed PyTorch) in build-cuda/;
# 2. llmrec --version (LibTorch CUDA, NCCL);
# 3. single-GPU training throughput and memory for bench-small, fp32 and
#    bf16 (`llmrec bench train --workload bench-small --set run.device=cuda`),
#    peak GPU memory sampled with nvidia-smi;
# 4. bf16 vs fp32 loss agreement: the same seed and batches, loss after
#    20 steps of bench-tiny in both precisions;
# 5. NCCL all-reduce bus bandwidth (`bench allreduce`) when the node has 2+
#    GPUs (one rank per GPU; NCCL refuses two ranks on one GPU).
# Every figure is a JSON line in OUT_DIR/gpu.jsonl; the log in OUT_DIR/gpu.log.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$here/bench/gpu-results}
mkdir -p "$out"
log=$out/gpu.log
jsonl=$out/gpu.jsonl
: >"$jsonl"
say() { echo "== $*" | tee -a "$log"; }

command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: not a GPU node" | tee -a "$log"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$log"
gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)

prefix=${LIBTORCH:-}
if [[ -z $prefix ]]; then
  prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
fi
[[ -n $prefix ]] || { echo "no CUDA LibTorch: set LIBTORCH=/path/to/libtorch" | tee -a "$log"; exit 2; }
say "configure against $prefix"
cmake -S "$here" -B "$here/build-cuda" -DCMAKE_BUILD_TYPE=Release -DLLMREC_BUILD_TESTS=OFF \
  -DCMAKE_PREFIX_PATH="$prefix" -DLLMREC_CUDA=ON >>"$log" 2>&1 || { echo "configure failed (see $log)"; exit 1; }
cmake --build "$here/build-cuda" -j"$(nproc)" --target llmrec >>"$log" 2>&1 || { echo "build failed (see $log)"; exit 1; }
bin=$here/build-cuda/llmrec
"$bin" --version | tee -a "$log"

# Peak GPU memory while a command runs (MiB, all GPUs).
with_gpu_memory() {
  local samples=$out/mem.$$
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$samples" 2>/dev/null &
  local sampler=$!
  "$@"
  local rc=$?
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
  echo "{\"bench\": \"gpu_memory\", \"command\": \"$*\", \"peak_mib\": $(sort -n "$samples" | tail -1)}" >>"$jsonl"
  rm -f "$samples"
  return $rc
}

for precision in fp32 bf16; do
  say "bench-small training, 1 GPU, $precision"
  with_gpu_memory "$bin" bench train --workload bench-small --steps 30 --warmup 5 \
    --set run.device=cuda --set run.precision=$precision >>"$jsonl" 2>>"$log"
done

say "bf16 vs fp32 loss after 20 steps of bench-tiny (same seed, same batches)"
for precision in fp32 bf16; do
  "$bin" bench train --workload bench-tiny --steps 20 --warmup 0 --set run.device=cuda \
    --set run.precision=$precision >>"$jsonl" 2>>"$log"
done

if [[ $gpus -ge 2 ]]; then
  say "NCCL all-reduce, 2 ranks on 2 GPUs"
  mpirun --allow-run-as-root -np 2 -x OMP_NUM_THREADS=1 "$bin" bench allreduce --max-mb 256 \
    --set run.device=cuda >>"$jsonl" 2>>"$log"
else
  say "1 GPU: no NCCL all-reduce figure (needs 2 GPUs)"
fi
say "figures: $jsonl"
cat "$jsonl"
