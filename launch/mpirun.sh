#!/usr/bin/env bash
# Launch llmrec on one or more hosts with Open MPI.
#
#   launch/mpirun.sh -n 2 -- check -c configs/quickstart.yaml
#   launch/mpirun.sh -n 16 -t 8 -H hosts.txt -- check -c configs/quickstart.yaml
#
# Options (before --; everything after -- goes to llmrec):
#   -n NP         ranks in all (default 1)
#   -t THREADS    OpenMP/LibTorch threads per rank (default 1); also run.threads
#   -H HOSTFILE   Open MPI host file ("node1 slots=8" per line); default: this host
#   -b BIND       core (default: each rank bound to THREADS cores; with
#                 THREADS > 1 also OMP_WAIT_POLICY=active unless set) or none
#   -o            allow more ranks than cores (implies -b none)
#   -x VAR        export VAR to every rank (repeatable)
# Environment: LLMREC_BIN (default: build/llmrec next to this script, or,
# installed as llmrec-mpirun, the llmrec beside it),
# MPIRUN (default: mpirun), MPIRUN_EXTRA (extra mpirun arguments).
# See docs/cluster.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
default_bin=$here/../build/llmrec
[[ -x $here/llmrec && ! -x $default_bin ]] && default_bin=$here/llmrec  # installed: PREFIX/bin/llmrec-mpirun
bin=${LLMREC_BIN:-$default_bin}
np=1
threads=1
hostfile=""
bind=core
oversubscribe=0
exports=()

usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) np=$2; shift 2 ;;
    -t) threads=$2; shift 2 ;;
    -H) hostfile=$2; shift 2 ;;
    -b) bind=$2; shift 2 ;;
    -o) oversubscribe=1; bind=none; shift ;;
    -x) exports+=(-x "$2"); shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "launch/mpirun.sh: unknown option '$1' (use -- before llmrec's arguments)" >&2; usage 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "launch/mpirun.sh: no llmrec subcommand given" >&2; usage 2; }
[[ -x "$bin" ]] || { echo "launch/mpirun.sh: $bin not found or not executable (run 'make build' or set LLMREC_BIN)" >&2; exit 2; }
[[ "$np" =~ ^[1-9][0-9]*$ ]] || { echo "launch/mpirun.sh: -n needs a positive integer, got '$np'" >&2; exit 2; }
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || { echo "launch/mpirun.sh: -t needs a positive integer, got '$threads'" >&2; exit 2; }

args=(-np "$np" -x "OMP_NUM_THREADS=$threads" "${exports[@]}")
[[ $EUID -eq 0 ]] && args+=(--allow-run-as-root)
# With a host file: mpirun notices a daemon on a host it cannot reach any
# more within ~40 s (TCP keepalives on its control connections) instead of
# Open MPI's default 8 minutes, so a cut link ends the job (after the ranks'
# own comm.timeout_s message) instead of leaving mpirun waiting.
[[ -n "$hostfile" ]] && args+=(--hostfile "$hostfile" --mca oob_tcp_keepalive_time 20
  --mca oob_tcp_keepalive_intvl 5 --mca oob_tcp_keepalive_probes 3)
[[ $oversubscribe -eq 1 ]] && args+=(--oversubscribe)
case "$bind" in
  core) args+=(--map-by "slot:PE=$threads" --bind-to core)
    # Each rank owns its cores: its idle OpenMP threads may spin between
    # operators instead of sleeping (docs/performance.md "Small products and idle threads").
    [[ $threads -gt 1 && -z ${OMP_WAIT_POLICY:-} ]] && args+=(-x OMP_WAIT_POLICY=active) ;;
  none) args+=(--bind-to none) ;;
  *) echo "launch/mpirun.sh: -b must be core or none, got '$bind'" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086
exec ${MPIRUN:-mpirun} "${args[@]}" ${MPIRUN_EXTRA:-} "$bin" "$@" --set "run.threads=$threads"
