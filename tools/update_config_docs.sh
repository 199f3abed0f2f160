#!/usr/bin/env bash
# Regenerates the key table of docs/configuration.md from the binary
# (`llmrec config --schema --markdown`); tests/apps/test_cli.sh fails when
# the two disagree. Usage: tools/update_config_docs.sh [path/to/llmrec]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/llmrec}
doc=docs/configuration.md
table=$("$bin" config --schema --markdown)
awk -v table="$table" '
  /<!-- schema:begin -->/ { print; print table; skip = 1; next }
  /<!-- schema:end -->/ { skip = 0 }
  !skip { print }
' "$doc" >"$doc.tmp"
mv "$doc.tmp" "$doc"
echo "updated $doc"
