#!/usr/bin/env bash
# Download, on a machine with PyPI access, the wheels that scripts/gpu_check.sh installs on a GPU machine
# whose python3 holds torch but may lack the rest (and which cannot reach PyPI itself): the packages of
# scripts/gpu_packages.txt (the essential ones, derived from what the check imports, and ninja, the build
# tool torch's JIT compile calls; with --optional also matplotlib for the benchmark's plot and
# nvidia-ml-py), their dependencies, and pip (used when that python has none). Never torch: the GPU
# machine has its own.
#   bash scripts/gpu_wheels.sh                      # into gpu_wheels/ (ignored by git), for Python 3.12
# Copy gpu_wheels/ with the working tree to the GPU machine; gpu_check.sh installs only what is missing
# there, with
#   pip install --no-index --find-links gpu_wheels --target .gpu_site/py<X.Y>  (then on PYTHONPATH).
#
# Options: --python-version X.Y (repeatable; default 3.12; `python3 -V` on the GPU machine tells),
# --dest DIR (default gpu_wheels), --optional (add the optional packages).
# Versions: those of the project's .venv when it has the package (the set the tests ran with), else
# the newest. Exit status: 0 when every wheel was downloaded, 1 otherwise (pip's error names the one).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

versions=()
dest="gpu_wheels"
optional=0
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) versions+=("$2"); shift 2 ;;
    --dest) dest="$2"; shift 2 ;;
    --optional) optional=1; shift ;;
    -h | --help) sed -n '2,17p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu_wheels.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#versions[@]} -gt 0 ] || versions=(3.12)

kinds=(essential tool)
[ $optional = 1 ] && kinds+=(optional)
read -r -a packages <<<"$(python3 scripts/gpu_preflight.py --pip-names "${kinds[@]}")"
packages+=(pip)

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
echo "gpu_wheels.sh: copy $dest/ with the working tree to the GPU machine and run bash scripts/gpu_check.sh there"
