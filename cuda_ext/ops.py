"""Python wrappers of the compiled ops, each with its autograd.Function. No fallback here: the caller
(gs_encoder.fitting) chooses the backend.

Every wrapper checks its arguments before loading or launching anything and raises TypeError or
ValueError naming the argument; the CUDA ops say so plainly when there is no CUDA device. A missing
build raises ImportError with the reason (cuda_ext._backend).

The CUDA ops take `emulate=True` to run the same kernel sources on CPU tensors through their CPU
emulation (gsv_cuda_emu, docs/cuda_emulation.md): far slower than the device, meant for checking the
kernels where there is no GPU, as CI does.

Splat parameters must be finite (in the rows that are alive): NaN or Inf raises ValueError before any
kernel runs, on every backend (docs/format.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _backend

__all__ = ["DEFAULT_TILE_CAP", "check_finite", "fit_steps", "prune_mask", "render_cpu", "render_cuda"]

# Tile-list capacity per 16×16 tile (memory: B·tiles·cap int32, 0.4 MB per 224² image). ~50 Gaussians
# meet a tile at the structured init with N = 3136, a few hundred where fitted ones have grown; a fuller
# tile scans all N boxes instead: the same result, only slower.
DEFAULT_TILE_CAP = 512


class _RenderCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xy, chol, rgb, image_ids, num_images, size):
        mod = _backend.cpu_module()
        ctx.save_for_backward(xy, chol, rgb, image_ids)
        return mod.render_cpu_fwd(xy, chol, rgb, image_ids, num_images, size)

    @staticmethod
    def backward(ctx, grad):
        xy, chol, rgb, image_ids = ctx.saved_tensors
        gxy, gchol, grgb = _backend.cpu_module().render_cpu_bwd(xy, chol, rgb, image_ids, grad.contiguous())
        need = ctx.needs_input_grad
        return (
            gxy if need[0] else None,
            gchol if need[1] else None,
            grgb if need[2] else None,
            None,
            None,
            None,
        )


def render_cpu(
    xy: torch.Tensor,
    chol: torch.Tensor,
    rgb: torch.Tensor,
    image_ids: torch.Tensor,
    num_images: int,
    size: int,
) -> torch.Tensor:
    """Differentiable splat sum on CPU, pixel units: xy [N, 2], chol [N, 3], rgb [N, 3], image_ids [N] long
    → images [B, S, S, 3]. Raises ValueError / TypeError on bad arguments, ImportError when not built."""
    for name, t, cols in (("xy", xy, 2), ("chol", chol, 3), ("rgb", rgb, 3)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[1] != cols or t.shape[0] != xy.shape[0]:
            raise ValueError(f"{name} must be a [N, {cols}] tensor, got {getattr(t, 'shape', type(t))}")
        if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{name} must be a float32/float64 CPU tensor, got {t.dtype} on {t.device}")
    if image_ids.dtype != torch.long or image_ids.shape != (xy.shape[0],):
        raise ValueError(f"image_ids must be long [N], got {image_ids.dtype} {list(image_ids.shape)}")
    if xy.shape[0] and int(image_ids.max()) >= num_images:
        raise ValueError(f"image_ids reach {int(image_ids.max())} but num_images is {num_images}")
    for name, t in (("xy", xy), ("chol", chol), ("rgb", rgb)):
        check_finite("render_cpu", name, t.detach())
    return _RenderCPU.apply(
        xy.contiguous(),
        chol.contiguous(),
        rgb.contiguous(),
        image_ids.contiguous(),
        int(num_images),
        int(size),
    )


def _check_tensor(name: str, t, dtype: torch.dtype, shape: tuple, op: str) -> None:
    """TypeError / ValueError naming `name` unless t is a `dtype` tensor of `shape` (None = any size)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape, strict=True)):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{op}: {name} must have shape {want}, got {list(t.shape)}")
    if t.dtype != dtype:
        raise TypeError(f"{op}: {name} must be {dtype}, got {t.dtype}")


def check_finite(op: str, name: str, values: torch.Tensor, alive: torch.Tensor | None = None) -> None:
    """ValueError unless every entry of `values` ([..., C]) in the rows where `alive` ([...]) is True is
    finite, naming the first bad row and how many entries are bad."""
    bad = ~torch.isfinite(values)
    if alive is not None:
        bad &= alive[..., None]
    if bool(bad.any()):
        first = [int(i) for i in bad.nonzero()[0][:-1]]
        raise ValueError(
            f"{op}: {name} holds {int(bad.sum())} NaN/Inf values (first in row {first}); splat "
            "parameters must be finite: check the splat file or the step that produced them"
        )


def _module(emulate: bool):
    """The compiled kernels: the CUDA module, or its CPU emulation."""
    return _backend.emu_module() if emulate else _backend.cuda_module()


def _check_devices(op: str, emulate: bool, **tensors: torch.Tensor) -> None:
    """The device rule of the kernel ops: one CUDA device, or the CPU for the emulation."""
    if not emulate:
        _check_on_one_cuda_device(op, **tensors)
        return
    for name, t in tensors.items():
        if t.device.type != "cpu":
            raise TypeError(f"{op}: with emulate=True, {name} must be a CPU tensor, got one on {t.device}")


def _check_on_one_cuda_device(op: str, **tensors: torch.Tensor) -> None:
    """TypeError unless every tensor is on a CUDA device (saying so when none is visible), ValueError
    unless they share one."""
    for name, t in tensors.items():
        if t.device.type != "cuda":
            hint = (
                ""
                if torch.cuda.is_available()
                else " (no CUDA device is visible: torch.cuda.is_available() is False)"
            )
            raise TypeError(
                f"{op}: {name} must be on a CUDA device, got {t.device}{hint}; "
                "gs_encoder's render/fit_images pick a CPU path for CPU tensors"
            )
    devices = {str(t.device) for t in tensors.values()}
    if len(devices) > 1:
        raise ValueError(f"{op}: all tensors must be on one device, got {sorted(devices)}")


def _check_splats(params, mask, op: str, mask_name: str = "mask") -> None:
    _check_tensor("params", params, torch.float32, (None, None, 8), op)
    _check_tensor(mask_name, mask, torch.bool, tuple(params.shape[:2]), op)


def _check_int(name: str, value, low: int, op: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{op}: {name} must be an int ≥ {low}, got {value!r}")
    return value


class _RenderCUDA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, params, mask, size, tile_cap, emulate):
        ctx.save_for_backward(params, mask)
        ctx.emulate = emulate
        return _module(emulate).render_fwd(params, mask, size, tile_cap)

    @staticmethod
    def backward(ctx, grad):
        params, mask = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        return _module(ctx.emulate).render_bwd(params, mask, grad.contiguous()), None, None, None, None


def render_cuda(
    params: torch.Tensor,  # [B, N, 8] float32, pixel units (x, y, l11, l21, l22 scaled by S)
    mask: torch.Tensor | None,  # [B, N] bool, True = real Gaussian
    size: int,
    tile_cap: int = DEFAULT_TILE_CAP,
    *,
    emulate: bool = False,
) -> torch.Tensor:
    """Differentiable batched splat sum on CUDA → images [B, S, S, 3] (docs/format.md, unclamped).

    The pixel-unit twin of gs_encoder.fitting.render.render_flat; padded rows (mask False) are never
    read and get zero gradient. `tile_cap` bounds the per-tile Gaussian lists (the result does not
    depend on it). `emulate`: run the kernel sources on CPU tensors (module docstring). Raises
    TypeError / ValueError on bad arguments (a tensor on the wrong device, NaN/Inf in alive rows) and
    ImportError when the module is not built.
    """
    op = "render_cuda"
    _check_int("size", size, 1, op)
    _check_int("tile_cap", tile_cap, 1, op)
    if mask is None and isinstance(params, torch.Tensor) and params.dim() == 3:
        mask = torch.ones(params.shape[:2], dtype=torch.bool, device=params.device)
    _check_splats(params, mask, op)
    _check_devices(op, emulate, params=params, mask=mask)
    check_finite(op, "params", params.detach(), mask)
    return _RenderCUDA.apply(params.contiguous(), mask.contiguous(), size, tile_cap, emulate)


def _check_fit_steps(params, exp_avg, exp_avg_sq, alive, active, target, emulate, it0, num_steps, iters_total,
                     lr, lr_decay, lr_warmup, tile_cap) -> None:  # fmt: skip
    """fit_steps' arguments, checked before they reach a kernel: ValueError naming the bad one."""
    op = "fit_steps"
    _check_int("it0", it0, 0, op)
    _check_int("num_steps", num_steps, 0, op)
    _check_int("iters_total", iters_total, 1, op)
    _check_int("tile_cap", tile_cap, 1, op)
    if len(lr) != 3:
        raise ValueError(f"{op}: lr must hold 3 step sizes (xy, chol, rgb), got {list(lr)}")
    if not 0.0 < lr_decay <= 1.0:
        raise ValueError(f"{op}: lr_decay must be in (0, 1], got {lr_decay}")
    _check_int("lr_warmup", lr_warmup, 0, op)
    _check_splats(params, alive, op, "alive")
    b, n = params.shape[:2]
    for name, t in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        _check_tensor(name, t, torch.float32, (b, n, 8), op)
    _check_tensor("active", active, torch.bool, (b,), op)
    _check_tensor("target", target, torch.float32, (b, None, None, 3), op)
    if target.shape[1] != target.shape[2] or target.shape[1] < 1:
        raise ValueError(f"{op}: target must be [B, S, S, 3] with S ≥ 1, got {list(target.shape)}")
    _check_devices(
        op,
        emulate,
        params=params,
        exp_avg=exp_avg,
        exp_avg_sq=exp_avg_sq,
        alive=alive,
        active=active,
        target=target,
    )
    if not all(t.is_contiguous() for t in (params, exp_avg, exp_avg_sq)):
        raise ValueError(f"{op}: params, exp_avg and exp_avg_sq are updated in place and must be contiguous")
    check_finite(op, "params", params, alive)
    check_finite(op, "target", target.flatten(1, 2))


def fit_steps(
    params: torch.Tensor,  # [B, N, 8] float32, pixel units; updated in place
    exp_avg: torch.Tensor,  # [B, N, 8] Adam first moment; in place
    exp_avg_sq: torch.Tensor,  # [B, N, 8] Adam second moment; in place
    alive: torch.Tensor,  # [B, N] bool
    active: torch.Tensor,  # [B] bool: False freezes an image (early stop)
    target: torch.Tensor,  # [B, S, S, 3] float32
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
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    tile_cap: int = DEFAULT_TILE_CAP,
    emulate: bool = False,
) -> None:
    """Run iterations it0 … it0 + num_steps − 1 of the batched fit on the GPU, in place, no host sync
    beyond the check that the alive parameters are finite (`emulate`: on the CPU, module docstring).

    Each iteration: render, dL/dpixel of Σ_b mean((image_b − target_b)²), the Gaussian-parallel
    backward plus λ·Σ|c|/(3·n_b), Adam (t = it + 1, step sizes lr × the schedule over iters_total: a linear
    ramp over the first lr_warmup iterations, constant, then a cosine down to lr_final over its last
    lr_decay) and the Cholesky constraint. The pure-torch twin that defines it is
    gs_encoder.fitting.fit_ops.fit_steps_torch.
    """
    _check_fit_steps(params, exp_avg, exp_avg_sq, alive, active, target, emulate, it0, num_steps, iters_total,
                     lr, lr_decay, lr_warmup, tile_cap)  # fmt: skip
    _module(emulate).fit_steps(
        params,
        exp_avg,
        exp_avg_sq,
        alive.contiguous(),
        active.contiguous(),
        target.contiguous(),
        it0,
        num_steps,
        iters_total,
        [float(x) for x in lr],
        float(lr_final),
        float(lr_decay),
        int(lr_warmup),
        float(lambda_l1),
        float(min_scale),
        float(betas[0]),
        float(betas[1]),
        float(eps),
        tile_cap,
    )


def prune_mask(
    params: torch.Tensor, alive: torch.Tensor, tau: float, *, emulate: bool = False
) -> torch.Tensor:
    """Luminosity pruning as a mask on CUDA: alive & (0.2126|r| + 0.7152|g| + 0.0722|b| ≥ tau), the
    brightest alive Gaussian of each image always kept. params [B, N, 8], alive [B, N] → [B, N] bool.
    `emulate`: on CPU tensors (module docstring)."""
    op = "prune_mask"
    _check_splats(params, alive, op, "alive")
    _check_devices(op, emulate, params=params, alive=alive)
    check_finite(op, "params", params, alive)
    return _module(emulate).prune_mask(params.contiguous(), alive.contiguous(), float(tau))
