"""`.gsq`: a quantised, entropy-coded splat file (beyond the paper; the reference format stays `.gs.npy`).

Encoding of one [N, 8] set:
1. Gaussians are sorted along a Morton (Z-order) curve of their quantised centres, so neighbours in the
   file are neighbours in the image (sets are unordered, so this loses nothing);
2. each quantity is quantised against the set's own range: x, y with `xy_bits`, log l11 and log l22
   and the shear l21/l22 with `scale_bits`, colours with `color_bits` per channel; the defaults depend
   on N (`default_bits`: 11/7/7 up to 1024 Gaussians, 12/8/8 above; 11 bits = 1/9 px at 224²);
3. centres are delta-coded along the curve, every column is stored as a separate plane (byte-split for
   16-bit planes), and the planes are compressed with LZMA.
Step 3 is lossless: `pack(*unpack(b)) == b`, and `unpack` returns exactly the codes and ranges that
`quantise` produced; the only loss is the quantisation in step 2 (float reconstruction of the codes).

Layout: magic `GSQ1`, u32 N, u8 xy_bits, scale_bits, color_bits, then 8 (lo, hi) float32 ranges, then
the raw LZMA2 stream of the planes.
"""

from __future__ import annotations

import lzma
import os
import struct
from pathlib import Path

import numpy as np
import torch

from .splat_io import SplatFileError, atomic_write_bytes, validate_splats

__all__ = [
    "decode_gsq",
    "default_bits",
    "dequantise",
    "encode_gsq",
    "load_gsq",
    "pack",
    "quantise",
    "save_gsq",
    "unpack",
]

MAGIC = b"GSQ1"
# raw LZMA2 (no .xz container: its ~60 bytes of framing matter at a few KB per image)
_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
_HEADER = struct.Struct("<4sIBBB")
_RANGES = struct.Struct("<16f")


def _morton(ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """Interleave the bits of two ≤16-bit integer arrays into Z-order keys."""

    def spread(v):
        v = v.astype(np.uint64) & 0xFFFF
        v = (v | (v << 8)) & 0x00FF00FF
        v = (v | (v << 4)) & 0x0F0F0F0F
        v = (v | (v << 2)) & 0x33333333
        return (v | (v << 1)) & 0x55555555

    return spread(ix) | (spread(iy) << np.uint64(1))


def _features(a: np.ndarray) -> np.ndarray:
    """[N, 8] splats → the 8 quantities that get quantised: x, y, log l11, l21/l22, log l22, r, g, b."""
    f = a.astype(np.float64).copy()
    f[:, 2] = np.log(a[:, 2])
    f[:, 3] = a[:, 3] / a[:, 4]
    f[:, 4] = np.log(a[:, 4])
    return f


def _unfeatures(f: np.ndarray) -> np.ndarray:
    a = f.copy()
    a[:, 2] = np.exp(f[:, 2])
    a[:, 4] = np.exp(f[:, 4])
    a[:, 3] = f[:, 3] * a[:, 4]
    return a.astype(np.float32)


def _bits(xy_bits, scale_bits, color_bits):
    return [xy_bits, xy_bits, scale_bits, scale_bits, scale_bits, color_bits, color_bits, color_bits]


def _planes(q: np.ndarray, bits: list[int]) -> bytes:
    """Column planes; centres delta-coded (mod 2^bits), 16-bit planes split into high and low bytes."""
    out = []
    for c, b in enumerate(bits):
        col = q[:, c].astype(np.int64)
        if c < 2:
            col = np.diff(col, prepend=0) % (1 << b)
        col = col.astype(np.uint16)
        out += (
            [(col >> 8).astype(np.uint8).tobytes(), (col & 0xFF).astype(np.uint8).tobytes()]
            if b > 8
            else [col.astype(np.uint8).tobytes()]
        )
    return b"".join(out)


def _unplanes(data: bytes, n: int, bits: list[int]) -> np.ndarray:
    q = np.zeros((n, 8), np.int64)
    pos = 0
    for c, b in enumerate(bits):
        if b > 8:
            hi = np.frombuffer(data, np.uint8, n, pos).astype(np.int64)
            lo = np.frombuffer(data, np.uint8, n, pos + n).astype(np.int64)
            col, pos = (hi << 8) | lo, pos + 2 * n
        else:
            col, pos = np.frombuffer(data, np.uint8, n, pos).astype(np.int64), pos + n
        if c < 2:
            col = np.cumsum(col) % (1 << b)
        q[:, c] = col
    if pos != len(data):
        raise ValueError(f"payload holds {len(data)} bytes, expected {pos}")
    return q


def _check_bits(xy_bits: int, scale_bits: int, color_bits: int) -> list[int]:
    for name, b in (("xy_bits", xy_bits), ("scale_bits", scale_bits), ("color_bits", color_bits)):
        if not 1 <= b <= 16:
            raise ValueError(f"{name} must be in [1, 16], got {b}")
    return _bits(xy_bits, scale_bits, color_bits)


def default_bits(num_gaussians: int) -> tuple[int, int, int]:
    """(xy, scale, colour) bits when none are given: denser sets have smaller Gaussians and a higher PSNR,
    so they need finer steps; the split point keeps the loss small at every N (eval/results/storage.md)."""
    return (11, 7, 7) if num_gaussians <= 1024 else (12, 8, 8)


def quantise(
    splats: torch.Tensor | np.ndarray,
    xy_bits: int | None = None,
    scale_bits: int | None = None,
    color_bits: int | None = None,
):
    """Splats [N, 8] → (codes int64 [N, 8] in Morton order, ranges float32 [8, 2], bits); None bits: default_bits(N)."""
    a = splats.detach().cpu().numpy() if isinstance(splats, torch.Tensor) else np.asarray(splats)
    validate_splats(a)
    auto = default_bits(a.shape[0])
    xy_bits, scale_bits, color_bits = (
        v if v is not None else d for v, d in zip((xy_bits, scale_bits, color_bits), auto, strict=True)
    )
    bits = _check_bits(xy_bits, scale_bits, color_bits)
    f = _features(a)
    levels = np.array([(1 << b) - 1 for b in bits], np.float64)
    ranges = np.stack([f.min(0), f.max(0)], 1).astype(np.float32)
    lo = ranges[:, 0].astype(np.float64)
    span = np.maximum(ranges[:, 1].astype(np.float64) - lo, 1e-30)
    q = np.clip(np.rint((f - lo) / span * levels), 0, levels).astype(np.int64)
    shift = max(0, xy_bits - 16)
    order = np.argsort(_morton(q[:, 0] >> shift, q[:, 1] >> shift), kind="stable")
    return q[order], ranges, bits


def dequantise(q: np.ndarray, ranges: np.ndarray, bits: list[int]) -> torch.Tensor:
    """Codes and ranges → float32 splats [N, 8]."""
    levels = np.array([(1 << b) - 1 for b in bits], np.float64)
    lo, hi = ranges[:, 0].astype(np.float64), ranges[:, 1].astype(np.float64)
    f = np.where(hi > lo, lo + q / levels * np.maximum(hi - lo, 1e-30), lo)
    return torch.from_numpy(_unfeatures(f))


def pack(q: np.ndarray, ranges: np.ndarray, bits: list[int]) -> bytes:
    """Codes + ranges → .gsq bytes (lossless)."""
    payload = lzma.compress(_planes(q, bits), format=lzma.FORMAT_RAW, filters=_FILTERS)
    head = _HEADER.pack(MAGIC, q.shape[0], bits[0], bits[2], bits[5])
    return head + _RANGES.pack(*ranges.astype(np.float32).reshape(-1)) + payload


def unpack(data: bytes, source: str = "gsq"):
    """.gsq bytes → (codes, ranges, bits), exactly what `pack` was given. Raises SplatFileError."""
    if len(data) < _HEADER.size + _RANGES.size:
        raise SplatFileError(f"{source}: too short for a .gsq file ({len(data)} bytes)")
    magic, n, xy_bits, scale_bits, color_bits = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SplatFileError(f"{source}: not a .gsq file (magic {magic!r})")
    bits = _bits(xy_bits, scale_bits, color_bits)
    ranges = np.array(_RANGES.unpack_from(data, _HEADER.size), np.float32).reshape(8, 2)
    try:
        raw = lzma.decompress(data[_HEADER.size + _RANGES.size :], format=lzma.FORMAT_RAW, filters=_FILTERS)
        q = _unplanes(raw, n, bits)
    except (lzma.LZMAError, ValueError) as e:
        raise SplatFileError(f"{source}: damaged .gsq payload ({e})") from e
    return q, ranges, bits


def encode_gsq(
    splats: torch.Tensor | np.ndarray,
    xy_bits: int | None = None,
    scale_bits: int | None = None,
    color_bits: int | None = None,
) -> bytes:
    """Quantise and compress one splat set [N, 8]; returns the .gsq bytes (None bits: default_bits(N))."""
    return pack(*quantise(splats, xy_bits, scale_bits, color_bits))


def decode_gsq(data: bytes, source: str = "gsq") -> torch.Tensor:
    """Inverse of `encode_gsq` up to the quantisation: float32 [N, 8]. Raises SplatFileError."""
    out = dequantise(*unpack(data, source))
    validate_splats(out, source)
    return out


def save_gsq(path: str | os.PathLike, splats, **bits) -> Path:
    """Write `encode_gsq(splats)` to path (atomically)."""
    path = Path(path)
    atomic_write_bytes(path, encode_gsq(splats, **bits))
    return path


def load_gsq(path: str | os.PathLike) -> torch.Tensor:
    """Read a .gsq file; SplatFileError names the file when it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise SplatFileError(f"{path}: file not found")
    return decode_gsq(path.read_bytes(), str(path))
