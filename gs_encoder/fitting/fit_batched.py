"""The batched fitter: `fit_images`' path for CUDA tensors, on the padded layout of docs/format.md, Layout.

Parameters live in one [B, Nmax, 8] tensor (pixel units) with an `alive` mask [B, Nmax]; padding and
pruned Gaussians are dead rows, so shapes never change and pruning is a mask (mid-fit or after the fit,
then an optional fine-tune). The iterations run in chunks of `fit_steps`, one call per stretch between
PSNR checks (cfg.check_every), each a loop of kernel launches in C++ with no host sync; the host reads
PSNRs only at those checks, as the flat loop records them.

Three ops do the work, passed as a `BatchedOps`:
- `cuda_ops()`: cuda_ext's kernels (fit_steps, render_cuda, prune_mask); `cuda_ops(emulate=True)`:
  the same kernel sources on the CPU (backend "cuda-emu");
- `torch_ops()`: their pure-torch twins below, which define what the kernels compute: the same loss,
  Adam step and constraint as fit.py's flat loop (`_loss_gradient`, `_adam_step`). Driving the twins
  through `fit_sets` gives fit.py's results, which the CPU tests check; the CUDA tests check the
  kernels against the CPU path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .fit import (
    BETAS,
    EPS,
    FitConfig,
    FitResult,
    _adam_step,
    _loss_gradient,
    _results,
    luminance,
    psnr,
)
from .render import render_flat, render_padded

__all__ = ["BatchedOps", "cuda_ops", "fit_sets", "fit_steps_torch", "prune_mask_torch", "torch_ops"]


@dataclass(frozen=True)
class BatchedOps:
    """The three ops the driver needs; see the module docstring."""

    fit_steps: Callable  # (params, exp_avg, exp_avg_sq, alive, active, target, *, it0, num_steps, …) → None
    render: Callable  # (params_px [B, N, 8], alive [B, N], size) → image [B, S, S, 3]
    prune_mask: Callable  # (params_px, alive, tau) → alive [B, N]


def cuda_ops(emulate: bool = False) -> BatchedOps:
    """cuda_ext's kernels, or with `emulate` their CPU emulation on CPU tensors (raises ImportError
    with the reason when the module is not built)."""
    from functools import partial

    from cuda_ext import _backend, ops

    if emulate:
        _backend.emu_module()
    else:
        _backend.cuda_module()
    return BatchedOps(
        partial(ops.fit_steps, emulate=emulate),
        partial(ops.render_cuda, emulate=emulate),
        partial(ops.prune_mask, emulate=emulate),
    )


def torch_ops(backend: str = "auto") -> BatchedOps:
    """The pure-torch twins, rendering with `backend` ("torch" or "cpp"; "auto" picks as render does)."""

    def fit_steps(*args, **kwargs):
        return fit_steps_torch(*args, backend=backend, **kwargs)

    def render(params_px, alive, size):
        return render_padded(params_px, alive, size, backend)

    return BatchedOps(fit_steps, render, prune_mask_torch)


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
    betas: tuple[float, float] = BETAS,
    eps: float = EPS,
    backend: str = "auto",
    tile_cap: int | None = None,  # accepted for the kernels' signature; no tiles here
) -> None:
    """Pure-torch twin of cuda_ext.ops.fit_steps: iterations it0 … it0 + num_steps − 1, in place.

    Each iteration renders the alive Gaussians, takes the gradient of fit.py's loss and applies its Adam
    step (t = it + 1) and constraint. An inactive image is frozen: its Adam state and parameters stay,
    except that the constraint still applies, as in the flat loop.
    """
    if tuple(betas) != BETAS or eps != EPS:
        raise ValueError(f"fit_steps_torch implements Adam with betas {BETAS} and eps {EPS} (fit.py)")
    num_images, size = target.shape[0], target.shape[1]
    b_idx, g_idx = alive.nonzero(as_tuple=True)
    counts = alive.sum(1).to(params.dtype)
    row_active = active[b_idx]
    base_lr = params.new_tensor([lr[0]] * 2 + [lr[1]] * 3 + [lr[2]] * 3)
    for it in range(it0, it0 + num_steps):
        p = params[b_idx, g_idx]
        m, v = exp_avg[b_idx, g_idx], exp_avg_sq[b_idx, g_idx]
        with torch.enable_grad():
            p.requires_grad_(True)
            image, _ = render_flat(p[:, 0:2], p[:, 2:5], p[:, 5:8], b_idx, num_images, size, backend=backend)
            grad = _loss_gradient(p, image, target, b_idx, counts, lambda_l1)
        p = p.detach()
        _adam_step(p, grad, m, v, it, iters_total, base_lr, lr_final, min_scale, row_active)
        params[b_idx, g_idx] = p
        exp_avg[b_idx[row_active], g_idx[row_active]] = m[row_active]
        exp_avg_sq[b_idx[row_active], g_idx[row_active]] = v[row_active]


def _stops(iters: int, check_every: int, prune_at: int | None) -> tuple[list[int], set[int]]:
    """Chunk starts (checks, the prune iteration) and the set of check iterations, as the flat loop."""
    checks = set(range(0, iters, check_every)) | ({iters - 1} if iters > 0 else set())
    starts = checks | ({prune_at} if prune_at is not None and prune_at < iters else set())
    return sorted(starts), checks


def _psnr(ops: BatchedOps, params, alive, targets) -> torch.Tensor:
    return psnr(ops.render(params, alive, targets.shape[1]), targets)


def _optimise_padded(
    params, alive, targets, iters, cfg: FitConfig, ops: BatchedOps, progress, desc, prune_at
):
    """The batched twin of fit.py's _optimise, in place on params; returns
    (alive, iters_run, history, PSNR [B] just before pruning or None)."""
    num_images = params.shape[0]
    exp_avg, exp_avg_sq = torch.zeros_like(params), torch.zeros_like(params)
    active = torch.ones(num_images, dtype=torch.bool, device=params.device)
    iters_run = [0] * num_images
    history: list[list[tuple[int, float]]] = [[] for _ in range(num_images)]
    score_unpruned = None
    starts, checks = _stops(iters, cfg.check_every, prune_at)
    bar = tqdm(total=iters, desc=desc, disable=not progress, leave=False, unit="it")
    for k, it in enumerate(starts):
        if it == prune_at:
            score_unpruned = _psnr(ops, params, alive, targets)
            alive = ops.prune_mask(params, alive, cfg.tau)
        if it in checks:
            score = _psnr(ops, params, alive, targets).cpu()
            was_active = active.cpu()
            for b in range(num_images):
                if was_active[b]:
                    history[b].append((it, float(score[b])))
            if cfg.target_psnr is not None:
                active &= (score < cfg.target_psnr).to(active.device)
            bar.set_postfix(psnr=f"{float(score.mean()):.2f}")
            if not bool(active.any()):
                break
        end = starts[k + 1] if k + 1 < len(starts) else iters
        now_active = active.cpu()
        for b in range(num_images):
            iters_run[b] += (end - it) * int(now_active[b])
        ops.fit_steps(
            params,
            exp_avg,
            exp_avg_sq,
            alive,
            active,
            targets,
            it0=it,
            num_steps=end - it,
            iters_total=iters,
            lr=(cfg.lr_xy, cfg.lr_chol, cfg.lr_rgb),
            lr_final=cfg.lr_final,
            lambda_l1=cfg.lambda_l1,
            min_scale=cfg.min_scale_px,
        )
        bar.update(end - it)
    bar.close()
    return alive, iters_run, history, score_unpruned


def fit_sets(
    sets: list[torch.Tensor],  # one [N_b, 8] initial splat set per image, canvas units, on the device
    targets: torch.Tensor,  # [B, S, S, 3] float32
    cfg: FitConfig,
    ops: BatchedOps,
    progress: bool,
    start: float,  # perf_counter at the start of the job (FitResult.seconds)
) -> list[FitResult]:
    """fit_images' batched path: main fit, pruning (mid-fit or after), fine-tune, results."""
    size = targets.shape[1]
    counts = [s.shape[0] for s in sets]
    params = torch.nn.utils.rnn.pad_sequence([s.float() for s in sets], batch_first=True).contiguous()
    params[..., 0:5] *= size
    alive = (
        torch.arange(params.shape[1], device=params.device)[None, :]
        < torch.tensor(counts, device=params.device)[:, None]
    )
    prune_at = cfg.prune_at if cfg.tau is not None else None
    alive, iters_run, history, score_full = _optimise_padded(
        params, alive, targets, cfg.iters, cfg, ops, progress, "fit", prune_at
    )
    pruned = score_full is not None
    if not pruned:
        score_full = _psnr(ops, params, alive, targets)
    score = score_full
    if cfg.tau is not None:
        if not pruned:
            alive = ops.prune_mask(params, alive, cfg.tau)
        if cfg.finetune_iters > 0:
            ft = FitConfig(**{**cfg.__dict__, "target_psnr": None})
            alive, *_ = _optimise_padded(
                params, alive, targets, cfg.finetune_iters, ft, ops, progress, "finetune", None
            )
        score = _psnr(ops, params, alive, targets)
    rows = [params[b][alive[b]] for b in range(params.shape[0])]
    return _results(rows, size, score, score_full, counts, iters_run, history, start)
