"""Tiny GS-LLaVA parts built offline: a BPE tokenizer, a random Llama, a GS encoder, LLaVA-format data,
and the initial GS-LLaVA folder assembled from them by scripts/build_init_checkpoint.py.

The fixtures using these (tiny_tokenizer, tiny_parts, tiny_init) live in tests/conftest.py."""

import json
import sys
from pathlib import Path

import torch

# Step sizes of whole fits compared across batch layouts or backends: the default ones (4× on the geometry)
# make a fit amplify float rounding, so one image alone and in a batch end up ~0.02 dB apart at 96²
# (measured); at these the comparisons check the plumbing to 1e-3 dB.
SMALL_STEPS = {"lr_xy": 0.1, "lr_chol": 0.04, "lr_rgb": 0.02}
K = 16  # visual tokens of the tiny encoder
CANVAS = 32
TEXT = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "USER: What is in the image? ASSISTANT: A cat sitting on a red sofa.",
    "A cup of coffee on a wooden table. An astronaut in a white suit. What colour is it?",
    "the quick brown fox jumps over the lazy dog " * 5,
]


def tiny_encoder():
    from gs_encoder.modeling_gs_vision import GSVisionConfig, GSVisionModel

    cfg = GSVisionConfig(
        vision_cfg={"image_size": CANVAS, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        gs_width=32,
        embed_dim=32,
        num_tokens=K,
        fourier_bands=4,
        resampler_depth=1,
        resampler_heads=2,
    )
    torch.manual_seed(0)
    return GSVisionModel(cfg)


def tiny_llava_config(vocab_size=320, image_token_id=3, **kw):
    from llava_gs import GSVisionTowerConfig, LlavaGSConfig

    vision = GSVisionTowerConfig.from_encoder_config(tiny_encoder().config)
    text = {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": vocab_size,
        "max_position_embeddings": 512,
    }
    return LlavaGSConfig(vision_config=vision, text_config=text, image_token_id=image_token_id, **kw)


ROOT = Path(__file__).resolve().parents[1]


def build_tiny_parts(root: Path, tiny_tokenizer, photo_path) -> Path:
    """Folders on disk: lm/ (tiny Llama + tokenizer), encoder/, data/{pretrain,finetune}.json, images/, splats/."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from gs_encoder.cli import main as gsv

    torch.manual_seed(0)
    lm_cfg = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tiny_tokenizer.bos_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
    )
    LlamaForCausalLM(lm_cfg).save_pretrained(root / "lm")
    tiny_tokenizer.save_pretrained(root / "lm")
    tiny_encoder().save_pretrained(root / "encoder")
    images = root / "images"
    images.mkdir()
    names = ["chelsea.png", "coffee.png", "astronaut.png"]
    captions = ["A cat sitting on a red sofa.", "A cup of coffee.", "An astronaut in a white suit."]
    for n in names:
        (images / n).write_bytes(photo_path(n).read_bytes())
    pretrain, finetune = [], []
    for i in range(12):
        n, cap = names[i % 3], captions[i % 3]
        pretrain.append(
            {
                "id": f"p{i}",
                "image": n,
                "conversations": [{"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": cap}],
            }
        )
        if i % 4 == 3:  # a text-only sample, as in LLaVA's 665K mix
            finetune.append(
                {
                    "id": f"f{i}",
                    "conversations": [
                        {"from": "human", "value": "What colour is it?"},
                        {"from": "gpt", "value": "Red."},
                    ],
                }
            )
        else:
            finetune.append(
                {
                    "id": f"f{i}",
                    "image": n,
                    "conversations": [
                        {"from": "human", "value": "<image>\nWhat is in the image?"},
                        {"from": "gpt", "value": cap},
                        {"from": "human", "value": "What colour is it?"},
                        {"from": "gpt", "value": "Red."},
                    ],
                }
            )
    data = root / "data"
    data.mkdir()
    (data / "pretrain.json").write_text(json.dumps(pretrain))
    (data / "finetune.json").write_text(json.dumps(finetune))
    args = [
        "fit-shards",
        str(data / "pretrain.json"),
        "--image-folder",
        str(images),
        "-o",
        str(root / "splats"),
    ]
    assert gsv(args + ["--num-gaussians", "36", "--iters", "20", "--size", str(CANVAS), "-q"]) == 0
    return root


def build_init(root: Path) -> Path:
    """root/init: the GS-LLaVA folder that scripts/build_init_checkpoint.py assembles from root's parts."""
    out = root / "init"
    if not out.exists():
        sys.path.insert(0, str(ROOT / "scripts"))
        try:
            import build_init_checkpoint
        finally:
            sys.path.pop(0)
        args = ["--lm", str(root / "lm"), "--encoder", str(root / "encoder"), "--output", str(out)]
        assert (
            build_init_checkpoint.main(
                args + ["--dtype", "float32", "--num-gaussians", "36", "--fit-iters", "20"]
            )
            == 0
        )
    return out
