"""GS-LLaVA on transformers 5.x, built like transformers' own Llava.

    gaussians [B_img, Nmax, 8] + gaussians_mask ─ GSVisionTower ─ hidden_states[vision_feature_layer][:, 1:]
        ─ projector (mlp2x_gelu) ─▶ [B_img, K, H] ─ masked_scatter into the K `<image>` embeddings per image
        ─ Llama ─▶ logits

The RGB twin tower (`vision_config.input == "rgb"`) takes `pixel_values` instead, so RGB-LLaVA and GS-LLaVA
share every other line. Splats enter only at prefill: `prepare_inputs_for_generation` drops them on decode
steps, so `generate` runs the tower once. `image_flags` (False = a dummy set for a text-only sample) keeps
the tower in every step's graph, so ZeRO-3 ranks stay in step on text-only batches (LLaVA's zero image).
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep

from gs_encoder.modeling_gs_vision import GSVisionModel, RGBVisionModel
from gs_encoder.resampler import PerceiverResampler

from .configuration_llava_gs import GSVisionTowerConfig, LlavaGSConfig

__all__ = [
    "GSVisionTower",
    "LlavaGSForConditionalGeneration",
    "LlavaGSModel",
    "LlavaGSPreTrainedModel",
    "build_projector",
    "count_parameters",
]

_VISION_INPUTS = ("gaussians", "gaussians_mask", "pixel_values", "image_flags")


def _init_open_clip_params(module: nn.Module) -> None:
    """The raw nn.Parameters of open_clip's VisionTransformer and of the GS encoder (transformers only
    initialises Linear / LayerNorm / MultiheadAttention itself)."""
    from open_clip.transformer import VisionTransformer

    if isinstance(module, (VisionTransformer, GSVisionModel)):
        scale = module.class_embedding.shape[-1] ** -0.5
        init.normal_(module.class_embedding, std=scale)
        init.normal_(module.positional_embedding, std=scale)
        if getattr(module, "proj", None) is not None and isinstance(module.proj, nn.Parameter):
            init.normal_(module.proj, std=scale)
    elif isinstance(module, PerceiverResampler):
        init.normal_(module.latents, std=module.latents.shape[-1] ** -0.5)


class GSVisionTower(PreTrainedModel):
    """`gs_encoder.GSVisionModel` (or its RGB twin) as a transformers model, registered with AutoModel.

    forward(gaussians, gaussians_mask) or forward(pixel_values=...) → BaseModelOutputWithPooling with
    `hidden_states` (embeddings + every block, each [B, 1 + K, D]) and `pooler_output` = the CLIP embedding.
    """

    config: GSVisionTowerConfig
    config_class = GSVisionTowerConfig
    base_model_prefix = "encoder"
    main_input_name = "gaussians"
    input_modalities = ("image",)
    _no_split_modules = ["ResidualAttentionBlock", "PerceiverResampler", "GSStem"]
    supports_gradient_checkpointing = False
    # the tower's attention (open_clip blocks, SDPA resampler) does not depend on attn_implementation
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: GSVisionTowerConfig):
        super().__init__(config)
        enc = config.encoder_config()
        self.encoder = (GSVisionModel if enc.input == "gs" else RGBVisionModel)(enc)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        _init_open_clip_params(module)

    def forward(
        self,
        gaussians: torch.Tensor | None = None,
        gaussians_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        if self.config.input == "gs":
            if gaussians is None:
                raise ValueError("this GS vision tower needs `gaussians` [B, Nmax, 8] (+ gaussians_mask)")
            out = self.encoder(gaussians.float(), gaussians_mask)
        else:
            if pixel_values is None:
                raise ValueError("this RGB vision tower needs `pixel_values` [B, 3, S, S] (CLIP-normalised)")
            out = self.encoder(pixel_values.to(self.encoder.visual.conv1.weight.dtype))
        return BaseModelOutputWithPooling(
            last_hidden_state=out.last_hidden_state,
            pooler_output=out.image_embeds,
            hidden_states=out.hidden_states,
        )


def build_projector(config: LlavaGSConfig) -> nn.Module:
    """LLaVA's projectors: `linear`, `identity` and `mlp<N>x_gelu` (N linear layers with GELU between)."""
    d_in, d_out = config.vision_config.hidden_size, config.text_config.hidden_size
    bias = config.multimodal_projector_bias
    if config.projector_type == "linear":
        return nn.Linear(d_in, d_out, bias=bias)
    if config.projector_type == "identity":
        if d_in != d_out:
            raise ValueError(f"identity projector needs equal widths, got vision {d_in} and text {d_out}")
        return nn.Identity()
    depth = int(re.match(r"^mlp(\d+)x_gelu$", config.projector_type).group(1))
    layers: list[nn.Module] = [nn.Linear(d_in, d_out, bias=bias)]
    for _ in range(depth - 1):
        layers += [ACT2FN[config.projector_hidden_act], nn.Linear(d_out, d_out, bias=bias)]
    return nn.Sequential(*layers)


class LlavaGSPreTrainedModel(PreTrainedModel):
    config: LlavaGSConfig
    config_class = LlavaGSConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer", "ResidualAttentionBlock", "PerceiverResampler", "GSStem"]
    _skip_keys_device_placement = ["cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module):
        super()._init_weights(module)
        _init_open_clip_params(module)


class LlavaGSModel(LlavaGSPreTrainedModel):
    """Vision tower + projector + language model (no LM head), with transformers Llava's module names."""

    def __init__(self, config: LlavaGSConfig):
        super().__init__(config)
        self.vision_tower = GSVisionTower(config.vision_config)
        self.multi_modal_projector = build_projector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_image_features(
        self,
        gaussians: torch.Tensor | None = None,
        gaussians_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Splat sets (or pixels, RGB tower) → projected visual tokens [B_img, K, H_text]."""
        out = self.vision_tower(gaussians=gaussians, gaussians_mask=gaussians_mask, pixel_values=pixel_values)
        features = out.hidden_states[self.config.vision_feature_layer][:, 1:]  # CLS dropped
        return self.multi_modal_projector(features.to(self._projector_dtype()))

    def _projector_dtype(self) -> torch.dtype:
        for p in self.multi_modal_projector.parameters():
            return p.dtype
        return self.language_model.get_input_embeddings().weight.dtype

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        gaussians: torch.Tensor | None = None,
        gaussians_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_flags: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        image_id = self.config.image_token_id
        slot = input_ids == image_id if input_ids is not None else None  # the `<image>` positions
        if gaussians is not None or pixel_values is not None:
            features = self.get_image_features(gaussians, gaussians_mask, pixel_values)
            inputs_embeds = self._merge(inputs_embeds, features, image_flags, slot)
        elif slot is not None and slot.any():
            raise ValueError(
                f"input_ids hold {int(slot.sum())} <image> token(s) (id {image_id}) but no gaussians were given; "
                "pass gaussians/gaussians_mask (see LlavaGSProcessor) or remove the image tokens"
            )
        return self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )

    def _merge(self, inputs_embeds, features, image_flags, slot):
        """Scatter the features of real images into the `<image>` slots; dummy sets add 0 to the graph."""
        features = features.to(inputs_embeds.dtype)
        if image_flags is not None:
            flags = image_flags.to(device=features.device, dtype=torch.bool)
            if flags.shape != features.shape[:1]:
                raise ValueError(f"image_flags must be [B_img]={features.shape[0]}, got {list(flags.shape)}")
            inputs_embeds = inputs_embeds + 0.0 * features[~flags].sum()
            features = features[flags]
        k = features.shape[1]
        if slot is None:  # inputs_embeds given: the slots are the rows equal to the `<image>` embedding
            slot = (inputs_embeds == self.get_input_embeddings().weight[self.config.image_token_id]).all(-1)
        n_slots = int(slot.sum())
        if n_slots != features.shape[0] * k:
            raise ValueError(
                f"the text holds {n_slots} <image> token(s) but {features.shape[0]} image(s) × {k} tokens "
                f"= {features.shape[0] * k} were given; each <image> must be expanded to {k} tokens "
                "(LlavaGSProcessor / tokenize_conversation do this)"
            )
        if n_slots == 0:
            return inputs_embeds
        return inputs_embeds.masked_scatter(slot[..., None].to(inputs_embeds.device), features.flatten(0, 1))


class LlavaGSForConditionalGeneration(LlavaGSPreTrainedModel, GenerationMixin):
    """GS-LLaVA with its LM head: forward(input_ids, gaussians, gaussians_mask, labels=...) and generate."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: LlavaGSConfig):
        super().__init__(config)
        self.model = LlavaGSModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    @property
    def vision_tower(self) -> GSVisionTower:
        return self.model.vision_tower

    @property
    def multi_modal_projector(self) -> nn.Module:
        return self.model.multi_modal_projector

    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    def get_image_features(self, gaussians=None, gaussians_mask=None, pixel_values=None) -> torch.Tensor:
        return self.model.get_image_features(gaussians, gaussians_mask, pixel_values)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        gaussians: torch.Tensor | None = None,
        gaussians_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_flags: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        if (
            "past_key_values" in kwargs
        ):  # the deprecated name, still passed by peft (transformers accepts it to 5.40)
            cache = kwargs.pop("past_key_values")
        out = self.model(
            input_ids=input_ids,
            gaussians=gaussians,
            gaussians_mask=gaussians_mask,
            pixel_values=pixel_values,
            image_flags=image_flags,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        hidden = slice_logits_to_keep(out.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=out.cache,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        """As GenerationMixin's, but the splats (or pixels) reach the model only at prefill."""
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            for name in _VISION_INPUTS:
                inputs.pop(name, None)
        return inputs


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Parameters of `module` (ZeRO-3 aware: partitioned parameters report their full size)."""
    return sum(
        getattr(p, "ds_numel", p.numel())
        for p in module.parameters()
        if p.requires_grad or not trainable_only
    )
