# Helpers shared by the end-to-end test scripts (sourced).
# ok NAME / fail NAME [FILE] / expect NAME FILE PATTERN...: every grep -E
# pattern must match FILE. `root` holds mpirun's --allow-run-as-root when
# running as root.
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; [[ -n "${2:-}" ]] && sed 's/^/     | /' "$2" | head -40; }
skip() { echo "SKIP $1"; }
expect() {
  local name=$1 file=$2; shift 2
  for p in "$@"; do
    grep -Eq -- "$p" "$file" || { fail "$name: no match for /$p/" "$file"; return; }
  done
  ok "$name"
}
root=()
[[ $EUID -eq 0 ]] && root=(--allow-run-as-root)

# tiny_setup DIR: a synthetic shop of 300 items and 200 users in DIR/shop,
# DIR/tiny.yaml (the quickstart config with a tiny model and absolute
# paths; BPR-MF left out for time) and its dataset DIR/ds.h5. Needs $bin and
# $src.
tiny_setup() {
  local d=$1
  "$bin" synth -o "$d/shop" --items 300 --users 200 --seed 5 >"$d/synth.txt" 2>&1 || fail "synth" "$d/synth.txt"
  cat >"$d/tiny.yaml" <<YAML
include: $src/configs/quickstart.yaml
data: {interactions: $d/shop/interactions.csv, catalogue: $d/shop/catalogue.csv, dataset: $d/ds.h5}
model:
  dim: 16
  text_len: 16
  bert: {layers: 1, hidden: 32, heads: 2, intermediate: 64, max_positions: 32}
  user: {history: 8}
train: {batch_size: 16, epochs: 1, log_every: 5, eval_every: 0, progress: false}
eval: {baselines: [popularity, itemknn, tfidf], oracle_dir: ""}
YAML
  "$bin" prepare -c "$d/tiny.yaml" >"$d/prepare.txt" 2>&1 || fail "prepare" "$d/prepare.txt"
}
