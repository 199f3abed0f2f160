#!/usr/bin/env bash
# The folders' layering (docs/architecture.md, "Layers"): each folder's
# sources include headers of the folders below it only. CMake links the
# same graph; this catches an include that would need a link upward (for
# instance serving/ reaching into trainer/). Run by ctest (check_layers).
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A allowed=(
  [common]="common"
  [distributed]="common distributed"
  [data]="common data"
  [models]="common models"
  [export]="common models export"
  [trainer]="common distributed data models export trainer"
  [serving]="common models export serving"
)
bad=0
for folder in "${!allowed[@]}"; do
  while IFS= read -r hit; do
    file=${hit%%:*}
    dep=$(sed -E 's/.*#include "([a-z_]+)\/.*/\1/' <<<"$hit")
    if [[ " ${allowed[$folder]} " != *" $dep "* ]]; then
      echo "check_layers: $file includes $dep/ (a $folder/ file may include only: ${allowed[$folder]})"
      bad=1
    fi
  done < <(grep -HE '^#include "[a-z_]+/' "$folder"/*.h "$folder"/*.cpp || true)
done
# The backends are internal to distributed/ (and its tests): everyone else
# sees the Communicator interface only.
while IFS= read -r hit; do
  echo "check_layers: ${hit%%:*} includes a communicator backend's header (use distributed/communicator.h)"
  bad=1
done < <(grep -HE '^#include "distributed/(mpi_communicator|nccl_communicator|mpi_check|nccl_api)\.h"' \
           apps/*.h apps/*.cpp common/* data/* models/* export/* trainer/* serving/* || true)
[[ $bad -eq 0 ]] && echo "check_layers: every include follows common <- distributed, data <- models <- export <- trainer, serving; backends stay inside distributed/"
exit $bad
