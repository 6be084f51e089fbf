"""The splat file format (docs/format.md, Files): `<name>.gs.npy` (float16 [N, 8]) plus a `<name>.json` sidecar.

Loading validates everything a consumer relies on (shape, dtype, finite values, l11 > 0, l22 > 0, N ≥ 1)
and raises `SplatFileError` naming the file. Writes go to a temporary name and are renamed, so a killed
job never leaves a half-written file under the final name.
"""

from __future__ import annotations

import io
import json
import os
import tokenize
from pathlib import Path

import numpy as np
import torch

from cuda_ext.files import atomic_write_bytes

__all__ = [
    "COLUMNS",
    "RAW_RGB_BYTES",
    "SplatFileError",
    "as_stored",
    "atomic_write_bytes",
    "load_splats",
    "payload_bytes",
    "save_splats",
    "sidecar_path",
    "npy_bytes",
    "splat_npy_bytes",
    "splat_stem",
    "validate_splats",
]

COLUMNS = ("x", "y", "l11", "l21", "l22", "r", "g", "b")
SUFFIX = ".gs.npy"
RAW_RGB_BYTES = 224 * 224 * 3  # the reference for compression ratios (150,528 bytes)
FP16_MAX = 65504.0


class SplatFileError(ValueError):
    """A splat file or array that breaks the format; the message names the file and the fix."""


def payload_bytes(num_gaussians: int) -> int:
    """Bytes of the fp16 payload of N Gaussians: N·8·2 (docs/format.md, Files)."""
    return int(num_gaussians) * 8 * 2


def splat_stem(path: str | os.PathLike) -> str:
    """'dir/cat.gs.npy' → 'cat'."""
    name = Path(path).name
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) else Path(name).stem


def sidecar_path(path: str | os.PathLike) -> Path:
    """'dir/cat.gs.npy' → 'dir/cat.json'."""
    path = Path(path)
    return path.with_name(splat_stem(path) + ".json")


def validate_splats(arr: np.ndarray | torch.Tensor, source: str = "splats") -> None:
    """Raise SplatFileError unless `arr` is a valid [N, 8] splat set (N ≥ 1, finite, l11 > 0, l22 > 0)."""
    a = arr.detach().cpu().numpy() if isinstance(arr, torch.Tensor) else np.asarray(arr)
    if a.ndim != 2 or a.shape[1] != 8:
        raise SplatFileError(
            f"{source}: expected shape [N, 8] (x, y, l11, l21, l22, r, g, b), got {list(a.shape)}"
        )
    if a.shape[0] < 1:
        raise SplatFileError(f"{source}: holds no Gaussians (N = 0); a splat set needs at least one")
    if not np.issubdtype(a.dtype, np.floating):
        raise SplatFileError(f"{source}: expected float16 or float32 values, got {a.dtype}")
    bad = ~np.isfinite(a)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise SplatFileError(
            f"{source}: {int(bad.sum())} NaN/Inf values (first at row {row}, column {COLUMNS[col]})"
        )
    for col in (2, 4):
        if (a[:, col] <= 0).any():
            row = int(np.argmax(a[:, col] <= 0))
            raise SplatFileError(
                f"{source}: {COLUMNS[col]} must be > 0 (Cholesky diagonal), row {row} has {a[row, col]}"
            )


def _to_fp16(a: np.ndarray) -> np.ndarray:
    a16 = a.astype(np.float16)
    # l11 or l22 tiny enough to round to 0 in fp16 would make Σ singular: keep the smallest fp16 > 0
    for col in (2, 4):
        a16[:, col] = np.maximum(a16[:, col], np.float16(np.finfo(np.float16).smallest_subnormal))
    return a16


def as_stored(splats: torch.Tensor) -> torch.Tensor:
    """The values `save_splats` + `load_splats` give back: float16-rounded, as float32 [N, 8]."""
    return torch.from_numpy(_to_fp16(splats.detach().cpu().numpy()).astype(np.float32))


def npy_bytes(arr: np.ndarray) -> bytes:
    """The bytes of a `.npy` file holding `arr` (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def splat_npy_bytes(splats: torch.Tensor | np.ndarray, source: str = "splats") -> bytes:
    """The bytes of a `.gs.npy` file (float16 [N, 8]) for valid splats; raises SplatFileError otherwise."""
    a = splats.detach().cpu().numpy() if isinstance(splats, torch.Tensor) else np.asarray(splats)
    validate_splats(a, source)
    if np.abs(a).max() > FP16_MAX:
        raise SplatFileError(f"{source}: values beyond the float16 range (±{FP16_MAX}) cannot be stored")
    return npy_bytes(_to_fp16(a))


def save_splats(path: str | os.PathLike, splats: torch.Tensor | np.ndarray, meta: dict | None = None) -> Path:
    """Save [N, 8] splats as float16 `<name>.gs.npy` (+ `<name>.json` when `meta` is given).

    Returns the path of the .gs.npy file. Raises SplatFileError for invalid splats or values that
    overflow float16.
    """
    path = Path(path)
    if not path.name.endswith(SUFFIX):
        path = path.with_name(path.name + SUFFIX)
    data = splat_npy_bytes(splats, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    if meta is not None:
        atomic_write_bytes(sidecar_path(path), (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return path


def load_splats(path: str | os.PathLike, with_meta: bool = False):
    """Load and validate a `.gs.npy` file as float32 [N, 8].

    Args:
        path: the .gs.npy file.
        with_meta: also return the sidecar dict (None when there is no sidecar).
    Returns:
        tensor, or (tensor, meta) when with_meta.
    Raises:
        SplatFileError naming the file: missing, truncated, not .npy, wrong shape or dtype, NaN/Inf.
    """
    path = Path(path)
    if not path.exists():
        raise SplatFileError(f"{path}: file not found")
    if path.is_dir():
        raise SplatFileError(f"{path}: is a directory, not a splat file")
    try:
        a = np.load(path, allow_pickle=False)
    except (
        ValueError,
        OSError,
        EOFError,
        SyntaxError,
        tokenize.TokenError,
    ) as e:  # the last two: a bad header
        raise SplatFileError(f"{path}: not a readable .npy file ({e}); refit the image to recreate it") from e
    if not isinstance(a, np.ndarray):
        raise SplatFileError(f"{path}: holds an archive, not a single [N, 8] array")
    validate_splats(a, str(path))
    t = torch.from_numpy(a.astype(np.float32))
    if not with_meta:
        return t
    meta = None
    side = sidecar_path(path)
    if side.exists():
        try:
            meta = json.loads(side.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SplatFileError(f"{side}: sidecar is not valid JSON ({e})") from e
    return t, meta
