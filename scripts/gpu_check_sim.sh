#!/usr/bin/env bash
# Run scripts/gpu_check.sh here as on a bare GPU machine without its GPU, to prove every step before the
# device works: a python holding only torch and what `pip install torch==2.14.1` brings, a copy of the
# working tree as it is copied to a GPU machine (tracked and untracked-not-ignored files) plus the
# wheels, no ninja on PATH, the pip CUDA toolkit of .venv as CUDA_HOME. Expected: exit status 5
# ("no GPU") with the preflight, the wheel install, the build, the imports and the test collection ok.
#
#   bash scripts/gpu_check_sim.sh            # needs .venv (torch 2.14.1 and the [cuda] toolkit)
#
# The torch-only python: a venv (no pip, no setuptools of its own) whose one .pth file points at a
# folder of links to the files of torch and of its dependencies (the closure of torch's requirements,
# read from .venv's metadata): the files pip would install, linked instead of downloaded (4 GB).
# Env: GSV_SIM_DIR (/tmp/gsv_sim), GSV_WHEELS (./gpu_wheels; when it holds no wheels for this python's
# version, scripts/gpu_wheels.sh fetches them into $GSV_SIM_DIR/wheels: needs PyPI), GSV_SIM_PIP (1: pip in the torch-only python, as after
# `python -m venv`; 0: none, so gpu_check.sh runs pip from its carried wheel), MAX_JOBS (1).
# Exit status: 0 when gpu_check.sh ended with 5 and every expected line is in its log, 1 otherwise.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SIM="${GSV_SIM_DIR:-/tmp/gsv_sim}"
WHEELS="${GSV_WHEELS:-$ROOT/gpu_wheels}"
VENV_PY="$ROOT/.venv/bin/python"
[ -x "$VENV_PY" ] || { echo "gpu_check_sim.sh: no $VENV_PY (bash scripts/setup_env.sh makes it)" >&2; exit 1; }
START=$(date +%s)
say() { echo "[gpu_check_sim $(($(date +%s) - START))s] $*"; }

rm -rf "$SIM" && mkdir -p "$SIM"
say "torch-only python in $SIM/bare"
"$("$VENV_PY" -c 'import sys; print(sys._base_executable)')" -m venv --without-pip "$SIM/bare"
"$VENV_PY" - "$SIM/torch_site" "$SIM/bare" "${GSV_SIM_PIP:-1}" <<'EOF'
import importlib.metadata as md
import os
import sys
from pathlib import Path

sys.path.insert(0, "scripts")
from gpu_preflight import torch_closure  # noqa: E402  (the closure the package list leaves out, too)

view, venv, with_pip = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
names = torch_closure() | ({"pip"} if with_pip else set())
files = 0
for name in names:
    dist = md.distribution(name)
    for f in dist.files or []:
        src = Path(dist.locate_file(f))
        if f.parts[0] == ".." or not src.exists():  # scripts in bin/, files pip did not keep
            continue
        dst = view / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            os.symlink(src, dst)
            files += 1
site = next(venv.glob("lib/python3*/site-packages"))
(site / "torch_only.pth").write_text(f"{view}\n")
print(f"{len(names)} distributions ({', '.join(sorted(names))}), {files} files linked")
EOF
BARE="$SIM/bare/bin/python"
ver="$("$BARE" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
"$BARE" - <<'EOF'
import importlib.util
import torch

import sys

sys.path.insert(0, "scripts")
from gpu_preflight import read_packages  # noqa: E402  (standard library only)

# every package the check installs from wheels, and one the project's own tests need, must be missing
absent = [m for m, _, kind, _ in read_packages() if kind != "tool"] + ["skimage"]
seen = [m for m in absent if importlib.util.find_spec(m)]
assert not seen, f"the torch-only python sees {seen}"
print("torch-only python:", torch.__version__, "|", ", ".join(absent), "absent")
EOF

if ! ls "$WHEELS"/numpy-*-cp${ver/./}-*.whl >/dev/null 2>&1; then
  # fetched into the simulation's folder: the carried gpu_wheels/ stays as made for the GPU machine
  say "no wheels for Python $ver in $WHEELS/: fetching them into $SIM/wheels"
  WHEELS="$SIM/wheels"
  bash scripts/gpu_wheels.sh --python-version "$ver" --dest "$WHEELS"
fi

say "copy of the working tree (tracked and untracked-not-ignored files) + $(basename "$WHEELS")/ in $SIM/repo"
mkdir -p "$SIM/repo"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -xf - -C "$SIM/repo"
cp -r "$WHEELS" "$SIM/repo/gpu_wheels"
say "tree $(du -sh --exclude=gpu_wheels "$SIM/repo" | cut -f1), wheels $(du -sh "$SIM/repo/gpu_wheels" | cut -f1)"

# PATH without ninja or nvcc (links to everything else), as on a machine that has neither
mkdir -p "$SIM/path"
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  case "$d" in "$ROOT"/.venv/*) continue ;; esac
  for f in "$d"/*; do
    b="$(basename "$f")"
    [ "$b" = ninja ] || [ "$b" = nvcc ] || [ -e "$SIM/path/$b" ] || ln -s "$f" "$SIM/path/$b" 2>/dev/null || true
  done
done

TOOLKIT="$("$VENV_PY" -c 'from cuda_ext.build import _pip_toolkit; print(_pip_toolkit("13") or "")')"
[ -n "$TOOLKIT" ] || { echo "gpu_check_sim.sh: .venv has no pip CUDA toolkit (the [cuda] extra)" >&2; exit 1; }
say "gpu_check.sh with GSV_PYTHON=$BARE CUDA_HOME=$TOOLKIT"
set +e
(cd "$SIM/repo" && env -u PYTHONPATH -u VIRTUAL_ENV PATH="$SIM/path" GSV_PYTHON="$BARE" CUDA_HOME="$TOOLKIT" \
  OUT="$SIM/out" MAX_JOBS="${MAX_JOBS:-1}" bash scripts/gpu_check.sh)
rc=$?
set -e
say "gpu_check.sh exit status $rc"
missing=()
for line in "MISSING  numpy" "MISSING  ninja" "installing from" "wheels installed" "preflight ok" \
  "built gsv_cuda_ops" "gsv_cuda_ops: loads" "build done, imports ok" "test collection ok" \
  "benchmark imports ok" "no GPU: preflight, wheels, build, imports and test collection ok"; do
  grep -qF -- "$line" "$SIM/out/gpu_check.log" || missing+=("$line")
done
if [ $rc -eq 5 ] && [ ${#missing[@]} -eq 0 ]; then
  say "OK: exit 5 (no GPU), every step before the device green; log: $SIM/out/gpu_check.log"
  exit 0
fi
say "FAILED: exit $rc (expected 5); lines not in the log: ${missing[*]:-none}"
exit 1
