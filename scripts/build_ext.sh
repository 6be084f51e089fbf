#!/usr/bin/env bash
# Compile cuda_ext ahead of time (called by scripts/setup_env.sh): the C++/OpenMP CPU op, the CPU
# emulation of the CUDA kernels (their sources run on the CPU, docs/cuda_emulation.md), then the CUDA
# kernels as a separate module (no GPU needed to build them; nvcc comes from the venv's pip toolkit, the
# project's `cuda` extra). A failure is reported, not fatal: every feature also runs on the pure-torch
# path. Each step is quick when nothing changed. Set GSV_SKIP_CUDA_BUILD=1 to skip the CUDA step.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${GSV_PYTHON:-python}"
if ! "$PY" -m cuda_ext.build cpu; then
  echo "[build_ext] the CPU op did not build; the pure-torch renderer will be used (see the error above)" >&2
fi
if ! "$PY" -m cuda_ext.build emu; then
  echo "[build_ext] the CPU emulation of the CUDA kernels did not build; their tests will fail (see the error above)" >&2
fi
if [ "${GSV_SKIP_CUDA_BUILD:-0}" = "1" ]; then
  echo "[build_ext] GSV_SKIP_CUDA_BUILD=1: CUDA kernels not built" >&2
elif ! "$PY" -m cuda_ext.build cuda; then
  echo "[build_ext] the CUDA kernels did not build; on a GPU, fitting and rendering fall back to the" \
    "pure-torch path (see the error above and cuda_ext/_build/cuda_build.json)" >&2
fi
