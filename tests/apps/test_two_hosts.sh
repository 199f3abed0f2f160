#!/usr/bin/env bash
# Two hosts on one machine: two network namespaces joined by a veth pair,
# each a host of an mpirun hostfile (ranks started in the other namespace
# through `ip netns exec` as mpirun's remote agent, no ssh), training over
# TCP between them; then the link is cut mid-training and the job must end
# with a clear message within comm.timeout_s, not hang. Skips (loudly)
# where namespaces cannot be made (not root, no CAP_SYS_ADMIN).
# Usage: test_two_hosts.sh path/to/llmrec path/to/source
set -uo pipefail
bin=$(realpath "$1")
src=$(realpath "$2")
work=$(mktemp -d)
ns_a="llr_a$$" ns_b="llr_b$$" veth_a="lva$$" veth_b="lvb$$"
net=10.79.$(( $$ % 200 + 20 ))
ip_a=$net.1 ip_b=$net.2
cleanup() {
  pkill -9 -f "llmrec_hosts_$$" 2>/dev/null
  # Whatever still runs in the namespaces (an orted cut off from mpirun).
  for ns in "$ns_a" "$ns_b"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null; done
  ip netns del "$ns_a" 2>/dev/null
  ip netns del "$ns_b" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
# shellcheck source=cli_lib.sh
source "$src/tests/apps/cli_lib.sh"
tag="llmrec_hosts_$$"

if ! { ip netns add "$ns_a" && ip netns add "$ns_b" \
       && ip link add "$veth_a" type veth peer name "$veth_b" \
       && ip link set "$veth_a" netns "$ns_a" && ip link set "$veth_b" netns "$ns_b" \
       && ip netns exec "$ns_a" ip addr add "$ip_a/24" dev "$veth_a" \
       && ip netns exec "$ns_b" ip addr add "$ip_b/24" dev "$veth_b" \
       && ip netns exec "$ns_a" ip link set "$veth_a" up && ip netns exec "$ns_b" ip link set "$veth_b" up \
       && ip netns exec "$ns_a" ip link set lo up && ip netns exec "$ns_b" ip link set lo up; } 2>ns.txt; then
  echo "SKIP two hosts: cannot create network namespaces here ($(head -1 ns.txt)); run as root with CAP_SYS_ADMIN"
  exit 0
fi
# mpirun's remote agent: "HOST COMMAND..." runs COMMAND in HOST's namespace.
cat >agent.sh <<AGENT
#!/bin/sh
host=\$1; shift
case "\$host" in $ip_a) ns=$ns_a;; $ip_b) ns=$ns_b;; *) echo "agent: unknown host \$host" >&2; exit 1;; esac
exec ip netns exec "\$ns" /bin/sh -c "\$*"
AGENT
chmod +x agent.sh
printf '%s slots=1\n%s slots=1\n' "$ip_a" "$ip_b" >hosts
# mpirun runs on host A; TCP only, on the veth network.
run2() {
  ip netns exec "$ns_a" mpirun "${root[@]}" -np 2 --hostfile hosts --mca plm_rsh_agent "$work/agent.sh" \
    --mca btl tcp,self --mca btl_tcp_if_include "$net.0/24" --mca oob_tcp_if_include "$net.0/24" \
    --mca oob_tcp_keepalive_time 5 --mca oob_tcp_keepalive_intvl 2 --mca oob_tcp_keepalive_probes 3 \
    -x OMP_NUM_THREADS=1 "$bin" "$@"
}

tiny_setup "$work"

# Training across the two hosts.
run2 train -c "$work/tiny.yaml" --set run.dir="$work/ok_$tag" --set train.max_steps=40 >ok.txt 2>&1 \
  && expect "two hosts: 2-rank training over TCP between namespaces" ok.txt 'on 2 rank\(s\)' \
    'trained 40 of 40 steps' '^model +0\.[0-9]+' \
  || fail "two hosts: training" ok.txt

# The link is cut mid-training: a clear message within the timeout.
run2 train -c "$work/tiny.yaml" --set run.dir="$work/cut_$tag" --set train.max_steps=100000 \
  --set comm.timeout_s=10 >cut.txt 2>&1 &
job=$!
for _ in $(seq 1 300); do grep -q '"step"' "cut_$tag/metrics.jsonl" 2>/dev/null && break; sleep 0.1; done
t0=$(date +%s)
ip netns exec "$ns_b" ip link set "$veth_b" down
for _ in $(seq 1 40); do kill -0 $job 2>/dev/null || break; sleep 1; done
if kill -0 $job 2>/dev/null; then
  fail "link cut: the job still runs $(( $(date +%s) - t0 )) s later (timeout 10 s)" cut.txt; ps -ef | grep -E "llmrec|orted|mpirun" | grep -v grep | cut -c1-160
  kill -9 $job
else
  wait $job; rc=$?
  took=$(( $(date +%s) - t0 ))
  [[ $rc -ne 0 ]] && expect "link cut: job ends in ${took} s (comm.timeout_s 10), exit $rc, naming the collective" cut.txt \
    'did not complete within 10 s' || fail "link cut: exit $rc after ${took} s" cut.txt
fi
pkill -9 -f "cut_$tag" 2>/dev/null
left=$(ip netns pids "$ns_a" 2>/dev/null; ip netns pids "$ns_b" 2>/dev/null)
[[ -n "$left" ]] && echo "note: after the cut, processes left in the namespaces (killed now): $(ps -o comm= -p $(echo $left) | sort | uniq -c | tr '\n' ' ')"

echo "two hosts: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
