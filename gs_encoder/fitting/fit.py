"""Fitting splat sets to images (docs/format.md, Fitting): `FitConfig`, `fit_images`, `prune`, `psnr`.

The optimisation runs on all images of a batch at once, in a flat layout (every Gaussian of every image
in one [Nt, 8] tensor with an image id), so a batch of images gives exactly the per-image results:
the loss is a sum of per-image terms and Adam is element-wise. Parameters live in pixel units of the
fitting canvas during the fit (learning rates then mean the same at any S) and are returned in the
canvas units of docs/format.md, Layout.

On CUDA tensors with cuda_ext's kernels built, `fit_images` hands the same job to the fused batched
fitter (fit_batched.py: padded layout, many iterations per launch loop); the loss, Adam and the
constraint below are what it computes (`_loss_gradient`, `_adam_step`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..splat_io import as_stored, validate_splats
from .backend import BACKENDS, KERNEL_BACKENDS, resolve_backend
from .init import adaptive_init, random_init, structured_init
from .render import render, render_flat

__all__ = ["FitConfig", "FitResult", "fit_images", "fit_sidecar", "luminance", "prune", "psnr"]

logger = logging.getLogger(__name__)

INITS = ("structured", "random", "adaptive", "learned")
BETAS, EPS = (0.9, 0.999), 1e-8  # Adam


@dataclass
class FitConfig:
    """Settings of one fitting job (defaults: the paper's 3136 Gaussians, 3000 iterations)."""

    num_gaussians: int = 3136  # N per image before pruning
    iters: int = 3000  # Adam steps of the main fit
    # learned (learned_init.py; the default: fastest to every quality in eval/results/fit_convergence.md),
    # structured (grid), adaptive (structure-tensor grid, init.py) or random (GaussianImage)
    init: str = "learned"
    init_weights: str | None = None  # weights of the learned init (None: the shipped file)
    lambda_l1: float = 0.0  # weight of mean |colour| in the loss; drives dim Gaussians towards 0 for pruning
    tau: float | None = None  # luminosity pruning threshold; None: no pruning
    prune_at: int | None = None  # main-fit iteration at which to prune (needs tau); None: after the fit
    finetune_iters: int = 0  # Adam steps after the main fit when pruning (fresh Adam state, own schedule)
    lr_xy: float = 0.1  # Adam step size of centres, pixels
    lr_chol: float = 0.04  # Adam step size of the Cholesky factor, pixels
    lr_rgb: float = 0.02  # Adam step size of colours
    lr_final: float = 0.05  # cosine decay of every step size to this fraction at the end
    target_psnr: float | None = None  # stop an image early once its PSNR reaches this (dB)
    check_every: int = 50  # iterations between PSNR checks (early stop, progress bar)
    min_scale_px: float = 0.3  # lower bound on l11 and l22, pixels: narrower Gaussians fall between pixels
    plan_margin: float = 0.0  # extra window radius (px) so the render plan survives more steps
    seed: int = 0  # seed of the random initialisation
    backend: str = "auto"  # auto (CUDA kernels / compiled CPU op when built, else torch) | torch | cpp | cuda

    def __post_init__(self):
        if not isinstance(self.num_gaussians, int) or self.num_gaussians < 1:
            raise ValueError(f"num_gaussians must be a positive int, got {self.num_gaussians!r}")
        if self.iters < 0 or self.finetune_iters < 0:
            raise ValueError(f"iters and finetune_iters must be ≥ 0, got {self.iters}, {self.finetune_iters}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; valid: {', '.join(INITS)}")
        if self.init == "learned":
            from .learned_init import check_request, load_learned_init

            check_request(self.num_gaussians, None)
            load_learned_init(self.init_weights)  # a missing or unusable file is an error now, not mid-job
        if self.lambda_l1 < 0:
            raise ValueError(f"lambda_l1 must be ≥ 0, got {self.lambda_l1}")
        if self.tau is not None and self.tau < 0:
            raise ValueError(f"tau must be ≥ 0 or None, got {self.tau}")
        if self.prune_at is not None:
            if isinstance(self.prune_at, bool) or not isinstance(self.prune_at, int) or self.prune_at < 0:
                raise ValueError(f"prune_at must be an int ≥ 0 or None, got {self.prune_at!r}")
            if self.tau is None:
                raise ValueError("prune_at needs tau (the luminosity threshold to prune with)")
        for name in ("lr_xy", "lr_chol", "lr_rgb", "min_scale_px"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.lr_final <= 1:
            raise ValueError(f"lr_final must be in (0, 1], got {self.lr_final}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.check_every < 1:
            raise ValueError(f"check_every must be ≥ 1, got {self.check_every}")


@dataclass
class FitResult:
    """One fitted image."""

    splats: torch.Tensor  # [N, 8] float32, canvas units, l11 > 0, l22 > 0
    psnr: float  # dB, of the clamped render of the returned splats
    psnr_unpruned: float  # dB before pruning (equal to psnr without pruning)
    num_initial: int  # N before pruning
    iters: int  # main-fit iterations actually run (early stop may cut them)
    seconds: float  # wall time of the batch this image was in, divided by the batch size
    history: list[tuple[int, float]] = field(default_factory=list)  # (iteration, PSNR) at each check

    @property
    def num_gaussians(self) -> int:
        return int(self.splats.shape[0])


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Rec. 709 luminosity of |colour| (docs/format.md, Fitting), [..., 3] → [...]."""
    w = rgb.new_tensor([0.2126, 0.7152, 0.0722])
    return rgb.abs() @ w


def psnr(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of the [0, 1]-clamped image against the target, over all but the first dim if batched."""
    dims = tuple(range(1, image.dim())) if image.dim() == 4 else tuple(range(image.dim()))
    mse = (image.clamp(0, 1) - target).pow(2).mean(dims)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


def prune(splats: torch.Tensor, tau: float) -> torch.Tensor:
    """Drop Gaussians whose luminosity is below tau; the brightest one always stays. [N, 8] → [M, 8]."""
    return splats[_prune_rows(splats, torch.zeros_like(splats[:, 0], dtype=torch.long), 1, tau)]


def _prune_rows(params: torch.Tensor, image_ids: torch.Tensor, num_images: int, tau: float) -> torch.Tensor:
    """Keep mask [Nt] of flat rows: luminosity ≥ tau, plus each image's brightest (first on ties)."""
    lum = luminance(params[:, 5:8])
    keep = lum >= tau
    for b in range(num_images):
        rows = (image_ids == b).nonzero().squeeze(1)
        if rows.numel():
            keep[rows[lum[rows].argmax()]] = True
    return keep


def _canonical(params: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel-unit parameters → canvas units with l11 > 0, l22 > 0 (Σ = LLᵀ is unchanged by the flips)."""
    out = params.detach().clone()
    flip1 = out[:, 2] < 0  # negating column 1 of L, (l11, l21), keeps Σ
    out[flip1, 2:4] = -out[flip1, 2:4]
    out[:, 4] = out[:, 4].abs()
    out[:, 0:5] /= size
    return out.float()


def _constrain(p: torch.Tensor, min_scale: float) -> None:
    """In place: keep l11, l22 ≥ min_scale (pixel units), flipping signs first so Σ is unchanged."""
    flip1 = p[:, 2] < 0
    p[:, 2:4] = torch.where(flip1[:, None], -p[:, 2:4], p[:, 2:4])
    p[:, 2].clamp_(min=min_scale)
    p[:, 4].abs_().clamp_(min=min_scale)


def _lr_scale(it: int, iters: int, lr_final: float) -> float:
    """Cosine decay of the step sizes from 1 at iteration 0 to lr_final at iteration iters − 1."""
    frac = it / max(iters - 1, 1)
    return lr_final + (1 - lr_final) * 0.5 * (1 + math.cos(math.pi * frac))


def _base_lr(cfg: FitConfig, like: torch.Tensor) -> torch.Tensor:
    """Step sizes of the 8 columns [8]: xy, then the Cholesky factor, then colour."""
    return like.new_tensor([cfg.lr_xy] * 2 + [cfg.lr_chol] * 3 + [cfg.lr_rgb] * 3)


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


@torch.no_grad()
def _adam_step(
    p, grad, m, v, it: int, iters: int, base_lr, lr_final: float, min_scale: float, row_active=None
):
    """In place on p, m, v [Nt, 8]: Adam step t = it + 1 with bias correction, step sizes base_lr [8] ×
    the cosine schedule, rows with row_active False left where they are; then the constraint."""
    beta1, beta2 = BETAS
    t = it + 1
    m.mul_(beta1).add_(grad, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step_size = base_lr * (_lr_scale(it, iters, lr_final) / (1 - beta1**t))
    denom = (v / (1 - beta2**t)).sqrt_().add_(EPS)
    step = (m / denom) * step_size
    if row_active is not None:
        step *= row_active[:, None]
    p -= step
    _constrain(p, min_scale)


def _optimise(params, image_ids, targets, iters, cfg: FitConfig, progress: bool, desc: str, prune_at=None):
    """Adam on flat params [Nt, 8] (pixel units) against targets [B, S, S, 3].

    Early stop is per image: once an image reaches cfg.target_psnr its Gaussians stop moving. With
    `prune_at`, the Gaussians under cfg.tau are dropped before that iteration (Adam state kept).
    Returns (params, image_ids, iters_run, history, PSNR [B] just before pruning or None).
    """
    num_images, size = targets.shape[0], targets.shape[1]
    p = params.detach().clone().requires_grad_(True)
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    base_lr = _base_lr(cfg, p)
    counts = torch.bincount(image_ids, minlength=num_images).to(p.dtype)
    active = torch.ones(num_images, dtype=torch.bool, device=p.device)
    iters_run = torch.zeros(num_images, dtype=torch.long)
    history: list[list[tuple[int, float]]] = [[] for _ in range(num_images)]
    score_unpruned = None
    plan = None
    bar = tqdm(range(iters), desc=desc, disable=not progress, leave=False, unit="it")
    for it in bar:
        if it == prune_at:
            with torch.no_grad():
                score_unpruned = _render_psnr(p, image_ids, targets)
                keep = _prune_rows(p, image_ids, num_images, cfg.tau)
            p, m, v, image_ids = p.detach()[keep].requires_grad_(True), m[keep], v[keep], image_ids[keep]
            counts = torch.bincount(image_ids, minlength=num_images).to(p.dtype)
            plan = None
        image, plan = render_flat(
            p[:, 0:2], p[:, 2:5], p[:, 5:8], image_ids, num_images, size, plan, cfg.plan_margin, cfg.backend
        )
        grad = _loss_gradient(p, image, targets, image_ids, counts, cfg.lambda_l1)
        with torch.no_grad():
            if it % cfg.check_every == 0 or it == iters - 1:
                score = psnr(image.detach(), targets)
                for b in range(num_images):
                    if active[b]:
                        history[b].append((it, float(score[b])))
                if cfg.target_psnr is not None:
                    active &= score < cfg.target_psnr
                bar.set_postfix(psnr=f"{float(score.mean()):.2f}")
                if not active.any():
                    break
            iters_run += active.cpu()
            row_active = None if bool(active.all()) else active[image_ids]
            _adam_step(p, grad, m, v, it, iters, base_lr, cfg.lr_final, cfg.min_scale_px, row_active)
    bar.close()
    return p.detach(), image_ids, iters_run.tolist(), history, score_unpruned


def _render_psnr(params, image_ids, targets) -> torch.Tensor:
    with torch.no_grad():
        image, _ = render_flat(
            params[:, 0:2], params[:, 2:5], params[:, 5:8], image_ids, targets.shape[0], targets.shape[1]
        )
        return psnr(image, targets)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must have shape [B, 3, S, S], got {list(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point in [0, 1], got {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or Inf")


def fit_images(
    images: torch.Tensor,
    cfg: FitConfig | None = None,
    progress: bool = False,
    initial: list[torch.Tensor] | None = None,
) -> list[FitResult]:
    """Fit one splat set per image.

    Args:
        images: [B, 3, S, S] in [0, 1] (see `gs_encoder.image_io.load_image`); the device decides where
            the fit runs.
        cfg: FitConfig (defaults if None).
        progress: show a tqdm bar over iterations.
        initial: optional starting splat sets, one [N_b, 8] per image (N_b may differ), instead of
            cfg.init; for refining or fine-tuning after pruning.
    Returns:
        One FitResult per image, in order.
    Raises:
        ValueError / TypeError on bad images or settings; ImportError when cfg.backend names a compiled
        backend that is not built.

    CUDA tensors run on the fused batched fitter of cuda_ext when it is built (cfg.backend "auto" or
    "cuda"), with the same results up to float32 summation order; "auto" falls back to the pure-torch
    path with one warning when it is not.
    """
    cfg = cfg or FitConfig()
    _check_images(images)
    backend = resolve_backend(cfg.backend, images.device)
    start = time.perf_counter()
    images = images.float()
    num_images, size = images.shape[0], images.shape[-1]
    targets = images.permute(0, 2, 3, 1).contiguous()  # [B, S, S, 3]
    if initial is not None:
        if len(initial) != num_images:
            raise ValueError(f"initial must hold one splat set per image ({num_images}), got {len(initial)}")
        for k, s in enumerate(initial):
            validate_splats(s, f"initial[{k}]")
        sets = [s.to(images.device, torch.float32) for s in initial]
    elif cfg.init == "structured":
        sets = list(structured_init(images, cfg.num_gaussians))
    elif cfg.init == "adaptive":
        sets = list(adaptive_init(images, cfg.num_gaussians, backend=cfg.backend))
    elif cfg.init == "learned":
        from .learned_init import learned_init

        sets = list(learned_init(images, cfg.num_gaussians, cfg.init_weights, backend=cfg.backend))
    else:
        gen = torch.Generator(device=images.device).manual_seed(cfg.seed)
        sets = list(random_init(images, cfg.num_gaussians, gen))
    counts = [s.shape[0] for s in sets]
    if backend in KERNEL_BACKENDS:
        from .fit_batched import cuda_ops, fit_sets

        return fit_sets(sets, targets, cfg, cuda_ops(emulate=backend == "cuda-emu"), progress, start)
    params = torch.cat(sets).clone()
    params[:, 0:5] *= size
    image_ids = torch.repeat_interleave(
        torch.arange(num_images, device=images.device), torch.tensor(counts, device=images.device)
    )
    prune_at = cfg.prune_at if cfg.tau is not None else None
    params, image_ids, iters_run, history, score_full = _optimise(
        params, image_ids, targets, cfg.iters, cfg, progress, "fit", prune_at
    )
    pruned = score_full is not None
    if not pruned:
        score_full = _render_psnr(params, image_ids, targets)
    score = score_full
    if cfg.tau is not None:
        if not pruned:
            keep = _prune_rows(params, image_ids, num_images, cfg.tau)
            params, image_ids = params[keep], image_ids[keep]
        if cfg.finetune_iters > 0:
            ft = FitConfig(**{**cfg.__dict__, "target_psnr": None})
            params, image_ids, *_ = _optimise(
                params, image_ids, targets, cfg.finetune_iters, ft, progress, "finetune"
            )
        score = _render_psnr(params, image_ids, targets)
    rows = [params[image_ids == b] for b in range(num_images)]
    return _results(rows, size, score, score_full, counts, iters_run, history, start)


def _results(rows, size, score, score_full, counts, iters_run, history, start) -> list[FitResult]:
    """One FitResult per image from its pixel-unit rows [N_b, 8] and the per-image figures."""
    seconds = (time.perf_counter() - start) / len(rows)
    return [
        FitResult(
            splats=_canonical(r, size).cpu(),
            psnr=float(score[b]),
            psnr_unpruned=float(score_full[b]),
            num_initial=counts[b],
            iters=iters_run[b],
            seconds=seconds,
            history=history[b],
        )
        for b, r in enumerate(rows)
    ]


def fit_sidecar(result: FitResult, target: torch.Tensor, cfg: FitConfig, resize: str, source: str) -> dict:
    """The `<name>.json` fields of one fitted image (docs/format.md).

    `psnr` is that of the stored fp16 splats against `target` [3, S, S] (`psnr_fp32` before rounding),
    rendered on the target's device.
    """
    size = target.shape[-1]
    with torch.no_grad():
        splats = as_stored(result.splats).to(target.device)
        stored = float(psnr(render(splats, size=size, backend=cfg.backend), target))
    return {
        "source": source,
        "canvas": size,
        "resize": resize,
        "num_gaussians_initial": result.num_initial,
        "num_gaussians": result.num_gaussians,
        "psnr": round(stored, 4),
        "psnr_fp32": round(result.psnr, 4),
        "psnr_unpruned": round(result.psnr_unpruned, 4),
        "fit_iters": result.iters,
        "finetune_iters": cfg.finetune_iters if cfg.tau is not None else 0,
        "init": cfg.init,
        "lambda_l1": cfg.lambda_l1,
        "tau": cfg.tau,
        "prune_at": cfg.prune_at if cfg.tau is not None else None,
        "backend": resolve_backend(cfg.backend, target.device),
        "device": str(target.device),
        "seconds": round(result.seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
