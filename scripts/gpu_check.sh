#!/usr/bin/env bash
# The one prepared GPU check of the CUDA kernels (docs/gpu.md), run in the repo root of a copy of the
# working tree on a GPU machine, with that machine's own python3, which holds torch; nothing here needs our
# .venv or the network:
#   0. preflight (seconds; scripts/gpu_preflight.py): lists everything missing (torch's CUDA build, nvcc
#      of torch's CUDA major version / CUDA_HOME, a C++ compiler, ninja, the packages of
#      scripts/gpu_packages.txt; optional: matplotlib, nvidia-ml-py, compute-sanitizer, the GPU itself) and
#      what to do for each; installs the missing packages from the wheels copied beside the tree
#      (gpu_wheels/, made by scripts/gpu_wheels.sh on a machine with PyPI) into .gpu_site/py<X.Y>
#      (pip --target: works for a venv and for an externally managed system python alike) and checks
#      again; stops (exit 4) if anything essential is still missing;
#   1. build cuda_ext (the CUDA kernels; the C++ CPU op, the tests' reference; the kernels' CPU emulation)
#      with that python, torch and nvcc, for its GPU only (TORCH_CUDA_ARCH_LIST, default 9.0: H100/H200),
#      and import them;
#   2. the cuda-marked tests (tests/cuda_ext: render and fit, CUDA vs CPU) and the build/import test;
#   3. compute-sanitizer memcheck and racecheck on scripts/gpu_sanitize.py (every kernel on odd problems,
#      a short fit) while over 200 s are left (GSV_SANITIZE);
#   4. the GPU benchmark, `python3 -m eval.bench.fit_speed --part gpu`, with whatever time is left;
#   5. the log, the sanitizer reports and the results (eval/results/fit_speed_gpu.{json,md,png}) copied into $OUT.
# Without a CUDA device (or with GSV_DRY_RUN=1) steps 2-4 are replaced by what needs no device: test
# collection, the build/import test and the benchmark's imports; then exit 5.
#
#   bash scripts/gpu_wheels.sh      # here, once: 28 MB of wheels for Python 3.12 (--python-version X.Y)
#   bash scripts/gpu_check.sh       # there, with gpu_wheels/ beside the tree; give it ~9.5 minutes
# (the script aims to end by GSV_DEADLINE_S = 480 s and bounds each step with `timeout`, so the log and
# results come back).
# Exit status: 0 all passed; 1 tests failed (or were skipped: a GPU run must not skip them) or the
# sanitizer reported errors; 2 build, import or test collection failed; 3 tests passed but the
# benchmark failed or did not run; 4 preflight: something essential missing (listed, with the fix);
# 5 no GPU: every step that needs no device passed (preflight, wheels, build, imports, collection).
#
# Env: OUT (default ./gpu_check_out), GSV_DEADLINE_S (480), GSV_PYTEST_X (1: stop at the first failing
# test; 0: run them all), GSV_SANITIZE (0 off, 1 memcheck, 2 memcheck + racecheck: the default),
# TORCH_CUDA_ARCH_LIST (9.0), MAX_JOBS (4), CUDA_HOME (default: the toolkit of the nvcc on PATH, else
# /usr/local/cuda, else cuda_ext.build's search), GSV_PYTHON (python3), GSV_WHEELS (./gpu_wheels),
# GSV_DRY_RUN=1 (skip the device steps even with a GPU: exit 5), GSV_PREFLIGHT_ONLY=1 (stop after the
# preflight: exit 0 or 4).
# scripts/gpu_check_sim.sh runs the whole script here as on a bare GPU machine (a torch-only python).
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
WHEELS="${GSV_WHEELS:-$ROOT/gpu_wheels}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
DEVICE=0  # 1 once the preflight has seen a CUDA device

elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((DEADLINE - $(elapsed))); }
say() { echo "[gpu_check $(elapsed)s] $*"; }
fresh() { [ -f "$1" ] && [ "$(stat -c %Y "$1")" -ge "$START" ]; }  # written by this run

find_cuda_home() {
  [ -z "${CUDA_HOME:-}" ] || { export CUDA_HOME; return 0; }
  # the system toolkit's root (bin/nvcc and include/), not a pip toolkit that may lack the headers, and
  # not the parent of an nvcc wrapper script on PATH (whose include/ and lib64/ are not the toolkit's):
  # try the nvcc on PATH resolved through links, the nvcc a wrapper execs, then /usr/local/cuda; else
  # cuda_ext.build searches
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
      export CUDA_HOME="$c"
      return 0
    fi
  done
}

install_wheels() {
  # the missing packages ($WORK/missing) from the carried wheels into .gpu_site/py<X.Y>, put first on
  # PYTHONPATH (its bin/, which holds ninja, first on PATH); pip --target needs no write access to the
  # python's own site-packages and is not refused by an externally managed (PEP 668) python
  local names=() n ver site pip_cmd=()
  while read -r n; do [ -n "$n" ] && names+=("$n"); done <"$WORK/missing"
  [ ${#names[@]} -gt 0 ] || return 0
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    say "no carried wheels in $WHEELS/ for: ${names[*]} (make them here: bash scripts/gpu_wheels.sh)"
    return 1
  fi
  ver="$($PY -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  site="$ROOT/.gpu_site/py$ver"
  # install only what has a wheel for this python (an optional package may not have been carried)
  local have=() w
  for n in "${names[@]}"; do
    w="$(ls "$WHEELS/${n//-/_}"-*.whl 2>/dev/null | grep -E -- "-(cp${ver/./}|py3|py2\.py3|cp3[0-9]+-abi3)-" | head -1)"
    if [ -n "$w" ]; then have+=("$n"); else say "no wheel for $n (Python $ver) in $WHEELS/"; fi
  done
  [ ${#have[@]} -gt 0 ] || return 1
  if $PY -m pip --version >/dev/null 2>&1; then
    pip_cmd=($PY -m pip)
  elif w="$(ls "$WHEELS"/pip-*.whl 2>/dev/null | head -1)" && [ -n "$w" ]; then
    pip_cmd=($PY "$w/pip")  # a wheel is a zip that python can run pip from
    say "$PY has no pip: running pip from $w"
  else
    say "$PY has no pip and $WHEELS/ holds no pip wheel (bash scripts/gpu_wheels.sh adds one)"
    return 1
  fi
  say "installing from $WHEELS/ into $site: ${have[*]}"
  rm -rf "$site"
  timeout 120 "${pip_cmd[@]}" install --quiet --disable-pip-version-check --no-index --find-links "$WHEELS" \
    --target "$site" --no-compile --no-warn-script-location "${have[@]}" ||
    { say "pip install from $WHEELS/ failed (wheels for Python $ver? bash scripts/gpu_wheels.sh --python-version $ver)"; return 1; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH"
  say "wheels installed"
}

preflight() {
  say "preflight: $PY, wheels $WHEELS, archs $TORCH_CUDA_ARCH_LIST"
  command -v nvidia-smi >/dev/null && { nvidia-smi || say "nvidia-smi failed"; }
  if ! command -v "$PY" >/dev/null; then
    say "preflight FAILED: no python '$PY' (set GSV_PYTHON to the python that holds torch)"
    return 4
  fi
  find_cuda_home
  local rc
  $PY scripts/gpu_preflight.py --wheels "$WHEELS" --missing-file "$WORK/missing" --device-file "$WORK/device"
  rc=$?
  if [ -s "$WORK/missing" ]; then
    if install_wheels; then
      say "preflight again, with the installed wheels"
      $PY scripts/gpu_preflight.py --wheels "$WHEELS" --missing-file "$WORK/missing" --device-file "$WORK/device"
      rc=$?
    fi
  fi
  [ "$(cat "$WORK/device" 2>/dev/null)" = 1 ] && DEVICE=1
  if [ $rc -ne 0 ]; then
    say "preflight FAILED (rc $rc): the MISSING lines above say what to do"
    return 4
  fi
  say "preflight ok${CUDA_HOME:+ (CUDA_HOME=$CUDA_HOME)}"
}

build() {
  say "building cuda_ext (archs $TORCH_CUDA_ARCH_LIST, MAX_JOBS $MAX_JOBS)"
  # the C++ CPU op (the tests' reference) and the kernels' CPU emulation (test_cuda_build.py checks it)
  timeout 300 $PY -m cuda_ext.build cpu emu >"$WORK/build_cpu.txt" 2>&1 &
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
  cat "$WORK/build_cpu.txt"
  [ $cpu_rc -eq 0 ] || say "WARNING: the C++ CPU op or the emulation did not build (rc $cpu_rc; see above)"
  cat cuda_ext/_build/cuda_build.json 2>/dev/null
  [ $rc -eq 0 ] || { say "CUDA build FAILED (rc $rc)"; return 2; }
  $PY - "$DEVICE" <<'EOF' || return 2
import sys
import torch
import cuda_ext
err = cuda_ext.cuda_load_error()
print("gsv_cuda_ops:", "loads" if err is None else err, "| CPU op:", "loads" if cuda_ext.available() else cuda_ext.load_error())
try:
    from cuda_ext import _backend
    _backend.emu_module()
    print("gsv_cuda_emu: loads")
except ImportError as e:
    print("gsv_cuda_emu:", e)
if err is not None:
    sys.exit(f"gsv_cuda_ops does not import: {err}")
if sys.argv[1] == "1" and not torch.cuda.is_available():
    sys.exit("the preflight saw a CUDA device, but torch.cuda.is_available() is now False")
EOF
  say "build done, imports ok"
}

no_device() {
  # what can be checked without a GPU: the tests collect, the build/import test passes, the benchmark
  # imports (and says it skips its GPU part)
  local files=(tests/cuda_ext/test_render_cuda.py tests/cuda_ext/test_fit_cuda.py tests/cuda_ext/test_cuda_build.py)
  say "test collection"
  timeout 120 $PY -m pytest -p no:cacheprovider -q --collect-only "${files[@]}" >"$WORK/collect.txt" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || { cat "$WORK/collect.txt"; say "test collection FAILED (rc $rc)"; return 2; }
  say "test collection ok: $(grep -Eo '[0-9]+ tests? collected' "$WORK/collect.txt" | tail -1)"
  timeout 120 $PY -m pytest -p no:cacheprovider -q tests/cuda_ext/test_cuda_build.py ||
    { say "the build/import test FAILED"; return 2; }
  timeout 120 $PY -m eval.bench.fit_speed --part gpu --budget-s 1 >"$WORK/bench.txt" 2>&1
  rc=$?
  cat "$WORK/bench.txt"
  if [ $rc -ne 0 ] || ! grep -q "GPU part skipped" "$WORK/bench.txt"; then
    say "the benchmark does not start (rc $rc)"
    return 2
  fi
  say "benchmark imports ok"
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
  local level="${GSV_SANITIZE:-2}"
  [ "$level" != "0" ] || return 0
  if ! command -v compute-sanitizer >/dev/null; then
    say "compute-sanitizer not found; skipped"
    return 0
  fi
  local tools=(memcheck)
  [ "$level" = "2" ] && tools+=(racecheck)
  for tool in "${tools[@]}"; do
    if [ "$(left)" -lt 200 ]; then  # the benchmark comes first
      say "compute-sanitizer $tool skipped: only $(left)s left"
      continue
    fi
    say "compute-sanitizer --tool $tool (scripts/gpu_sanitize.py: every kernel on odd problems, a short fit)"
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 120 compute-sanitizer --tool "$tool" --error-exitcode 9 \
      --print-limit 20 $PY scripts/gpu_sanitize.py 2>&1 | tee "$OUT/sanitizer_$tool.txt"
    local rc=${PIPESTATUS[0]}
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
  preflight || return 4
  if [ "${GSV_PREFLIGHT_ONLY:-0}" = "1" ]; then
    say "GSV_PREFLIGHT_ONLY=1: stopping after the preflight"
    return 0
  fi
  build || { collect; return 2; }
  if [ $DEVICE = 0 ]; then
    no_device || { collect; return 2; }
    collect
    say "no GPU: preflight, wheels, build, imports and test collection ok; the cuda tests, sanitizer and benchmark need a CUDA device (exit 5), $(elapsed)s"
    return 5
  fi
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
