#!/usr/bin/env bash
# Download, on a machine with PyPI access, the wheels that scripts/gpu_check.sh installs on a GPU machine
# whose python3 holds torch but may lack the rest (and which cannot reach PyPI itself):
#   numpy, Pillow, tqdm, pytest (+ iniconfig, packaging, pluggy, pygments), ninja (the build tool torch's
#   JIT compile calls), nvidia-ml-py (GPU utilisation in the benchmark), pip (used when that python has
#   none), and with --plot matplotlib (+ contourpy, cycler, fonttools, kiwisolver, pyparsing,
#   python-dateutil, tzdata) for the benchmark's plot. Never torch: the GPU machine has its own.
# They land in gpu_wheels/ (ignored by git), which the device tool carries:
#   bash scripts/gpu_wheels.sh                      # for Python 3.12: 28 MB (with --plot: 45 MB)
#   run(command="bash scripts/gpu_check.sh", carry=["gpu_wheels"], timeout_s=570)
# gpu_check.sh installs only what is missing there, with
#   pip install --no-index --find-links gpu_wheels --target .gpu_site/py<X.Y>  (then on PYTHONPATH).
# The device tool carries at most 64 MiB in all (working tree included): keep one or two Python versions.
#
# Options: --python-version X.Y (repeatable; default 3.12, the python3 of this workplace's H200 image;
# `python3 -V` there tells), --dest DIR (default gpu_wheels), --plot (add matplotlib).
# Versions: those of the project's .venv when it has the package (the set the tests ran with), else
# the newest. Exit status: 0 when every wheel was downloaded, 1 otherwise (pip's error names the one).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

versions=()
dest="gpu_wheels"
plot=0
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) versions+=("$2"); shift 2 ;;
    --dest) dest="$2"; shift 2 ;;
    --plot) plot=1; shift ;;
    -h | --help) sed -n '2,21p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu_wheels.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#versions[@]} -gt 0 ] || versions=(3.12)

packages=(numpy pillow tqdm pytest ninja nvidia-ml-py pip)
[ $plot = 1 ] && packages+=(matplotlib)

# pin to the project's .venv where it holds the package; pip resolves the dependencies for the target
pinned=()
for p in "${packages[@]}"; do
  v=""
  if [ -x .venv/bin/python ]; then
    v="$(.venv/bin/python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$p" \
      2>/dev/null || true)"
  fi
  if [ -n "$v" ] && [ "$p" != pip ]; then pinned+=("$p==$v"); else pinned+=("$p"); fi
done

pip_cmd=(python3 -m pip)
[ -x .venv/bin/python ] && pip_cmd=(.venv/bin/python -m pip)
mkdir -p "$dest"
for ver in "${versions[@]}"; do
  if ! [[ "$ver" =~ ^3\.[0-9]+$ ]]; then
    echo "gpu_wheels.sh: --python-version must look like 3.12, got '$ver'" >&2
    exit 2
  fi
  abi="cp${ver/./}"
  echo "gpu_wheels.sh: Python $ver ($abi): ${pinned[*]}"
  # manylinux tags from glibc 2.17 to 2.28 (any x86_64 Linux of the last years); --only-binary so
  # nothing has to be compiled on the GPU machine
  "${pip_cmd[@]}" download --quiet --disable-pip-version-check --only-binary=:all: \
    --python-version "$ver" --implementation cp --abi "$abi" --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 \
    --dest "$dest" "${pinned[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
done
echo "gpu_wheels.sh: $(find "$dest" -maxdepth 1 -name '*.whl' | wc -l) wheels, $(du -sh "$dest" | cut -f1) in $dest/"
echo "gpu_wheels.sh: carry it: run(command=\"bash scripts/gpu_check.sh\", carry=[\"$dest\"], timeout_s=570)"
