"""cuda_ext: optional compiled kernels for splat rendering and fitting (imports torch only).

Build with `bash scripts/build_ext.sh`; nothing compiles at import. `cuda_ext.ops` raises ImportError
(with the reason) when the compiled module is missing.
"""

__all__ = ["available", "load_error"]


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
