"""LLaVA JSON → tokenised samples with splats from a cache (or fitted on the fly) → padded batches."""

import json

import pytest
import torch

from gs_encoder.cli import main as gsv
from llava_gs.conversation import IGNORE_INDEX
from llava_gs.data import LlavaGSDataset, collate_llava

from .test_conversation import K, tokenizer  # noqa: F401  (fixture)


@pytest.fixture()
def llava_data(tmp_path, photo_path):
    images = tmp_path / "images"
    (images / "coco").mkdir(parents=True)
    for name in ("chelsea.png", "coffee.png"):
        (images / "coco" / name).write_bytes(photo_path(name).read_bytes())
    records = [
        {
            "id": "a",
            "image": "coco/chelsea.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat is it?"},
                {"from": "gpt", "value": "A cat."},
            ],
        },
        {"id": "b", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]},
        {
            "id": "c",
            "image": "coco/coffee.png",
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe."},
                {"from": "gpt", "value": "Coffee."},
            ],
        },
    ]
    data = tmp_path / "mix.json"
    data.write_text(json.dumps(records))
    cache = tmp_path / "cache"
    assert (
        gsv(
            [
                "fit-shards",
                str(data),
                "--image-folder",
                str(images),
                "-o",
                str(cache),
                "--num-gaussians",
                "16",
                "--iters",
                "5",
                "--size",
                "16",
                "-q",
            ]
        )
        == 0
    )
    return data, images, cache


def test_dataset_and_collator(llava_data, tokenizer):  # noqa: F811
    data, images, cache = llava_data
    ds = LlavaGSDataset(data, tokenizer, "vicuna_v1", num_image_tokens=K, splat_folder=cache)
    assert len(ds) == 3 and ds.modality_lengths[1] < 0 < ds.modality_lengths[0]
    batch = collate_llava([ds[0], ds[1], ds[2]], tokenizer.pad_token_id)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert batch["gaussians"].shape == (2, 16, 8) and batch["gaussians_mask"].all()
    assert int((batch["input_ids"] == image_id).sum()) == 2 * K
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert (batch["labels"][batch["input_ids"] == image_id] == IGNORE_INDEX).all()
    assert batch["image_flags"].tolist() == [True, True]
    # a text-only batch still feeds the tower one dummy set, flagged False (ZeRO-3 ranks stay in step)
    text_only = collate_llava([ds[1]], tokenizer.pad_token_id)
    assert text_only["gaussians"].shape == (1, 1, 8) and text_only["image_flags"].tolist() == [False]


def test_rgb_tower_reads_pixels(llava_data, tokenizer):  # noqa: F811
    data, images, _ = llava_data
    ds = LlavaGSDataset(data, tokenizer, "vicuna_v1", K, image_folder=images, canvas=32, tower_input="rgb")
    batch = collate_llava([ds[0], ds[1], ds[2]], tokenizer.pad_token_id)
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and "gaussians" not in batch
    # CLIP-normalised: the chelsea photo is not in [0, 1] any more
    assert batch["pixel_values"].min() < 0 and batch["image_flags"].all()


def test_missing_splats_name_the_sample_and_the_fix(llava_data, tokenizer, tmp_path):  # noqa: F811
    data, images, _ = llava_data
    ds = LlavaGSDataset(data, tokenizer, "vicuna_v1", K, splat_folder=tmp_path / "empty")
    with pytest.raises(
        FileNotFoundError, match="sample a: no splats for image 'coco/chelsea.png'.*gsv fit-shards"
    ):
        ds[0]
    from gs_encoder import FitConfig

    onthefly = LlavaGSDataset(
        data,
        tokenizer,
        "vicuna_v1",
        K,
        image_folder=images,
        fit_missing=True,
        fit=FitConfig(num_gaussians=9, iters=3),
        canvas=16,
    )
    assert onthefly[2]["splats"][0].shape == (9, 8)
    assert torch.is_tensor(onthefly[1]["input_ids"]) and onthefly[1]["splats"] == []
