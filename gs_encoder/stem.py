"""The GS stem: one token of width D per Gaussian (docs/encoder.md: float32 even under autocast).

Per Gaussian, three groups of features:
- position: x, y and Fourier features sin/cos(2π·2^k·x), k < `fourier_bands` (same for y);
- shape: from Σ = L Lᵀ, the log standard deviations along the principal axes (log of the square roots
  of the eigenvalues, in canvas units, centred on the log of a 56×56 grid cell) and the orientation as
  (cos 2θ, sin 2θ), which is continuous where θ wraps;
- colour: r, g, b centred on 0.5.
Each group gets its own linear map to D and the three are summed, so colour (3 numbers) is not drowned
by the ~66 position numbers (the mini-prototype ignored colour until its stem features were balanced);
then GELU-MLP and LayerNorm.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GSStem", "splat_features"]

_LOG_CELL = math.log(1.0 / 56.0)  # a 3136-Gaussian grid cell, the typical scale


def splat_features(
    splats: torch.Tensor, fourier_bands: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[..., 8] splats → (position [..., 2 + 4F], shape [..., 4], colour [..., 3]) in float32."""
    s = splats.float()
    xy = s[..., 0:2]
    freqs = (2.0 ** torch.arange(fourier_bands, device=s.device, dtype=torch.float32)) * (2 * math.pi)
    ang = xy[..., None] * freqs  # [..., 2, F]
    pos = torch.cat([xy * 2 - 1, ang.sin().flatten(-2), ang.cos().flatten(-2)], dim=-1)
    l11, l21, l22 = s[..., 2], s[..., 3], s[..., 4]
    a, b, c = l11 * l11, l11 * l21, l21 * l21 + l22 * l22  # Σ = [[a, b], [b, c]]
    mean, diff = (a + c) / 2, torch.sqrt(((a - c) / 2) ** 2 + b * b)
    lam1 = (mean + diff).clamp_min(1e-12)
    lam2 = (mean - diff).clamp_min(1e-12)
    two_theta = torch.atan2(2 * b, a - c)  # orientation of the major axis, doubled
    shape = torch.stack(
        [0.5 * lam1.log() - _LOG_CELL, 0.5 * lam2.log() - _LOG_CELL, two_theta.cos(), two_theta.sin()], dim=-1
    )
    colour = s[..., 5:8] - 0.5
    return pos, shape, colour


class GSStem(nn.Module):
    """[B, N, 8] splats → [B, N, D] tokens; runs in float32 whatever the autocast state."""

    def __init__(self, width: int, fourier_bands: int = 16):
        super().__init__()
        self.fourier_bands = fourier_bands
        self.pos = nn.Linear(2 + 4 * fourier_bands, width)
        self.shape = nn.Linear(4, width)
        self.colour = nn.Linear(3, width)
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(width, width))
        self.norm = nn.LayerNorm(width)

    def forward(self, splats: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=splats.device.type, enabled=False):
            pos, shape, colour = splat_features(splats, self.fourier_bands)
            # features are computed in float32; weights cast to bf16 (DeepSpeed, LLaVA) take them in theirs
            dt = self.pos.weight.dtype
            h = self.pos(pos.to(dt)) + self.shape(shape.to(dt)) + self.colour(colour.to(dt))
            return self.norm(h + self.mlp(h))
