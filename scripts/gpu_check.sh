#!/usr/bin/env bash
# The one prepared GPU check of issue 4, for a session lent a GPU machine (the device tool runs it in the
# repo root; nothing here needs our .venv or the network):
#   1. build cuda_ext (the CUDA kernels and the C++ CPU op, the tests' reference) with that machine's
#      python3, torch and nvcc, for its GPU only (TORCH_CUDA_ARCH_LIST, default 9.0: H100/H200);
#   2. the cuda-marked tests (tests/cuda_ext: render and fit, CUDA vs CPU) and the build/import test;
#   3. compute-sanitizer memcheck on a small workload when over 200 s are left (GSV_SANITIZE);
#   4. the GPU benchmark, `python3 -m eval.bench.fit_speed --part gpu`, with whatever time is left;
#   5. the log and the results (eval/results/fit_speed_gpu.{json,md,png}) copied into $OUT.
# Device tool: command `bash scripts/gpu_check.sh`, timeout_s 570 (the script aims to end by
# GSV_DEADLINE_S = 480 s and bounds each step with `timeout`, so the log and results come back).
# Exit status: 0 all passed; 1 tests failed (or were skipped: a GPU run must not skip them); 2 build or
# import failed; 3 tests passed but the benchmark failed or did not run.
#
# Env: OUT (default ./gpu_check_out), GSV_DEADLINE_S (480), GSV_PYTEST_X (1: stop at the first failing
# test; 0: run them all), GSV_SANITIZE (0 off, 1 memcheck, 2 memcheck + racecheck), TORCH_CUDA_ARCH_LIST
# (9.0), MAX_JOBS (4), CUDA_HOME (default: the toolkit of the nvcc on PATH, else /usr/local/cuda);
# for checking the script itself on a machine without a GPU: GSV_PYTHON (python3) and GSV_DRY_RUN=1 (go
# on past the missing device: the cuda tests then skip, which counts as a failure, and the benchmark skips).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/gpu_check_out}"
mkdir -p "$OUT"
START=$(date +%s)
DEADLINE="${GSV_DEADLINE_S:-480}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-4}"
PY="${GSV_PYTHON:-python3}"  # the machine's own python3 (torch preinstalled there), never our .venv

elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((DEADLINE - $(elapsed))); }
say() { echo "[gpu_check $(elapsed)s] $*"; }
fresh() { [ -f "$1" ] && [ "$(stat -c %Y "$1")" -ge "$START" ]; }  # written by this run

environment() {
  say "environment"
  nvidia-smi || say "nvidia-smi failed"
  $PY - <<'EOF'
import importlib, platform, sys
import torch
print("python", platform.python_version(), sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"sm_{p.major}{p.minor}", f"{p.total_memory / 2**30:.0f} GiB", p.multi_processor_count, "SMs")
for name in ("numpy", "PIL", "skimage", "tqdm", "matplotlib", "pytest", "ninja", "pynvml"):
    try:
        m = importlib.import_module(name)
        print(" ", name, getattr(m, "__version__", "?"))
    except ImportError as e:
        print(" ", name, "MISSING:", e)
EOF
  if [ -z "${CUDA_HOME:-}" ]; then
    # the system toolkit's root (bin/nvcc and include/), not a pip toolkit that may lack the headers, and
    # not the parent of an nvcc wrapper script on PATH (design/environment.md §1): try the nvcc on PATH
    # resolved through links, the nvcc a wrapper execs, then /usr/local/cuda
    local nvcc cands=() c
    nvcc="$(command -v nvcc || true)"
    if [ -n "$nvcc" ]; then
      cands+=("$(dirname "$(dirname "$(readlink -f "$nvcc")")")")
      c="$(grep -ao '/[^ "]*/bin/nvcc' "$nvcc" 2>/dev/null | head -1 || true)"
      [ -n "$c" ] && cands+=("$(dirname "$(dirname "$(readlink -f "$c")")")")
    fi
    cands+=(/usr/local/cuda)
    for c in "${cands[@]}"; do
      if [ -x "$c/bin/nvcc" ] && [ -f "$c/include/cuda_runtime.h" ]; then
        CUDA_HOME="$c"
        break
      fi
    done
  fi
  if [ -n "${CUDA_HOME:-}" ]; then
    export CUDA_HOME
    say "CUDA_HOME=$CUDA_HOME"
    "$CUDA_HOME/bin/nvcc" --version | tail -2
  else
    say "no system nvcc found; cuda_ext.build looks for a pip toolkit"
  fi
}

build() {
  say "building cuda_ext (archs $TORCH_CUDA_ARCH_LIST, MAX_JOBS $MAX_JOBS)"
  timeout 300 $PY -m cuda_ext.build cpu >"$OUT/build_cpu.txt" 2>&1 &
  local cpu_pid=$!
  timeout 300 $PY -m cuda_ext.build cuda -v
  local rc=$?
  if [ $rc -ne 0 ] && [ -n "${CUDA_HOME:-}" ] && [ "$(left)" -gt 300 ]; then  # cuda_ext.build's own search
    say "CUDA build with CUDA_HOME=$CUDA_HOME failed (rc $rc); retrying without CUDA_HOME"
    timeout 200 env -u CUDA_HOME $PY -m cuda_ext.build cuda -v
    rc=$?
  fi
  wait $cpu_pid
  local cpu_rc=$?
  cat "$OUT/build_cpu.txt" && rm -f "$OUT/build_cpu.txt"
  [ $cpu_rc -eq 0 ] || say "WARNING: the C++ CPU op did not build; the tests compare against the pure-torch path"
  cat cuda_ext/_build/cuda_build.json 2>/dev/null
  [ $rc -eq 0 ] || { say "CUDA build FAILED (rc $rc)"; return 2; }
  local dry=0
  [ "${GSV_DRY_RUN:-0}" = "1" ] && dry=1
  $PY - <<'EOF' || [ $dry = 1 ] || return 2
import sys
import torch
import cuda_ext
err = cuda_ext.cuda_load_error()
print("gsv_cuda_ops:", "loads" if err is None else err, "| CPU op:", "loads" if cuda_ext.available() else cuda_ext.load_error())
if err is not None or not torch.cuda.is_available():
    sys.exit(f"cannot run the CUDA tests: load error {err!r}, cuda available {torch.cuda.is_available()}")
EOF
  say "build done"
}

tests() {
  local x=()
  [ "${GSV_PYTEST_X:-1}" = "1" ] && x=(-x)
  local limit=$(($(left) - 120))  # keep two minutes for the benchmark and the copy
  [ $limit -gt 60 ] || limit=60
  say "cuda tests (limit ${limit}s)"
  timeout "$limit" $PY -m pytest -p no:cacheprovider -q "${x[@]}" -m cuda --junitxml="$OUT/pytest_cuda.xml" \
    tests/cuda_ext/test_render_cuda.py tests/cuda_ext/test_fit_cuda.py
  local rc=$?
  [ $rc -eq 124 ] && say "the cuda tests ran past ${limit}s and were stopped"
  timeout 60 $PY -m pytest -p no:cacheprovider -q tests/cuda_ext/test_cuda_build.py || rc=$((rc ? rc : 1))
  # every cuda test must run here: a skip means the module or the device went missing
  $PY - "$OUT/pytest_cuda.xml" <<'EOF' || rc=$((rc ? rc : 1))
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as e:
    sys.exit(f"no test report: {e}")
suites = [root] if root.tag == "testsuite" else list(root)
n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
print("cuda tests:", n)
sys.exit(1 if n["skipped"] or not n["tests"] else 0)
EOF
  say "tests rc $rc"
  return $rc
}

sanitize() {
  local level="${GSV_SANITIZE:-1}"
  [ "$level" != "0" ] || return 0
  if ! command -v compute-sanitizer >/dev/null; then
    say "compute-sanitizer not found; skipped"
    return 0
  fi
  if [ "$(left)" -lt 200 ]; then  # the benchmark comes first
    say "compute-sanitizer skipped: only $(left)s left"
    return 0
  fi
  cat >/tmp/gsv_sanitize.py <<'EOF'
# Every op on small odd-sized problems: padding and dead rows, overflowing tile lists (tile_cap 4),
# a frozen image, off-canvas and huge Gaussians.
import torch
from cuda_ext import ops

g = torch.Generator().manual_seed(0)
for size, n, cap in ((17, 40, 4), (33, 300, 512), (48, 600, 4)):
    p = torch.zeros(2, n, 8)
    p[..., 0:2] = torch.rand(2, n, 2, generator=g) * size * 1.4 - 0.2 * size
    p[..., 2] = p[..., 4] = 0.5 + 3 * torch.rand(2, n, generator=g)
    p[..., 3] = torch.randn(2, n, generator=g)
    p[0, 0, 2:5] = torch.tensor([40.0, 5.0, 30.0])
    p[..., 5:8] = torch.rand(2, n, 3, generator=g)
    alive = torch.rand(2, n, generator=g) > 0.2
    p, alive = p.cuda(), alive.cuda()
    pr = p.clone().requires_grad_(True)
    ops.render_cuda(pr, alive, size, tile_cap=cap).square().sum().backward()
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    active = torch.tensor([True, False], device="cuda")
    ops.fit_steps(p, m, v, alive, active, torch.rand(2, size, size, 3, device="cuda"), it0=0, num_steps=3,
                  iters_total=3, lr=(0.1, 0.04, 0.02), lr_final=0.05, lambda_l1=0.01, min_scale=0.3, tile_cap=cap)
    ops.prune_mask(p, alive, 0.05)
torch.cuda.synchronize()
print("sanitizer workload done")
EOF
  local tools=(memcheck)
  [ "$level" = "2" ] && tools+=(racecheck)
  for tool in "${tools[@]}"; do
    say "compute-sanitizer --tool $tool"
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 90 compute-sanitizer --tool "$tool" --error-exitcode 9 \
      --print-limit 20 $PY /tmp/gsv_sanitize.py
    local rc=$?
    case $rc in
      0) say "$tool: clean" ;;
      9) say "$tool: ERRORS REPORTED (see above)"; SANITIZER_FAILED=1 ;;
      124) say "$tool: timed out (not a verdict)" ;;
      *) say "$tool: did not run to the end (rc $rc; on gVisor the sanitizer does not work)" ;;
    esac
  done
}

bench() {
  local budget=$(($(left) - 40))  # the render part, writing and the copy
  if [ $budget -lt 45 ]; then
    say "benchmark skipped: only $(left)s left"
    return 3
  fi
  say "GPU benchmark (budget ${budget}s)"
  timeout $((budget + 30)) $PY -m eval.bench.fit_speed --part gpu --budget-s "$budget"
  local rc=$?
  fresh eval/results/fit_speed_gpu.json || { [ $rc -ne 0 ] || rc=3; }  # "GPU part skipped" exits 0
  say "benchmark rc $rc"
  return $rc
}

collect() {
  for f in eval/results/fit_speed_gpu.json eval/results/fit_speed_gpu.md eval/results/fit_speed_gpu.png \
    cuda_ext/_build/cuda_build.json; do
    if fresh "$f"; then cp "$f" "$OUT/"; fi
  done
  ls -la "$OUT"
}

main() {
  SANITIZER_FAILED=0
  environment
  build || { collect; return 2; }
  tests
  local test_rc=$?
  sanitize
  bench
  local bench_rc=$?
  collect
  say "summary: tests rc $test_rc, sanitizer $([ $SANITIZER_FAILED = 1 ] && echo ERRORS || echo ok/skipped), benchmark rc $bench_rc, $(elapsed)s"
  [ $test_rc -eq 0 ] || return 1
  [ $SANITIZER_FAILED = 0 ] || return 1
  [ $bench_rc -eq 0 ] || return 3
  return 0
}

main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
