"""Configs of GS-LLaVA on transformers 5.x: the GS vision tower and the whole model (model_type "llava_gs").

`GSVisionTowerConfig` carries a `gs_encoder.GSVisionConfig` (the encoder's own architecture, the same dict
that `GSVisionModel.save_pretrained` writes) as flat fields, so one `config.json` describes the model.
`LlavaGSConfig` follows transformers' `LlavaConfig`: a vision and a text sub-config, the `<image>` token id,
the number of visual tokens per image and the projector.
"""

from __future__ import annotations

import re
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec

from gs_encoder.modeling_gs_vision import GSVisionConfig

__all__ = ["GSVisionTowerConfig", "LlavaGSConfig", "PROJECTOR_TYPES"]

PROJECTOR_TYPES = "linear, identity or mlp<N>x_gelu (LLaVA-1.5: mlp2x_gelu)"
_MLP = re.compile(r"^mlp(\d+)x_gelu$")


@strict
class GSVisionTowerConfig(PreTrainedConfig):
    """A GS (or RGB-twin) vision encoder as a transformers config; fields = gs_encoder.GSVisionConfig."""

    model_type = "gs_vision_model"
    base_config_key = "vision_config"

    vision_cfg: dict | None = None
    embed_dim: int = 512
    quick_gelu: bool = False
    num_tokens: int = 196
    fourier_bands: int = 16
    resampler_depth: int = 2
    resampler_heads: int = GSVisionConfig.resampler_heads
    gs_width: int = GSVisionConfig.gs_width
    gs_ff_mult: int = GSVisionConfig.gs_ff_mult
    input: Literal["gs", "rgb"] = "gs"

    def __post_init__(self, **kwargs):
        if self.vision_cfg is None:
            self.vision_cfg = {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16}
        super().__post_init__(**kwargs)
        self.encoder_config()  # validates

    def encoder_config(self) -> GSVisionConfig:
        return GSVisionConfig(
            vision_cfg=dict(self.vision_cfg),
            embed_dim=self.embed_dim,
            quick_gelu=self.quick_gelu,
            num_tokens=self.num_tokens,
            fourier_bands=self.fourier_bands,
            resampler_depth=self.resampler_depth,
            resampler_heads=self.resampler_heads,
            gs_width=self.gs_width,
            gs_ff_mult=self.gs_ff_mult,
            input=self.input,
        )

    @classmethod
    def from_encoder_config(cls, encoder: GSVisionConfig, **kwargs) -> GSVisionTowerConfig:
        from dataclasses import asdict

        return cls(**asdict(encoder), **kwargs)

    @property
    def hidden_size(self) -> int:
        return int(self.vision_cfg["width"])

    @property
    def image_size(self) -> int:
        return int(self.vision_cfg.get("image_size", 224))

    @property
    def num_image_tokens(self) -> int:
        """Tokens per image handed to the LLM (CLS dropped): K for GS, (S/patch)² for the RGB twin."""
        if self.input == "gs":
            return self.num_tokens
        return (self.image_size // int(self.vision_cfg["patch_size"])) ** 2


@strict
class LlavaGSConfig(PreTrainedConfig):
    """GS-LLaVA: a GS vision tower, a projector and a Llama language model (docs/encoder.md, GS-LLaVA)."""

    model_type = "llava_gs"
    attribute_map = {"image_token_index": "image_token_id"}
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=GSVisionTowerConfig),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 32000
    image_seq_length: int | None = None  # K visual tokens per image; defaults to the tower's
    projector_type: str = "mlp2x_gelu"
    projector_hidden_act: str = "gelu"
    multimodal_projector_bias: bool = True
    vision_feature_layer: int = -2  # LLaVA's mm_vision_select_layer; CLS is always dropped
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        k = self.vision_config.num_image_tokens
        if self.image_seq_length is None:
            self.image_seq_length = k
        if self.image_seq_length != k:
            raise ValueError(
                f"image_seq_length={self.image_seq_length} but the vision tower gives {k} tokens per image"
            )
        if self.projector_type not in ("linear", "identity") and not _MLP.match(self.projector_type):
            raise ValueError(f"unknown projector_type {self.projector_type!r}; valid: {PROJECTOR_TYPES}")
        layers = int(self.vision_config.vision_cfg["layers"])
        if not -(layers + 1) <= self.vision_feature_layer <= layers:
            raise ValueError(
                f"vision_feature_layer={self.vision_feature_layer} is outside the tower's "
                f"{layers + 1} hidden states (embeddings + {layers} blocks)"
            )
