#!/usr/bin/env bash
# A full softmax on several ranks with its items shared out between them
# (train.shard_item_encoding true, docs/training.md "A full softmax shared
# out") against every rank encoding every item (false): seconds per
# training step of the same run, the two alternated (bench/README.md).
# Usage: bench/shard_items.sh [ROUNDS=2] [STEPS=30] -- TRAIN ARGUMENTS...
#   bench/shard_items.sh 2 30 -- -c configs/games.yaml --set model.bert.pretrained=DIR --set model.lora.r=0
# Each run: launch/mpirun.sh -n ${RANKS:-2} -b none -- train ARGUMENTS
# --stop-after STEPS in a scratch run.dir; the figure is the time between
# the log lines of steps 10 and STEPS over STEPS - 10 (start-up left out).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=${1:-2}
steps=${2:-30}
shift $(($# >= 2 ? 2 : $#))
[[ ${1:-} == -- ]] && shift
if [[ $# -eq 0 || $steps -le 10 ]]; then
  echo "usage: bench/shard_items.sh [ROUNDS] [STEPS > 10] -- TRAIN ARGUMENTS..." >&2
  exit 2
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
per_step() {  # seconds per step between the log lines of steps 10 and $steps
  python3 - "$1" "$steps" <<'PY'
import re, sys
from datetime import datetime
t = {}
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"(\S+ \S+) \[rank 0/\d+\] info step (\d+)/", line)
    if m: t[int(m.group(2))] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
last = int(sys.argv[2])
if 10 not in t or last not in t:
    sys.exit(f"{sys.argv[1]}: no log lines of steps 10 and {last} (train.log_every must divide both)")
print(f"{(t[last] - t[10]).total_seconds() / (last - 10):.3f}")
PY
}
declare -A runs
for i in $(seq 1 "$rounds"); do
  for shard in true false; do
    log="$out/${shard}_$i.log"
    "$here/launch/mpirun.sh" -n "${RANKS:-2}" -b none -- train "$@" --set run.dir="$out/run" \
      --set train.shard_item_encoding=$shard --set train.log_every=10 --set train.progress=false \
      --stop-after "$steps" >"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
    rm -rf "$out/run"
    runs[$shard]+=" $(per_step "$log")"
  done
done
echo "seconds per step, steps 10-$steps, ${RANKS:-2} ranks: shared out${runs[true]}; every rank all items${runs[false]}"
