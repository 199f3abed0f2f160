#!/usr/bin/env bash
# `make fuzz`: builds the libFuzzer targets of fuzz/ with clang in their own
# build directory and runs each for a bounded time from its seed corpus,
# then prints executions and coverage per target (docs/reliability.md).
#
#   tools/fuzz.sh [BUILD_DIR] [SECONDS] [TARGET...]
#   FUZZ_JOBS=2 tools/fuzz.sh build-fuzz 60 request rows
#
# New corpus entries go to BUILD_DIR/corpus/<target>/ (the seeds in
# fuzz/corpus/<target>/ are only read); a crash, a sanitizer report, a
# timeout or a broken invariant leaves its input in BUILD_DIR/artifacts/
# <target>/ and makes the script fail after every target has run.
set -u -o pipefail

cd "$(dirname "$0")/.."
build=${1:-build-fuzz}
seconds=${2:-60}
shift $(( $# > 2 ? 2 : $# ))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors rows config wordpiece request)
jobs=${FUZZ_JOBS:-$(nproc)}

cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DLLMREC_FUZZ=ON \
  -DLLMREC_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g" >/dev/null || exit 1
cmake --build "$build" -j"$jobs" --target $(printf 'fuzz_%s ' "${targets[@]}") || exit 1

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
summary=()
failed=0
for t in "${targets[@]}"; do
  mkdir -p "$build/corpus/$t" "$build/artifacts/$t"
  log="$build/fuzz_$t.log"
  echo "== fuzz_$t: ${seconds} s (log: $log)"
  dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
  "$build/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    "${dict[@]}" -artifact_prefix="$build/artifacts/$t/" "$build/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1 &
  pid=$!
  wait $pid
  rc=$?
  # The scratch files of the targets that read paths (fuzz/fuzz_util.h);
  # libFuzzer ends without running atexit handlers.
  rm -rf "/dev/shm/llmrec-fuzz-$pid" "${TMPDIR:-/tmp}/llmrec-fuzz-$pid"
  # libFuzzer's last status line: "#N DONE cov: C ft: F corp: K/SIZE ... exec/s: R rss: M"
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | awk '{print $2}')
  ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | awk '{print $2}')
  corp=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' <<<"$last" | awk '{print $2}')
  if [ $rc -eq 0 ]; then
    status=ok
  else
    status="FAILED (exit $rc)"
    failed=1
    grep -E 'ERROR|SUMMARY|llmrec-fuzz|runtime error|Test unit written' "$log" | head -20
    echo "   reproduce: $build/fuzz_$t $build/artifacts/$t/<crash-file>"
  fi
  summary+=("$(printf '%-17s execs %10s (%6s/s)  cov %6s  ft %6s  corpus %-12s %s' \
    "fuzz_$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$status")")
done
echo
echo "== fuzzing summary (${seconds} s per target; cov = edges covered, ft = features)"
printf '%s\n' "${summary[@]}"
exit $failed
