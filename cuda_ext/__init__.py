"""cuda_ext: optional compiled kernels for splat rendering and fitting (imports torch only).

Two modules, built by `bash scripts/build_ext.sh`: the C++/OpenMP CPU op (`available`, `load_error`)
and the CUDA kernels (`cuda_available`, `cuda_load_error`). Nothing compiles at import. `cuda_ext.ops`
raises ImportError (with the reason) when a compiled module is missing.
"""

__all__ = ["available", "cuda_available", "cuda_load_error", "load_error"]


def available() -> bool:
    """True when the compiled CPU op loads."""
    from . import _backend

    try:
        _backend.cpu_module()
    except ImportError:
        return False
    return True


def load_error() -> str | None:
    """Why the compiled op does not load (None when it does)."""
    from . import _backend

    try:
        _backend.cpu_module()
    except ImportError as e:
        return str(e)
    return None


def cuda_available() -> bool:
    """True when the compiled CUDA module loads (it loads without a GPU; running it needs one)."""
    return cuda_load_error() is None


def cuda_load_error() -> str | None:
    """Why the compiled CUDA module does not load (None when it does)."""
    from . import _backend

    try:
        _backend.cuda_module()
    except ImportError as e:
        return str(e)
    return None
