"""The backends of the fitting loop: what one iteration computes, and who computes it.

fit.py's loop (`fit_sets`) keeps the splat sets in the padded layout of docs/format.md, Layout
(params [B, Nmax, 8] in pixel units plus an `alive` mask; padding and pruned Gaussians are dead rows)
and drives one `FitOps`, three ops that do the backend-specific work:
- `fit_steps`: iterations it0 … it0 + num_steps − 1 in place (render, loss gradient, Adam, constraint);
- `render`: the images of the alive Gaussians, for the PSNR checks and the results;
- `prune_mask`: the luminosity pruning of docs/format.md, Fitting, as a new alive mask.

Two sets of ops exist:
- `torch_ops(backend)`: the pure-torch twins below, rendering with the windowed pair list ("torch") or
  the compiled CPU op ("cpp"). They define what the kernels compute: the loss and Adam step
  (`fit_steps_torch`), the pruning rule (`prune_mask_torch`).
- `cuda_ops()`: cuda_ext's kernels (fit_steps, render_cuda, prune_mask), a C++ loop of launches per
  call with no host sync; `cuda_ops(emulate=True)` runs the same kernel sources on the CPU (backend
  "cuda-emu", docs/cuda_emulation.md). The tests check them against the twins.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch

from .render import RenderPlan, render_flat

__all__ = [
    "BETAS",
    "EPS",
    "FitOps",
    "cuda_ops",
    "fit_steps_torch",
    "luminance",
    "prune_mask_torch",
    "torch_ops",
]

# Adam's textbook settings: the defaults of fit_steps_torch (the fit passes FitConfig's)
BETAS, EPS = (0.9, 0.999), 1e-8


@dataclass(frozen=True)
class FitOps:
    """The three ops the fitting loop needs; see the module docstring."""

    fit_steps: Callable  # (params, exp_avg, exp_avg_sq, alive, active, target, *, it0, num_steps, …) → None
    render: Callable  # (params_px [B, N, 8], alive [B, N], size) → image [B, S, S, 3]
    prune_mask: Callable  # (params_px, alive, tau) → alive [B, N]


def cuda_ops(emulate: bool = False) -> FitOps:
    """cuda_ext's kernels, or with `emulate` their CPU emulation on CPU tensors.

    Raises:
        ImportError (with the reason) when the module is not built.
    """
    import cuda_ext

    err = cuda_ext.emu_load_error() if emulate else cuda_ext.cuda_load_error()
    if err is not None:
        raise ImportError(err)
    from cuda_ext import ops

    return FitOps(
        partial(ops.fit_steps, emulate=emulate),
        partial(ops.render_cuda, emulate=emulate),
        partial(ops.prune_mask, emulate=emulate),
    )


def torch_ops(backend: str = "auto", plan_margin: float = 0.0) -> FitOps:
    """The pure-torch twins, rendering with `backend` ("torch" or "cpp"; "auto" picks as render does).

    Make one per fit: its fit_steps and render share the "torch" renderer's plan (render.py; built with
    `plan_margin` pixels to spare, FitConfig.plan_margin), as one uninterrupted loop over iterations
    would.
    """
    shared = _SharedPlan(backend, plan_margin)
    return FitOps(shared.fit_steps, shared.render, prune_mask_torch)


class _SharedPlan:
    """The render plan of one fit, carried from one op call to the next while it covers every Gaussian.

    A plan belongs to the rows of one alive mask: a new mask (the loop hands one after pruning) starts a
    new plan, and so does a new run of Adam (fit_steps from it0 = 0: the fit, the fine-tune), so each
    iteration renders with the plan that a plain per-iteration loop would have.
    """

    def __init__(self, backend: str, margin: float):
        self.backend, self.margin = backend, margin
        self.plan: RenderPlan | None = None
        self.alive: torch.Tensor | None = None  # the mask whose rows the plan holds

    def fit_steps(self, params, exp_avg, exp_avg_sq, alive, active, target, *, it0: int, **kwargs) -> None:
        plan = self.plan if alive is self.alive and it0 > 0 else None
        self.plan = fit_steps_torch(
            params,
            exp_avg,
            exp_avg_sq,
            alive,
            active,
            target,
            it0=it0,
            backend=self.backend,
            plan=plan,
            plan_margin=self.margin,
            **kwargs,
        )
        self.alive = alive

    def render(self, params_px: torch.Tensor, alive: torch.Tensor, size: int) -> torch.Tensor:
        """render_padded with the shared plan: [B, N, 8] pixel units, alive [B, N] → [B, S, S, 3]."""
        b_idx, g_idx = alive.nonzero(as_tuple=True)
        rows = params_px[b_idx, g_idx]
        plan = self.plan if alive is self.alive else None
        image, self.plan = render_flat(
            rows[:, 0:2],
            rows[:, 2:5],
            rows[:, 5:8],
            b_idx,
            params_px.shape[0],
            size,
            plan,
            self.margin,
            self.backend,
        )
        self.alive = alive
        return image


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Rec. 709 luminosity of |colour| (docs/format.md, Fitting), [..., 3] → [...]."""
    w = rgb.new_tensor([0.2126, 0.7152, 0.0722])
    return rgb.abs() @ w


def prune_mask_torch(params: torch.Tensor, alive: torch.Tensor, tau: float) -> torch.Tensor:
    """Twin of cuda_ext.ops.prune_mask: alive & (luminosity ≥ tau), plus each image's brightest alive
    Gaussian (the first on ties, as torch.argmax). params [B, N, 8], alive [B, N] → [B, N] bool."""
    lum = luminance(params[..., 5:8])
    keep = alive & (lum >= tau)
    brightest = lum.masked_fill(~alive, float("-inf")).argmax(dim=1)
    has = alive.any(dim=1)
    keep[torch.arange(params.shape[0], device=params.device)[has], brightest[has]] = True
    return keep


@torch.no_grad()
def fit_steps_torch(
    params: torch.Tensor,  # [B, N, 8] pixel units, in place
    exp_avg: torch.Tensor,  # [B, N, 8], in place
    exp_avg_sq: torch.Tensor,  # [B, N, 8], in place
    alive: torch.Tensor,  # [B, N] bool
    active: torch.Tensor,  # [B] bool
    target: torch.Tensor,  # [B, S, S, 3]
    *,
    it0: int,
    num_steps: int,
    iters_total: int,
    lr: Sequence[float],
    lr_final: float,
    lambda_l1: float,
    min_scale: float,
    lr_decay: float = 1.0,
    lr_warmup: int = 0,
    betas: tuple[float, float] = BETAS,
    eps: float = EPS,
    backend: str = "auto",
    tile_cap: int | None = None,  # accepted for the kernels' signature; no tiles here
    plan: RenderPlan | None = None,
    plan_margin: float = 0.0,
) -> RenderPlan | None:
    """Pure-torch twin of cuda_ext.ops.fit_steps: iterations it0 … it0 + num_steps − 1, in place.

    Each iteration renders the alive Gaussians, takes the gradient of Σ_b [mean((image_b − target_b)²)
    + λ·Σ_{g∈b} |c_g| / (3·n_b)] and applies Adam (moment decays `betas`, t = it + 1, step sizes lr × the
    schedule over iters_total of `_lr_scale`: warm-up, constant, decay) and the constraint l11, l22 ≥
    min_scale. An inactive image is frozen: its Adam state and parameters stay, except that the constraint
    still applies.
    The "torch" renderer reuses `plan` (from an earlier call on the same alive rows) while it covers
    every Gaussian; returns the plan of the last iteration (None for the other renderers).
    """
    num_images, size = target.shape[0], target.shape[1]
    b_idx, g_idx = alive.nonzero(as_tuple=True)  # image-major: each image's rows in their order
    counts = alive.sum(1).to(params.dtype)
    row_active = None if bool(active.all()) else active[b_idx]
    base_lr = params.new_tensor([lr[0]] * 2 + [lr[1]] * 3 + [lr[2]] * 3)
    # the alive rows, gathered once per call: [Nt, 8] each
    p, m, v = params[b_idx, g_idx], exp_avg[b_idx, g_idx], exp_avg_sq[b_idx, g_idx]
    for it in range(it0, it0 + num_steps):
        with torch.enable_grad():
            p.requires_grad_(True)
            image, plan = render_flat(
                p[:, 0:2], p[:, 2:5], p[:, 5:8], b_idx, num_images, size, plan, plan_margin, backend
            )
            grad = _loss_gradient(p, image, target, b_idx, counts, lambda_l1)
        p = p.detach()
        scale = _lr_scale(it, iters_total, lr_final, lr_decay, lr_warmup)
        _adam_step(p, grad, m, v, it, base_lr, scale, min_scale, row_active, betas, eps)
    params[b_idx, g_idx] = p
    # Adam moved every row's moments, but a frozen image keeps its state: write back the active rows only
    keep = slice(None) if row_active is None else row_active
    exp_avg[b_idx[keep], g_idx[keep]] = m[keep]
    exp_avg_sq[b_idx[keep], g_idx[keep]] = v[keep]
    return plan


def _loss_gradient(p, image, targets, image_ids, counts, lambda_l1: float) -> torch.Tensor:
    """d/dp of Σ_b [mean((image_b − target_b)²) + λ·Σ_{g∈b} |c_g| / (3·n_b)]; p [Nt, 8], image [B, S, S, 3]."""
    loss = (image - targets).pow(2).mean(dim=(1, 2, 3)).sum()
    if lambda_l1 > 0:
        l1 = torch.zeros(targets.shape[0], dtype=p.dtype, device=p.device).index_add(
            0, image_ids, p[:, 5:8].abs().sum(1)
        )
        loss = loss + lambda_l1 * (l1 / (3 * counts)).sum()
    (grad,) = torch.autograd.grad(loss, p)
    return grad


def _lr_scale(it: int, iters: int, lr_final: float, lr_decay: float = 1.0, lr_warmup: int = 0) -> float:
    """Step-size factor at iteration `it` of `iters`: a linear ramp (it + 1) / lr_warmup over the first
    lr_warmup iterations (0: none), 1 until the last `lr_decay` fraction of the schedule, then a cosine down
    to lr_final at iteration iters − 1 (lr_decay 1: a cosine over the whole schedule); the two multiply."""
    warm = min(1.0, (it + 1) / lr_warmup) if lr_warmup > 0 else 1.0
    frac = it / max(iters - 1, 1)
    start = 1.0 - lr_decay
    if frac <= start:
        return warm
    return warm * (lr_final + (1 - lr_final) * 0.5 * (1 + math.cos(math.pi * ((frac - start) / lr_decay))))


def _adam_step(p, grad, m, v, it: int, base_lr, scale: float, min_scale: float, row_active, betas, eps):
    """In place on p, m, v [Nt, 8]: Adam step t = it + 1 (moment decays `betas`) with bias correction, step
    sizes base_lr [8] × scale (the schedule's), rows with row_active False (None: all active) left where they
    are; then the constraint."""
    beta1, beta2 = betas
    t = it + 1
    m.mul_(beta1).add_(grad, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step_size = base_lr * (scale / (1 - beta1**t))
    denom = (v / (1 - beta2**t)).sqrt_().add_(eps)
    step = (m / denom) * step_size
    if row_active is not None:
        step *= row_active[:, None]
    p -= step
    _constrain(p, min_scale)


def _constrain(p: torch.Tensor, min_scale: float) -> None:
    """In place: keep l11, l22 ≥ min_scale (pixel units), flipping signs first so Σ = LLᵀ is unchanged."""
    flip1 = p[:, 2] < 0  # negating column 1 of L, (l11, l21), keeps Σ
    p[:, 2:4] = torch.where(flip1[:, None], -p[:, 2:4], p[:, 2:4])
    p[:, 2].clamp_(min=min_scale)
    p[:, 4].abs_().clamp_(min=min_scale)
