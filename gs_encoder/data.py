"""Reading splat shards for training: webdataset samples → padded batches (docs/format.md, Layout).

A batch is a dict with `splats [B, Nmax, 8]` float32 (padded rows zero), `mask [B, Nmax]` bool,
`captions` (list of str or None), `teacher [B, D]` float32 when every sample carries a teacher embedding
(`<key>.t16.npy`), and `keys`. A sample whose splats are missing, unreadable or invalid is skipped with a
warning naming the shard and key; the stream goes on.
"""

from __future__ import annotations

import io
import logging
import math
import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from .splat_io import SplatFileError, validate_splats

__all__ = [
    "SplatFolder",
    "UpsampledSampler",
    "collate_splats",
    "decode_sample",
    "pad_splat_sets",
    "splat_dataset",
    "splat_loader",
]

logger = logging.getLogger(__name__)

TEACHER_KEY = "t16.npy"


def _npy(data: bytes, what: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise SplatFileError(f"{what}: not a readable .npy ({e})") from e


def decode_sample(sample: dict) -> dict:
    """Raw webdataset sample ({'__key__', 'gs.npy': bytes, …}) → {'key', 'splats', 'caption', 'teacher'}.

    Raises SplatFileError (naming shard and key) for a missing or invalid splat field.
    """
    where = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
    if "gs.npy" not in sample:
        raise SplatFileError(f"{where}: sample has no gs.npy field")
    arr = _npy(sample["gs.npy"], f"{where}.gs.npy")
    validate_splats(arr, f"{where}.gs.npy")
    out = {
        "key": sample.get("__key__"),
        "splats": torch.from_numpy(arr.astype(np.float32)),
        "caption": None,
        "teacher": None,
    }
    if "txt" in sample:
        out["caption"] = (
            sample["txt"].decode("utf-8", errors="replace")
            if isinstance(sample["txt"], bytes)
            else str(sample["txt"])
        )
    if TEACHER_KEY in sample:
        t = _npy(sample[TEACHER_KEY], f"{where}.{TEACHER_KEY}")
        if t.ndim != 1 or not np.isfinite(t).all():
            raise SplatFileError(
                f"{where}.{TEACHER_KEY}: teacher embedding must be a finite 1-D vector, got shape {list(t.shape)}"
            )
        out["teacher"] = torch.from_numpy(t.astype(np.float32))
    return out


def pad_splat_sets(sets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[N_b, 8] splat sets → (splats [B, Nmax, 8] float32 zero-padded, mask [B, Nmax] bool), docs/format.md, Layout."""
    if not sets:
        raise ValueError("cannot pad an empty list of splat sets")
    for i, sp in enumerate(sets):
        if sp.dim() != 2 or sp.shape[-1] != 8 or sp.shape[0] < 1:
            raise ValueError(f"splat set {i} must be [N ≥ 1, 8], got {list(sp.shape)}")
    nmax = max(sp.shape[0] for sp in sets)
    splats = torch.zeros(len(sets), nmax, 8)
    mask = torch.zeros(len(sets), nmax, dtype=torch.bool)
    for i, sp in enumerate(sets):
        splats[i, : sp.shape[0]] = sp.float()
        mask[i, : sp.shape[0]] = True
    return splats, mask


def collate_splats(samples: list[dict | None]) -> dict:
    """Pad a list of decoded samples to the batch's largest N; see the module docstring for the fields.

    None entries (samples a map-style dataset could not read) are dropped; `images` [B, 3, S, S] is
    added when every sample carries its source image.
    """
    samples = [s for s in samples if s is not None]
    if not samples:
        raise ValueError("cannot collate an empty batch")
    splats, mask = pad_splat_sets([s["splats"] for s in samples])
    teachers = [s["teacher"] for s in samples]
    teacher = torch.stack(teachers) if all(t is not None for t in teachers) else None
    images = [s.get("image") for s in samples]
    return {
        "splats": splats,
        "mask": mask,
        "captions": [s["caption"] for s in samples],
        "teacher": teacher,
        "images": torch.stack(images) if all(i is not None for i in images) else None,
        "keys": [s["key"] for s in samples],
    }


class SplatFolder(torch.utils.data.Dataset):
    """A folder of `<name>.gs.npy` files (e.g. `gsv fit` output) as a map-style dataset.

    Per sample: splats, caption (`<name>.txt`, else the sidecar's "caption"), teacher embedding
    (`<name>.t16.npy`) and the source image named in the sidecar, on the canvas the splats were fitted
    on (for a teacher run on the fly): `images="no_teacher"` loads it where there is no teacher file,
    `"all"` for every sample (patch distillation), `"none"` never. Unreadable samples give None (a warning),
    which `collate_splats` drops.
    """

    IMAGE_MODES = ("none", "no_teacher", "all")

    def __init__(self, root: str | os.PathLike, images: str = "none"):
        if images not in self.IMAGE_MODES:
            raise ValueError(f"images must be one of {', '.join(self.IMAGE_MODES)}, got {images!r}")
        self.root = Path(root)
        self.files = sorted(self.root.rglob("*.gs.npy"))
        if not self.files:
            raise FileNotFoundError(
                f"{self.root}: no .gs.npy files (fit some with `gsv fit IMAGES -o {self.root}`)"
            )
        self.images = images

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict | None:
        from .image_io import ImageLoadError, load_image
        from .splat_io import load_splats, splat_stem

        path = self.files[i]
        stem = path.with_name(splat_stem(path))
        try:
            splats, meta = load_splats(path, with_meta=True)
            meta = meta or {}
            key = str(path.relative_to(self.root))
            out = {"key": key, "splats": splats, "caption": meta.get("caption"), "teacher": None}
            caption = stem.with_name(stem.name + ".txt")
            if caption.exists():
                out["caption"] = caption.read_text().strip()
            teacher = stem.with_name(stem.name + "." + TEACHER_KEY)
            if teacher.exists():
                out["teacher"] = torch.from_numpy(_npy(teacher.read_bytes(), str(teacher)).astype(np.float32))
            if self.images == "all" or (self.images == "no_teacher" and out["teacher"] is None):
                why = (
                    "the teacher's patch tokens need it" if out["teacher"] is not None else "no teacher file"
                )
                if "source" not in meta:
                    raise SplatFileError(f"{path}: no 'source' image in the sidecar ({why})")
                src = Path(meta["source"])
                src = src if src.is_absolute() or src.exists() else self.root / src
                out["image"] = load_image(src, int(meta.get("canvas", 224)), meta.get("resize", "pad"))
            return out
        except (SplatFileError, ImageLoadError) as e:
            _warn_and_continue(e)
            return None


class UpsampledSampler(torch.utils.data.Sampler):
    """Indices into a concatenation of sources, each drawn at its own rate (open_clip's
    --train-data-upsampling-factors for map-style data): an epoch is round(Σ factor_i · size_i) draws with
    replacement, sample j of source i weighted by factor_i, so source i gives factor_i · size_i samples per
    epoch on average. Seeded per epoch (`set_epoch`), so a resumed run sees the same order."""

    @staticmethod
    def check(sources: int, factors: list[float]) -> None:
        """ValueError unless `factors` holds one finite rate > 0 per source."""
        if sources != len(factors):
            raise ValueError(f"{len(factors)} upsampling factors for {sources} data sources: give one each")
        if not all(math.isfinite(f) and f > 0 for f in factors):
            raise ValueError(f"upsampling factors must be finite and > 0, got {factors}")

    def __init__(self, sizes: list[int], factors: list[float], seed: int = 0):
        self.check(len(sizes), factors)
        self.weights = torch.cat(
            [torch.full((n,), float(f), dtype=torch.float64) for n, f in zip(sizes, factors, strict=True)]
        )
        self.num_samples = max(1, round(sum(n * f for n, f in zip(sizes, factors, strict=True))))
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g).tolist()


def _warn_and_continue(exn) -> bool:
    warnings.warn(f"skipped a bad sample: {exn}", stacklevel=2)
    logger.warning("skipped a bad sample: %s", exn)
    return True


def splat_dataset(urls, shuffle: int = 0, resampled: bool = False, seed: int = 0):
    """A webdataset pipeline of decoded splat samples.

    Args:
        urls: shard paths (list, or a brace pattern string such as "out/{00000000..00000099}.tar").
        shuffle: sample shuffle buffer (0: keep order); shards are shuffled too when > 0.
        resampled: sample shards with replacement forever (DataComp's fixed-samples-seen regime).
    """
    import webdataset as wds

    urls = [str(u) for u in urls] if isinstance(urls, list | tuple) else str(urls)
    ds = wds.WebDataset(
        urls,
        resampled=resampled,
        shardshuffle=bool(shuffle) and not resampled,
        nodesplitter=wds.split_by_node,
        detshuffle=True,  # shard order depends on the epoch only: reproducible
        handler=_warn_and_continue,
    )
    if shuffle:
        ds = ds.shuffle(shuffle, rng=random.Random(seed))
    return ds.map(decode_sample, handler=_warn_and_continue)


def splat_loader(
    urls, batch_size: int, num_workers: int = 0, shuffle: int = 0, resampled: bool = False, seed: int = 0
):
    """A DataLoader of padded batches from splat shards (the last partial batch is kept)."""
    import webdataset as wds

    ds = splat_dataset(urls, shuffle=shuffle, resampled=resampled, seed=seed).batched(
        batch_size, collation_fn=collate_splats, partial=True
    )
    return wds.WebLoader(ds, batch_size=None, num_workers=num_workers)
