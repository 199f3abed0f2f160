#!/usr/bin/env bash
# A rank stopped (SIGSTOP) while blocking all-reduces of 128 MiB run: rank 0
# must end the job, exit code 3, within comm.timeout_s (1 s) + a few
# seconds, naming the collective; nothing may be left running.
# Usage: test_comm_stall.sh path/to/comm_stall_mid_transfer
set -uo pipefail
prog=$(realpath "$1")
root=()
[[ $(id -u) -eq 0 ]] && root=(--allow-run-as-root)
out=$(mktemp)
trap 'rm -f "$out"; pkill -9 -f "^$prog" 2>/dev/null' EXIT
mpirun "${root[@]}" --oversubscribe -np 2 -x OMP_NUM_THREADS=1 "$prog" >"$out" 2>&1 &
job=$!
for _ in $(seq 1 300); do grep -q "rank 1: looping" "$out" && break; sleep 0.1; done
victim=""
for p in $(pgrep -f "^$prog"); do
  r=$(tr '\0' '\n' </proc/"$p"/environ 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
  [[ "$r" == 1 ]] && victim=$p
done
[[ -n "$victim" ]] || { echo "FAIL rank 1 not found"; cat "$out"; exit 1; }
sleep 0.05
t0=$(date +%s.%N)
kill -STOP "$victim"
wait $job
rc=$?
took=$(echo "$(date +%s.%N) - $t0" | bc)
kill -9 "$victim" 2>/dev/null
sleep 0.2
if [[ $rc -eq 3 ]] && (( $(echo "$took < 8" | bc) )) && grep -q "rank 0/2 ([^)]*): collective all_reduce(avg) Float x 33554432 #[0-9]* did not complete within 1 s" "$out" \
  && ! pgrep -f "^$prog" >/dev/null; then
  how=$(grep -q "although every rank had entered it" "$out" && echo "mid-transfer: watchdog" || echo "at the signature check")
  echo "ok   stalled rank 1: job ended with exit 3 after ${took} s ($how)"
  exit 0
fi
echo "FAIL stalled rank 1: exit $rc after ${took} s"
cat "$out"
exit 1
