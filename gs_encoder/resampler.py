"""Masked Perceiver resampler: a variable number N of splat tokens → K latent tokens.

open_flamingo's design (latents attend to the inputs and to themselves; pre-norm attention and
feed-forward with residuals; final LayerNorm), written here with a key-padding mask so padded Gaussians
never contribute. Latent keys are always valid, so no query row is ever fully masked (no NaNs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PerceiverResampler"]


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x, latents, key_valid):  # x [B, N, D], latents [B, K, D], key_valid [B, N + K]
        b, k, d = latents.shape
        x, latents = self.norm_media(x), self.norm_latents(latents)
        q = self.to_q(latents)
        kv = self.to_kv(torch.cat([x, latents], dim=1))
        keys, values = kv.chunk(2, dim=-1)

        def split(t):
            return t.view(b, -1, self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(q), split(keys), split(values), attn_mask=key_valid[:, None, None, :]
        )
        return self.to_out(out.transpose(1, 2).reshape(b, k, d))


class PerceiverResampler(nn.Module):
    """[B, N, D] tokens + [B, N] mask → [B, K, D] latents."""

    def __init__(self, dim: int, depth: int, heads: int, num_latents: int, ff_mult: int = 4):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * dim**-0.5)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    _Attention(dim, heads),
                    nn.Sequential(
                        nn.LayerNorm(dim),
                        nn.Linear(dim, ff_mult * dim, bias=False),
                        nn.GELU(),
                        nn.Linear(ff_mult * dim, dim, bias=False),
                    ),
                ]
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, N, D]; mask [B, N] bool (True = real Gaussian). Returns [B, K, D]."""
        b = x.shape[0]
        latents = self.latents.to(x.dtype).expand(b, -1, -1)
        key_valid = torch.cat([mask, mask.new_ones(b, latents.shape[1])], dim=1)
        for attn, ff in self.layers:
            latents = latents + attn(x, latents, key_valid)
            latents = latents + ff(latents)
        return self.norm(latents)
