"""Which implementation renders and fits: the one place that reaches cuda_ext, and only at call time.

- "torch": the pure-torch windowed pair list (render.py), on any device; the reference.
- "cpp": cuda_ext's compiled C++/OpenMP op, CPU tensors only.
- "cuda": cuda_ext's CUDA kernels (batched render, fused fit), float32 CUDA tensors only.
- "cuda-emu": the same CUDA kernel sources run on CPU tensors by their CPU emulation (cuda_ext,
  docs/cuda_emulation.md); far slower than "cpp", for checking the kernels without a GPU. Never chosen
  by "auto".
- "auto": "cuda" for CUDA tensors and "cpp" for CPU tensors when that module loads, else "torch".
  When the CUDA kernels are missing for CUDA tensors it says so once, as a warning, and uses "torch".
"""

from __future__ import annotations

import logging

import torch

__all__ = ["BACKENDS", "KERNEL_BACKENDS", "resolve_backend"]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "cpp", "cuda", "cuda-emu")
KERNEL_BACKENDS = ("cuda", "cuda-emu")  # the ones that run cuda_ext's kernel sources (batched fit included)
_announced: set[str] = set()


def _announce(key: str, level: int, msg: str, *args) -> None:
    """Log `msg` once per process for `key`."""
    if key not in _announced:
        _announced.add(key)
        logger.log(level, msg, *args)


def _auto(device: torch.device, dtype: torch.dtype) -> str:
    import cuda_ext

    if device.type == "cuda":
        if dtype != torch.float32:
            return "torch"  # the kernels are float32; other dtypes are a deliberate choice, not a fallback
        err = cuda_ext.cuda_load_error()
        if err is None:
            _announce("cuda", logging.INFO, "splat renderer: cuda backend (cuda_ext kernels)")
            return "cuda"
        _announce(
            "cuda-fallback",
            logging.WARNING,
            "splat fitting/rendering on %s: cuda_ext's CUDA kernels are not available (%s); falling back "
            "to the pure-torch path, which is much slower. Build them with `bash scripts/build_ext.sh`.",
            device,
            err,
        )
        return "torch"
    if device.type == "cpu":
        err = cuda_ext.load_error()
        backend = "cpp" if err is None else "torch"
        _announce(
            f"{backend}/cpu",
            logging.INFO,
            "splat renderer: %s backend%s",
            backend,
            f" ({err})" if err else "",
        )
        return backend
    return "torch"


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """The backend that runs for tensors on `device` of `dtype` (see the module docstring).

    Raises ValueError for an unknown name or a backend that cannot take such tensors, TypeError for a
    dtype "cuda" does not take, and ImportError (with the reason) when an explicitly chosen compiled
    module is not built.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "auto":
        return _auto(device, dtype)
    if backend == "cpp":
        from cuda_ext import _backend

        _backend.cpu_module()  # raises ImportError with the reason
        if device.type != "cpu":
            raise ValueError(f"backend 'cpp' runs on the CPU, got tensors on {device}")
    elif backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"backend 'cuda' runs on a CUDA device, got tensors on {device}")
        if dtype != torch.float32:
            raise TypeError(f"backend 'cuda' takes float32 tensors, got {dtype}")
        from cuda_ext import _backend

        _backend.cuda_module()  # raises ImportError with the reason
    elif backend == "cuda-emu":
        if device.type != "cpu":
            raise ValueError(
                f"backend 'cuda-emu' emulates the CUDA kernels on the CPU, got tensors on {device}"
            )
        if dtype != torch.float32:
            raise TypeError(f"backend 'cuda-emu' takes float32 tensors, got {dtype}")
        from cuda_ext import _backend

        _backend.emu_module()  # raises ImportError with the reason
    return backend
