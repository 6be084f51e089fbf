#!/usr/bin/env bash
# Compile cuda_ext ahead of time (called by scripts/setup_env.sh). A failure is reported, not fatal:
# every feature also runs on the pure-torch path.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${GSV_PYTHON:-python}"
if ! "$PY" -m cuda_ext.build; then
  echo "[build_ext] the CPU op did not build; the pure-torch renderer will be used (see the error above)" >&2
fi
