"""Finding the compiled extensions built by `python -m cuda_ext.build`: the CPU op in cuda_ext/_build/,
the CUDA op (a separate module, so a failed CUDA build never costs the CPU op) in cuda_ext/_build/cuda/,
the CPU emulation of the CUDA kernels in cuda_ext/_build/emu/.

Nothing compiles here. A missing or broken build raises ImportError carrying the reason, cached so later
calls fail fast (never a None handle that crashes later). Importing the CUDA module needs no GPU.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

BUILD_DIR = Path(__file__).resolve().parent / "_build"
CUDA_BUILD_DIR = BUILD_DIR / "cuda"
CUDA_STATUS = BUILD_DIR / "cuda_build.json"  # written by every CUDA build attempt (cuda_ext.build)
EMU_BUILD_DIR = BUILD_DIR / "emu"
CPU_NAME = "gsv_cpu_ops"
CUDA_NAME = "gsv_cuda_ops"
EMU_NAME = "gsv_cuda_emu"  # the CUDA kernel sources compiled for the CPU (docs/cuda_emulation.md)
_cache: dict[str, object] = {}


def _load(name: str, directory: Path = BUILD_DIR):
    if name in _cache:
        result = _cache[name]
        if isinstance(result, ImportError):
            raise result
        return result
    try:
        import torch  # noqa: F401  (the extension links against torch's libraries)

        candidates = sorted(directory.glob(f"{name}*.so"))
        if not candidates:
            raise ImportError(
                f"{name} is not built ({directory} has no {name}*.so); run `bash scripts/build_ext.sh`"
                + _status_hint(name)
            )
        loader = importlib.machinery.ExtensionFileLoader(name, str(candidates[0]))
        spec = importlib.util.spec_from_loader(name, loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        sys.modules.setdefault(name, module)
    except ImportError as e:
        _cache[name] = e
        raise
    except OSError as e:  # a .so that does not load (wrong torch, missing symbols)
        err = ImportError(f"{name} failed to load ({e}); rebuild with `bash scripts/build_ext.sh`")
        _cache[name] = err
        raise err from e
    _cache[name] = module
    return module


def _status_hint(name: str) -> str:
    """Why the last CUDA build did not produce the module, from its status file (empty if unknown)."""
    if name != CUDA_NAME or not CUDA_STATUS.exists():
        return ""
    import json

    try:
        status = json.loads(CUDA_STATUS.read_text())
    except (OSError, ValueError):
        return ""
    return "" if status.get("ok") else f" (last build: {status.get('reason', 'failed')})"


def cpu_module():
    """The compiled CPU op module (render_cpu_fwd / render_cpu_bwd)."""
    return _load(CPU_NAME)


def cuda_module():
    """The compiled CUDA op module (render_fwd / render_bwd / fit_steps / prune_mask)."""
    return _load(CUDA_NAME, CUDA_BUILD_DIR)


def emu_module():
    """The CPU emulation of the CUDA module: the same four ops, run by the kernel sources on CPU tensors."""
    return _load(EMU_NAME, EMU_BUILD_DIR)
