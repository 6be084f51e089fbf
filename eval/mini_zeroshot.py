"""A tiny offline zero-shot classification set in CLIP_benchmark's local webdataset layout.

    python -m eval.mini_zeroshot ROOT [--per-class 4] [--size 96]

Classes are scikit-image's bundled photographs; each sample is a seeded random crop (with flips) of its
class's photo. Layout: ROOT/test/0.tar (<key>.png + <key>.cls), ROOT/test/nshards.txt,
ROOT/classnames.txt, ROOT/zeroshot_classification_templates.txt. Use it as
`--datasets wds/mini --dataset-root ROOT`.
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from cuda_ext.files import atomic_path
from gs_encoder.shards import tar_add

CLASSES = {  # class name → scikit-image photograph
    "astronaut": "astronaut",
    "cat": "chelsea",
    "coffee cup": "coffee",
    "rocket": "rocket",
    "motorcycle": "stereo_motorcycle",
    "galaxy": "hubble_deep_field",
}
TEMPLATES = ["a photo of a {c}.", "a picture of a {c}.", "a close-up photo of the {c}."]


def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    return img[0] if isinstance(img, tuple) else img


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_classification(root: str | Path, samples, classnames: list[str], templates: list[str]) -> Path:
    """CLIP_benchmark's local layout from (key, png bytes, label) samples; written to a temp tar, renamed."""
    root = Path(root)
    (root / "test").mkdir(parents=True, exist_ok=True)
    with atomic_path(root / "test" / "0.tar") as tmp, tarfile.open(tmp, "w") as tf:
        for key, data, label in samples:
            tar_add(tf, f"{key}.png", data)
            tar_add(tf, f"{key}.cls", str(label).encode())
    (root / "test" / "nshards.txt").write_text("1\n")
    (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    return root


def build(root: str | Path, per_class: int = 4, size: int = 96, seed: int = 0) -> Path:
    """Write the dataset under root; returns root."""
    rng = np.random.default_rng(seed)

    def samples():
        for label, photo in enumerate(CLASSES.values()):
            img = _photo(photo)
            h, w = img.shape[:2]
            for k in range(per_class):
                side = int(min(h, w) * rng.uniform(0.6, 1.0))
                top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
                crop = img[top : top + side, left : left + side]
                if rng.random() < 0.5:
                    crop = crop[:, ::-1]
                im = Image.fromarray(np.ascontiguousarray(crop)).resize((size, size))
                yield f"{label:02d}{k:04d}", png_bytes(im), label

    return write_classification(root, samples(), list(CLASSES), TEMPLATES)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root")
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--size", type=int, default=96)
    args = ap.parse_args(argv)
    print(f"wrote {build(args.root, args.per_class, args.size)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
