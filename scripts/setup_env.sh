# Sourced by scripts/demo.sh and scripts/test.sh: create .venv if missing and install the project into it.
# Re-installs only when pyproject.toml changed since the last install (stamp file inside .venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GSV_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed (found " + sys.version.split()[0] + "); set PYTHON=/path/to/python3.11")'
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.gsv-installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [ ! -e "$STAMP" ]; then
  echo "[setup] installing the project and its stack into $VENV (first time: several minutes)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -e "$ROOT[dev]"
  rm -f "$VENV"/.gsv-installed-*
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
# the compiled CPU op and CUDA kernels (seconds when up to date; on failure the pure-torch path is used)
GSV_PYTHON="$VENV/bin/python" bash "$ROOT/scripts/build_ext.sh"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
