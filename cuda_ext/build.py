"""`python -m cuda_ext.build`: compile the extension ahead of time into cuda_ext/_build/.

The CPU op (C++ with OpenMP) needs only a C++ compiler. Run by scripts/build_ext.sh.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ._backend import BUILD_DIR, CPU_NAME

CSRC = Path(__file__).resolve().parent / "csrc"


def build_cpu(verbose: bool = False) -> Path:
    from torch.utils.cpp_extension import load

    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MAX_JOBS", "2")
    load(
        name=CPU_NAME,
        sources=[str(CSRC / "cpu_render.cpp")],
        extra_cflags=["-O3", "-fopenmp", "-ffp-contract=off"],
        extra_ldflags=["-fopenmp"],
        build_directory=str(BUILD_DIR),
        verbose=verbose,
    )
    return BUILD_DIR


def main() -> int:
    try:
        out = build_cpu(verbose="-v" in sys.argv)
    except (RuntimeError, OSError) as e:
        print(f"error: building the CPU op failed: {e}", file=sys.stderr)
        return 1
    print(f"built {CPU_NAME} in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
