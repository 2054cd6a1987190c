#!/usr/bin/env bash
# Regenerate the pinned dependency sets from the direct requirements:
#   requirements-dev.lock  <- requirements-dev.txt  (the tests' set; .ci/run and README command 2 install it)
#   requirements.lock      <- requirements.txt      (the app's set; README command 1), constrained to the
#                                                    dev lock so both pin every shared package the same
# Both are universal uv resolutions (markers for other platforms and Pythons >= 3.11). torch is pinned
# (2.13.0) but not its CUDA-only dependencies (nvidia-*, cuda-*; and triton in the app's set, where only
# torch's CUDA build asks for it): the CPU wheel has none, and the CUDA wheel pins its own exactly, so a
# GPU user installing the same lock gets the same set plus torch's CUDA libraries.
# Needs uv (`pip install uv`); reaches only the package index.
#   bash scripts/lock.sh            # after changing a requirements file (keeps the pins it can)
#   UPGRADE=1 bash scripts/lock.sh  # to take new releases (uv keeps an existing lock's pins otherwise)
set -euo pipefail
cd "$(dirname "$0")/.."
COMMON=(--universal --python-version 3.11 --quiet)
[ "${UPGRADE:-0}" = 1 ] && COMMON+=(--upgrade)
HEADER="bash scripts/lock.sh"
full=$(mktemp)
trap 'rm -f "$full"' EXIT
# One full resolution to learn which packages only torch's CUDA build brings in.
uv pip compile requirements-dev.txt "${COMMON[@]}" --no-header --no-annotate -o "$full"
NO_EMIT=()
for name in $(grep -oE '^(nvidia|cuda)-[a-z0-9._-]+' "$full" | sort -u); do
  NO_EMIT+=(--no-emit-package "$name")
done
uv pip compile requirements-dev.txt "${COMMON[@]}" "${NO_EMIT[@]}" --custom-compile-command "$HEADER" \
  -o requirements-dev.lock
uv pip compile requirements.txt "${COMMON[@]}" "${NO_EMIT[@]}" --custom-compile-command "$HEADER" \
  --no-emit-package triton -c requirements-dev.lock -o requirements.lock
names=$(printf '%s\n' "${NO_EMIT[@]}" | grep -v -- --no-emit-package | tr '\n' ' ')
echo "wrote requirements-dev.lock ($(grep -cE '^[a-z0-9]' requirements-dev.lock) pins) and" \
     "requirements.lock ($(grep -cE '^[a-z0-9]' requirements.lock) pins); left out as CUDA-only: $names"
