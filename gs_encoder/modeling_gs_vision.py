"""GSVisionModel: splats → visual tokens through an open_clip ViT (docs/encoder.md), and its RGB twin.

    splats [B, Nmax, 8], mask [B, Nmax] ─ GSStem ─▶ [B, N, D] ─ PerceiverResampler ─▶ [B, K, D]
        ─ + CLS, + position embedding [1 + K, D], ln_pre ─▶ the open_clip ViT blocks ─▶ hidden states
        ─ ln_post(CLS) @ proj ─▶ image embedding (the CLIP space)

`RGBVisionModel` is the same ViT on pixels with the same outputs, so experiments switch GS ↔ RGB with one
flag. Both save with `save_pretrained` (config.json + model.safetensors) and load with `from_pretrained`;
`from_open_clip("ViT-B-16", pretrained=...)` starts from real open_clip weights when the user has them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .resampler import PerceiverResampler
from .stem import GSStem

__all__ = [
    "GSVisionConfig",
    "GSVisionModel",
    "RGBVisionModel",
    "VisionOutput",
    "add_head_args",
    "head_overrides",
    "resize_token_grid",
    "stage_shares",
]

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


@dataclass
class GSVisionConfig:
    """Architecture of a GS (or RGB twin) vision encoder; saved with every checkpoint."""

    vision_cfg: dict = field(
        default_factory=lambda: {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16}
    )
    embed_dim: int = 512  # CLIP embedding size (ViT-B/16: 512)
    quick_gelu: bool = False  # OpenAI CLIP weights need quick GELU
    num_tokens: int = 196  # K resampled tokens (196 or 98 in the paper)
    fourier_bands: int = 16  # Fourier frequencies per coordinate in the stem
    resampler_depth: int = 2
    resampler_heads: int = 2
    # the GS head is narrower than the ViT: Gaussian tokens, the Perceiver's attention and its feed-forward
    # (`gs_ff_mult` × `gs_width`) at `gs_width`, the latents at the ViT width (docs/encoder.md: 1.58 M
    # parameters on ViT-B/16, so the trainable shares match the paper's). gs_width = the ViT width with
    # feed-forward ×4 and 8 heads is the full-width head of checkpoints written before these fields existed.
    gs_width: int = 128
    gs_ff_mult: int = 1
    input: str = "gs"  # "gs" or "rgb" (the twin)

    def __post_init__(self):
        if self.input not in ("gs", "rgb"):
            raise ValueError(f"input must be 'gs' or 'rgb', got {self.input!r}")
        if self.num_tokens < 1 or self.resampler_depth < 0 or self.fourier_bands < 1:
            raise ValueError("num_tokens ≥ 1, resampler_depth ≥ 0 and fourier_bands ≥ 1 are required")
        if self.gs_width < 1 or self.gs_ff_mult < 1 or self.gs_width % self.resampler_heads:
            raise ValueError(
                f"gs_width ({self.gs_width}) must be a positive multiple of resampler_heads "
                f"({self.resampler_heads}) and gs_ff_mult ({self.gs_ff_mult}) ≥ 1"
            )

    @property
    def width(self) -> int:
        return int(self.vision_cfg["width"])

    @classmethod
    def from_dict(cls, d: dict) -> GSVisionConfig:
        """A saved config.json. One without `gs_width` was written with the full-width head (ViT width,
        feed-forward ×4, 8 heads) and loads as that."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown GSVisionConfig keys {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}"
            )
        if "gs_width" not in d:
            width = int(d.get("vision_cfg", cls().vision_cfg)["width"])
            d = {"resampler_heads": 8, **d, "gs_width": width, "gs_ff_mult": 4}
        return cls(**d)

    @classmethod
    def from_open_clip(cls, name: str, **overrides) -> GSVisionConfig:
        """The config of an open_clip architecture (e.g. "ViT-B-16"), with GS fields overridden."""
        import open_clip

        cfg = open_clip.get_model_config(name)
        if cfg is None:
            raise ValueError(f"unknown open_clip model {name!r}; see open_clip.list_models()")
        quick = name.endswith("quickgelu") or bool(cfg.get("quick_gelu", False))
        return cls(
            vision_cfg=dict(cfg["vision_cfg"]), embed_dim=cfg["embed_dim"], quick_gelu=quick, **overrides
        )


class VisionOutput(NamedTuple):
    """What both encoders return. A named tuple, so that module hooks which walk outputs (DeepSpeed
    ZeRO-3's parameter fetch and release) find every tensor in it."""

    hidden_states: tuple[torch.Tensor, ...]  # (embeddings, block 1, …, block L), each [B, 1 + K, D]
    image_embeds: torch.Tensor  # [B, embed_dim], not normalised (CLIP normalises before the logits)

    @property
    def last_hidden_state(self) -> torch.Tensor:
        return self.hidden_states[-1]


class _Base(nn.Module):
    def __init__(self, config: GSVisionConfig):
        super().__init__()
        from open_clip.model import _build_vision_tower

        self.config = config
        self.visual = _build_vision_tower(
            config.embed_dim, dict(config.vision_cfg), quick_gelu=config.quick_gelu
        )

    def _run_vit(self, x: torch.Tensor) -> VisionOutput:
        """x [B, 1 + K, D] embeddings (CLS first, positions added) → all hidden states and the embedding."""
        v = self.visual
        x = v.ln_pre(x)
        hidden = [x]
        for block in v.transformer.resblocks:
            x = block(x)
            hidden.append(x)
        pooled = v.ln_post(x[:, 0])
        return VisionOutput(tuple(hidden), pooled @ v.proj)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_model

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        save_model(self, str(path / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu"):
        """Load a folder written by save_pretrained; config.json decides the class (GS or RGB)."""
        from safetensors.torch import load_model

        path = Path(path)
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(
                f"{path}: expected {CONFIG_NAME} and {WEIGHTS_NAME} (written by save_pretrained)"
            )
        config = GSVisionConfig.from_dict(json.loads((path / CONFIG_NAME).read_text()))
        model = (GSVisionModel if config.input == "gs" else RGBVisionModel)(config)
        load_model(model, str(path / WEIGHTS_NAME), strict=True, device=str(device))
        return model.to(device)


class GSVisionModel(_Base):
    """forward(splats [B, Nmax, 8] float32, mask [B, Nmax] bool) → VisionOutput (docs/encoder.md)."""

    def __init__(self, config: GSVisionConfig):
        super().__init__(config)
        d, k, h = config.width, config.num_tokens, config.gs_width
        self.stem = GSStem(h, config.fourier_bands)
        self.resampler = PerceiverResampler(
            d, config.resampler_depth, config.resampler_heads, k, config.gs_ff_mult, media_dim=h, inner=h
        )
        self.class_embedding = nn.Parameter(torch.zeros(d))
        self.positional_embedding = nn.Parameter(torch.zeros(k + 1, d))
        # start from the ViT's own embeddings; under DeepSpeed ZeRO-3 construction the ViT's parameters are
        # already partitioned (empty) here, and the values come from the checkpoint that is loaded next
        if self.visual.positional_embedding.numel():
            self.init_from_visual()

    def forward(self, splats: torch.Tensor, mask: torch.Tensor | None = None) -> VisionOutput:
        if splats.dim() != 3 or splats.shape[-1] != 8:
            raise ValueError(f"splats must be [B, Nmax, 8], got {list(splats.shape)}")
        if mask is None:
            mask = torch.ones(splats.shape[:2], dtype=torch.bool, device=splats.device)
        if mask.shape != splats.shape[:2] or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be bool [B, Nmax] = {list(splats.shape[:2])}, got {mask.dtype} {list(mask.shape)}"
            )
        if not mask.any(1).all():
            raise ValueError("every splat set needs at least one real Gaussian (a mask row is all False)")
        tokens = self.stem(torch.where(mask[..., None], splats, 0.0))
        latents = self.resampler(tokens.to(self.resampler.latents.dtype), mask)
        cls = self.class_embedding.to(latents.dtype).expand(latents.shape[0], 1, -1)
        x = torch.cat([cls, latents], dim=1) + self.positional_embedding.to(latents.dtype)
        return self._run_vit(x)

    def set_stage(self, stage: int, vit_blocks: int = 2) -> None:
        """Freeze everything except what a training stage trains.

        Stage 1 (RGB→GS distillation): the GS head: stem, resampler and the GS CLS/position embeddings.
        Stage 2 (CLIP adaptation): stage 1 plus the first `vit_blocks` ViT blocks and the final projection.
        (The symmetric text layers of stage 2 live on the text tower: gs_encoder.train.)
        """
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        for p in self.parameters():
            p.requires_grad_(False)
        for m in self.head_modules():
            m.requires_grad_(True)
        self.class_embedding.requires_grad_(True)
        self.positional_embedding.requires_grad_(True)
        if stage == 2:
            for block in self.visual.transformer.resblocks[:vit_blocks]:
                block.requires_grad_(True)
            self.visual.proj.requires_grad_(True)

    def head_modules(self) -> tuple[nn.Module, ...]:
        """The GS head's modules (the GS CLS and position embeddings are parameters beside them)."""
        return (self.stem, self.resampler)

    def head_parameters(self) -> list[nn.Parameter]:
        """Every parameter of the GS head: what is not part of open_clip's ViT."""
        params = [p for m in self.head_modules() for p in m.parameters()]
        return params + [self.class_embedding, self.positional_embedding]

    def init_from_visual(self) -> None:
        """Copy the ViT's CLS and (resampled) position embeddings into the GS ones (after loading weights)."""
        with torch.no_grad():
            self.class_embedding.copy_(self.visual.class_embedding)
            self.positional_embedding.copy_(
                _resample_positions(self.visual.positional_embedding, self.config.num_tokens)
            )

    @classmethod
    def from_open_clip(
        cls, name: str = "ViT-B-16", pretrained: str | None = None, **overrides
    ) -> GSVisionModel:
        """A GS encoder around open_clip's `name`, with its pretrained vision weights when given."""
        return _from_open_clip(cls, name, pretrained, overrides)


class RGBVisionModel(_Base):
    """The RGB twin: forward(pixels [B, 3, H, W], CLIP-normalised) → VisionOutput."""

    def forward(self, pixels: torch.Tensor, mask: torch.Tensor | None = None) -> VisionOutput:
        v = self.visual
        x = v.conv1(pixels)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        return self._run_vit(x)

    @classmethod
    def from_open_clip(
        cls, name: str = "ViT-B-16", pretrained: str | None = None, **overrides
    ) -> RGBVisionModel:
        return _from_open_clip(cls, name, pretrained, {**overrides, "input": "rgb"})


def _from_open_clip(cls, name, pretrained, overrides):
    import open_clip

    config = GSVisionConfig.from_open_clip(name, **overrides)
    model = cls(config)
    if pretrained:
        clip = open_clip.create_model(name, pretrained=pretrained)
        model.visual.load_state_dict(clip.visual.state_dict(), strict=True)
        if isinstance(model, GSVisionModel):
            model.init_from_visual()
    return model


def _resample_positions(pos: torch.Tensor, k: int) -> torch.Tensor:
    """[1 + G², D] ViT position embeddings → [1 + K, D]: CLS row kept, the G×G grid resized to K tokens
    by `resize_token_grid`."""
    return torch.cat([pos[:1], resize_token_grid(pos[None, 1:], k)[0]], dim=0)


def resize_token_grid(tokens: torch.Tensor, k: int) -> torch.Tensor:
    """[B, G², D] tokens of a G×G patch grid → [B, K, D], the rule that places the GS encoder's K position
    embeddings on the ViT's grid (so token i of a GS encoder sits where token i of this result does).

    K = G² copies the grid; a square K resizes it bilinearly; K = 2h² (98 = 7×14, the paper's half budget)
    area-averages it to h×2h; other K fall back to linear interpolation of the flattened grid.
    """
    b, n, d = tokens.shape
    g = int(round(n**0.5))
    if g * g != n:
        raise ValueError(f"tokens must be a square patch grid [B, G², D], got {n} tokens")
    if n == k:
        return tokens.clone()
    side = int(round(k**0.5))
    img = tokens.mT.reshape(b, d, g, g)
    if side * side == k:
        out = torch.nn.functional.interpolate(img, size=(side, side), mode="bilinear", align_corners=False)
    elif k % 2 == 0 and int(round((k // 2) ** 0.5)) ** 2 * 2 == k:
        h = int(round((k // 2) ** 0.5))
        out = torch.nn.functional.adaptive_avg_pool2d(img, (h, 2 * h))
    else:
        return torch.nn.functional.interpolate(tokens.mT, size=k, mode="linear", align_corners=False).mT
    return out.flatten(2).mT


PAPER_SHARES = {2: 9.7, 3: 13.8}  # the paper's trainable shares: stage 2, and stage 2 with the text layers


_HEAD_FLAGS = {  # the GS head's GSVisionConfig fields that commands expose as flags
    "num_tokens": "K resampled tokens",
    "resampler_depth": "Perceiver layers",
    "fourier_bands": "Fourier frequencies per coordinate",
    "resampler_heads": "Perceiver attention heads",
    "gs_width": "width of the GS head (the ViT width: the full-width head)",
    "gs_ff_mult": "Perceiver feed-forward, in head widths",
}


def add_head_args(parser) -> None:
    """The GS head's architecture flags, GSVisionConfig's defaults, for the commands that build one."""
    defaults = GSVisionConfig()
    for key, text in _HEAD_FLAGS.items():
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=getattr(defaults, key), help=text)


def head_overrides(args) -> dict:
    """The GSVisionConfig fields set by add_head_args' flags."""
    return {key: getattr(args, key) for key in _HEAD_FLAGS}


def stage_shares(model: str = "ViT-B-16", vit_blocks: int = 2, **head) -> dict:
    """Trainable parameters per training stage of a GS encoder on open_clip's `model` (random weights: only
    the counts matter). Two shares per stage: of the whole GS encoder (CLIP + the GS head: stem,
    resampler, GS embeddings), which is what the paper's 9.7% / 13.8% describe, and of what is trained
    inside CLIP alone. `head`: GSVisionConfig fields of the head (num_tokens, gs_width, …).
    Returns {"headline", "headers", "rows", "counts"}; ValueError for an unknown model."""
    import open_clip

    cfg = GSVisionConfig.from_open_clip(model, **head)
    clip = open_clip.create_model(model, pretrained=None)
    gs = GSVisionModel(cfg)

    def count(params) -> int:
        return sum(p.numel() for p in params)

    clip_total = count(clip.parameters())
    head = count(gs.head_parameters())
    total = clip_total + head
    text_extra = count(clip.transformer.resblocks[:vit_blocks].parameters()) + clip.text_projection.numel()
    rows, counts = [], {"clip": clip_total, "gs_head": head, "stages": {}}
    for stage, label in (
        (1, "stage 1: the GS head"),
        (2, f"stage 2: + first {vit_blocks} ViT blocks + proj"),
        (3, "stage 2 + symmetric text layers"),
    ):
        gs.set_stage(min(stage, 2), vit_blocks)
        trainable = count(p for p in gs.parameters() if p.requires_grad) + (text_extra if stage == 3 else 0)
        whole = 100 * trainable / total
        paper = PAPER_SHARES.get(stage)
        counts["stages"][label] = {"trainable": trainable, "share_whole": whole, "paper": paper}
        rows.append(
            [
                label,
                f"{trainable / 1e6:.2f} M",
                f"{whole:.2f}%",
                "" if paper is None else f"{paper}%",
                "" if paper is None else ("yes" if abs(whole - paper) <= 1.5 else "no"),
                f"{100 * (trainable - head) / clip_total:.2f}%",
            ]
        )
    headline = (
        f"{model}: CLIP {clip_total / 1e6:.2f} M parameters + GS head (stem + resampler + embeddings) "
        f"{head / 1e6:.2f} M (K = {cfg.num_tokens}, head width {cfg.gs_width}, resampler depth "
        f"{cfg.resampler_depth}, feed-forward ×{cfg.gs_ff_mult}) = {total / 1e6:.2f} M"
    )
    headers = [
        "stage",
        "trainable",
        "of the whole encoder",
        "paper",
        "within 1.5 points",
        "CLIP part, of CLIP",
    ]
    return {"headline": headline, "headers": headers, "rows": rows, "counts": counts}
