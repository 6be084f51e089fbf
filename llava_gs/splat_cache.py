"""Photos → splat sets through a content-addressed cache, for the chat CLI and the lmms-eval plugin.

The key is the SHA-256 of the image as placed on the fitting canvas (so the same photo given as a path, a
PIL image or an array hits the same entry) together with every fitting setting (the processor's `fit`
resolved, with the identity of the learned init's weights in place of their path, canvas and resize), so
entries fitted otherwise are never mixed up. Misses are fitted together in one batched
`fit_images` call with a progress bar and written as `<key>.gs.npy` under a temporary name then renamed,
so an interrupted run never leaves a half-written entry. What is returned is always the stored fp16 form,
so a first run and a cached run see identical splats.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from gs_encoder.splat_io import SplatFileError, as_stored, load_splats, save_splats

from .processing_llava_gs import GaussianProcessor

__all__ = ["SplatCache", "default_cache_dir"]


def default_cache_dir() -> Path:
    """$GSV_SPLAT_CACHE, else $XDG_CACHE_HOME/gaussianvision/splats (~/.cache/...)."""
    if os.environ.get("GSV_SPLAT_CACHE"):
        return Path(os.environ["GSV_SPLAT_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "gaussianvision" / "splats"


class SplatCache:
    """get(images) → one [N, 8] splat set per image, fitted once per (content, settings)."""

    def __init__(self, image_processor: GaussianProcessor, folder: str | os.PathLike | None = None):
        self.proc = image_processor
        self.folder = Path(folder) if folder is not None else None
        self.memory: dict[str, torch.Tensor] = {}
        self.hits = self.misses = 0

    def _settings(self) -> str:
        p = self.proc
        cfg = p.fit_config()
        fit = {k: getattr(cfg, k) for k in p.fit if k != "init_weights"}
        fit["lr_warmup"] = cfg.warmup_iters
        return json.dumps(
            {**fit, "weights": p.init_weights_id(), "canvas": p.canvas, "resize": p.resize}, sort_keys=True
        )

    def key(self, canvas: torch.Tensor) -> str:
        h = hashlib.sha256(canvas.contiguous().numpy().tobytes())
        h.update(self._settings().encode())
        return h.hexdigest()[:40]

    def _path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / key[:2] / f"{key}.gs.npy"

    def _lookup(self, key: str) -> torch.Tensor | None:
        if key in self.memory:
            return self.memory[key]
        path = self._path(key)
        if path is not None and path.exists():
            try:
                splats = load_splats(path)
            except SplatFileError:
                return None  # a damaged entry is refitted and overwritten
            self.memory[key] = splats
            return splats
        return None

    def get(self, images: list, progress: bool = True) -> list[torch.Tensor]:
        """Images (paths, PIL images, arrays, [3, H, W] tensors) → splat sets, fitting the misses in one batch."""
        canvases = [self.proc.to_canvas(im) for im in images]
        keys = [self.key(c) for c in canvases]
        out: list[torch.Tensor | None] = [self._lookup(k) for k in keys]
        todo = {}  # key → canvas, deduplicated
        for k, c, s in zip(keys, canvases, out, strict=True):
            if s is None:
                todo.setdefault(k, c)
        self.hits += sum(s is not None for s in out)
        self.misses += len(todo)
        if todo:
            fitted = self.proc.fit_canvases(torch.stack(list(todo.values())), progress=progress)
            for k, splats in zip(todo, fitted, strict=True):
                stored = as_stored(splats.detach().cpu())
                self.memory[k] = stored
                path = self._path(k)
                if path is not None:
                    save_splats(path, stored, meta={"settings": self._settings()})
        return [self.memory[k] if s is None else s for k, s in zip(keys, out, strict=True)]
