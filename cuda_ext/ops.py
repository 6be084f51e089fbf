"""Python wrappers of the compiled ops, each with its autograd.Function. No fallback here: the caller
(gs_encoder.fitting.render) chooses the backend."""

from __future__ import annotations

import torch

from . import _backend

__all__ = ["render_cpu"]


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
    return _RenderCPU.apply(
        xy.contiguous(),
        chol.contiguous(),
        rgb.contiguous(),
        image_ids.contiguous(),
        int(num_images),
        int(size),
    )
