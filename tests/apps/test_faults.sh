#!/usr/bin/env bash
# Fault injection: what a user sees when a rank dies or stalls, when Slurm
# sends SIGTERM, when the disk fills during a checkpoint, and when a dataset
# file is damaged. Each check asserts the message, the exit code, the time
# to fail and that no process is left behind.
# Usage: test_faults.sh path/to/llmrec path/to/source
set -uo pipefail
bin=$(realpath "$1")
src=$(realpath "$2")
work=$(mktemp -d)
mounted=""
cleanup() {
  pkill -9 -f "llmrec_faults_$$" 2>/dev/null
  [[ -n "$mounted" ]] && umount "$mounted" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
# shellcheck source=cli_lib.sh
source "$src/tests/apps/cli_lib.sh"
tag="llmrec_faults_$$"  # in every run.dir, so pgrep finds exactly our processes

tiny_setup "$work"

# The ranks of a running job: "pid rank" lines.
ranks_of() {
  for p in $(pgrep -f "run.dir=$1"); do
    [[ -r /proc/$p/environ ]] || continue
    r=$(tr '\0' '\n' </proc/"$p"/environ | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
    [[ -n "$r" ]] && echo "$p $r"
  done
}
# Waits until run.dir $1 has written its first metrics line.
wait_steps() { for _ in $(seq 1 300); do grep -q '"step"' "$1/metrics.jsonl" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
# Runs training on 2 ranks in the background into run.dir $1 (extra args after).
start2() {
  local dir=$1; shift
  mpirun "${root[@]}" --oversubscribe -np 2 -x OMP_NUM_THREADS=1 "$bin" train -c tiny.yaml \
    --set run.dir="$dir" "$@" >"$dir.txt" 2>&1 &
  job=$!
}
leftover() { pgrep -f "run.dir=$1" >/dev/null; }

# 1. A rank killed with SIGKILL mid-step: the job ends at once, naming the
#    lost rank; non-zero exit; nothing left running.
start2 "kill_$tag" --set train.max_steps=100000 --set comm.timeout_s=10
if wait_steps "kill_$tag"; then
  victim=$(ranks_of "kill_$tag" | awk '$2 == 1 {print $1}')
  t0=$(date +%s)
  kill -KILL "$victim"
  wait $job; rc=$?
  took=$(( $(date +%s) - t0 ))
  if [[ $rc -ne 0 && $took -le 30 ]] && ! leftover "kill_$tag"; then
    expect "SIGKILL of rank 1: job ends in ${took} s (timeout 10 s), exit $rc, nothing left" "kill_$tag.txt" \
      'rank 1.*(signal 9|Killed)|process rank 1'
  else
    fail "SIGKILL of rank 1: exit $rc after ${took} s; leftover: $(pgrep -f "run.dir=kill_$tag" | tr '\n' ' ')" "kill_$tag.txt"
  fi
else
  fail "SIGKILL: training did not start" "kill_$tag.txt"
fi

# 2. A rank that stalls (stopped: it neither computes nor communicates):
#    the other one times out after comm.timeout_s naming itself and the
#    collective, every rank is aborted, exit 3... (mpirun reports the abort).
start2 "stall_$tag" --set train.max_steps=100000 --set comm.timeout_s=5
if wait_steps "stall_$tag"; then
  victim=$(ranks_of "stall_$tag" | awk '$2 == 1 {print $1}')
  t0=$(date +%s)
  kill -STOP "$victim"
  wait $job; rc=$?
  took=$(( $(date +%s) - t0 ))
  if [[ $rc -ne 0 && $took -le 30 ]] && ! leftover "stall_$tag"; then
    expect "stalled rank 1: rank 0 times out in ${took} s (timeout 5 s), exit $rc, nothing left" "stall_$tag.txt" \
      'rank 0/2 \([^)]*\): collective .* did not complete within 5 s' 'aborting all ranks'
  else
    fail "stalled rank: exit $rc after ${took} s; leftover: $(pgrep -f "run.dir=stall_$tag" | tr '\n' ' ')" "stall_$tag.txt"
  fi
  kill -9 "$victim" 2>/dev/null
else
  fail "stall: training did not start" "stall_$tag.txt"
fi

# 3. SIGTERM to the job (what Slurm sends before the time limit): a
#    checkpoint is written, then --resume auto ends with exactly the model
#    of an uninterrupted run (the test metrics agree to the last digit).
mpirun "${root[@]}" --oversubscribe -np 2 -x OMP_NUM_THREADS=1 "$bin" train -c tiny.yaml \
  --set run.dir="full_$tag" --set train.max_steps=300 >full.txt 2>&1 || fail "uninterrupted run" full.txt
start2 "term_$tag" --set train.max_steps=300
if wait_steps "term_$tag"; then
  kill -TERM $job
  wait $job; rc=$?
  stopped=$(grep -o 'every rank stopped after step [0-9]*' "term_$tag.txt" | head -1 | grep -o '[0-9]*$')
  if [[ $rc -ne 0 && -n "$stopped" ]] && ls "term_$tag"/checkpoints/step-*.h5 >/dev/null 2>&1; then
    mpirun "${root[@]}" --oversubscribe -np 2 -x OMP_NUM_THREADS=1 "$bin" train -c tiny.yaml \
      --set run.dir="term_$tag" --set train.max_steps=300 --resume auto >resume.txt 2>&1
    same=$(python3 - "full_$tag/eval_test.json" "term_$tag/eval_test.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
pick = lambda d: [(r["all"], r["cold"]) for r in d["results"] if r["scorer"] == "model"][0]
print("same" if pick(a) == pick(b) else f"differ: {pick(a)} vs {pick(b)}")
PY
)
    [[ "$same" == same ]] && grep -q "resumed from term_$tag/checkpoints/step-0*$stopped.h5" resume.txt \
      && ok "SIGTERM after step $stopped, checkpoint, --resume auto: the same test metrics as the uninterrupted run" \
      || fail "SIGTERM + resume: $same" resume.txt
  else
    fail "SIGTERM: exit $rc, stopped after '$stopped', checkpoints: $(ls "term_$tag"/checkpoints 2>&1)" "term_$tag.txt"
  fi
else
  fail "SIGTERM: training did not start" "term_$tag.txt"
fi

# 4. The disk fills during a checkpoint (a small tmpfs): the error names
#    the path, the job stops, the previous checkpoint stays valid and is
#    the one --resume auto continues from.
mkdir -p small
if mount -t tmpfs -o size=1200k tmpfs small 2>/dev/null; then
  mounted="$work/small"
  mpirun "${root[@]}" --oversubscribe -np 2 -x OMP_NUM_THREADS=1 "$bin" train -c tiny.yaml \
    --set run.dir="small/run_$tag" --set train.max_steps=400 --set train.checkpoint_every=10 \
    --set train.keep_checkpoints=100 >full_disk.txt 2>&1
  rc=$?
  last=$(ls small/run_"$tag"/checkpoints/ 2>/dev/null | sort | tail -1)
  if [[ $rc -ne 0 && -n "$last" ]] \
     && grep -Eq "writing checkpoint small/run_$tag/checkpoints/step-[0-9]+\.h5 failed" full_disk.txt; then
    ok "full disk: exit $rc, the error names the checkpoint path; newest complete file $last"
    cp -r "small/run_$tag" "big_$tag"
    "$bin" train -c tiny.yaml --set run.dir="big_$tag" --set train.max_steps=400 --set train.checkpoint_every=10 \
      --resume auto >after_full.txt 2>&1 \
      && expect "full disk: --resume auto continues from the last complete checkpoint ($last)" after_full.txt \
        "resumed from big_$tag/checkpoints/$last" \
      || fail "full disk: resume" after_full.txt
    [[ -z "$(find small -name '*.tmp*' 2>/dev/null)" ]] && ok "full disk: no temporary file left" \
      || fail "full disk: temporary files left: $(find small -name '*.tmp*')"
  else
    fail "full disk: exit $rc, newest checkpoint '$last'" full_disk.txt
  fi
  umount small && mounted=""
else
  skip "full disk: cannot mount a tmpfs here (needs root); not tested"
fi

# 5. A dataset file with a flipped byte in its vocabulary data: the
#    checksum error names the dataset and the file.
cp ds.h5 bad.h5
off=$(grep -boa '\[UNK\]' bad.h5 | head -1 | cut -d: -f1)
printf '\x00' | dd of=bad.h5 bs=1 seek="$off" conv=notrunc status=none
"$bin" train -c tiny.yaml --set run.dir="bad_$tag" --set data.dataset=bad.h5 >bad.txt 2>&1
rc=$?
[[ $rc -eq 1 ]] && expect "flipped byte in the dataset: checksum error names the file and dataset" bad.txt \
  "bad.h5.*'vocab/bytes'" || fail "flipped byte: exit $rc" bad.txt

echo "faults: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
