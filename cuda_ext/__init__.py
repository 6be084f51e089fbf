"""cuda_ext: optional compiled kernels for splat rendering and fitting (imports torch only).

Three modules, built by `bash scripts/build_ext.sh`: the C++/OpenMP CPU op (`available`, `load_error`),
the CUDA kernels (`cuda_available`, `cuda_load_error`) and their CPU emulation (`emu_load_error`,
docs/cuda_emulation.md). Nothing compiles at import. `cuda_ext.ops`
raises ImportError (with the reason) when a compiled module is missing.
"""

__all__ = ["available", "cuda_available", "cuda_load_error", "emu_load_error", "load_error"]


def _error(loader: str) -> str | None:
    """Why `_backend.<loader>()` fails to load its module (None when it loads)."""
    from . import _backend

    try:
        getattr(_backend, loader)()
    except ImportError as e:
        return str(e)
    return None


def available() -> bool:
    """True when the compiled CPU op loads."""
    return load_error() is None


def load_error() -> str | None:
    """Why the compiled op does not load (None when it does)."""
    return _error("cpu_module")


def cuda_available() -> bool:
    """True when the compiled CUDA module loads (it loads without a GPU; running it needs one)."""
    return cuda_load_error() is None


def cuda_load_error() -> str | None:
    """Why the compiled CUDA module does not load (None when it does)."""
    return _error("cuda_module")


def emu_load_error() -> str | None:
    """Why the CPU emulation of the CUDA kernels does not load (None when it does)."""
    return _error("emu_module")
