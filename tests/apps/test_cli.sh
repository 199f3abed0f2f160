#!/usr/bin/env bash
# End-to-end checks of the llmrec binary, configs/ and launch/.
# Usage: test_cli.sh path/to/llmrec path/to/source
set -uo pipefail
bin=$(realpath "$1")
src=$(realpath "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
passed=0
failed=0

ok() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; [[ -n "${2:-}" ]] && sed 's/^/     | /' "$2" | head -40; }
# expect NAME FILE PATTERN...: every grep -E pattern must match FILE.
expect() {
  local name=$1 file=$2; shift 2
  for p in "$@"; do
    grep -Eq -- "$p" "$file" || { fail "$name: no match for /$p/" "$file"; return; }
  done
  ok "$name"
}
root=()
[[ $EUID -eq 0 ]] && root=(--allow-run-as-root)

# --version names every part of the build, and the BLAS in use.
"$bin" --version >version.txt 2>&1
expect "--version" version.txt '^llmrec [0-9]+\.[0-9]+\.[0-9]+ \(git ' '^LibTorch [0-9]' \
  '^BLAS (OpenBLAS|.*BLAS)' '^MPI Open MPI' '^CUDA (on|off), NCCL (on|off)$'

# Every shipped config validates.
for c in "$src"/configs/*.yaml; do
  if "$bin" config -c "$c" >cfg.txt 2>&1; then ok "config $(basename "$c") validates"; else fail "config $c" cfg.txt; fi
done

# A typo names the file, the line and the closest key; exit code 1.
printf 'run:\n  dir: x\ncomm:\n  timout_s: 3\n' >typo.yaml
"$bin" config -c typo.yaml >typo.txt 2>&1
rc=$?
[[ $rc -eq 1 ]] && expect "unknown key" typo.txt "typo.yaml:4: unknown key 'comm.timout_s'; did you mean 'comm.timeout_s'\?" \
  || fail "unknown key: exit code $rc, expected 1" typo.txt

# include: and --set, and the resolved output.
printf 'include: %s\nrun:\n  threads: 2\n' "$src/configs/quickstart.yaml" >child.yaml
"$bin" config -c child.yaml --set comm.timeout_s=7.5 >resolved.txt 2>&1
expect "include and --set" resolved.txt 'dir: "runs/quickstart"' 'threads: 2' 'timeout_s: 7.5'
"$bin" config --set comm.backend=nccl >bad_enum.txt 2>&1
expect "enum error names --set" bad_enum.txt "--set comm.backend=nccl: 'comm.backend' must be one of: auto, mpi"

# docs/configuration.md carries exactly the schema the binary has.
"$bin" config --schema --markdown >schema.md
sed -n '/<!-- schema:begin -->/,/<!-- schema:end -->/p' "$src/docs/configuration.md" | sed '1d;$d' >doc_schema.md
if diff -u doc_schema.md schema.md >schema.diff; then ok "docs/configuration.md matches the schema"
else fail "docs/configuration.md is out of date: run 'llmrec config --schema --markdown'" schema.diff; fi

# check under mpirun -np 2 through the launch script: exact collectives,
# run directory with resolved config, per-rank rank-tagged logs.
LLMREC_BIN=$bin "$src/launch/mpirun.sh" -n 2 -o -- check -c "$src/configs/quickstart.yaml" \
  --set run.dir=run2 >check2.txt 2>&1
rc=$?
if [[ $rc -eq 0 ]]; then
  expect "check -np 2" check2.txt '^llmrec check: 2 rank\(s\)' 'all collective checks passed' '^ +1 +'
  expect "check.json" run2/check.json '"ok": true' '"world_size": 2'
  expect "resolved config" run2/config.yaml 'timeout_s: 120'
  expect "rank 1 log file" run2/logs/rank-1.log '\[rank 1/2\] info llmrec'
  if grep -q '\[rank 1/2\] info' check2.txt; then fail "rank 1 printed info lines on the console" check2.txt
  else ok "console: rank 1 quiet at info"; fi
else
  fail "check -np 2 exited $rc" check2.txt
fi

# Three ranks, plain mpirun.
mpirun "${root[@]}" --oversubscribe -np 3 "$bin" check --set run.dir=run3 >check3.txt 2>&1 \
  && expect "check -np 3" check3.txt '^llmrec check: 3 rank\(s\)' 'all collective checks passed' \
  || fail "check -np 3" check3.txt

# Without mpirun: world size 1.
"$bin" check --set run.dir=run1 >check1.txt 2>&1 \
  && expect "check without mpirun" check1.txt '^llmrec check: 1 rank\(s\)' 'all collective checks passed' \
  || fail "check without mpirun" check1.txt

# The Slurm template, with mpirun inside a (simulated) allocation.
SLURM_NTASKS=2 SLURM_CPUS_PER_TASK=1 SLURM_JOB_ID=42 LLMREC_LAUNCHER=mpirun LLMREC_BIN=$bin \
  LLMREC_MPIRUN_EXTRA=--oversubscribe bash "$src/launch/slurm.sbatch" check --set run.dir=runs >slurm.txt 2>&1 \
  && expect "slurm template (mpirun)" slurm.txt 'job 42 .* 2 ranks x 1 threads' 'all collective checks passed' \
  || fail "slurm template" slurm.txt

# A fatal error on one rank ends every rank at once (no hang): rank 0
# cannot create the run directory while rank 1 waits in a barrier.
start=$(date +%s)
timeout 60 mpirun "${root[@]}" --oversubscribe -np 2 "$bin" check --set run.dir=/proc/llmrec-no >abort.txt 2>&1
rc=$?
took=$(( $(date +%s) - start ))
if [[ $rc -ne 0 && $rc -ne 124 && $took -lt 30 ]]; then
  expect "fatal error aborts all ranks" abort.txt 'cannot create run directory /proc/llmrec-no' 'aborting all ranks'
else
  fail "fatal error on rank 0: exit $rc after ${took}s (want non-zero, < 30 s)" abort.txt
fi

echo "cli: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
