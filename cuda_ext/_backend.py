"""Finding the compiled extension: the module built by `python -m cuda_ext.build` in cuda_ext/_build/.

Nothing compiles here. A missing or broken build raises ImportError carrying the reason, cached so later
calls fail fast (never a None handle that crashes later).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

BUILD_DIR = Path(__file__).resolve().parent / "_build"
CPU_NAME = "gsv_cpu_ops"
_cache: dict[str, object] = {}


def _load(name: str):
    if name in _cache:
        result = _cache[name]
        if isinstance(result, ImportError):
            raise result
        return result
    try:
        import torch  # noqa: F401  (the extension links against torch's libraries)

        candidates = sorted(BUILD_DIR.glob(f"{name}*.so"))
        if not candidates:
            raise ImportError(
                f"{name} is not built ({BUILD_DIR} has no {name}*.so); run `bash scripts/build_ext.sh`"
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


def cpu_module():
    """The compiled CPU op module (render_cpu_fwd / render_cpu_bwd)."""
    return _load(CPU_NAME)
