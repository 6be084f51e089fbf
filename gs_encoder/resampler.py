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
    """Latents (width `dim`) attend to the Gaussian tokens (width `media_dim`) and to themselves, through
    `inner`-wide queries, keys and values. With all three widths equal the keys and values of both come
    from one projection (open_flamingo's layer); otherwise each has its own."""

    def __init__(self, dim: int, heads: int, media_dim: int, inner: int):
        super().__init__()
        if inner % heads:
            raise ValueError(f"attention width {inner} is not divisible by heads {heads}")
        self.heads, self.inner = heads, inner
        self.norm_media = nn.LayerNorm(media_dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)  # the latents' (and, at one width, the tokens')
        shared = media_dim == dim == inner
        self.to_kv_media = None if shared else nn.Linear(media_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x, latents, key_valid):  # x [B, N, Dm], latents [B, K, D], key_valid [B, N + K]
        b, k, _ = latents.shape
        x, latents = self.norm_media(x), self.norm_latents(latents)
        q = self.to_q(latents)
        if self.to_kv_media is None:
            kv = self.to_kv(torch.cat([x, latents], dim=1))
        else:
            kv = torch.cat([self.to_kv_media(x), self.to_kv(latents)], dim=1)
        keys, values = kv.chunk(2, dim=-1)

        def split(t):
            return t.view(b, -1, self.heads, self.inner // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(q), split(keys), split(values), attn_mask=key_valid[:, None, None, :]
        )
        return self.to_out(out.transpose(1, 2).reshape(b, k, self.inner))


class PerceiverResampler(nn.Module):
    """[B, N, media_dim] tokens + [B, N] mask → [B, K, dim] latents.

    The latents live at `dim` (the ViT width, so they enter the ViT as its own tokens would); the tokens,
    attention and feed-forward (`ff_mult` × `inner`) can be narrower, which is what keeps the GS head small
    (docs/encoder.md). media_dim = inner = dim is open_flamingo's full-width resampler."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        num_latents: int,
        ff_mult: int = 4,
        media_dim: int | None = None,
        inner: int | None = None,
    ):
        super().__init__()
        media_dim, inner = media_dim or dim, inner or dim
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * dim**-0.5)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    _Attention(dim, heads, media_dim, inner),
                    nn.Sequential(
                        nn.LayerNorm(dim),
                        nn.Linear(dim, ff_mult * inner, bias=False),
                        nn.GELU(),
                        nn.Linear(ff_mult * inner, dim, bias=False),
                    ),
                ]
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, N, media_dim]; mask [B, N] bool (True = real Gaussian). Returns [B, K, dim]."""
        b = x.shape[0]
        latents = self.latents.to(x.dtype).expand(b, -1, -1)
        key_valid = torch.cat([mask, mask.new_ones(b, latents.shape[1])], dim=1)
        for attn, ff in self.layers:
            latents = latents + attn(x, latents, key_valid)
            latents = latents + ff(latents)
        return self.norm(latents)
