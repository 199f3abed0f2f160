#!/usr/bin/env bash
# llmrec next to the PyTorch peer (../shared/peers/torch_ddp_bench.py) on
# bench-tiny, alternating runs, medians and ratios (bench/README.md):
#   train, 2 ranks x 1 thread; train, 1 rank x 2 threads; encode, 1 x 2 threads.
# Usage: bench/compare_peers.sh [REPEATS=3] [WORKLOAD=bench-tiny]
#   WORKLOAD bench-tiny-seq: the causal user tower with a loss at every
#   position, against the peer's --user causal (train only: its item tower
#   and hence its encoding are bench-tiny's).
#   WORKLOAD mlm-tiny: masked-LM pre-training, `llmrec bench pretrain`
#   against ../shared/peers/torch_mlm_bench.py (sequences/s).
# Needs python3-torch: apt-get install python3-torch.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${LLMREC_BIN:-$here/build/llmrec}
peer=${PEER:-$here/../shared/peers/torch_ddp_bench.py}
reps=${1:-3}
workload=${2:-bench-tiny}
ours_cmd=(bench train --workload "$workload"); key=examples_per_s
case "$workload" in
  bench-tiny) peer_args=(--user attention) ;;
  bench-tiny-seq) peer_args=(--user causal) ;;
  mlm-tiny) peer=${PEER:-$here/../shared/peers/torch_mlm_bench.py}; peer_args=(); ours_cmd=(bench pretrain); key=sequences_per_s ;;
  *) echo "compare_peers.sh: workload must be bench-tiny, bench-tiny-seq or mlm-tiny, got '$workload'" >&2; exit 2 ;;
esac
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
root=(); [[ $EUID -eq 0 ]] && root=(--allow-run-as-root)
field() { python3 -c "import json,sys; print(json.loads([l for l in open(sys.argv[1]) if l.startswith('{')][-1])[sys.argv[2]])" "$1" "$2"; }
for i in $(seq 1 "$reps"); do
  mpirun "${root[@]}" --oversubscribe -np 2 -x OMP_NUM_THREADS=1 "$bin" "${ours_cmd[@]}" \
    --set run.dir="$out/r" --set run.threads=1 2>/dev/null | grep '^{' >"$out/ours_2x1_$i.json"
  /usr/bin/python3 "$peer" "${peer_args[@]}" 2>/dev/null | grep '^{' >"$out/peer_2x1_$i.json"
  OMP_NUM_THREADS=2 "$bin" "${ours_cmd[@]}" --set run.dir="$out/r" --set run.threads=2 2>/dev/null |
    grep '^{' >"$out/ours_1x2_$i.json"
  /usr/bin/python3 "$peer" "${peer_args[@]}" --world-size 1 --threads 2 2>/dev/null | grep '^{' >"$out/peer_1x2_$i.json"
  if [[ $workload == bench-tiny ]]; then
    OMP_NUM_THREADS=2 "$bin" bench export --set run.dir="$out/r" --set run.threads=2 2>/dev/null | grep '^{' >"$out/ours_enc_$i.json"
    /usr/bin/python3 "$peer" --mode encode 2>/dev/null | grep '^{' >"$out/peer_enc_$i.json"
  fi
done
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
report() {  # name ours-prefix peer-prefix key
  local o p
  o=$(for i in $(seq 1 "$reps"); do field "$out/$2_$i.json" "$4"; done | median)
  p=$(for i in $(seq 1 "$reps"); do field "$out/$3_$i.json" "$4"; done | median)
  printf '%-28s llmrec %10.1f   peer %10.1f   ratio %.2fx   (%s, runs: llmrec %s; peer %s)\n' "$1" "$o" "$p" \
    "$(python3 -c "print($o / $p)")" "$4" \
    "$(for i in $(seq 1 "$reps"); do printf '%.1f ' "$(field "$out/$2_$i.json" "$4")"; done)" \
    "$(for i in $(seq 1 "$reps"); do printf '%.1f ' "$(field "$out/$3_$i.json" "$4")"; done)"
}
report "train 2 ranks x 1 thread" ours_2x1 peer_2x1 "$key"
report "train 1 rank x 2 threads" ours_1x2 peer_1x2 "$key"
[[ $workload == bench-tiny ]] && report "encode 1 x 2 threads" ours_enc peer_enc items_per_s
for k in achieved_gflops sgemm1024_gflops_all_ranks mfu; do
  printf 'llmrec 2x1 %-26s %s\n' "$k" "$(for i in $(seq 1 "$reps"); do field "$out/ours_2x1_$i.json" "$k"; done | median)"
  printf 'llmrec 1x2 %-26s %s\n' "$k" "$(for i in $(seq 1 "$reps"); do field "$out/ours_1x2_$i.json" "$k"; done | median)"
done
ours_keys=(step_ms_median forward_ms_median backward_ms_median comm_wait_ms_median peak_rss_mb)
[[ $workload == mlm-tiny ]] && ours_keys=(step_ms_median comm_wait_ms_median allreduce_alone_ms_median allreduce_hidden_share peak_rss_mb)
for k in "${ours_keys[@]}"; do
  printf 'llmrec 2x1 %-22s %s\n' "$k" "$(for i in $(seq 1 "$reps"); do field "$out/ours_2x1_$i.json" "$k"; done | median)"
done
for k in step_ms_median forward_ms_median backward_allreduce_ms_median peak_rss_mb; do
  printf 'peer   2x1 %-22s %s\n' "$k" "$(for i in $(seq 1 "$reps"); do field "$out/peer_2x1_$i.json" "$k"; done | median)"
done
