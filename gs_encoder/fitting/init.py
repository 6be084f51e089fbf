"""Initial splat sets for fitting (docs/format.md, Structured initialisation).

Structured: centres on a near-square grid of cells of side s, isotropic σ = s/2 (the circle inscribed
in the cell), colour = cell-mean colour / (cell-mean of the grid's coverage), where the coverage is the
grid rendered with unit colours. In the interior that is the paper's s²/(2πσ²), divided by
m_Q = 1 − (1 + Q_MAX)·e^{−Q_MAX} = 0.939, the mass the 3-sigma cut-off leaves in a Gaussian; at the
border it also makes up for the mass that falls off the canvas. So the summed grid starts at the
image's brightness (docs/format.md).
Random: the GaussianImage initialisation: centres uniform on the canvas, l11, l22 ∈ [0.5, 1.5] px,
l21 ∈ [0, 1] px, colours uniform in [0, 1].
Adaptive: the structured grid with each Gaussian shaped by its cell's structure tensor (elongated along
edges, axis ratio up to MAX_ANISOTROPY², same area as structured) and least-squares colours
(`solve_colours`).
Density: the structured grid warped so that its cells shrink where the image has detail and grow where it is
flat (`density_init`): rows of cells are placed by the inverse CDF of a detail density's row marginal, the
cells of each row by the inverse CDF of the density within that row's band; σ = half the cell's width and
height; least-squares colours. The density is DENSITY_MIX × the luminance gradient magnitude (box-blurred
over about one cell, normalised to mean 1) + (1 − DENSITY_MIX) × uniform, so a flat image gets the
structured grid.
The learned init lives in learned_init.py.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .render import render_flat, render_torch

__all__ = [
    "DensityGrid",
    "adaptive_init",
    "density_grid",
    "density_init",
    "density_start",
    "grid_shape",
    "random_init",
    "solve_colours",
    "structured_init",
]

COLOUR_ITERS = 3  # conjugate-gradient steps of the least-squares colour solve (solve_colours)
MAX_ANISOTROPY = 3.0  # adaptive init: largest ratio of a Gaussian's long to its short axis is this squared
# density init: share of the cell density that follows the image's detail (the rest is uniform); 0.75–0.9
# measured alike (eval/results/fit_convergence_tuning.md)
DENSITY_MIX = 0.8
DENSITY_BLUR = 0.5  # density init: radius of the detail's box blur, in cells (at least one pixel)

MAX_GAUSSIANS = 1_000_000  # far beyond any useful budget; guards against typos such as 3136000


def _check_count(num_gaussians: int, size: int) -> None:
    if not isinstance(num_gaussians, int) or isinstance(num_gaussians, bool):
        raise TypeError(f"num_gaussians must be an int, got {type(num_gaussians).__name__}")
    if num_gaussians < 1:
        raise ValueError(f"num_gaussians must be ≥ 1, got {num_gaussians}")
    if num_gaussians > MAX_GAUSSIANS or num_gaussians > size * size:
        raise ValueError(
            f"num_gaussians={num_gaussians} is absurd for a {size}×{size} canvas "
            f"(at most min({MAX_GAUSSIANS}, {size * size}), one per pixel)"
        )


def grid_shape(num_gaussians: int) -> tuple[int, int]:
    """(rows, cols) of the near-square grid: rows·cols ≥ N, as square as possible; exact for N = g²."""
    rows = max(1, int(math.floor(math.sqrt(num_gaussians))))
    cols = math.ceil(num_gaussians / rows)
    return rows, cols


def structured_init(images: torch.Tensor, num_gaussians: int) -> torch.Tensor:
    """Grid initialisation (docs/format.md, Structured initialisation).

    Args:
        images: [B, 3, S, S] targets in [0, 1].
        num_gaussians: N per image. When N is not a full rows×cols grid, the first N cells in row-major
            order are used (the last row is partly empty, and the nearest Gaussians grow to cover it
            during fitting).
    Returns:
        [B, N, 8] splats in canvas units.
    """
    b, _, size, _ = images.shape
    _check_count(num_gaussians, size)
    rows, cols = grid_shape(num_gaussians)
    # Cell-mean colour: area-average the image onto the grid (exact box filter, any S).
    cell = F.adaptive_avg_pool2d(images, (rows, cols))  # [B, 3, rows, cols]
    splats = _grid(num_gaussians, images.dtype, images.device)[None].repeat(b, 1, 1)
    cell_cov = _cell_coverage(num_gaussians, size, images.dtype).to(images.device)  # [N]
    cell_rgb = cell.flatten(2).transpose(1, 2)[:, :num_gaussians]  # [B, N, 3]
    splats[:, :, 5:8] = cell_rgb / cell_cov[None, :, None].clamp_min(1e-6)
    return splats


def _grid(num_gaussians: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """The first N cells of the grid as splats [N, 8] in canvas units, colours 0."""
    rows, cols = grid_shape(num_gaussians)
    sx, sy = 1.0 / cols, 1.0 / rows
    ys = (torch.arange(rows, dtype=dtype, device=device) + 0.5) * sy
    xs = (torch.arange(cols, dtype=dtype, device=device) + 0.5) * sx
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    splats = torch.zeros(rows * cols, 8, dtype=dtype, device=device)
    splats[:, 0] = gx.reshape(-1)
    splats[:, 1] = gy.reshape(-1)
    # σ = s/2 per axis; for non-square cells the inscribed ellipse keeps the coverage argument
    splats[:, 2] = sx / 2.0
    splats[:, 4] = sy / 2.0
    return splats[:num_gaussians].contiguous()


@functools.lru_cache(maxsize=16)
def _cell_coverage(num_gaussians: int, size: int, dtype: torch.dtype) -> torch.Tensor:
    """Cell-mean coverage [N] of the grid rendered with unit colours, Σ_g w_g(p): the same for every image.

    Rendered on the CPU whatever the images' device: the pure-torch renderer sums with index_add_, whose
    CUDA version adds with float atomics, so on a GPU its last bits (and with them the initial colours
    and the whole fit) would change from run to run. The CPU sum is deterministic; cached per (N, S, dtype).
    """
    rows, cols = grid_shape(num_gaussians)
    unit = _grid(num_gaussians, dtype, "cpu")
    unit[:, 5:8] = 1.0
    coverage = render_torch(unit, size=size)[0:1]  # [1, S, S]
    return F.adaptive_avg_pool2d(coverage[None], (rows, cols)).flatten(1)[0, :num_gaussians]


def random_init(
    images: torch.Tensor, num_gaussians: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """GaussianImage's random initialisation (see module docstring); returns [B, N, 8]."""
    b, _, size, _ = images.shape
    _check_count(num_gaussians, size)
    shape = (b, num_gaussians)
    opts = {"dtype": images.dtype, "device": images.device, "generator": generator}

    def rand(*s):
        return torch.rand(*s, **opts)

    splats = images.new_zeros(b, num_gaussians, 8)
    splats[..., 0:2] = rand(*shape, 2)
    splats[..., 2] = (0.5 + rand(*shape)) / size
    splats[..., 3] = rand(*shape) / size
    splats[..., 4] = (0.5 + rand(*shape)) / size
    splats[..., 5:8] = rand(*shape, 3)
    return splats


def _per_image_sum(x: torch.Tensor, image_ids: torch.Tensor, num_images: int) -> torch.Tensor:
    """Σ over the rows of each image, per channel: x [Nt, 3] → [B, 3]."""
    return x.new_zeros(num_images, x.shape[1]).index_add_(0, image_ids, x)


@torch.no_grad()
def solve_colours(
    splats: torch.Tensor, images: torch.Tensor, iters: int = COLOUR_ITERS, backend: str = "auto"
) -> torch.Tensor:
    """Least-squares colours for fixed geometry: `iters` conjugate-gradient steps per image and channel.

    splats [B, N, 8] (canvas units), images [B, 3, S, S]; returns a copy with new colour columns.
    The image is linear in the colours, image = W c, so the best colours solve WᵀW c = Wᵀ y; W c and
    Wᵀ v are one render and one colour gradient of the project's renderer. Starts from the given colours.
    """
    b, n, _ = splats.shape
    size = images.shape[-1]
    flat = splats.reshape(b * n, 8)
    image_ids = torch.arange(b, device=splats.device).repeat_interleave(n)
    xy, chol = flat[:, 0:2] * size, flat[:, 2:5] * size
    target = images.permute(0, 2, 3, 1)
    plan = None

    def gram_times(c: torch.Tensor, minus: torch.Tensor | None) -> torch.Tensor:
        """Wᵀ(W c − minus) for colours c [Nt, 3]."""
        nonlocal plan
        with torch.enable_grad():
            c = c.detach().requires_grad_(True)
            img, plan = render_flat(xy, chol, c, image_ids, b, size, plan, backend=backend)
            resid = img if minus is None else img - minus
            (grad,) = torch.autograd.grad(img, c, grad_outputs=resid)
        return grad

    x = flat[:, 5:8].clone()
    r = -gram_times(x, target)  # Wᵀy − WᵀW x
    p = r.clone()
    rs = _per_image_sum(r * r, image_ids, b)
    for _ in range(iters):
        ap = gram_times(p, None)
        denom = _per_image_sum(p * ap, image_ids, b)
        alpha = torch.where(denom > 0, rs / denom.clamp_min(1e-30), torch.zeros_like(rs))
        x = x + alpha[image_ids] * p
        r = r - alpha[image_ids] * ap
        rs_new = _per_image_sum(r * r, image_ids, b)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(1e-30), torch.zeros_like(rs))
        p = r + beta[image_ids] * p
        rs = rs_new
    out = splats.clone()
    out[..., 5:8] = x.view(b, n, 3)
    return out


@torch.no_grad()
def adaptive_init(
    images: torch.Tensor, num_gaussians: int, colour_iters: int = COLOUR_ITERS, backend: str = "auto"
) -> torch.Tensor:
    """Structured grid, Gaussians shaped by their cell's structure tensor, least-squares colours [B, N, 8].

    With J the cell mean of ∇I ∇Iᵀ (luminance) and λ1 ≥ λ2 its eigenvalues, a Gaussian keeps the
    structured area (σ = s/2) but becomes σ/a across and σ·a along the dominant edge direction, with
    a = ((λ1 + ε)/(λ2 + ε))^{1/4} clipped to [1, MAX_ANISOTROPY]: round in flat or textured cells,
    elongated along edges.
    """
    b, _, size, _ = images.shape
    _check_count(num_gaussians, size)
    rows, cols = grid_shape(num_gaussians)
    splats = structured_init(images, num_gaussians)
    gx, gy = _luminance_gradient(images)
    tensor = F.adaptive_avg_pool2d(torch.cat([gx * gx, gx * gy, gy * gy], 1), (rows, cols))
    jxx, jxy, jyy = tensor.flatten(2).transpose(1, 2)[:, :num_gaussians].unbind(-1)
    half_trace, disc = 0.5 * (jxx + jyy), (0.25 * (jxx - jyy) ** 2 + jxy * jxy).sqrt()
    lam1, lam2 = half_trace + disc, (half_trace - disc).clamp_min(0.0)
    theta = 0.5 * torch.atan2(2 * jxy, jxx - jyy)  # direction of λ1: across the edge
    eps = 1e-4
    aniso = ((lam1 + eps) / (lam2 + eps)).pow(0.25).clamp(1.0, MAX_ANISOTROPY)
    sigma = 0.5 / cols
    across, along = (sigma / aniso) ** 2, (sigma * aniso) ** 2
    c, s = torch.cos(theta), torch.sin(theta)
    sxx = across * c * c + along * s * s
    sxy = (across - along) * c * s
    syy = across * s * s + along * c * c
    l11 = sxx.sqrt()
    l21 = sxy / l11
    splats[..., 2] = l11
    splats[..., 3] = l21
    splats[..., 4] = (syy - l21 * l21).clamp_min(1e-12).sqrt()
    return solve_colours(splats, images, colour_iters, backend) if colour_iters else splats


def _luminance_gradient(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences (gx, gy) [B, 1, S, S] of the luminance of images [B, 3, S, S], per pixel."""
    lum = (images * images.new_tensor([0.2126, 0.7152, 0.0722])[None, :, None, None]).sum(1, keepdim=True)
    pad = F.pad(lum, (1, 1, 1, 1), mode="replicate")
    return 0.5 * (pad[..., 1:-1, 2:] - pad[..., 1:-1, :-2]), 0.5 * (pad[..., 2:, 1:-1] - pad[..., :-2, 1:-1])


def _render_batch(splats: torch.Tensor, size: int, backend: str = "auto") -> torch.Tensor:
    """Splats [B, N, 8] (canvas units) → images [B, 3, S, S], differentiable, with the fitting renderer."""
    b, n, _ = splats.shape
    flat = splats.reshape(b * n, 8)
    ids = torch.arange(b, device=splats.device).repeat_interleave(n)
    image, _ = render_flat(
        flat[:, 0:2] * size, flat[:, 2:5] * size, flat[:, 5:8], ids, b, size, backend=backend
    )
    return image.permute(0, 3, 1, 2)


def _inverse_cdf(weights: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """Positions [..., K] in [0, 1] where the CDF of a piecewise-constant density reaches `quantiles` [K].

    weights [..., M] ≥ 0 (not all zero) are the masses of M equal bins of [0, 1]; linear inside a bin."""
    m = weights.shape[-1]
    cdf = torch.cumsum(weights, -1)
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf / cdf[..., -1:]], -1)  # [..., M + 1]
    q = quantiles.to(weights).expand(*weights.shape[:-1], quantiles.shape[0]).contiguous()
    idx = torch.searchsorted(cdf, q, right=True).clamp(1, m)
    lo, hi = cdf.gather(-1, idx - 1), cdf.gather(-1, idx)
    frac = ((q - lo) / (hi - lo).clamp_min(1e-12)).clamp(0.0, 1.0)
    return (idx - 1 + frac) / m


def _band_integral(density: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mass of density [B, S, S] (rows y, columns x) between consecutive row positions edges [B, R + 1]
    (canvas units, increasing): [B, R, S], fractional pixel rows counted in part."""
    b, size, _ = density.shape
    cum = torch.cat([density.new_zeros(b, 1, size), torch.cumsum(density, 1)], 1)  # [B, S + 1, S]
    pos = edges * size
    i = pos.floor().clamp(0, size - 1).long()
    t = (pos - i).clamp(0.0, 1.0)[..., None]
    at = cum.gather(1, i[..., None].expand(-1, -1, size)) + t * density.gather(
        1, i[..., None].expand(-1, -1, size)
    )
    return at[:, 1:] - at[:, :-1]


class DensityGrid(NamedTuple):
    """The warped cells of the density init, canvas units: row edges [B, rows + 1] and centres [B, rows],
    per-row cell edges [B, rows, cols + 1] and centres [B, rows, cols]."""

    y_edges: torch.Tensor
    y_centres: torch.Tensor
    x_edges: torch.Tensor
    x_centres: torch.Tensor


def density_grid(images: torch.Tensor, num_gaussians: int, mix: float = DENSITY_MIX) -> DensityGrid:
    """The rows × cols cells of the structured grid warped towards the detail of images [B, 3, S, S]."""
    if not 0.0 <= mix < 1.0:
        raise ValueError(f"mix must be in [0, 1), got {mix}")
    size = images.shape[-1]
    _check_count(num_gaussians, size)
    rows, cols = grid_shape(num_gaussians)
    gx, gy = _luminance_gradient(images)
    detail = (gx * gx + gy * gy).sqrt()
    radius = max(int(round(DENSITY_BLUR * size / cols)), 1)
    detail = F.avg_pool2d(F.pad(detail, (radius,) * 4, mode="replicate"), 2 * radius + 1, stride=1)[:, 0]
    mean = detail.mean((-2, -1), keepdim=True)
    detail = torch.where(mean > 0, detail / mean.clamp_min(1e-12), torch.zeros_like(detail))
    density = (1.0 - mix) + mix * detail  # [B, S, S], rows y
    opts = {"dtype": images.dtype, "device": images.device}
    y_edges = _inverse_cdf(density.sum(-1), torch.arange(rows + 1, **opts) / rows)  # [B, rows + 1]
    y_centres = _inverse_cdf(density.sum(-1), (torch.arange(rows, **opts) + 0.5) / rows)
    band = _band_integral(density, y_edges) + 1e-6  # [B, rows, S]
    x_edges = _inverse_cdf(band, torch.arange(cols + 1, **opts) / cols)  # [B, rows, cols + 1]
    x_centres = _inverse_cdf(band, (torch.arange(cols, **opts) + 0.5) / cols)
    return DensityGrid(y_edges, y_centres, x_edges, x_centres)


def density_start(
    images: torch.Tensor, num_gaussians: int, grid: DensityGrid, backend: str = "auto"
) -> torch.Tensor:
    """Splats [B, N, 8] on the cells of `grid`: σ = half the cell's width and height, colour = the image at
    the centre over the grid's coverage there (the unit-colour render); no colour solve."""
    b, _, size, _ = images.shape
    rows, cols = grid.x_centres.shape[1:]
    lo = 0.3 / size  # FitConfig.min_scale_px's default
    splats = images.new_zeros(b, rows, cols, 8)
    splats[..., 0] = grid.x_centres
    splats[..., 1] = grid.y_centres[..., None]
    splats[..., 2] = (0.5 * (grid.x_edges[..., 1:] - grid.x_edges[..., :-1])).clamp_min(lo)
    splats[..., 4] = (0.5 * (grid.y_edges[:, 1:] - grid.y_edges[:, :-1]))[..., None].clamp_min(lo)
    splats = splats.reshape(b, rows * cols, 8)[:, :num_gaussians].contiguous()
    unit = splats.clone()
    unit[..., 5:8] = 1.0
    coverage = _render_batch(unit, size, backend)  # [B, 3, S, S], the same in every channel
    both = torch.cat([images, coverage[:, :1]], 1)  # [B, 4, S, S]
    where = splats[:, :, None, 0:2] * 2.0 - 1.0  # [B, N, 1, 2]: (x, y) in [-1, 1] for grid_sample
    at = F.grid_sample(both, where, align_corners=False, padding_mode="border")[..., 0].transpose(1, 2)
    splats[..., 5:8] = at[..., 0:3] / at[..., 3:4].clamp_min(1e-3)
    return splats


@torch.no_grad()
def density_init(
    images: torch.Tensor,
    num_gaussians: int,
    mix: float = DENSITY_MIX,
    colour_iters: int = COLOUR_ITERS,
    backend: str = "auto",
) -> torch.Tensor:
    """Content-adaptive grid (module docstring): more, smaller Gaussians where the image has detail [B, N, 8].

    The same rows × cols cells as the structured grid (the first N in row-major order), moved by a
    deterministic warp of the canvas (`density_grid`); a flat image (or mix = 0) gives the structured
    geometry. Colours: the image at each centre over the grid's coverage there, then `colour_iters`
    conjugate-gradient steps of the least-squares solve.
    """
    splats = density_start(images, num_gaussians, density_grid(images, num_gaussians, mix), backend)
    return solve_colours(splats, images, colour_iters, backend) if colour_iters else splats
