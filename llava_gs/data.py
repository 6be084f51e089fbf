"""LLaVA-1.5 JSON data for GS-LLaVA: records → (input_ids, labels, splats), and the batch collator.

A record's `image` names a raster file (looked up in a splat cache written by
`gsv fit-shards data.json --image-folder DIR -o CACHE`, i.e. `CACHE/<path without suffix>.gs.npy`, or
fitted on the fly when `fit_missing` is set) or a `.gs.npy` file. Batches follow docs/encoder.md, GS-LLaVA:
`input_ids` with K image tokens per image, `gaussians [B_img, Nmax, 8]`, `gaussians_mask [B_img, Nmax]`
and `image_flags [B_img]`. A batch without any image gets one dummy splat set with its flag False, so the
vision tower runs on every step (LLaVA's zero image; keeps ZeRO-3 ranks in step). With an RGB-twin tower
(`tower_input="rgb"`) the images are read as CLIP-normalised `pixel_values` instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from gs_encoder import FitConfig, fit_images, load_image, load_splats, pad_splat_sets

from .conversation import IGNORE_INDEX, get_template, tokenize_conversation

__all__ = ["LlavaGSDataset", "collate_llava", "left_pad_prompts", "pad_text"]


class LlavaGSDataset(torch.utils.data.Dataset):
    """A LLaVA-1.5 JSON file as a dataset of tokenised samples with their splat sets."""

    def __init__(
        self,
        data_path: str | os.PathLike,
        tokenizer,
        template: str,
        num_image_tokens: int,
        splat_folder: str | os.PathLike | None = None,
        image_folder: str | os.PathLike | None = None,
        fit_missing: bool = False,
        fit: FitConfig | None = None,
        canvas: int = 224,
        resize: str = "pad",
        max_length: int = 2048,
        tower_input: str = "gs",
    ):
        path = Path(data_path)
        try:
            self.records = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: cannot read LLaVA JSON ({e})") from e
        if not isinstance(self.records, list):
            raise ValueError(f"{path}: expected a list of records")
        self.tokenizer, self.template = tokenizer, get_template(template)
        self.k, self.max_length = num_image_tokens, max_length
        self.splat_folder = Path(splat_folder) if splat_folder else None
        self.image_folder = Path(image_folder) if image_folder else None
        self.fit_missing, self.fit = fit_missing, fit or FitConfig()
        self.canvas, self.resize = canvas, resize
        if tower_input not in ("gs", "rgb"):
            raise ValueError(f"tower_input must be 'gs' or 'rgb', got {tower_input!r}")
        if tower_input == "rgb" and self.image_folder is None:
            raise ValueError("an RGB vision tower reads images: give image_folder")
        self.tower_input = tower_input

    def __len__(self) -> int:
        return len(self.records)

    def _images(self, record) -> list[str]:
        img = record.get("image")
        return [] if img is None else [img] if isinstance(img, str) else list(img)

    @property
    def modality_lengths(self) -> list[int]:
        """LLaVA's group_by_modality_length key: word count, negative for text-only samples."""
        out = []
        for r in self.records:
            n = sum(len(t.get("value", "").split()) for t in r.get("conversations", []))
            out.append(n if self._images(r) else -n)
        return out

    def _splats(self, name: str, sample_id: str) -> torch.Tensor:
        if name.endswith(".gs.npy"):
            base = self.image_folder or self.splat_folder or Path(".")
            return load_splats(base / name)
        if self.splat_folder is not None:
            cached = self.splat_folder / Path(name).with_suffix(".gs.npy")
            if cached.exists():
                return load_splats(cached)
        if self.fit_missing and self.image_folder is not None:
            img = load_image(self.image_folder / name, self.canvas, self.resize)
            return fit_images(img[None], self.fit)[0].splats
        where = (
            self.splat_folder / Path(name).with_suffix(".gs.npy")
            if self.splat_folder
            else "(no --splat_folder)"
        )
        raise FileNotFoundError(
            f"sample {sample_id}: no splats for image {name!r} at {where}; fit them with "
            f"`gsv fit-shards DATA.json --image-folder IMAGES -o SPLATS` or allow fitting on the fly"
        )

    def __getitem__(self, i: int) -> dict:
        record = self.records[i]
        sample_id = str(record.get("id", i))
        images = self._images(record)
        ids, labels = tokenize_conversation(
            record.get("conversations", []),
            self.tokenizer,
            self.template,
            len(images),
            self.k,
            self.max_length,
            sample_id,
        )
        sample = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "id": sample_id}
        if self.tower_input == "rgb":
            sample["pixels"] = [
                load_image(self.image_folder / name, self.canvas, self.resize) for name in images
            ]
        else:
            sample["splats"] = [self._splats(name, sample_id) for name in images]
        return sample


def pad_text(samples: list[dict], pad_token_id: int) -> dict:
    """Right-padded `input_ids`, `labels` (IGNORE_INDEX on padding) and `attention_mask` of samples holding
    `input_ids` and `labels` (lists or 1-D tensors of equal length)."""
    t = max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), t), pad_token_id, dtype=torch.long)
    labels = torch.full((len(samples), t), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros(len(samples), t, dtype=torch.long)
    for b, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[b, :n], labels[b, :n], attention[b, :n] = (
            torch.as_tensor(s["input_ids"]),
            torch.as_tensor(s["labels"]),
            1,
        )
    return {"input_ids": ids, "labels": labels, "attention_mask": attention}


def left_pad_prompts(prompts: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts left-padded for batched `generate` (each ends where the answer starts): (input_ids, mask)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.as_tensor(p)
        attention[i, width - len(p) :] = 1
    return ids, attention


def collate_llava(samples: list[dict], pad_token_id: int, image_size: int | None = None) -> dict:
    """Right-padded input_ids / labels / attention_mask and the vision inputs of every image, in order.

    GS samples give `gaussians` + `gaussians_mask`; RGB samples (`pixels`) give CLIP-normalised
    `pixel_values` at `image_size` (default: the canvas). `image_flags` marks real images; a batch with
    none gets one dummy input flagged False.
    """
    batch = pad_text(samples, pad_token_id)
    if "pixels" in samples[0]:
        from gs_encoder.teacher import clip_normalise

        pixels = [p for s in samples for p in s["pixels"]]
        flags = [True] * len(pixels)
        if not pixels:
            pixels, flags = [torch.zeros(3, image_size or 224, image_size or 224)], [False]
        stacked = torch.stack(pixels)
        batch["pixel_values"] = clip_normalise(stacked, image_size or stacked.shape[-1])
    else:
        sets = [sp for s in samples for sp in s["splats"]]
        flags = [True] * len(sets)
        if not sets:  # a dummy set: one small grey Gaussian in the centre
            sets, flags = [torch.tensor([[0.5, 0.5, 0.1, 0.0, 0.1, 0.5, 0.5, 0.5]])], [False]
        batch["gaussians"], batch["gaussians_mask"] = pad_splat_sets(sets)
    batch["image_flags"] = torch.tensor(flags)
    return batch
