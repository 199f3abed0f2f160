#!/usr/bin/env bash
# Load test of `llmrec serve` with wrk (docs/performance.md, "Serving under load").
#
#   bench/serve_load.sh                          # demo shop, 20 s, 4 connections
#   bench/serve_load.sh --size bench-tiny --duration 30
#   bench/serve_load.sh --export X.h5 --users users.txt
#
# Builds an export unless --export is given: `llmrec synth --size SIZE`,
# `prepare`, `train --stop-after STEPS` of configs/quickstart.yaml on 2
# ranks (serving does the same work for a barely trained model as for a
# converged one), `export` of that checkpoint. Starts `llmrec serve --port 0`
# on it, warms it up, runs wrk with bench/serve_load.lua (POST /recommend for
# random known users and a --malformed share of malformed requests: bad
# JSON, unknown field, wrong type, unknown history item, wrong method), samples the
# server's VmRSS every second, reads /metrics, stops the server with SIGTERM
# and prints a summary. Exit status 1 when a request got a status other than
# its kind's, a socket error occurred, or the server did not stop cleanly.
#
# Options:
#   --size S            synthetic shop: demo (2k items, 3k users; default),
#                       bench-tiny (20k, 50k), bench-small (100k, 200k)
#   --steps N           training steps (train --stop-after) of the export (default 50)
#   --export FILE       serve this export instead of building one
#   --users FILE        user ids of FILE, one per line (with --export; 2,000
#                       sampled, those the server knows are used)
#   --duration S        wrk duration in seconds (default 20)
#   --warmup S          warm-up run before the measured one (default 3)
#   --connections N     wrk connections, one wrk thread each (default 4)
#   --server-threads N  llmrec serve --threads (default 0: serve's default)
#   --malformed F       share of malformed requests (default 0.1)
#   --reloads N         send N SIGHUPs spread over the measured run: the export
#                       is reloaded N times while wrk runs (default 0)
#   --arms              serve the export as two A/B arms (control, candidate),
#                       click the first item of 20% of the answers (POST
#                       /events, the server with --events-log) and print each
#                       arm's answers, clicks, click-through and latency
#   --dir DIR           work directory (default: a temporary one, removed)
# Environment: LLMREC_BIN (default: build/llmrec), WRK (default: wrk).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/.." && pwd)
bin=$(realpath "${LLMREC_BIN:-$src/build/llmrec}")
wrk=${WRK:-wrk}
size=demo
steps=50
export_file=""
users_file=""
duration=20
warmup=3
connections=4
server_threads=0
malformed=0.1
dir=""
reloads=0
arms=0

usage() { sed -n '2,36p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --size) size=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --export) export_file=$(realpath "$2"); shift 2 ;;
    --users) users_file=$(realpath "$2"); shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --server-threads) server_threads=$2; shift 2 ;;
    --malformed) malformed=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --reloads) reloads=$2; shift 2 ;;
    --arms) arms=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "serve_load.sh: unknown option '$1'" >&2; usage 2 ;;
  esac
done
command -v "$wrk" >/dev/null || { echo "serve_load.sh: wrk not found (apt-get install wrk)" >&2; exit 2; }
command -v curl >/dev/null || { echo "serve_load.sh: curl not found (apt-get install curl)" >&2; exit 2; }
[[ -x $bin ]] || { echo "serve_load.sh: no llmrec at $bin (build it, or set LLMREC_BIN)" >&2; exit 2; }
if [[ -n $export_file && -z $users_file ]]; then
  echo "serve_load.sh: --export needs --users (known user ids, one per line)" >&2; exit 2
fi

tmp_dir=""
if [[ -z $dir ]]; then
  dir=$(mktemp -d)
  tmp_dir=$dir
fi
mkdir -p "$dir"
cd "$dir"
log() { echo "== $*"; }
server=""
sampler=""
cleanup() {
  [[ -n $sampler ]] && kill "$sampler" 2>/dev/null
  [[ -n $server ]] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null
  [[ -n $tmp_dir ]] && rm -rf "$tmp_dir"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. The export.
if [[ -z $export_file ]]; then
  t0=$(date +%s)
  set_paths=(--set run.dir=run --set data.interactions=shop/interactions.csv --set data.catalogue=shop/catalogue.csv
             --set data.dataset=dataset.h5 --set eval.oracle_dir=shop)
  log "llmrec synth --size $size; prepare; train --stop-after $steps (2 ranks); export (2 ranks)"
  "$bin" synth -o shop --size "$size" >synth.txt 2>&1 || { cat synth.txt; exit 1; }
  "$bin" prepare -c "$src/configs/quickstart.yaml" "${set_paths[@]}" >prepare.txt 2>&1 || { cat prepare.txt; exit 1; }
  # --stop-after: the checkpoint after $steps steps, without the validation
  # and test evaluation a finished run does (minutes at bench-small size).
  LLMREC_BIN=$bin "$src/launch/mpirun.sh" -n 2 -o -- train -c "$src/configs/quickstart.yaml" "${set_paths[@]}" \
    --stop-after "$steps" >train.txt 2>&1 || { tail -20 train.txt; exit 1; }
  checkpoint=$(printf 'run/checkpoints/step-%08d.h5' "$steps")
  LLMREC_BIN=$bin "$src/launch/mpirun.sh" -n 2 -o -- export -c "$src/configs/quickstart.yaml" "${set_paths[@]}" \
    --checkpoint "$checkpoint" --output export.h5 >export.txt 2>&1 || { cat export.txt; exit 1; }
  grep -E '^[0-9]+ items|^-> ' export.txt
  echo "(built in $(( $(date +%s) - t0 )) s)"
  export_file=$dir/export.h5
  # Candidate user ids: users of the interactions file with at least 3
  # events (data.min_user_events); checked against the server below.
  tail -n +2 shop/interactions.csv | cut -d, -f1 | sort | uniq -c | awk '$1 >= 3 { print $2 }' \
    | shuf -n 2000 --random-source=<(yes) >candidates.txt
else
  shuf -n 2000 --random-source=<(yes) "$users_file" >candidates.txt
fi

# 2. The server.
: >serve.log
serve_args=(--export "$export_file")
clicks=0
if [[ $arms -eq 1 ]]; then
  serve_args=(--arm "control=$export_file" --arm "candidate=$export_file:1" --events-log events.jsonl)
  clicks=0.2
fi
"$bin" serve "${serve_args[@]}" --port 0 --threads "$server_threads" >>serve.log 2>&1 &
server=$!
port=""
for _ in $(seq 1 300); do
  port=$(sed -nE 's/.*listening on http:\/\/[^:]+:([0-9]+).*/\1/p' serve.log)
  [[ -n $port ]] && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
[[ -n $port ]] || { echo "serve_load.sh: the server did not start"; cat serve.log; exit 1; }
url=http://127.0.0.1:$port
grep -E 'loaded|listening' serve.log | sed 's/^.* info //'
rss() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$server/status"; }

# Known users: the candidates the server answers with 200 (one curl, keep-alive).
mapfile -t cand <candidates.txt
args=()
for u in "${cand[@]}"; do args+=(-o /dev/null "$url/recommend?user=$u&k=1"); done
if [[ ${#args[@]} -gt 0 ]]; then
  curl -s -w '%{http_code}\n' "${args[@]}" | paste - candidates.txt | awk '$1 == 200 { print $2 }' >users.txt
fi
echo "known users for the load: $(wc -l <users.txt) of $(wc -l <candidates.txt) candidates"
[[ -s users.txt ]] || { echo "serve_load.sh: no known user among the candidates"; exit 1; }
rss_idle=$(rss)

# 3. Warm-up, then the measured run with RSS samples every second.
lua=$here/serve_load.lua
if [[ $warmup -gt 0 ]]; then
  "$wrk" -t "$connections" -c "$connections" -d "${warmup}s" -s "$lua" "$url" -- users.txt "$malformed" "$clicks" >warmup.txt 2>&1
fi
rss_start=$(rss)
: >rss.txt
( while kill -0 "$server" 2>/dev/null; do echo "$(date +%s.%N) $(rss)" >>rss.txt; sleep 1; done ) &
sampler=$!
cmd=("$wrk" -t "$connections" -c "$connections" -d "${duration}s" --latency -s "$lua" "$url" -- users.txt "$malformed" "$clicks")
log "${cmd[*]/#$here/bench}"
wrk_rc=0
if [[ $reloads -gt 0 ]]; then  # SIGHUPs spread over the run, while wrk keeps the server busy
  ( for _ in $(seq 1 "$reloads"); do
      sleep "$(awk -v d="$duration" -v n="$reloads" 'BEGIN { print d / (n + 1) }')"
      kill -HUP "$server"
    done ) &
  hupper=$!
fi
"${cmd[@]}" >wrk.txt 2>&1 || wrk_rc=$?
[[ $reloads -gt 0 ]] && wait "$hupper" 2>/dev/null
rss_end=$(rss)
kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
sampler=""
cat wrk.txt
curl -s "$url/metrics" >metrics.json
echo "server /metrics: $(sed -E 's/.*"errors":(\{[^}]*\}).*"latency_ms":(\{[^}]*\}).*"requests_total":([0-9]+).*/errors \1, latency_ms \2, requests_total \3/' metrics.json)"

# 4. Stop.
t_stop=$(date +%s%N)
kill -TERM "$server"
for _ in $(seq 1 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server" 2>/dev/null; then
  echo "serve_load.sh: the server is still running 10 s after SIGTERM; killing it"
  kill -KILL "$server"
fi
rc=0
wait "$server" || rc=$?
server=""
stop_ms=$(( ($(date +%s%N) - t_stop) / 1000000 ))

n=$(wc -l <rss.txt)
rss_mid=$(awk -v m=$(( (n + 1) / 2 )) 'NR == m { print $2 }' rss.txt)
rss_max=$(awk 'BEGIN { m = 0 } $2 > m { m = $2 } END { print m }' rss.txt)
echo
echo "summary"
echo "  export:        $(grep -oE '[0-9]+ items, [0-9]+ users, d = [0-9]+, T = [0-9]+' serve.log | head -1)"
echo "  requests/s:    $(sed -nE 's/^Requests\/sec: *([0-9.]+)/\1/p' wrk.txt)"
echo "  latency (wrk): $(sed -nE 's/^latency_ms: (.*)/\1/p' wrk.txt) ms"
echo "  unexpected:    $(sed -nE 's/^unexpected: //p' wrk.txt) (statuses other than each kind's, socket errors)"
echo "  VmRSS MiB:     idle $rss_idle, after warm-up $rss_start, middle $rss_mid, end $rss_end, max $rss_max ($n samples)"
echo "  SIGTERM:       exit $rc after $stop_ms ms"
reloaded=$(grep -c 'SIGHUP: reloaded' serve.log || true)
[[ $reloads -gt 0 ]] && echo "  reloads:       $reloaded of $reloads SIGHUPs reloaded the export during the run"
if [[ $arms -eq 1 ]]; then
  python3 -c '
import json, sys
for name, a in json.load(open(sys.argv[1]))["arms"].items():
    l = a["latency_ms"]
    print("  arm %-10s  %d answers, %d clicks (click-through %.3f), p50 %.2f ms, p99 %.2f ms" % (
        name, a["recommendations"], a["clicks"], a["click_through"] or 0, l["p50"] or 0, l["p99"] or 0))' metrics.json
fi
unexpected=$(sed -nE 's/^unexpected: ([0-9]+).*/\1/p' wrk.txt)
[[ $wrk_rc -eq 0 && $rc -eq 0 && "$unexpected" == 0 && $reloaded -ge $reloads ]]
