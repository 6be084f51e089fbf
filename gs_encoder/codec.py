"""`.gsq`: a quantised, entropy-coded splat file (beyond the paper; the training format stays `.gs.npy`).

Encoding of one [N, 8] set (docs/format.md, `.gsq`; the measurements behind each choice: docs/codec.md):
1. the 8 quantities x, y, log l11, l21/l22, log l22, r, g, b are quantised with three step sizes, one for
   the centres, one for the shape quantities, one for the colours, each a power 2^(e/4) of two; a
   *level* moves all three together by quarter octaves (level 0: 1/4096 of the canvas, 0.019, 0.0045);
2. with the image at hand the encoder first quantises the geometry, then solves the colours that best
   reproduce the image through the quantised geometry (least squares: the render is linear in colours),
   and only then quantises them; `encode_gsq(..., image=...)` also picks the coarsest level whose PSNR stays
   within `max_loss_db` of the unquantised set's: the bits follow the fit's own error, per image;
3. the Gaussians are sorted along a Morton (Z-order) curve of their quantised centres (sets are unordered),
   the centres are sent as the gaps between successive Morton keys, the colours through the lossless
   integer YCoCg-R transform, every other column as its difference from the column's median;
4. every column is range-coded with its own adaptive model (gs_encoder/entropy.py).
Steps 3 and 4 are lossless: `pack(unpack(b)) == b` and `unpack` returns exactly the codes that `quantise`
produced. A CRC-32 of the codes makes a damaged file an error, never a wrong picture.

Layout: magic `GSQ2`, N (LEB128), the three step exponents (int8), the centres' offsets and the six column
medians (zigzag LEB128), the CRC-32 (u32, little-endian), then the range-coded stream.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .entropy import DamagedStream, Decoder, Encoder, Model
from .splat_io import SplatFileError, atomic_write_bytes, validate_splats

__all__ = [
    "DEFAULT_LEVEL",
    "MAX_LOSS_DB",
    "Codes",
    "choose_level",
    "code_columns",
    "decode_gsq",
    "dequantise",
    "encode_gsq",
    "gsq_info",
    "load_gsq",
    "pack",
    "quantise",
    "save_gsq",
    "steps",
    "unpack",
]

MAGIC = b"GSQ2"
# level 0's step exponents (quarter octaves) of centres (canvas units), shape quantities and colours
BASE_EXPONENTS = (-48, -23, -31)
DEFAULT_LEVEL = 0  # without the image (docs/codec.md: chosen on the tuning set)
LEVELS = range(-12, 25)  # what choose_level searches
MAX_LOSS_DB = 1.0  # choose_level: the PSNR a file may lose against the unquantised set (docs/codec.md)
SOLVE_ITERS = 25  # conjugate-gradient steps of the colour solve (from the fitted colours, it converges fast)
_XY_CODES = 1 << 16  # the centres' codes must span fewer steps than this (Morton keys of 2 × 16 bits)
_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class Codes:
    """A quantised set: integer codes [N, 8] in Morton order and the three step exponents."""

    q: np.ndarray
    exponents: tuple[int, int, int]

    def __eq__(self, other) -> bool:
        return self.exponents == other.exponents and np.array_equal(self.q, other.q)


def steps(level: int = DEFAULT_LEVEL) -> tuple[float, float, float]:
    """(centres, shape, colour) step sizes of a level."""
    return tuple(2.0 ** ((e + level) / 4) for e in BASE_EXPONENTS)


def _step_columns(exponents) -> np.ndarray:
    xy, shape, colour = (2.0 ** (e / 4) for e in exponents)
    return np.array([xy, xy, shape, shape, shape, colour, colour, colour])


def _features(a: np.ndarray) -> np.ndarray:
    """[N, 8] splats → x, y, log l11, l21/l22, log l22, r, g, b."""
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


def _morton(ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """Interleave the bits of two < 2^16 integer arrays into Z-order keys."""

    def spread(v):
        v = v.astype(np.uint64) & np.uint64(0xFFFF)
        for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
            v = (v | (v << np.uint64(shift))) & np.uint64(mask)
        return v

    return spread(ix) | (spread(iy) << np.uint64(1))


def _unmorton(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    def squeeze(v):
        v = v & np.uint64(0x55555555)
        for shift, mask in ((1, 0x33333333), (2, 0x0F0F0F0F), (4, 0x00FF00FF), (8, 0x0000FFFF)):
            v = (v | (v >> np.uint64(shift))) & np.uint64(mask)
        return v

    key = key.astype(np.uint64)
    return squeeze(key).astype(np.int64), squeeze(key >> np.uint64(1)).astype(np.int64)


def _level_exponents(level: int, base=BASE_EXPONENTS) -> tuple[int, int, int]:
    exps = tuple(e + int(level) for e in base)
    if not all(-128 <= e <= 127 for e in exps):
        raise ValueError(f"level {level} is out of range (step exponents {exps} must fit int8)")
    return exps


def _as_numpy(splats) -> np.ndarray:
    a = splats.detach().cpu().float().numpy() if isinstance(splats, torch.Tensor) else np.asarray(splats)
    validate_splats(a)
    return a


def _quantise_columns(f: np.ndarray, exponents, columns) -> np.ndarray:
    step = _step_columns(exponents)[columns]
    return np.rint(f[:, columns] / step).astype(np.int64)


def _span(qxy: np.ndarray) -> int:
    """How many steps the centres' codes [N, 2] span on the wider axis (Morton keys need < _XY_CODES)."""
    return int((qxy.max(0) - qxy.min(0)).max())


def _morton_order(q: np.ndarray, level: int) -> np.ndarray:
    span = _span(q[:, :2])
    if span >= _XY_CODES:
        raise ValueError(
            f"the centres span {span} steps at level {level}, more than {_XY_CODES - 1}: choose a coarser level"
        )
    rel = q[:, :2] - q[:, :2].min(0)
    return np.argsort(_morton(rel[:, 0], rel[:, 1]), kind="stable")


def quantise(
    splats, level: int = DEFAULT_LEVEL, image: torch.Tensor | None = None, base=BASE_EXPONENTS
) -> Codes:
    """Splats [N, 8] → Codes at `level`. With `image` ([3, S, S] in [0, 1], the picture the set was fitted
    to), the colours are solved on the quantised geometry before they are quantised. `base`: level 0's
    step exponents (the file stores the exponents, so any base decodes)."""
    a = _as_numpy(splats)
    exps = _level_exponents(level, base)
    f = _features(a)
    q = np.zeros(f.shape, np.int64)
    q[:, :5] = _quantise_columns(f, exps, slice(0, 5))
    if image is not None:
        from .fitting.init import solve_colours

        geometry = torch.from_numpy(_unfeatures(np.concatenate([_dequantise_f(q, exps)[:, :5], f[:, 5:]], 1)))
        f = f.copy()
        f[:, 5:] = solve_colours(geometry[None], image.detach().float().cpu()[None], SOLVE_ITERS)[
            0, :, 5:
        ].numpy()
    q[:, 5:] = _quantise_columns(f, exps, slice(5, 8))
    return Codes(q[_morton_order(q, level)], exps)


def _dequantise_f(q: np.ndarray, exponents) -> np.ndarray:
    return q.astype(np.float64) * _step_columns(exponents)


def dequantise(codes: Codes) -> torch.Tensor:
    """Codes → float32 splats [N, 8]."""
    return torch.from_numpy(_unfeatures(_dequantise_f(codes.q, codes.exponents)))


def _leb(v: int) -> bytes:
    out = bytearray()
    while True:
        byte, v = v & 0x7F, v >> 7
        out.append(byte | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def _read_leb(data: bytes, pos: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise DamagedStream("the header ends inside a number")
        byte = data[pos]
        pos += 1
        v |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return v, pos


def _unzigzag(v: int) -> int:
    return v >> 1 if not v & 1 else -(v >> 1) - 1


def _ycocg(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb.T
    co = r - b
    t = b + (co >> 1)
    cg = g - t
    return np.stack([t + (cg >> 1), co, cg], 1)


def _rgb(ycc: np.ndarray) -> np.ndarray:
    y, co, cg = ycc.T
    t = y - (cg >> 1)
    g = cg + t
    b = t - (co >> 1)
    return np.stack([co + b, g, b], 1)


def _crc(codes: Codes) -> int:
    return zlib.crc32(np.ascontiguousarray(codes.q, "<i8").tobytes() + bytes(np.int8(codes.exponents)))


def pack(codes: Codes) -> bytes:
    """Codes → .gsq bytes (lossless)."""
    q = codes.q
    if _span(q[:, :2]) >= _XY_CODES:
        raise ValueError(f"the centres span more than {_XY_CODES - 1} steps")
    origin = q[:, :2].min(0)
    rel = q[:, :2] - origin
    keys = _morton(rel[:, 0], rel[:, 1]).astype(np.int64)
    if (np.diff(keys) < 0).any():
        raise ValueError("codes are not in Morton order (make them with quantise)")
    enc = Encoder()
    model = Model()
    for gap in np.diff(keys, prepend=0).tolist():
        enc.uint(model, gap)
    centres = code_columns(enc, np.concatenate([q[:, 2:5], _ycocg(q[:, 5:8])], 1))
    head = MAGIC + _leb(q.shape[0]) + struct.pack("<3b", *codes.exponents)
    head += b"".join(_leb(_zigzag(int(v))) for v in (*origin, *centres)) + _CRC.pack(_crc(codes))
    return head + enc.finish()


def code_columns(enc: Encoder, columns: np.ndarray) -> np.ndarray:
    """Range-code integer columns [N, C] with `enc`, each with its own adaptive model as differences from
    its median; returns the medians (int64 [C]), which the decoder needs."""
    centres = np.median(columns, 0).round().astype(np.int64)
    for col, centre in zip(columns.T, centres, strict=True):
        model = Model()
        for v in (col - centre).tolist():
            enc.sint(model, v)
    return centres


def unpack(data: bytes, source: str = "gsq") -> Codes:
    """.gsq bytes → Codes, exactly what `pack` was given. Raises SplatFileError naming `source`."""
    if len(data) < 4 or data[:4] != MAGIC:
        raise SplatFileError(
            f"{source}: not a .gsq file (starts {bytes(data[:4])!r}, expected {MAGIC!r}); "
            "write one with `gsv convert` or `gsv fit -o NAME.gsq`"
        )
    try:
        n, pos = _read_leb(data, 4)
        if n < 1:
            raise DamagedStream("N = 0")
        if len(data) < pos + 3:
            raise DamagedStream("the header is cut short")
        exps = struct.unpack_from("<3b", data, pos)
        pos += 3
        values = []
        for _ in range(8):
            v, pos = _read_leb(data, pos)
            values.append(_unzigzag(v))
        if len(data) < pos + _CRC.size:
            raise DamagedStream("the header is cut short")
        (crc,) = _CRC.unpack_from(data, pos)
        pos += _CRC.size
        if n > 512 * (len(data) - pos) + 64:  # a Gaussian costs more than 1/64 bit even at the coder's limit
            raise DamagedStream(f"N = {n} cannot fit in {len(data) - pos} bytes")
        dec = Decoder(data[pos:])
        model = Model()
        keys = np.cumsum([dec.uint(model) for _ in range(n)], dtype=np.int64)
        rest = np.zeros((n, 6), np.int64)
        for c in range(6):
            model = Model()
            rest[:, c] = [dec.sint(model) + values[2 + c] for _ in range(n)]
    except (DamagedStream, OverflowError, struct.error) as e:
        raise SplatFileError(f"{source}: damaged .gsq file ({e})") from e
    if (keys < 0).any() or (keys >= _XY_CODES**2).any():
        raise SplatFileError(f"{source}: damaged .gsq file (a centre outside its range)")
    x, y = _unmorton(keys)
    q = np.concatenate([np.stack([x + values[0], y + values[1]], 1), rest[:, :3], _rgb(rest[:, 3:])], 1)
    codes = Codes(q, tuple(int(e) for e in exps))
    if _crc(codes) != crc:
        raise SplatFileError(f"{source}: damaged .gsq file (its checksum does not match its contents)")
    return codes


def gsq_info(data: bytes, source: str = "gsq") -> dict:
    """N, level and step sizes of a .gsq file (decodes it, so a damaged file raises SplatFileError)."""
    codes = unpack(data, source)
    xy, shape, colour = (2.0 ** (e / 4) for e in codes.exponents)
    return {
        "num_gaussians": int(codes.q.shape[0]),
        "level": codes.exponents[0] - BASE_EXPONENTS[0],
        "steps": {"xy": xy, "shape": shape, "colour": colour},
        "bytes": len(data),
    }


def choose_level(
    splats,
    image: torch.Tensor,
    max_loss_db: float = MAX_LOSS_DB,
    base=BASE_EXPONENTS,
    solve: bool = True,
) -> tuple[int, Codes]:
    """The coarsest level (of LEVELS, in half-octave steps) whose file renders within `max_loss_db` dB of the
    unquantised set's PSNR against `image`, and its codes; the finest usable level when none is within.
    `solve`: colours solved on the quantised geometry (False: quantised as fitted)."""
    from .fitting.fit import render_psnr

    if not max_loss_db > 0:
        raise ValueError(f"max_loss_db must be > 0, got {max_loss_db}")
    a = _as_numpy(splats)
    image = image.detach().float().cpu()
    goal = render_psnr(torch.from_numpy(a), image) - max_loss_db
    f = _features(a)
    grid = [
        lv
        for lv in list(LEVELS)[::2]
        if _span(_quantise_columns(f, _level_exponents(lv, base), slice(0, 2))) < _XY_CODES
    ]
    if not grid:
        raise ValueError(
            "the centres spread over too many canvas widths for any level (x, y should lie near [0, 1])"
        )
    lo, hi = 0, len(grid) - 1  # binary search: the PSNR falls as the level grows
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        codes = quantise(a, grid[mid], image if solve else None, base)
        if render_psnr(dequantise(codes), image) >= goal:
            best, lo = (grid[mid], codes), mid + 1
        else:
            hi = mid - 1
    return best or (grid[0], quantise(a, grid[0], image if solve else None, base))


def encode_gsq(
    splats: torch.Tensor | np.ndarray,
    level: int | None = None,
    image: torch.Tensor | None = None,
    max_loss_db: float = MAX_LOSS_DB,
) -> bytes:
    """Quantise and compress one splat set [N, 8]. `level` fixes the steps (None: chosen by `choose_level`
    when `image` is given, else DEFAULT_LEVEL); `image` ([3, S, S] in [0, 1]) lets the encoder solve the
    colours on the quantised geometry."""
    if level is None and image is not None:
        return pack(choose_level(splats, image, max_loss_db)[1])
    return pack(quantise(splats, DEFAULT_LEVEL if level is None else level, image))


def decode_gsq(data: bytes, source: str = "gsq") -> torch.Tensor:
    """Inverse of `encode_gsq` up to the quantisation: float32 [N, 8]. Raises SplatFileError."""
    out = dequantise(unpack(data, source))
    validate_splats(out, source)
    return out


def save_gsq(path: str | os.PathLike, splats, **options) -> Path:
    """Write `encode_gsq(splats, **options)` to path (atomically)."""
    path = Path(path)
    atomic_write_bytes(path, encode_gsq(splats, **options))
    return path


def load_gsq(path: str | os.PathLike) -> torch.Tensor:
    """Read a .gsq file; SplatFileError names the file when it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise SplatFileError(f"{path}: file not found")
    return decode_gsq(path.read_bytes(), str(path))
