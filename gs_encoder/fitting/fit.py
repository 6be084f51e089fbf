"""Fitting splat sets to images (CONTRACTS.md §3): `FitConfig`, `fit_images`, `prune`, `psnr`.

The optimisation runs on all images of a batch at once, in a flat layout (every Gaussian of every image
in one [Nt, 8] tensor with an image id), so a batch of images gives exactly the per-image results:
the loss is a sum of per-image terms and Adam is element-wise. Parameters live in pixel units of the
fitting canvas during the fit (learning rates then mean the same at any S) and are returned in the
canvas units of CONTRACTS.md §1.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..splat_io import as_stored, validate_splats
from .init import random_init, structured_init
from .render import BACKENDS, render, render_flat, resolve_backend

__all__ = ["FitConfig", "FitResult", "fit_images", "fit_sidecar", "luminance", "prune", "psnr"]

logger = logging.getLogger(__name__)

INITS = ("structured", "random")


@dataclass
class FitConfig:
    """Settings of one fitting job (defaults: the paper's 3136 Gaussians, 3000 iterations)."""

    num_gaussians: int = 3136  # N per image before pruning
    iters: int = 3000  # Adam steps of the main fit
    init: str = "structured"  # "structured" (grid, CONTRACTS.md §3) or "random" (GaussianImage)
    lambda_l1: float = 0.0  # weight of mean |colour| in the loss; drives dim Gaussians towards 0 for pruning
    tau: float | None = None  # luminosity pruning threshold after the fit; None: no pruning
    finetune_iters: int = 0  # Adam steps after pruning
    lr_xy: float = 0.1  # Adam step size of centres, pixels
    lr_chol: float = 0.04  # Adam step size of the Cholesky factor, pixels
    lr_rgb: float = 0.02  # Adam step size of colours
    lr_final: float = 0.05  # cosine decay of every step size to this fraction at the end
    target_psnr: float | None = None  # stop an image early once its PSNR reaches this (dB)
    check_every: int = 50  # iterations between PSNR checks (early stop, progress bar)
    min_scale_px: float = 0.3  # lower bound on l11 and l22, pixels: narrower Gaussians fall between pixels
    plan_margin: float = 0.0  # extra window radius (px) so the render plan survives more steps
    seed: int = 0  # seed of the random initialisation
    backend: str = "auto"  # renderer: auto (compiled CPU op when built, else torch) | torch | cpp

    def __post_init__(self):
        if not isinstance(self.num_gaussians, int) or self.num_gaussians < 1:
            raise ValueError(f"num_gaussians must be a positive int, got {self.num_gaussians!r}")
        if self.iters < 0 or self.finetune_iters < 0:
            raise ValueError(f"iters and finetune_iters must be ≥ 0, got {self.iters}, {self.finetune_iters}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; valid: {', '.join(INITS)}")
        if self.lambda_l1 < 0:
            raise ValueError(f"lambda_l1 must be ≥ 0, got {self.lambda_l1}")
        if self.tau is not None and self.tau < 0:
            raise ValueError(f"tau must be ≥ 0 or None, got {self.tau}")
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
    """Rec. 709 luminosity of |colour| (CONTRACTS.md §3), [..., 3] → [...]."""
    w = rgb.new_tensor([0.2126, 0.7152, 0.0722])
    return rgb.abs() @ w


def psnr(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of the [0, 1]-clamped image against the target, over all but the first dim if batched."""
    dims = tuple(range(1, image.dim())) if image.dim() == 4 else tuple(range(image.dim()))
    mse = (image.clamp(0, 1) - target).pow(2).mean(dims)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


def prune(splats: torch.Tensor, tau: float) -> torch.Tensor:
    """Drop Gaussians whose luminosity is below tau; the brightest one always stays. [N, 8] → [M, 8]."""
    lum = luminance(splats[:, 5:8])
    keep = lum >= tau
    keep[lum.argmax()] = True
    return splats[keep]


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


def _optimise(params, image_ids, targets, iters, cfg: FitConfig, progress: bool, desc: str):
    """Adam on flat params [Nt, 8] (pixel units) against targets [B, S, S, 3]; returns (params, iters_run, history).

    Early stop is per image: once an image reaches cfg.target_psnr its Gaussians stop moving.
    """
    num_images, size = targets.shape[0], targets.shape[1]
    p = params.detach().clone().requires_grad_(True)
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    base_lr = p.new_tensor([cfg.lr_xy] * 2 + [cfg.lr_chol] * 3 + [cfg.lr_rgb] * 3)
    counts = torch.bincount(image_ids, minlength=num_images).to(p.dtype)
    active = torch.ones(num_images, dtype=torch.bool, device=p.device)
    iters_run = torch.zeros(num_images, dtype=torch.long)
    history: list[list[tuple[int, float]]] = [[] for _ in range(num_images)]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    plan = None
    bar = tqdm(range(iters), desc=desc, disable=not progress, leave=False, unit="it")
    for it in bar:
        image, plan = render_flat(
            p[:, 0:2], p[:, 2:5], p[:, 5:8], image_ids, num_images, size, plan, cfg.plan_margin, cfg.backend
        )
        mse = (image - targets).pow(2).mean(dim=(1, 2, 3))  # [B]
        loss = mse.sum()
        if cfg.lambda_l1 > 0:
            l1 = torch.zeros(num_images, dtype=p.dtype, device=p.device).index_add(
                0, image_ids, p[:, 5:8].abs().sum(1)
            )
            loss = loss + cfg.lambda_l1 * (l1 / (3 * counts)).sum()
        (grad,) = torch.autograd.grad(loss, p)
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
            t = it + 1
            frac = it / max(iters - 1, 1)
            sched = cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * frac))
            m.mul_(beta1).add_(grad, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = base_lr * (sched / (1 - beta1**t))
            denom = (v / (1 - beta2**t)).sqrt_().add_(eps)
            step = (m / denom) * step_size
            if not bool(active.all()):
                step *= active[image_ids, None]
            p -= step
            _constrain(p, cfg.min_scale_px)
    bar.close()
    return p.detach(), iters_run.tolist(), history


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
        ValueError / TypeError on bad images or settings.
    """
    cfg = cfg or FitConfig()
    _check_images(images)
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
    else:
        gen = torch.Generator(device=images.device).manual_seed(cfg.seed)
        sets = list(random_init(images, cfg.num_gaussians, gen))
    counts = [s.shape[0] for s in sets]
    params = torch.cat(sets).clone()
    params[:, 0:5] *= size
    image_ids = torch.repeat_interleave(
        torch.arange(num_images, device=images.device), torch.tensor(counts, device=images.device)
    )
    params, iters_run, history = _optimise(params, image_ids, targets, cfg.iters, cfg, progress, "fit")
    score_full = _render_psnr(params, image_ids, targets)
    score = score_full
    if cfg.tau is not None:
        kept = [prune(params[image_ids == b], cfg.tau) for b in range(num_images)]
        params = torch.cat(kept)
        image_ids = torch.cat(
            [torch.full((k.shape[0],), b, device=images.device) for b, k in enumerate(kept)]
        )
        if cfg.finetune_iters > 0:
            ft = FitConfig(**{**cfg.__dict__, "target_psnr": None})
            params, _, _ = _optimise(params, image_ids, targets, cfg.finetune_iters, ft, progress, "finetune")
        score = _render_psnr(params, image_ids, targets)
    seconds = (time.perf_counter() - start) / num_images
    return [
        FitResult(
            splats=_canonical(params[image_ids == b], size).cpu(),
            psnr=float(score[b]),
            psnr_unpruned=float(score_full[b]),
            num_initial=counts[b],
            iters=iters_run[b],
            seconds=seconds,
            history=history[b],
        )
        for b in range(num_images)
    ]


def fit_sidecar(result: FitResult, target: torch.Tensor, cfg: FitConfig, resize: str, source: str) -> dict:
    """The `<name>.json` fields of one fitted image (docs/format.md).

    `psnr` is that of the stored fp16 splats against `target` [3, S, S] (`psnr_fp32` before rounding).
    """
    size = target.shape[-1]
    with torch.no_grad():
        stored = float(psnr(render(as_stored(result.splats), size=size, backend=cfg.backend), target.cpu()))
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
        "backend": resolve_backend(cfg.backend, target.device),
        "device": str(target.device),
        "seconds": round(result.seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
