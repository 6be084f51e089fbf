"""gs_encoder: images → 2D Gaussian splats → visual tokens.

The public surface of the fitting side. Everything here imports only torch, numpy and PIL, so a fitting
job needs neither transformers nor open_clip.
"""

from .data import collate_splats, pad_splat_sets
from .fitting.fit import FitConfig, FitResult, fit_images, luminance, prune, psnr
from .fitting.init import adaptive_init, density_init, random_init, structured_init
from .fitting.learned_init import learned_init
from .fitting.render import Q_MAX, render, render_dense, render_torch
from .image_io import ImageLoadError, load_image
from .splat_io import SplatFileError, load_splats, payload_bytes, save_splats

__all__ = [
    "Q_MAX",
    "adaptive_init",
    "density_init",
    "FitConfig",
    "FitResult",
    "ImageLoadError",
    "SplatFileError",
    "collate_splats",
    "pad_splat_sets",
    "fit_images",
    "learned_init",
    "load_image",
    "load_splats",
    "luminance",
    "payload_bytes",
    "prune",
    "psnr",
    "random_init",
    "render",
    "render_dense",
    "render_torch",
    "save_splats",
    "structured_init",
]
