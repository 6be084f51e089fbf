"""Shared pieces of the benchmarks: the photographs, timing, and writing results with machine and date."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gs_encoder.image_io import to_canvas
from gs_encoder.report import machine_info, markdown_table

RESULTS = Path(__file__).resolve().parents[1] / "results"
# The benchmarks' secondary baseline: FitConfig's earlier default optimiser (smaller step sizes, a cosine over
# the whole fit down to 5%, β2 = 0.999, no warm-up; docs/fitting.md says why the default moved on)
BASELINE_OPTIMISER = {
    "lr_xy": 0.1,
    "lr_chol": 0.04,
    "lr_rgb": 0.02,
    "lr_final": 0.05,
    "lr_decay": 1.0,
    "betas": (0.9, 0.999),
    "lr_warmup": 0,
}
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
# scikit-image 0.26's PHOTOS, decoded (rocket is a JPEG there) and stored as lossless PNG at full
# resolution: the same uint8 arrays as skimage.data.<name>() (tests/eval/test_sample_photos.py checks
# it), so the benchmarks and the tests need no scikit-image, e.g. on a bare GPU machine
PHOTO_DIR = Path(__file__).resolve().parent / "photos"


def sample_photo(name: str) -> np.ndarray:
    """One of scikit-image's colour photographs as uint8 [H, W, 3]: the committed copy in
    eval/bench/photos/ for PHOTOS, scikit-image itself for any other name.

    Raises ValueError naming the photo when neither is available.
    """
    path = PHOTO_DIR / f"{name}.png"
    if path.exists():
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    try:
        import skimage.data
    except ImportError:
        raise ValueError(
            f"photo {name!r}: not among the committed copies in {PHOTO_DIR} ({', '.join(PHOTOS)}) and "
            "scikit-image is not installed (pip install scikit-image)"
        ) from None
    if not callable(getattr(skimage.data, name, None)):
        raise ValueError(f"photo {name!r}: skimage.data has no such image")
    return getattr(skimage.data, name)()


def photos(size: int = 224, names=PHOTOS, mode: str = "crop") -> torch.Tensor:
    """scikit-image's colour photographs on the S×S canvas, [B, 3, S, S].

    `crop` (CLIP's centre crop) so no flat padding band makes the fit look easier than it is.
    """
    return torch.stack([to_canvas(sample_photo(n) / 255.0, size, mode) for n in names])


def timed(fn, repeat: int, warmup: int = 1, best: bool = False) -> float:
    """Median (or with `best`, the shortest) seconds of `fn()` over `repeat` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) if best else sorted(times)[len(times) // 2]


def write_results(
    name: str,
    title: str,
    sections: list[tuple[str, list[str], list[list]]],
    data: dict,
    notes: str = "",
    out_dir: Path = RESULTS,
    machine: dict | None = None,
) -> Path:
    """Write eval/results/<name>.json and <name>.md: each section is (heading, headers, rows). `machine`:
    the machine_info() of the run the data come from when it is not this process (tables rebuilt later)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    info = machine or machine_info()
    payload = {"benchmark": name, "machine": info, **data}
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        f"# {title}",
        "",
        f"Measured {info['date']} on {info['cpu']} ({info['torch_threads']} torch threads"
        + (f", GPU {info['gpu']}" if info["gpu"] else ", no GPU")
        + f"), torch {info['torch']}, commit {info['git']}.",
        "",
    ]
    if notes:
        lines += [notes.strip(), ""]
    for heading, headers, rows in sections:
        lines += [f"## {heading}", "", markdown_table(headers, rows), ""]
    (out_dir / f"{name}.md").write_text("\n".join(lines))
    return out_dir / f"{name}.md"
