#!/usr/bin/env bash
# Runs every shell block of the docs marked runnable: a line
# `<!-- runnable -->` right before a ```sh fence. The blocks run as written,
# with `bash -euo pipefail`, one after another in one scratch directory
# (README.md first, then docs/*.md in name order, so a later block may use
# what an earlier one made), with `llmrec` on the PATH and the source's
# configs/ and launch/ beside them. A block that fails is named by file and
# line with its output.
# Usage: test_doc_blocks.sh LLMREC_BIN SOURCE_DIR
set -uo pipefail
bin=$(realpath "$1")
src=$(realpath "$2")
. "$src/tests/apps/cli_lib.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
mkdir bin && ln -s "$bin" bin/llmrec && ln -s "$src/configs" configs && ln -s "$src/launch" launch
export PATH="$work/bin:$PATH"

blocks=0
for doc in "$src/README.md" "$src"/docs/*.md; do
  name=${doc#"$src"/}
  # Each marked block into its own file, named by the line of its fence.
  safe=${name//\//_}
  awk -v out="$work/block.$safe" '
    marked && /^```(sh|bash)[[:space:]]*$/ { f = sprintf("%s.%d.sh", out, NR); inside = 1; marked = 0; next }
    inside && /^```[[:space:]]*$/ { inside = 0; close(f); next }
    inside { print > f; next }
    { marked = ($0 ~ /^<!-- runnable -->[[:space:]]*$/) }
  ' "$doc"
  for f in $(ls "$work"/block."$safe".*.sh 2>/dev/null | sort -V); do
    line=${f%.sh}; line=${line##*.}
    blocks=$((blocks + 1))
    bash -euo pipefail "$f" >"$f.out" 2>&1
    rc=$?
    if [[ $rc -eq 0 ]]; then
      ok "$name:$line runs as written"
    else
      { echo "--- block:"; cat "$f"; echo "--- output:"; tail -30 "$f.out"; } >"$f.why"
      fail "$name:$line exits $rc" "$f.why"
    fi
  done
done
[[ $blocks -ge 2 ]] && ok "$blocks runnable blocks found" || fail "only $blocks runnable blocks found (README's tour at least)"

echo "doc blocks: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
