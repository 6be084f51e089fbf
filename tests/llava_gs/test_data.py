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


def test_training_processor_fits_like_the_splat_folder(llava_data, tmp_path, caplog):
    """llava_gs.train reads how --splat_folder was fitted (sidecars) and makes the saved processor fit images
    the same way: init, optimiser and N (unless --num_gaussians is given); what stays different is a warning."""
    import logging

    from gs_encoder.fitting.fit import fitted_with
    from llava_gs.processing_llava_gs import GaussianProcessor
    from llava_gs.train import DataArguments, _fit_like_splat_folder

    data, images, cache = llava_data  # fitted with the defaults: learned init, current optimiser, N = 16
    seen, read = fitted_with(cache)
    assert read == 2 and seen["init"] == "learned" and seen["num_gaussians_initial"] == 16
    old = tmp_path / "old"
    args = ["fit-shards", str(data), "--image-folder", str(images), "-o", str(old), "--size", "16", "-q"]
    other = [
        "--init",
        "structured",
        "--lr-decay",
        "1",
        "--betas",
        "0.9",
        "0.999",
        "--lr",
        "0.1",
        "0.04",
        "0.02",
    ]
    assert gsv([*args, "--num-gaussians", "16", "--iters", "5", *other]) == 0
    seen, _ = fitted_with(old)
    assert (seen["lr_decay"], seen["betas"], seen["lr"]) == (1.0, (0.9, 0.999), (0.1, 0.04, 0.02))

    proc = GaussianProcessor(canvas=224)
    with caplog.at_level(logging.INFO, logger="llava_gs.train"):
        _fit_like_splat_folder(proc, DataArguments(data_path=str(data), splat_folder=str(old)))
    cfg = proc.fit_config()
    assert (cfg.init, cfg.num_gaussians, cfg.lr_decay, cfg.betas) == ("structured", 16, 1.0, (0.9, 0.999))
    assert (cfg.lr_xy, cfg.lr_chol, cfg.lr_rgb, cfg.warmup_iters) == (0.1, 0.04, 0.02, 0)
    assert "lr_decay 0.3 -> 1.0" in caplog.text and "canvas = 16" in caplog.text  # 224 stays: a warning

    caplog.clear()
    proc = GaussianProcessor(canvas=16, fit={"num_gaussians": 32})
    with caplog.at_level(logging.INFO, logger="llava_gs.train"):
        _fit_like_splat_folder(
            proc, DataArguments(data_path=str(data), splat_folder=str(cache), num_gaussians=32)
        )
    assert proc.num_gaussians == 32 and "--num_gaussians" in caplog.text and "canvas" not in caplog.text
    # sidecars that disagree settle nothing: the processor keeps its own setting
    mixed = tmp_path / "mixed"
    for i, folder in enumerate((cache, old)):
        side = next(folder.rglob("chelsea.json"))
        for f in (side, side.with_name("chelsea.gs.npy")):
            (mixed / str(i)).mkdir(parents=True, exist_ok=True)
            (mixed / str(i) / f.name).write_bytes(f.read_bytes())
    seen, read = fitted_with(mixed)
    assert read == 2 and "init" not in seen and "betas" not in seen and seen["num_gaussians_initial"] == 16
    for side in old.rglob("*.json"):  # sidecars that do not record a setting settle nothing either
        meta = json.loads(side.read_text())
        side.write_text(json.dumps({k: v for k, v in meta.items() if k not in ("lr_decay", "betas")}))
    seen, _ = fitted_with(old)
    assert "lr_decay" not in seen and "betas" not in seen and seen["lr"] == (0.1, 0.04, 0.02)


def test_training_processor_fits_from_the_splats_init_weights(llava_data, tmp_path, caplog):
    """Splats fitted from other learned-init weights: the trained model's processor fits from that file (while it
    holds them), else it warns that on-the-fly fits start elsewhere."""
    import logging
    import shutil

    from gs_encoder.fitting.learned_init import DEFAULT_WEIGHTS, SplatInitNet, save_learned_init, weights_id
    from llava_gs.processing_llava_gs import GaussianProcessor
    from llava_gs.train import DataArguments, _fit_like_splat_folder

    data, images, _ = llava_data
    mine = tmp_path / "mine.safetensors"
    save_learned_init(mine, SplatInitNet(8, 8, 1, 1.0, 2))
    out = tmp_path / "splats"
    args = ["fit-shards", str(data), "--image-folder", str(images), "-o", str(out), "--size", "16", "-q"]
    assert gsv([*args, "--num-gaussians", "16", "--iters", "3", "--init-weights", str(mine)]) == 0
    dargs = DataArguments(data_path=str(data), splat_folder=str(out))
    proc = GaussianProcessor(canvas=16)
    with caplog.at_level(logging.INFO, logger="llava_gs.train"):
        _fit_like_splat_folder(proc, dargs)
    assert proc.fit["init_weights"] == str(mine) and proc.init_weights_id() == weights_id(mine)
    assert "fits from the learned-init weights" in caplog.text
    shutil.copyfile(DEFAULT_WEIGHTS, mine)  # the file now holds other weights: nothing to adopt, a warning
    caplog.clear()
    proc = GaussianProcessor(canvas=16)
    with caplog.at_level(logging.INFO, logger="llava_gs.train"):
        _fit_like_splat_folder(proc, dargs)
    assert proc.fit["init_weights"] is None and "photos fitted on the fly will differ" in caplog.text
