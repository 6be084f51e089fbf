"""Building and loading GS-LLaVA models, driven by files (never by names in paths).

- `build_from_parts(lm, encoder)`: a Llama/Vicuna checkpoint + a trained GS encoder folder
  (`gs_encoder.GSVisionModel.save_pretrained`) → a GS-LLaVA model with a fresh projector and `<image>`
  added to the tokenizer. The language model loads through `from_pretrained(key_mapping=...)`, so
  DeepSpeed ZeRO-3's `zero.Init` partitions it as it loads; the encoder weights are copied under
  `GatheredParameters` when ZeRO-3 is on. `scripts/build_init_checkpoint.py` saves the result once.
- `load_pretrained_model(path)`: a saved GS-LLaVA folder, or a PEFT LoRA adapter folder over one
  (recognised by its `adapter_config.json`), optionally merged → (model, processor).
- `load_projector(model, file)`: `mm_projector.safetensors` from pretraining (LLaVA's
  `--pretrain_mm_mlp_adapter`), ZeRO-3 aware.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from gs_encoder.modeling_gs_vision import CONFIG_NAME, WEIGHTS_NAME, GSVisionConfig

from .configuration_llava_gs import GSVisionTowerConfig, LlavaGSConfig
from .modeling_llava_gs import LlavaGSForConditionalGeneration
from .processing_llava_gs import LlavaGSProcessor
from .tokenizer import add_image_token

__all__ = [
    "PROJECTOR_FILE",
    "build_from_parts",
    "gathered",
    "load_pretrained_model",
    "load_projector",
    "save_folder",
    "save_projector",
]

PROJECTOR_FILE = "mm_projector.safetensors"
_LLAMA_TO_LLAVA = {r"^model\.": "model.language_model."}


def _zero3() -> bool:
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled
    except ImportError:  # pragma: no cover - transformers always ships it
        return False
    return is_deepspeed_zero3_enabled()


def gathered(params: list[nn.Parameter], modifier_rank: int | None = 0):
    """Context in which ZeRO-3-partitioned `params` are whole (a no-op without ZeRO-3)."""
    if _zero3() and any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)
    return contextlib.nullcontext()


def _copy_state(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Copy `state` into `module` exactly (same keys and shapes), working on ZeRO-3-partitioned modules."""
    params = dict(module.named_parameters())
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(f"{what}: missing {missing[:5]}, unexpected {unexpected[:5]} parameter names")
    with gathered(list(params.values())):
        if not _zero3() or torch.distributed.get_rank() == 0:
            with torch.no_grad():
                for name, p in params.items():
                    if p.shape != state[name].shape:
                        raise ValueError(
                            f"{what}: {name} has shape {list(state[name].shape)}, expected {list(p.shape)}"
                        )
                    p.copy_(state[name].to(p.dtype))


def _read_encoder_config(encoder: str | os.PathLike) -> GSVisionConfig:
    path = Path(encoder)
    if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f"{path}: not a GS encoder folder (expected {CONFIG_NAME} and {WEIGHTS_NAME}, as written by "
            "`python -m gs_encoder.train` or GSVisionModel.save_pretrained)"
        )
    return GSVisionConfig.from_dict(json.loads((path / CONFIG_NAME).read_text()))


def build_from_parts(
    lm: str | os.PathLike,
    encoder: str | os.PathLike,
    projector_type: str = "mlp2x_gelu",
    vision_feature_layer: int = -2,
    dtype: torch.dtype | str = "auto",
    num_visual_tokens: int | None = None,
    pad_to_multiple_of: int = 64,
    attn_implementation: str | None = None,
):
    """Language model checkpoint + GS encoder folder → (LlavaGSForConditionalGeneration, tokenizer).

    Args:
        lm: a Llama-architecture checkpoint folder or hub id (Vicuna-7B v1.5 for LLaVA-1.5).
        encoder: a folder with the GS encoder's config.json + model.safetensors.
        projector_type: linear, identity or mlp<N>x_gelu.
        vision_feature_layer: which hidden state of the tower feeds the projector (LLaVA: -2).
        num_visual_tokens: if given, must equal the encoder's K (it is fixed by the trained resampler).
        pad_to_multiple_of: the embedding matrix is padded to a multiple of this after adding `<image>`.
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    enc_cfg = _read_encoder_config(encoder)
    vision = GSVisionTowerConfig.from_encoder_config(enc_cfg)
    if num_visual_tokens is not None and num_visual_tokens != vision.num_image_tokens:
        raise ValueError(
            f"--num_visual_tokens {num_visual_tokens} but the encoder in {encoder} gives "
            f"{vision.num_image_tokens} tokens per image; train an encoder with that many latents"
        )
    tokenizer = AutoTokenizer.from_pretrained(lm)
    image_id = add_image_token(tokenizer)
    text_config = AutoConfig.from_pretrained(lm)
    config = LlavaGSConfig(
        vision_config=vision,
        text_config=text_config,
        image_token_id=image_id,
        projector_type=projector_type,
        vision_feature_layer=vision_feature_layer,
    )
    model = _language_model_into(lm, config, dtype, attn_implementation)
    state = load_file(str(Path(encoder) / WEIGHTS_NAME))
    _copy_state(model.model.vision_tower.encoder, state, f"GS encoder {encoder}")
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0] or pad_to_multiple_of > 1:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=pad_to_multiple_of)
    model.generation_config.suppress_tokens = [image_id]  # the `<image>` row of lm_head is untrained
    if tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _language_model_into(lm, config: LlavaGSConfig, dtype, attn_implementation: str | None):
    """A GS-LLaVA of `config` with the language model's weights of checkpoint `lm` (the tower still random,
    the projector new); an LM weight missing from the checkpoint is an error naming it."""
    from transformers.utils import logging as hf_logging

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    # the tower and projector are reported missing from the LM checkpoint: expected, the tower is copied
    # in afterwards and the projector is new, so the load report is silenced
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = LlavaGSForConditionalGeneration.from_pretrained(
            lm, config=config, key_mapping=_LLAMA_TO_LLAVA, dtype=dtype, output_loading_info=True, **kwargs
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    # from_pretrained remembers key_mapping and save_pretrained would undo it (writing Llama key names);
    # the model built here is a GS-LLaVA model, saved under its own names
    for module in model.modules():
        if "_weight_conversions" in vars(module):
            del module._weight_conversions
    missing_lm = [
        k for k in info["missing_keys"] if not k.startswith(("model.vision_tower.", "model.multi_modal"))
    ]
    if missing_lm:
        raise ValueError(
            f"{lm}: language-model weights missing from the checkpoint: {sorted(missing_lm)[:5]}"
        )
    return model


def save_folder(out: str | os.PathLike, *parts) -> Path:
    """`save_pretrained` every part (model, tokenizer, processor) into `out`, built under a temporary name
    and swapped in at the end, so an interrupted save never leaves a half-written folder."""
    from cuda_ext.files import atomic_path

    out = Path(out)
    with atomic_path(out, folder=True) as tmp:
        for part in parts:
            part.save_pretrained(tmp)
    return out


def save_projector(model: LlavaGSForConditionalGeneration, path: str | os.PathLike) -> Path:
    """Write the projector's weights (gathered under ZeRO-3) to `path` as safetensors, atomically."""
    from safetensors.torch import save

    from cuda_ext.files import atomic_write_bytes

    proj = _unwrap(model).model.multi_modal_projector
    params = dict(proj.named_parameters())
    with gathered(list(params.values()), modifier_rank=None):
        state = {k: v.detach().cpu().clone().contiguous() for k, v in params.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        atomic_write_bytes(path, save(state, metadata={"format": "pt", "projector": "llava_gs"}))
    return path


def load_projector(model: LlavaGSForConditionalGeneration, path: str | os.PathLike) -> None:
    """Load `mm_projector.safetensors` (written after pretraining) into the model's projector."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no projector file; pretraining writes {PROJECTOR_FILE} into its output"
        )
    _copy_state(_unwrap(model).model.multi_modal_projector, load_file(str(path)), f"projector {path}")


def _unwrap(model):
    """The LlavaGSForConditionalGeneration inside a PEFT wrapper (or the model itself)."""
    base = model
    while not isinstance(base, LlavaGSForConditionalGeneration) and hasattr(base, "base_model"):
        nxt = base.get_base_model() if hasattr(base, "get_base_model") else base.base_model
        if nxt is base:
            break
        base = nxt
    return base


def _load_processor(path: Path, source: Path):
    """The processor of a model folder (or of a LoRA adapter's base): it decides how photos become splats
    (N, iterations), so it is never replaced by defaults; a missing or broken one is an error naming it."""
    from transformers import AutoProcessor

    proc_dir = path if (path / "processor_config.json").is_file() else source
    if Path(proc_dir).is_dir() and not (Path(proc_dir) / "processor_config.json").is_file():
        where = str(path) if proc_dir == path else f"{path} nor its base model {proc_dir}"
        raise FileNotFoundError(
            f"{where}: no processor_config.json (the processor decides N and the fitting of photos); "
            "training and scripts/build_init_checkpoint.py write one: copy it from the folder the model "
            "was trained from, or save `llava_gs.processor_for(config, tokenizer, fit={...})` there"
        )
    try:
        processor = AutoProcessor.from_pretrained(proc_dir)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(
            f"{proc_dir}: the processor does not load ({e}); rewrite its processor_config.json"
        ) from e
    return processor


def load_pretrained_model(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    merge_lora: bool = True,
    **image_kwargs,
) -> tuple[nn.Module, LlavaGSProcessor]:
    """A GS-LLaVA folder (or a LoRA adapter folder trained on one) → (model in eval mode, processor).

    dtype defaults to float32 on CPU (half precision matmuls are slow or missing there) and bfloat16 on
    CUDA. `image_kwargs` override the processor's on-the-fly fitting settings (the options of
    processing_llava_gs.FIT_OPTIONS: num_gaussians, fit_iters, fit_init, fit_init_weights; None keeps one).
    """
    path = Path(path)
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    adapter = (path / "adapter_config.json").is_file()
    if adapter:
        from peft import PeftModel

        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise ValueError(f"{path}/adapter_config.json names no base_model_name_or_path")
        model = LlavaGSForConditionalGeneration.from_pretrained(base, dtype=dtype)
        model = PeftModel.from_pretrained(model, str(path))
        if merge_lora:
            model = model.merge_and_unload()
        source = Path(base)
    else:
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path}: no config.json; expected a GS-LLaVA folder written by save_pretrained"
            )
        model = LlavaGSForConditionalGeneration.from_pretrained(path, dtype=dtype)
        source = path
    model.to(device).eval()
    processor = _load_processor(path, source)
    from .processing_llava_gs import FIT_OPTIONS

    unknown = sorted(set(image_kwargs) - set(FIT_OPTIONS))
    if unknown:
        raise ValueError(f"unknown fitting option(s) {', '.join(unknown)}; valid: {', '.join(FIT_OPTIONS)}")
    processor.image_processor.update(**{FIT_OPTIONS[k]: v for k, v in image_kwargs.items()})
    return model, processor
