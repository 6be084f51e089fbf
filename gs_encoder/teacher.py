"""The frozen open_clip teacher (RGB) and the open_clip model helpers training needs.

`build_clip(name, pretrained)` creates an open_clip CLIP model, with weights when `pretrained` is a tag or
a local checkpoint (loaded strictly by open_clip) and random otherwise. `register_model_config(path)`
adds a JSON architecture (tiny test models, custom towers) under its file stem.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .image_io import CLIP_MEAN

__all__ = ["CLIP_STD", "ClipTeacher", "build_clip", "register_model_config"]

CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def register_model_config(path: str | os.PathLike) -> str:
    """Register an open_clip architecture JSON; returns its name (the file stem)."""
    import open_clip

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: open_clip model config not found")
    open_clip.add_model_config(path)
    return path.stem


def build_clip(name: str, pretrained: str | None = None) -> nn.Module:
    """An open_clip CLIP model; `pretrained` is an open_clip tag or a checkpoint path (None: random)."""
    import open_clip

    if open_clip.get_model_config(name) is None:
        raise ValueError(
            f"unknown open_clip model {name!r}; register a JSON config or see open_clip.list_models()"
        )
    return open_clip.create_model(name, pretrained=pretrained or None)


def clip_normalise(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 3, S, S] in [0, 1] → CLIP input at `size` (bicubic resize when needed, mean/std normalised)."""
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    mean = images.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images.clamp(0, 1) - mean) / std


class ClipTeacher(nn.Module):
    """A frozen open_clip image tower; `forward(images in [0, 1])` → L2-normalised embeddings [B, E];
    `embed_with_tokens` also returns the patch tokens of one block (stage-1 patch distillation)."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.visual = clip.visual
        self.visual.requires_grad_(False)
        size = self.visual.image_size
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)

    def train(self, mode: bool = True):  # always in eval mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(clip_normalise(images, self.image_size)).float(), dim=-1)

    @property
    def num_layers(self) -> int:
        return len(self.visual.transformer.resblocks)

    def block_index(self, layer: int) -> int:
        """The ViT block whose output is hidden state `layer` (LLaVA's vision_feature_layer convention:
        hidden states are (embeddings, block 1, …, block L), so -2 is the output of block L − 1)."""
        n = self.num_layers
        if not -n <= layer <= n or layer == 0:
            raise ValueError(
                f"layer {layer}: the teacher's hidden states with patch tokens from a block are 1…{n} "
                f"or -{n}…-1 (LLaVA's vision_feature_layer convention)"
            )
        return layer - 1 if layer > 0 else n + layer

    @torch.no_grad()
    def embed_with_tokens(self, images: torch.Tensor, layer: int = -2) -> tuple[torch.Tensor, torch.Tensor]:
        """(L2-normalised embeddings [B, E], the patch tokens of hidden state `layer` [B, G², D]) of images
        in [0, 1], from one pass (open_clip's `forward_intermediates`)."""
        out = self.visual.forward_intermediates(
            clip_normalise(images, self.image_size), indices=[self.block_index(layer)], output_fmt="NLC"
        )
        return F.normalize(out["image_features"].float(), dim=-1), out["image_intermediates"][0].float()
