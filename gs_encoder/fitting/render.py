"""Rendering splat sets: the forward model of docs/format.md, Rendering, on CPU (pure torch) and, when built, CUDA.

`image(p) = Σ_i c_i · max(0, e^{-q_i(p)} − e^{-Q_MAX})`, `q_i(p) = ½ (p − μ_i)ᵀ Σ_i⁻¹ (p − μ_i)`: a plain
sum, no sorting, no opacity. The continuous cut-off makes the image continuous in the parameters, so the
CPU and CUDA paths agree at the 3-sigma edge.

CPU formulation ("windowed pair list"). Each Gaussian gets a square window of (2R+1)² pixels anchored on
the pixel nearest its centre, with R large enough to hold every pixel centre where q < Q_MAX (clipped to
the image). Gaussians are grouped in buckets of equal R, so one bucket is a dense [Nb, P] block:
- the quadratic form is expanded around the anchor, q = K[Nb, 6] @ M[P, 6]ᵀ with the monomials
  M = [1, ox, oy, ox², ox·oy, oy²] of the window offsets, so the forward is a GEMM plus one exp;
- the window pixels map to a padded canvas by `anchor + offset`, and the sum is one flat `index_add_`;
- the hand-written backward gathers dL/dpixel at the same indices and reduces to dL/dK = g @ M (GEMM).
Windows are supersets of the support, and w(q) is evaluated exactly, so the windows (like tiles on the
GPU) never change the result. The chain K ← (μ, L) is a few per-Gaussian torch ops left to autograd.
A plan (buckets, anchors, indices) is reused while every Gaussian's support stays inside its window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .backend import BACKENDS, KERNEL_BACKENDS, resolve_backend

__all__ = [
    "BACKENDS",
    "Q_MAX",
    "RenderPlan",
    "build_plan",
    "render",
    "render_dense",
    "render_flat",
    "render_padded",
    "render_torch",
    "resolve_backend",
]

Q_MAX = 4.5  # the 3-sigma ellipse: q = ½·3²
_SQRT_2Q = math.sqrt(2.0 * Q_MAX)  # half-extent of the support along an axis, in units of σ_axis


def _bucket_radii(limit: int) -> list[int]:
    """Window radii used as buckets: every integer up to 8, then steps of about 1.2×."""
    radii = list(range(0, 9))
    r = 8
    while r < limit:
        r = max(r + 1, int(round(r * 1.2)))
        radii.append(r)
    return radii


_RADII = _bucket_radii(4096)
_MONOMIALS: dict[tuple[int, torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _window(radius: int, dtype: torch.dtype, device: torch.device):
    """Offsets of a (2R+1)² window: (ox [P], oy [P] as long, monomials M [P, 6] in `dtype`)."""
    key = (radius, dtype, device)
    if key not in _MONOMIALS:
        r = torch.arange(-radius, radius + 1, device=device)
        oy, ox = torch.meshgrid(r, r, indexing="ij")
        ox, oy = ox.reshape(-1), oy.reshape(-1)
        fx, fy = ox.to(dtype), oy.to(dtype)
        mono = torch.stack([torch.ones_like(fx), fx, fy, fx * fx, fx * fy, fy * fy], dim=1).contiguous()
        _MONOMIALS[key] = (ox, oy, mono)
    return _MONOMIALS[key]


def _support_range(center_px: torch.Tensor, half_extent: torch.Tensor, size: int):
    """Pixel indices [lo, hi] whose centres lie within `half_extent` of `center_px`, clipped to the image.

    Pixel j has its centre at j + 0.5 (pixel units), so the condition is |j + 0.5 − c| ≤ e.
    """
    u = center_px - 0.5
    lo = torch.ceil(u - half_extent).clamp_min(0)
    hi = torch.floor(u + half_extent).clamp_max(size - 1)
    return lo, hi


def _half_extents(chol_px: torch.Tensor):
    """Half-widths (x, y) of the q ≤ Q_MAX ellipse, from L (pixel units): √(2Q·Σxx), √(2Q·Σyy)."""
    l11, l21, l22 = chol_px.unbind(-1)
    ex = _SQRT_2Q * l11.abs()
    ey = _SQRT_2Q * torch.sqrt(l21 * l21 + l22 * l22)
    return ex, ey


@dataclass
class _Bucket:
    start: int  # slice of the plan's order
    end: int
    radius: int
    index: torch.Tensor  # [Nb * P * 3] flat indices into the canvas (channel-last)
    mono: torch.Tensor  # [P, 6]


@dataclass
class RenderPlan:
    """Which window each Gaussian uses; valid while every support stays inside its window.

    Built by `build_plan`; `render_flat` checks `covers` and rebuilds when it does not hold.
    """

    size: int
    num_images: int
    pad: int
    order: torch.Tensor  # [Nr] long: the Gaussians that touch the image, in bucket order
    anchor: torch.Tensor  # [Nt, 2] long (column j0, row i0) for every Gaussian
    radius: torch.Tensor  # [Nt] long; −1 for Gaussians that touch no pixel
    buckets: list[_Bucket]
    dtype: torch.dtype

    @property
    def side(self) -> int:
        return self.size + 2 * self.pad

    def covers(self, xy_px: torch.Tensor, chol_px: torch.Tensor) -> bool:
        """True if every current support (clipped to the image) lies inside its planned window."""
        if xy_px.shape[0] != self.radius.shape[0]:
            return False
        ex, ey = _half_extents(chol_px)
        ok = torch.ones_like(self.radius, dtype=torch.bool)
        for axis, ext in ((0, ex), (1, ey)):
            lo, hi = _support_range(xy_px[:, axis], ext, self.size)
            a = self.anchor[:, axis]
            inside = (a - self.radius <= lo) & (hi <= a + self.radius)
            ok &= (lo > hi) | inside
        return bool(ok.all())


@torch.no_grad()
def build_plan(
    xy_px: torch.Tensor,  # [Nt, 2] centres in pixel units (x·S, y·S)
    chol_px: torch.Tensor,  # [Nt, 3] Cholesky factor in pixel units
    image_ids: torch.Tensor,  # [Nt] long, which image each Gaussian belongs to
    num_images: int,
    size: int,
    margin: float = 0.0,
) -> RenderPlan:
    """Assign each Gaussian a window radius (bucketed) and anchor; `margin` (pixels) lets the plan be reused."""
    device = xy_px.device
    ex, ey = _half_extents(chol_px)
    # Anchor on the pixel nearest the centre, clamped into the image: a window anchored inside the image
    # still holds every in-image pixel of a Gaussian whose centre lies outside it.
    anchor = torch.floor(xy_px.detach()).long().clamp_(0, size - 1)
    need = torch.zeros_like(ex, dtype=torch.long)
    touches = torch.ones_like(ex, dtype=torch.bool)
    for axis, ext in ((0, ex), (1, ey)):
        lo, hi = _support_range(xy_px[:, axis], ext + margin, size)
        a = anchor[:, axis]
        touches &= lo <= hi
        need = torch.maximum(need, torch.maximum(a - lo, hi - a).long())
    need.clamp_(0, size)  # a window of radius S anchored in the image holds the whole image
    radii = torch.tensor(_RADII, device=device)
    bucket_of = torch.searchsorted(radii, need)  # smallest bucket radius ≥ need
    radius = torch.where(touches, radii[bucket_of].clamp_max(size), torch.full_like(need, -1))
    active = touches.nonzero().squeeze(1)
    order = active[torch.argsort(bucket_of[active], stable=True)]
    pad = int(radius.max()) if order.numel() else 0
    side = size + 2 * pad
    buckets: list[_Bucket] = []
    if order.numel():
        r_sorted = radius[order]
        values, counts = torch.unique_consecutive(r_sorted, return_counts=True)
        start = 0
        for r, n in zip(values.tolist(), counts.tolist(), strict=True):
            sel = order[start : start + n]
            ox, oy, mono = _window(r, xy_px.dtype, device)
            base = image_ids[sel] * side * side + (anchor[sel, 1] + pad) * side + anchor[sel, 0] + pad
            pix = base[:, None] + (oy * side + ox)[None, :]  # [Nb, P]
            flat = (pix[:, :, None] * 3 + torch.arange(3, device=device)).reshape(-1)
            buckets.append(_Bucket(start, start + n, r, flat, mono))
            start += n
    return RenderPlan(size, num_images, pad, order, anchor, radius, buckets, xy_px.dtype)


class _SplatSum(torch.autograd.Function):
    """canvas[pix] = Σ_(g, k) rgb_g · w(K_g · M_k) over the plan's windows, with a hand-written backward."""

    @staticmethod
    def forward(ctx, coef, rgb, plan: RenderPlan):  # coef [Nr, 6], rgb [Nr, 3] in plan order
        canvas = coef.new_zeros(plan.num_images * plan.side * plan.side * 3)
        e_cut = math.exp(-Q_MAX)
        weights = []
        for b in plan.buckets:
            q = coef[b.start : b.end] @ b.mono.T  # [Nb, P]
            w = q.neg_().exp_().sub_(e_cut).clamp_min_(0.0)
            contrib = w[:, :, None] * rgb[b.start : b.end, None, :]  # [Nb, P, 3]
            canvas.index_add_(0, b.index, contrib.view(-1))
            weights.append(w)
        ctx.plan = plan
        ctx.save_for_backward(rgb, *weights)
        return canvas

    @staticmethod
    def backward(ctx, grad_canvas):
        plan: RenderPlan = ctx.plan
        rgb, *weights = ctx.saved_tensors
        grad_canvas = grad_canvas.contiguous()
        e_cut = math.exp(-Q_MAX)
        grad_coef = rgb.new_empty(rgb.shape[0], 6) if ctx.needs_input_grad[0] else None
        grad_rgb = rgb.new_empty(rgb.shape) if ctx.needs_input_grad[1] else None
        for b, w in zip(plan.buckets, weights, strict=True):
            sl = slice(b.start, b.end)
            v = grad_canvas.index_select(0, b.index).view(w.shape[0], w.shape[1], 3)  # dL/dpixel [Nb, P, 3]
            if grad_rgb is not None:
                torch.bmm(w[:, None, :], v, out=grad_rgb[sl, None, :])
            if grad_coef is not None:
                dw = torch.bmm(v, rgb[sl, :, None]).squeeze(2)  # [Nb, P]
                # dw/dq = −e^{−q} inside the support, 0 outside (where w was clamped to 0)
                e = torch.where(w > 0, w + e_cut, 0.0)
                torch.mm(dw.mul_(e).neg_(), b.mono, out=grad_coef[sl])
        return grad_coef, grad_rgb, None


def _quad_coefficients(xy_px: torch.Tensor, chol_px: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """K [N, 6] such that q(anchor + (ox, oy)) = K · [1, ox, oy, ox², ox·oy, oy²].

    With d = (pixel centre − μ) = δ + o and Σ⁻¹ = [[a, b], [b, c]] (pixel units):
    q = ½aδx² + bδxδy + ½cδy² + (aδx + bδy)·ox + (bδx + cδy)·oy + ½a·ox² + b·ox·oy + ½c·oy².
    """
    l11, l21, l22 = chol_px.unbind(-1)
    # Σ = L Lᵀ = [[l11², l11·l21], [l11·l21, l21² + l22²]], det Σ = (l11·l22)²
    inv_det = 1.0 / (l11 * l22) ** 2
    a = (l21 * l21 + l22 * l22) * inv_det
    b = -(l11 * l21) * inv_det
    c = (l11 * l11) * inv_det
    d = anchor.to(xy_px.dtype) + 0.5 - xy_px
    dx, dy = d.unbind(-1)
    k1 = a * dx + b * dy
    k2 = b * dx + c * dy
    k0 = 0.5 * (k1 * dx + k2 * dy)
    return torch.stack([k0, k1, k2, 0.5 * a, b, 0.5 * c], dim=-1)


def render_flat(
    xy_px: torch.Tensor,  # [Nt, 2] centres, pixel units
    chol_px: torch.Tensor,  # [Nt, 3] Cholesky factor, pixel units
    rgb: torch.Tensor,  # [Nt, 3]
    image_ids: torch.Tensor,  # [Nt] long
    num_images: int,
    size: int,
    plan: RenderPlan | None = None,
    margin: float = 0.0,
    backend: str = "torch",
) -> tuple[torch.Tensor, RenderPlan | None]:
    """Differentiable render of Gaussians in a flat layout; returns (images [B, S, S, 3], plan).

    backend "torch": the windowed pair list; `plan` from an earlier call is reused when it still covers
    every Gaussian, else rebuilt. "cpp": the compiled OpenMP op (no plan). "cuda": the CUDA kernels, on
    the rows padded per image (no plan); "cuda-emu": the same on the CPU, emulated. "auto": see resolve_backend. Gradients flow to xy_px, chol_px
    and rgb.
    """
    chosen = resolve_backend(backend, xy_px.device, xy_px.dtype)
    if chosen == "cpp":
        from cuda_ext.ops import render_cpu

        return render_cpu(xy_px, chol_px, rgb, image_ids, num_images, size), None
    if chosen in KERNEL_BACKENDS:
        from cuda_ext.ops import render_cuda

        params, mask = _pad_rows(torch.cat([xy_px, chol_px, rgb], dim=1), image_ids, num_images)
        return render_cuda(params, mask, size, emulate=chosen == "cuda-emu"), None
    if plan is None or plan.dtype != xy_px.dtype or not plan.covers(xy_px.detach(), chol_px.detach()):
        plan = build_plan(xy_px.detach(), chol_px.detach(), image_ids, num_images, size, margin)
    o = plan.order
    coef = _quad_coefficients(xy_px[o], chol_px[o], plan.anchor[o])
    canvas = _SplatSum.apply(coef, rgb[o], plan)
    side, pad = plan.side, plan.pad
    image = canvas.view(num_images, side, side, 3)[:, pad : pad + size, pad : pad + size, :]
    return image, plan


def _check_splats(splats: torch.Tensor, mask: torch.Tensor | None):
    if not isinstance(splats, torch.Tensor):
        raise TypeError(f"splats must be a torch.Tensor, got {type(splats).__name__}")
    if splats.dim() not in (2, 3) or splats.shape[-1] != 8:
        raise ValueError(f"splats must have shape [N, 8] or [B, Nmax, 8], got {list(splats.shape)}")
    if not splats.is_floating_point():
        raise TypeError(f"splats must be floating point, got {splats.dtype}")
    if mask is not None and (mask.shape != splats.shape[:-1] or mask.dtype != torch.bool):
        raise ValueError(
            f"mask must be bool with shape {list(splats.shape[:-1])}, got {mask.dtype} {list(mask.shape)}"
        )
    from cuda_ext.ops import check_finite

    check_finite("render", "splats", splats.detach(), mask)  # every backend: NaN/Inf is an error here


def _pad_rows(rows: torch.Tensor, image_ids: torch.Tensor, num_images: int):
    """Flat rows [Nt, 8] → (padded [B, Nmax, 8], mask [B, Nmax]), each image's rows in their order.

    Differentiable in `rows` (an out-of-place index_put)."""
    counts = torch.bincount(image_ids, minlength=num_images)
    nmax = int(counts.max()) if rows.shape[0] else 0
    order = torch.argsort(image_ids, stable=True)
    ids = image_ids[order]
    slot = torch.arange(rows.shape[0], device=rows.device) - (torch.cumsum(counts, 0) - counts)[ids]
    padded = rows.new_zeros(num_images, nmax, rows.shape[1]).index_put((ids, slot), rows[order])
    mask = torch.zeros(num_images, nmax, dtype=torch.bool, device=rows.device)
    mask[ids, slot] = True
    return padded, mask


def render_padded(
    params_px: torch.Tensor,  # [B, Nmax, 8], pixel units (x, y, l11, l21, l22 scaled by S)
    alive: torch.Tensor,  # [B, Nmax] bool
    size: int,
    backend: str = "auto",
) -> torch.Tensor:
    """Differentiable render of padded splat sets in pixel units → images [B, S, S, 3] (unclamped).

    "cuda" and "cuda-emu" render the padded layout directly; the others render the alive rows (render_flat).
    """
    chosen = resolve_backend(backend, params_px.device, params_px.dtype)
    if chosen in KERNEL_BACKENDS:
        from cuda_ext.ops import render_cuda

        return render_cuda(params_px, alive, size, emulate=chosen == "cuda-emu")
    b_idx, g_idx = alive.nonzero(as_tuple=True)
    rows = params_px[b_idx, g_idx]  # [Nt, 8]
    image, _ = render_flat(
        rows[:, 0:2], rows[:, 2:5], rows[:, 5:8], b_idx, params_px.shape[0], size, backend=backend
    )
    return image


def _render(splats: torch.Tensor, mask: torch.Tensor | None, size: int, backend: str) -> torch.Tensor:
    """Shared body of render_torch and render: scale to pixels, render the real rows, to [B, 3, S, S]."""
    _check_splats(splats, mask)
    if size < 1:
        raise ValueError(f"size must be ≥ 1, got {size}")
    batched = splats.dim() == 3
    s3 = splats if batched else splats[None]
    m = mask if mask is not None else torch.ones(s3.shape[:2], dtype=torch.bool, device=s3.device)
    m = m if batched or mask is None else m[None]
    params_px = torch.cat([s3[..., 0:5] * size, s3[..., 5:8]], dim=-1)
    image = render_padded(params_px, m, size, backend).permute(0, 3, 1, 2)
    return image if batched else image[0]


def render_torch(splats: torch.Tensor, mask: torch.Tensor | None = None, size: int = 224) -> torch.Tensor:
    """Pure-torch render (docs/format.md, Rendering), unclamped and differentiable.

    Args:
        splats: [N, 8] or [B, Nmax, 8] rows (x, y, l11, l21, l22, r, g, b) in canvas units.
        mask: [B, Nmax] bool, True for real Gaussians (None: all real).
        size: output side in pixels; the canvas is resolution-free.
    Returns:
        [3, size, size] or [B, 3, size, size] image (not clamped).
    """
    return _render(splats, mask, size, "torch")


def render(
    splats: torch.Tensor,
    mask: torch.Tensor | None = None,
    size: int = 224,
    backend: str = "auto",
    clamp: bool = False,
) -> torch.Tensor:
    """Render splat sets with the chosen backend ("auto": the CUDA kernels for CUDA tensors, the compiled
    CPU op for CPU tensors, when built; else pure torch; gs_encoder.fitting.backend).

    Args: as `render_torch`, plus `backend` in BACKENDS (an unknown name raises ValueError) and `clamp`
    to [0, 1] for viewing.
    """
    image = _render(splats, mask, size, backend)
    return image.clamp(0.0, 1.0) if clamp else image


def render_dense(splats: torch.Tensor, size: int, chunk: int = 256) -> torch.Tensor:
    """Dense reference: every Gaussian evaluated at every pixel, straight from the definition.

    Autograd-differentiable and slow (O(N·S²)); used by tests and the speed benchmark.
    Args: splats [N, 8]; returns [3, size, size].
    """
    _check_splats(splats, None)
    dtype = splats.dtype
    centres = (torch.arange(size, dtype=dtype, device=splats.device) + 0.5) / size
    py, px = torch.meshgrid(centres, centres, indexing="ij")
    p = torch.stack([px.reshape(-1), py.reshape(-1)], dim=1)  # [P, 2]
    out = splats.new_zeros(size * size, 3)
    for s in splats.split(chunk):
        l11, l21, l22 = s[:, 2:3], s[:, 3:4], s[:, 4:5]
        d = p[None, :, :] - s[:, None, 0:2]  # [n, P, 2]
        # q = ½ |L⁻¹ d|²: z1 = dx / l11, z2 = (dy − l21·z1) / l22
        z1 = d[..., 0] / l11
        z2 = (d[..., 1] - l21 * z1) / l22
        q = 0.5 * (z1 * z1 + z2 * z2)
        w = torch.clamp_min(torch.exp(-q) - math.exp(-Q_MAX), 0.0)
        out = out + w.T @ s[:, 5:8]
    return out.T.reshape(3, size, size)
