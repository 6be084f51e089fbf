"""The learned initialiser's training images (gs_encoder/train_init.py): crops of photographs, jittered, and
procedural images (gradients, polygons, textures, text); `sample_batch` draws one step's batch, a pure
function of the seed and the step. Photographs are scikit-image's TRAIN_PHOTOS or the images of folders
given, less any picture of the sealed test set of eval/splits.py (by content; a warning names them).
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .train_init import TrainInitConfig

__all__ = ["PROCEDURAL", "TRAIN_PHOTOS", "load_photos", "sample_batch", "sealed_fingerprints"]

# scikit-image's pictures trained on: not the tuning photographs of eval/splits.py (astronaut, chelsea,
# which skimage also ships as `cat`, coffee, rocket); tests/eval/test_splits.py checks it by content
TRAIN_PHOTOS = (
    "brick",
    "camera",
    "cell",
    "checkerboard",
    "clock",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "shepp_logan_phantom",
    "text",
)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


# written by eval/images/make.py (eval/splits.py): pictures no training run may see
SEALED_FINGERPRINTS = Path(__file__).with_name("sealed_fingerprints.txt")


def _to_rgb_tensor(a: np.ndarray) -> torch.Tensor:
    """HxW, HxWx3 or HxWx4 array (uint8, bool or float) → [3, H, W] float in [0, 1]."""
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.float32)
    elif a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    else:
        a = a.astype(np.float32)
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-6)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.shape[2] == 4:  # composite on white
        alpha = a[:, :, 3:4]
        a = a[:, :, :3] * alpha + (1.0 - alpha)
    return torch.from_numpy(np.ascontiguousarray(a[:, :, :3])).permute(2, 0, 1).clamp(0, 1)


def _limit(img: torch.Tensor, max_side: int = 768) -> torch.Tensor:
    h, w = img.shape[-2:]
    scale = max_side / max(h, w)
    if scale >= 1:
        return img
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(img[None], size=size, mode="area")[0]


def sealed_fingerprints() -> list[str]:
    """Fingerprints of the project's sealed test pictures and their originals (eval/splits.py)."""
    lines = SEALED_FINGERPRINTS.read_text().splitlines()
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]


def load_photos(folders: list[str]) -> list[torch.Tensor]:
    """Training photographs as [3, H, W] tensors: the images in `folders`, else scikit-image's set.

    Pictures of the project's sealed test set (by content, gs_encoder.image_io.fingerprint) are left out
    with a warning naming them: no result on the sealed set may come from weights that saw it."""
    if folders:
        from PIL import Image

        from .image_io import fingerprint, same_picture

        sealed = sealed_fingerprints()
        out, dropped = [], []
        for folder in folders:
            root = Path(folder)
            if not root.is_dir():
                raise FileNotFoundError(f"{root}: --images folder not found")
            files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            for p in files:
                with Image.open(p) as im:
                    rgb = np.asarray(im.convert("RGB"))
                mine = fingerprint(rgb)
                if any(same_picture(mine, f) for f in sealed):
                    dropped.append(str(p))
                    continue
                out.append(_limit(_to_rgb_tensor(rgb)))
        if dropped:
            print(
                f"warning: left out {len(dropped)} image(s) of the sealed test set (eval/splits.py): "
                + ", ".join(dropped),
                file=sys.stderr,
            )
        if not out:
            raise FileNotFoundError(
                f"no images ({', '.join(IMAGE_SUFFIXES)}) to train on in {', '.join(folders)}"
                + (" once the sealed test pictures are left out" if dropped else "")
            )
        return out
    import skimage.data

    return [_limit(_to_rgb_tensor(getattr(skimage.data, name)())) for name in TRAIN_PHOTOS]


def _crop(photo: torch.Tensor, size: int, rng: random.Random) -> torch.Tensor:
    """A random square crop (¼ to all of the short side), resized to size², flipped and turned at random."""
    h, w = photo.shape[-2:]
    side = max(8, int(min(h, w) * rng.uniform(0.25, 1.0)))
    y, x = rng.randint(0, h - side), rng.randint(0, w - side)
    img = photo[:, y : y + side, x : x + side][None]
    img = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    if rng.random() < 0.5:
        img = img.flip(-1)
    if rng.random() < 0.5:
        img = img.flip(-2)
    return img.rot90(rng.randint(0, 3), dims=(-2, -1))


def _jitter(img: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Brightness, contrast, saturation and channel-order jitter; a tint for grey images."""
    grey = img.mean(0, keepdim=True)
    if float((img - grey).abs().max()) < 1e-3:  # grey: tint it
        tint = torch.tensor([rng.uniform(0.5, 1.0) for _ in range(3)])
        img = img * tint[:, None, None] + (1 - tint[:, None, None]) * rng.uniform(0.0, 0.4)
        grey = img.mean(0, keepdim=True)
    img = grey + (img - grey) * rng.uniform(0.5, 1.5)
    mean = img.mean()
    img = mean + (img - mean) * rng.uniform(0.6, 1.4)
    img = img * rng.uniform(0.7, 1.3)
    img = img[torch.randperm(3, generator=torch.Generator().manual_seed(rng.randint(0, 2**31)))]
    return img.clamp(0.0, 1.0)


def _coords(size: int):
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return xx, yy


def _colour(rng: random.Random) -> torch.Tensor:
    return torch.tensor([rng.random() for _ in range(3)])[:, None, None]


def _gradient(size: int, rng: random.Random) -> torch.Tensor:
    xx, yy = _coords(size)
    if rng.random() < 0.5:
        ang = rng.uniform(0, 2 * math.pi)
        t = (xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang) + 0.5
    else:
        cx, cy = rng.random(), rng.random()
        t = ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt() * rng.uniform(0.8, 2.0)
    t = t.clamp(0, 1)[None]
    return _colour(rng) * (1 - t) + _colour(rng) * t


def _polygons(size: int, rng: random.Random) -> torch.Tensor:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), tuple(rng.randint(0, 255) for _ in range(3)))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randint(1, 8)):
        fill = tuple(rng.randint(0, 255) for _ in range(3))
        kind = rng.random()
        if kind < 0.4:
            pts = [
                (rng.uniform(-0.2, 1.2) * size, rng.uniform(-0.2, 1.2) * size)
                for _ in range(rng.randint(3, 6))
            ]
            draw.polygon(pts, fill=fill)
        elif kind < 0.7:
            x0, y0 = rng.uniform(0, size), rng.uniform(0, size)
            r = rng.uniform(0.03, 0.4) * size
            draw.ellipse([x0 - r, y0 - r * rng.uniform(0.3, 1), x0 + r, y0 + r], fill=fill)
        else:
            pts = [(rng.uniform(0, size), rng.uniform(0, size)) for _ in range(2)]
            draw.line(pts, fill=fill, width=rng.randint(1, max(1, size // 16)))
    return _to_rgb_tensor(np.asarray(im))


def _texture(size: int, rng: random.Random) -> torch.Tensor:
    xx, yy = _coords(size)
    field_ = torch.zeros(size, size)
    for _ in range(rng.randint(1, 4)):
        ang = rng.uniform(0, math.pi)
        freq = rng.uniform(2, size / 4)
        field_ += torch.sin(
            2 * math.pi * freq * (xx * math.cos(ang) + yy * math.sin(ang)) + rng.uniform(0, 6.3)
        )
    gen = torch.Generator().manual_seed(rng.randint(0, 2**31))
    noise = torch.rand(1, 1, size, size, generator=gen)
    k = rng.choice([1, 3, 5])
    noise = F.avg_pool2d(noise, k, stride=1, padding=k // 2)[0, 0] if k > 1 else noise[0, 0]
    t = (field_ / 4 + 0.5 + rng.uniform(0, 0.8) * (noise - 0.5)).clamp(0, 1)[None]
    return _colour(rng) * (1 - t) + _colour(rng) * t


def _text(size: int, rng: random.Random) -> torch.Tensor:
    from PIL import Image, ImageDraw, ImageFont

    bg = tuple(rng.randint(0, 255) for _ in range(3))
    im = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(im)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "
    for _ in range(rng.randint(1, 6)):
        font = ImageFont.load_default(size=rng.uniform(size / 14, size / 3))
        word = "".join(rng.choice(letters) for _ in range(rng.randint(2, 10)))
        fill = tuple(rng.randint(0, 255) for _ in range(3))
        draw.text((rng.uniform(-0.2, 0.9) * size, rng.uniform(-0.1, 0.9) * size), word, fill=fill, font=font)
    return _to_rgb_tensor(np.asarray(im))


PROCEDURAL = (_gradient, _polygons, _texture, _text)


def sample_batch(step: int, cfg: TrainInitConfig, photos: list[torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(images [B, 3, S, S], N) of one step; a pure function of (seed, step) and the photo list."""
    rng = random.Random(cfg.seed * 1_000_003 + step)
    size = rng.choice(cfg.canvas)
    lo, hi = cfg.cell_px
    cols = rng.randint(max(4, round(size / hi)), max(4, round(size / lo)))
    n = cols * cols if rng.random() < 0.75 else rng.randint(cols * (cols - 1) + 1, cols * cols)
    n = min(max(n, 16), 4900, size * size)
    images = []
    for _ in range(cfg.batch_size):
        if rng.random() < cfg.procedural:
            images.append(rng.choice(PROCEDURAL)(size, rng))
        else:
            images.append(_jitter(_crop(rng.choice(photos), size, rng), rng))
    return torch.stack(images).clamp(0, 1), n
