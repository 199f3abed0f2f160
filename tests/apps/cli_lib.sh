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
