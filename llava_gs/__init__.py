"""llava_gs: LLaVA-1.5 with a Gaussian-splat vision tower, on transformers 5.x.

Importing the package registers the model with transformers' Auto classes, so a saved GS-LLaVA folder
loads with `AutoModelForImageTextToText.from_pretrained(path)` / `AutoProcessor.from_pretrained(path)`.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from .configuration_llava_gs import GSVisionTowerConfig, LlavaGSConfig
from .modeling_llava_gs import GSVisionTower, LlavaGSForConditionalGeneration, LlavaGSModel
from .processing_llava_gs import GaussianProcessor, LlavaGSProcessor, processor_for
from .tokenizer import add_image_token, train_bpe_tokenizer

__all__ = [
    "GaussianProcessor",
    "LlavaGSProcessor",
    "add_image_token",
    "processor_for",
    "train_bpe_tokenizer",
    "GSVisionTower",
    "GSVisionTowerConfig",
    "LlavaGSConfig",
    "LlavaGSForConditionalGeneration",
    "LlavaGSModel",
]

AutoConfig.register(GSVisionTowerConfig.model_type, GSVisionTowerConfig, exist_ok=True)
AutoConfig.register(LlavaGSConfig.model_type, LlavaGSConfig, exist_ok=True)
AutoModel.register(GSVisionTowerConfig, GSVisionTower, exist_ok=True)
AutoModel.register(LlavaGSConfig, LlavaGSModel, exist_ok=True)
AutoModelForImageTextToText.register(LlavaGSConfig, LlavaGSForConditionalGeneration, exist_ok=True)
AutoModelForCausalLM.register(LlavaGSConfig, LlavaGSForConditionalGeneration, exist_ok=True)
AutoImageProcessor.register(
    LlavaGSConfig,
    image_processor_classes={"torchvision": GaussianProcessor, "pil": GaussianProcessor},
    exist_ok=True,
)
AutoProcessor.register(LlavaGSConfig, LlavaGSProcessor, exist_ok=True)
