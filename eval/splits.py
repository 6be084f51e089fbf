"""The data splits that the project's fitting figures rest on, declared once.

- **train**: what the learned initialiser trains on (`gs_encoder.train_init`): scikit-image's photographs
  of `TRAIN_PHOTOS` and procedural images, or the user's `--images` folders; its validation crops come
  from the same generator under another seed.
- **tuning** (`TUNING`): every fitting default, every shipped weight file and every benchmark choice is
  made on these images (or on train_init's validation crops): the four scikit-image photographs the
  project has always benchmarked on, and one image of each other kind.
- **sealed** (`SEALED`): the test set of real images of mixed content. No choice is made on it; a
  benchmark reports its rows as they come, and a target that fails there is reported as failed.

The images are committed as PNGs: 224² ones in eval/images/ (made by eval/images/make.py from the
sources named below) and the photographs at their own size in eval/bench/photos/. Splits are disjoint
by content, not by name (tests/eval/test_splits.py compares fingerprints, gs_encoder.image_io.fingerprint);
train_init drops sealed pictures found in `--images` folders, by the fingerprints in
gs_encoder/sealed_fingerprints.txt that `write_sealed_fingerprints` writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cuda_ext.files import atomic_write_text
from gs_encoder.image_io import fingerprint, to_canvas

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "eval" / "images"
PHOTOS = ROOT / "eval" / "bench" / "photos"
FINGERPRINTS = ROOT / "gs_encoder" / "sealed_fingerprints.txt"
KINDS = ("photo", "greyscale", "low-light", "text", "chart", "diagram", "screenshot")

MATE = "Debian's mate-backgrounds 1.26.0-1, nature/{} (© {}; GPL-2+)"
SKLEARN = "scikit-learn's sample image {} (Flickr, © {}; CC BY 2.0)"
SKIMAGE = "scikit-image's data.{}() ({})"
OURS = "rendered by eval/images/make.py ({}); the project's own, Apache-2.0 like the code"


@dataclass(frozen=True)
class Picture:
    name: str
    kind: str
    file: Path
    source: str

    def load(self) -> np.ndarray:
        """uint8 [H, W, 3] as committed (224² for eval/images/, the original size for the photographs)."""
        with Image.open(self.file) as im:
            return np.asarray(im.convert("RGB"))


def _p(split: str, name: str, kind: str, source: str) -> Picture:
    return Picture(name, kind, IMAGES / split / f"{name}.png", source)


TUNING = (
    Picture("astronaut", "photo", PHOTOS / "astronaut.png", SKIMAGE.format("astronaut", "NASA, public domain")),
    Picture("chelsea", "photo", PHOTOS / "chelsea.png", SKIMAGE.format("chelsea", "Stefan van der Walt, CC0")),
    Picture("coffee", "photo", PHOTOS / "coffee.png", SKIMAGE.format("coffee", "Rachel Michetti, CC0")),
    Picture("rocket", "photo", PHOTOS / "rocket.png", SKIMAGE.format("rocket", "SpaceX, public domain")),
    _p("tuning", "freshflower_dark", "low-light",
       MATE.format("FreshFlower.jpg", "2005 Jens Ansorg") + ", darkened to 5% light with sensor noise"),
    _p("tuning", "notes", "text", OURS.format("a page of text")),
    _p("tuning", "chart_pie", "chart", OURS.format("a matplotlib pie chart")),
    _p("tuning", "ui_login", "screenshot", OURS.format("Chromium's screenshot of a local sign-in page")),
)  # fmt: skip

SEALED = (
    _p("sealed", "garden", "photo", MATE.format("Garden.jpg", "2008 Charles Barbin")),
    _p("sealed", "aqua", "photo", MATE.format("Aqua.jpg", "2008 Charles Barbin")),
    _p("sealed", "ladybird", "photo", MATE.format("LadyBird.jpg", "2008 Charles Barbin")),
    _p("sealed", "storm", "photo", MATE.format("Storm.jpg", "2008 Sergey Nazarov")),
    _p("sealed", "meadow", "photo", MATE.format("GreenMeadow.jpg", "2005 Timothy Schellhase, 2008 Lapo Calamandrei")),
    _p("sealed", "raindrops", "photo", MATE.format("RainDrops.jpg", '2008 "blackcombwhistler07"')),
    _p("sealed", "wood", "photo", MATE.format("Wood.jpg", "2008 Jean-François Fortin Tam")),
    _p("sealed", "china", "photo", SKLEARN.format("china.jpg", "danielbuechele")),
    _p("sealed", "hopper_grey", "greyscale",
       "matplotlib's sample_data/grace_hopper.jpg (U.S. Navy, public domain), in grey"),
    _p("sealed", "mri_grey", "greyscale", "matplotlib's sample_data/s1045.ima.gz (an MRI slice; matplotlib's licence)"),
    _p("sealed", "flower_dark", "low-light",
       SKLEARN.format("flower.jpg", "vultilion") + ", darkened to 6% light with sensor noise"),
    _p("sealed", "yellowflower_dark", "low-light",
       MATE.format("YellowFlower.jpg", "2008 Charles Barbin") + ", darkened to 4% light with sensor noise"),
    _p("sealed", "page", "text", OURS.format("a page of prose")),
    _p("sealed", "report", "text", OURS.format("a document with a table")),
    _p("sealed", "chart_bars", "chart", OURS.format("a matplotlib bar and line chart")),
    _p("sealed", "diagram", "diagram", OURS.format("a block diagram drawn with matplotlib")),
    _p("sealed", "ui_settings", "screenshot", OURS.format("Chromium's screenshot of a local settings form")),
    _p("sealed", "ui_files", "screenshot", OURS.format("Chromium's screenshot of a local table of files")),
)  # fmt: skip

SPLITS = {"tuning": TUNING, "sealed": SEALED}


def pictures(split: str) -> tuple[Picture, ...]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return SPLITS[split]


def images(split: str, size: int = 224) -> tuple[list[str], torch.Tensor]:
    """(names, [B, 3, size, size] in [0, 1]) of a split's pictures on the fitting canvas (centre crop)."""
    pics = pictures(split)
    return [p.name for p in pics], torch.stack([to_canvas(p.load() / 255.0, size, "crop") for p in pics])


def write_sealed_fingerprints(originals: list[np.ndarray] = ()) -> Path:
    """Write gs_encoder/sealed_fingerprints.txt: the sealed pictures' fingerprints and those of the
    originals they were made from (eval/images/make.py passes them)."""
    lines = [f"{fingerprint(p.load())} {p.name}" for p in SEALED]
    lines += [f"{fingerprint(a)} original of a sealed picture" for a in originals]
    atomic_write_text(
        FINGERPRINTS,
        "# Fingerprints (gs_encoder.image_io.fingerprint) of the sealed test pictures of eval/splits.py and of\n"
        "# the originals they were made from; train_init leaves matching images out. Written by eval/images/make.py.\n"
        + "\n".join(lines)
        + "\n",
    )
    return FINGERPRINTS


def write_overview(out: Path = IMAGES) -> Path:
    """eval/images/README.md (every picture: split, kind, source) and contact.png (all of them, labelled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pics = [("tuning", p) for p in TUNING] + [("sealed", p) for p in SEALED]
    cols = 6
    fig, axes = plt.subplots(-(-len(pics) // cols), cols, figsize=(2 * cols, 2.15 * -(-len(pics) // cols)))
    for ax in axes.flat:
        ax.axis("off")
    for ax, (split, p) in zip(axes.flat, pics, strict=False):
        ax.imshow(to_canvas(p.load() / 255.0, 224, "crop").permute(1, 2, 0).numpy())
        ax.set_title(
            f"{split}: {p.name}\n({p.kind})", fontsize=8, color="#8b0000" if split == "sealed" else "black"
        )
    fig.tight_layout()
    fig.savefig(out / "contact.png", dpi=80)
    plt.close(fig)
    lines = [
        "# Fitting images: the tuning and sealed test splits",
        "",
        "Regenerate this page and contact.png: `python -m eval.splits`; the images themselves: "
        "`python -m eval.images.make SOURCES_DIR` (its docstring says where the sources come from). "
        "Declared in eval/splits.py, which says what each split may be used for.",
        "",
        "![every picture of both splits](contact.png)",
        "",
        "| split | name | kind | file | source and licence |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {split} | {p.name} | {p.kind} | {p.file.relative_to(ROOT)} | {p.source} |" for split, p in pics
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    return out / "README.md"


if __name__ == "__main__":
    print(f"wrote {write_overview()} and {IMAGES / 'contact.png'}")
