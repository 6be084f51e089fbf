"""Loading raster images onto the square fitting canvas (docs/format.md, Resize modes).

Any image PIL can open becomes an RGB float tensor [3, S, S] in [0, 1]:
- EXIF orientation applied; grayscale, palette, CMYK, 16-bit and float modes converted;
- transparency (RGBA, LA, palette with transparency) composited on white or on the image's mean colour;
- `pad` keeps the aspect ratio and pads with CLIP's mean colour (LLaVA's `image_aspect_ratio=pad`),
  `crop` is CLIP's resize-short-side + centre crop, `resize` squashes to S×S;
- a size guard: JPEGs are decoded at reduced scale when much larger than S, and images over
  `max_pixels` are refused with an error that names the flag to raise.
Every failure raises `ImageLoadError` naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "CLIP_MEAN",
    "RESIZE_MODES",
    "ImageLoadError",
    "canvas_from_pil",
    "decode_image",
    "fingerprint",
    "load_image",
    "same_picture",
    "to_canvas",
]

RESIZE_MODES = ("pad", "crop", "resize")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's image mean, LLaVA's pad colour
DEFAULT_MAX_PIXELS = 200_000_000  # decoded pixels; above this, refuse instead of exhausting memory


class ImageLoadError(ValueError):
    """An image file that cannot be used; the message names the file and the reason."""


FINGERPRINT_SIDE = 16  # grey cells of a content fingerprint
SAME_PICTURE_TOLERANCE = 4.0  # mean |difference| of two fingerprints' cells (of 255) below which they match
SAME_PICTURE_CORRELATION = 0.95  # … and the correlation of their cells above which they match


def fingerprint(rgb: np.ndarray) -> str:
    """Content fingerprint of a picture (uint8 [H, W, 3] or [H, W]): its centre square area-averaged to
    16×16 grey cells (Rec. 601 luma), rounded to bytes, as 512 hex digits. Names are not enough
    (scikit-image's `cat` is `chelsea`): `same_picture` compares fingerprints, so a copy at another size,
    a re-encoding or a greyscale version still matches (eval/splits.py keeps sealed images out of training
    with it)."""
    a = np.asarray(rgb, dtype=np.float64)
    if a.ndim == 3:
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114]) if a.shape[2] >= 3 else a[..., 0]
    h, w = a.shape
    side = min(h, w)
    a = a[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    edges = np.linspace(0, side, FINGERPRINT_SIDE + 1).round().astype(int)
    cells = [
        a[edges[i] : edges[i + 1], edges[j] : edges[j + 1]].mean()
        for i in range(FINGERPRINT_SIDE)
        for j in range(FINGERPRINT_SIDE)
    ]
    return bytes(np.clip(np.round(cells), 0, 255).astype(np.uint8)).hex()


def same_picture(a: str, b: str, tolerance: float = SAME_PICTURE_TOLERANCE) -> bool:
    """Whether two fingerprints are of one picture: their cells differ by less than `tolerance` on average
    and vary together (correlation above SAME_PICTURE_CORRELATION)."""
    x = np.frombuffer(bytes.fromhex(a), dtype=np.uint8).astype(np.float64)
    y = np.frombuffer(bytes.fromhex(b), dtype=np.uint8).astype(np.float64)
    if x.shape != y.shape or x.size != FINGERPRINT_SIDE**2:
        raise ValueError(f"fingerprints of {x.size} and {y.size} cells; expected {FINGERPRINT_SIDE**2} each")
    if float(np.abs(x - y).mean()) >= tolerance:
        return False
    # mostly flat pictures (pages, screens) are close on average; their layout must match too
    sx, sy = x.std(), y.std()
    if sx < 1.0 or sy < 1.0:
        return bool(sx < 1.0 and sy < 1.0)
    return float(np.corrcoef(x, y)[0, 1]) > SAME_PICTURE_CORRELATION


def _to_rgb_array(im: Image.Image, background: str) -> np.ndarray:
    """Any PIL mode → float32 [H, W, 3] in [0, 1]."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(im, dtype=np.float32) / 65535.0
        return np.repeat(arr[:, :, None], 3, axis=2)
    if im.mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise ValueError("image contains NaN or Inf values")
        top = 1.0 if arr.max() <= 1.0 else (65535.0 if arr.max() <= 65535 else float(arr.max()))
        arr = np.clip(arr / top, 0.0, 1.0)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        rgb, alpha = rgba[:, :, :3], rgba[:, :, 3:4]
        if background == "white":
            bg = np.ones(3, dtype=np.float32)
        else:  # mean colour of the visible pixels
            weight = alpha.sum()
            bg = (rgb * alpha).sum((0, 1)) / weight if weight > 0 else np.full(3, 0.5, np.float32)
        return rgb * alpha + bg * (1.0 - alpha)
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def canvas_from_pil(im: Image.Image, size: int, mode: str = "pad", background: str = "white") -> torch.Tensor:
    """An already-open PIL image (any mode, EXIF applied) → [3, S, S] canvas; for dataset transforms."""
    return to_canvas(_to_rgb_array(ImageOps.exif_transpose(im), background), size, mode)


def to_canvas(rgb: np.ndarray | torch.Tensor, size: int, mode: str = "pad") -> torch.Tensor:
    """[H, W, 3] float in [0, 1] → [3, S, S] on the square canvas with the given resize mode."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; valid: {', '.join(RESIZE_MODES)}")
    t = torch.as_tensor(np.asarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]  # [1, 3, H, W]
    h, w = t.shape[-2:]

    def resample(x, hw):
        if tuple(x.shape[-2:]) == tuple(hw):
            return x
        down = hw[0] < x.shape[-2] or hw[1] < x.shape[-1]
        return torch.nn.functional.interpolate(
            x, size=hw, mode="bicubic", antialias=down, align_corners=False
        )

    if mode == "resize":
        out = resample(t, (size, size))
    elif mode == "crop":
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        r = resample(t, (nh, nw))
        top, left = (nh - size) // 2, (nw - size) // 2
        out = r[..., top : top + size, left : left + size]
    else:
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        r = resample(t, (nh, nw))
        out = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1).repeat(1, 1, size, size)
        top, left = (size - nh) // 2, (size - nw) // 2
        out[..., top : top + nh, left : left + nw] = r
    return out[0].clamp(0.0, 1.0).contiguous()


@contextlib.contextmanager
def _strict_pil():
    """PIL's global switches as this module needs them, whatever other libraries set (lmms-eval's task
    code turns LOAD_TRUNCATED_IMAGES on, which would decode a truncated file into grey garbage)."""
    old = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS = None  # our own max_pixels check replaces PIL's decompression-bomb limit
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old


def _check_args(size: int, mode: str, background: str) -> None:
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; valid: {', '.join(RESIZE_MODES)}")
    if background not in ("white", "mean"):
        raise ValueError(f"unknown background {background!r}; valid: white, mean")
    if size < 1:
        raise ValueError(f"size must be ≥ 1, got {size}")


def _decode(source, name: str, size: int, mode: str, background: str, max_pixels: int) -> torch.Tensor:
    """Decode a path or file object (named `name` in errors) onto the canvas."""
    try:
        with warnings.catch_warnings():
            # our own max_pixels check below replaces PIL's global decompression-bomb limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _strict_pil(), Image.open(source) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageLoadError(
                        f"{name}: {w}×{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,}; "
                        "downscale it first or raise --max-pixels"
                    )
                if im.format == "JPEG" and min(w, h) > 4 * size:
                    im.draft("RGB", (2 * size, 2 * size))  # DCT-domain downscale: fast, still ≥ 2·S
                im.load()
                im = ImageOps.exif_transpose(im)
                rgb = _to_rgb_array(im, background)
    except ImageLoadError:
        raise
    except UnidentifiedImageError as e:
        raise ImageLoadError(f"{name}: not an image PIL can read") from e
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise ImageLoadError(f"{name}: cannot decode ({e})") from e
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ImageLoadError(f"{name}: image has no pixels")
    return to_canvas(rgb, size, mode)


def load_image(
    path: str | os.PathLike,
    size: int = 224,
    mode: str = "pad",
    background: str = "white",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Load an image file onto the S×S canvas.

    Args:
        path: any format PIL reads.
        size: canvas side S in pixels.
        mode: "pad", "crop" or "resize" (module docstring).
        background: "white" or "mean": what transparent pixels are composited on.
        max_pixels: refuse images with more decoded pixels than this.
    Returns:
        [3, S, S] float32 in [0, 1].
    Raises:
        ImageLoadError naming the file and the problem.
    """
    _check_args(size, mode, background)
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"{path}: file not found")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"{path}: empty file (0 bytes)")
    return _decode(path, str(path), size, mode, background, max_pixels)


def decode_image(
    data: bytes,
    name: str,
    size: int = 224,
    mode: str = "pad",
    background: str = "white",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """`load_image` for encoded bytes (e.g. a member of a tar shard); `name` identifies it in errors."""
    _check_args(size, mode, background)
    if not data:
        raise ImageLoadError(f"{name}: empty file (0 bytes)")
    return _decode(io.BytesIO(data), name, size, mode, background, max_pixels)
