"""Pictures of splat sets: plain renders, ellipse overlays, and the original | render | error comparison."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["compare_panel", "draw_ellipses", "error_map", "fit_to", "to_pil"]


def to_pil(image: torch.Tensor) -> Image.Image:
    """[3, H, W] float (clamped to [0, 1]) → 8-bit RGB PIL image."""
    arr = (image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def draw_ellipses(
    pil: Image.Image, splats: torch.Tensor, sigmas: float = 1.0, points: int = 20
) -> Image.Image:
    """Outline each Gaussian's `sigmas`-σ ellipse on a copy of `pil` (coordinates scaled to its size)."""
    out = pil.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    t = torch.linspace(0, 2 * math.pi, points + 1, dtype=torch.float32)
    circle = torch.stack([torch.cos(t), torch.sin(t)])  # [2, P]
    s = splats.detach().float().cpu()
    for row in s:
        x, y, l11, l21, l22 = row[:5].tolist()
        # points μ + σ·L·u on the unit circle u: the σ-level set of q
        px = (x + sigmas * l11 * circle[0]) * w
        py = (y + sigmas * (l21 * circle[0] + l22 * circle[1])) * h
        draw.line(list(zip(px.tolist(), py.tolist(), strict=True)), fill=(255, 255, 255), width=1)
    return out


def _heatmap(err: np.ndarray, vmax: float) -> Image.Image:
    from matplotlib import colormaps

    rgba = colormaps["inferno"](np.clip(err / max(vmax, 1e-8), 0, 1))
    return Image.fromarray((rgba[..., :3] * 255).astype(np.uint8), "RGB")


def error_map(original: torch.Tensor, rendered: torch.Tensor) -> tuple[Image.Image, float]:
    """The absolute error of a render (mean over channels) as an inferno heat map scaled to its 99th
    percentile, and that scale. original and rendered: [3, S, S] in [0, 1]."""
    err = (rendered.clamp(0, 1) - original).abs().mean(0).cpu().numpy()
    vmax = float(np.quantile(err, 0.99)) if err.size else 1.0
    return _heatmap(err, vmax), vmax


def fit_to(im: Image.Image, size: int) -> Image.Image:
    """`im` at size × size: small pictures pixel for pixel (nearest), larger ones bicubic."""
    how = Image.Resampling.NEAREST if im.size[0] < size else Image.Resampling.BICUBIC
    return im.resize((size, size), how)


def compare_panel(original: torch.Tensor, rendered: torch.Tensor, panel: int, caption: str) -> Image.Image:
    """One PNG: original | render | absolute-error heat map, each `panel` px wide, caption below.

    Args: original and rendered [3, S, S] in [0, 1]; the heat map shows the mean absolute error over
    channels, scaled to its 99th percentile (stated in the caption).
    """
    heat, vmax = error_map(original, rendered)
    tiles = [fit_to(t, panel) for t in (to_pil(original), to_pil(rendered), heat)]
    font = ImageFont.load_default(size=max(12, panel // 28))
    band = max(24, panel // 10)
    out = Image.new("RGB", (3 * panel, panel + band), (255, 255, 255))
    for i, t in enumerate(tiles):
        out.paste(t, (i * panel, 0))
    labels = ("original", "render", f"|error| (0 to {vmax:.3f})")
    draw = ImageDraw.Draw(out)
    for i, label in enumerate(labels):
        draw.text(
            (i * panel + 6, 4), label, fill=(255, 255, 0), font=font, stroke_width=2, stroke_fill=(0, 0, 0)
        )
    draw.text((6, panel + band // 4), caption, fill=(0, 0, 0), font=font)
    return out
