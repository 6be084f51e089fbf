"""Build the offline mini versions of the six LLaVA-1.5 benchmarks (eval/tasks/mini/*.parquet).

    python -m eval.tasks.build_mini_tasks        # rewrites the committed parquet files

Each file has the columns of the real lmms-eval dataset (ScienceQA-IMG, TextVQA, POPE, MME, MM-Vet, GQA),
5–10 rows, images from the photographs shipped in scikit-image (and, for reading, words drawn on them),
downscaled to ≤ 192 px JPEG so the files stay small. The questions are about what really is in the
photos; their answers are the ground truth the official scorers compare with. The YAMLs beside them are
the official task configs pointed at these files (`lmms-eval --include_path eval/tasks/mini`).
Deterministic: the same bytes on every run.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from cuda_ext.files import atomic_path

OUT = Path(__file__).resolve().parent / "mini"
MAX_SIDE = 192


def _photo(name: str) -> Image.Image:
    import skimage.data

    im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return im


def _sign(word: str, fg: str, bg: str, photo: str | None = None) -> Image.Image:
    """A word on a plain sign, pasted in the middle of a photo (or on a grey wall)."""
    base = _photo(photo) if photo else Image.new("RGB", (MAX_SIDE, 128), (128, 128, 128))
    draw = ImageDraw.Draw(base)
    font = ImageFont.load_default(size=max(18, base.width // max(4, len(word) + 1)))
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    w, h = right - left, bottom - top
    x0, y0 = (base.width - w) // 2, (base.height - h) // 2
    draw.rectangle([x0 - 8, y0 - 8 + top, x0 + w + 8, y0 + h + 8 + top], fill=bg)
    draw.text((x0 - left, y0), word, fill=fg, font=font)
    return base


def _jpeg(im: Image.Image) -> dict:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85, optimize=True)
    return {"bytes": buf.getvalue(), "path": None}


def scienceqa() -> dict:
    rows = [
        ("chelsea", "Which animal is in the picture?", ["dog", "cat", "bird"], 1),
        ("coffee", "Which drink is shown?", ["coffee", "orange juice", "milk"], 0),
        (
            "astronaut",
            "What kind of suit is the person wearing?",
            ["a swimsuit", "a spacesuit", "a kimono"],
            1,
        ),
        ("rocket", "Which vehicle is shown?", ["a bicycle", "a boat", "a rocket"], 2),
        (
            "hubble_deep_field",
            "What does the picture show?",
            ["galaxies in space", "a forest", "a city street"],
            0,
        ),
        ("astronaut", "Which flag is behind the person?", ["United States", "Japan", "Brazil"], 0),
        ("coffee", "What is the cup standing on?", ["a book", "a saucer", "a shoe"], 1),
        ("chelsea", "Which colour is closest to the animal's fur?", ["blue", "green", "orange-brown"], 2),
    ]
    return {
        "image": [_jpeg(_photo(p)) for p, *_ in rows],
        "question": [q for _, q, _, _ in rows],
        "choices": [c for _, _, c, _ in rows],
        "answer": [a for *_, a in rows],
        "hint": ["" for _ in rows],
    }


SIGNS = [  # word, text colour, sign colour, photo behind
    ("STOP", "white", "red", "rocket"),
    ("CAFE", "black", "yellow", "coffee"),
    ("OPEN", "white", "green", "chelsea"),
    ("EXIT", "white", "blue", None),
    ("2026", "black", "white", "astronaut"),
    ("GAUSS", "yellow", "black", None),
]


def textvqa() -> dict:
    return {
        "image": [_jpeg(_sign(w, fg, bg, p)) for w, fg, bg, p in SIGNS],
        "question": ["What is written on the sign?"] * len(SIGNS),
        "question_id": list(range(len(SIGNS))),
        "answers": [[w.lower()] * 10 for w, *_ in SIGNS],
        "answer": [w.lower() for w, *_ in SIGNS],
        "ocr_tokens": [[w] for w, *_ in SIGNS],
    }


def pope() -> dict:
    rows = [
        ("chelsea", "cat", "yes"),
        ("chelsea", "car", "no"),
        ("coffee", "cup", "yes"),
        ("coffee", "dog", "no"),
        ("rocket", "rocket", "yes"),
        ("rocket", "horse", "no"),
        ("astronaut", "person", "yes"),
        ("astronaut", "giraffe", "no"),
        ("hubble_deep_field", "star", "yes"),
        ("hubble_deep_field", "bicycle", "no"),
    ]
    return {
        "image": [_jpeg(_photo(p)) for p, *_ in rows],
        "question": [f"Is there a {o} in the image?" for _, o, _ in rows],
        "answer": [a for *_, a in rows],
        "question_id": [str(i) for i in range(len(rows))],
        "category": ["random"] * len(rows),
    }


def mme() -> dict:
    yes_no = " Please answer yes or no."
    pairs = [  # (image, category, yes-question, no-question): MME scores questions in pairs
        (_photo("chelsea"), "existence", "Is there a cat in this image?", "Is there a dog in this image?"),
        (_photo("rocket"), "existence", "Is there a rocket in this image?", "Is there a ship in this image?"),
        (_photo("chelsea"), "color", "Is the cat in the image orange?", "Is the cat in the image blue?"),
        (_photo("astronaut"), "color", "Is the suit in the image orange?", "Is the suit in the image green?"),
        (_sign("STOP", "white", "red", "rocket"), "OCR", "Does the sign say STOP?", "Does the sign say GO?"),
        (
            _photo("coffee"),
            "commonsense_reasoning",
            "Is this drink usually served hot?",
            "Is this drink usually served frozen?",
        ),
    ]
    rows = []
    for i, (im, cat, yes_q, no_q) in enumerate(pairs):
        rows += [(im, cat, yes_q + yes_no, "Yes", f"{cat}/{i}"), (im, cat, no_q + yes_no, "No", f"{cat}/{i}")]
    return {
        "image": [_jpeg(r[0]) for r in rows],
        "category": [r[1] for r in rows],
        "question": [r[2] for r in rows],
        "answer": [r[3] for r in rows],
        "question_id": [r[4] for r in rows],
    }


def mmvet() -> dict:
    rows = [
        (_photo("chelsea"), "What animal is this, and what colour is its fur?", "cat<AND>orange", "rec"),
        (_sign("STOP", "white", "red", "rocket"), "What does the sign say?", "STOP", "ocr"),
        (_photo("coffee"), "What drink is in the cup?", "coffee<OR>latte<OR>cappuccino", "rec"),
        (_photo("astronaut"), "What is the job of the person in the photo?", "astronaut", "rec,know"),
        (_sign("2026", "black", "white", "astronaut"), "What number is written on the sign?", "2026", "ocr"),
        (_photo("rocket"), "What is this vehicle used for?", "space<OR>launch<OR>spaceflight", "rec,know"),
    ]
    return {
        "image": [_jpeg(r[0]) for r in rows],
        "question": [r[1] for r in rows],
        "answer": [r[2] for r in rows],
        "capability": [r[3] for r in rows],
        "question_id": [f"v1_{i}" for i in range(len(rows))],
    }


def gqa() -> dict:
    rows = [
        ("chelsea", "What animal is this?", "cat"),
        ("chelsea", "What colour is the cat?", "orange"),
        ("coffee", "What is in the cup?", "coffee"),
        ("coffee", "Is the cup on a saucer?", "yes"),
        ("astronaut", "What colour is the suit?", "orange"),
        ("rocket", "What is the tall white object?", "rocket"),
        ("rocket", "Is it day or night?", "night"),
        ("hubble_deep_field", "What fills the picture?", "galaxies"),
        ("rocket", "Is there a cat in the picture?", "no"),
    ]
    return {
        "image": [_jpeg(_photo(p)) for p, *_ in rows],
        "question": [q for _, q, _ in rows],
        "answer": [a for *_, a in rows],
        "id": [str(i) for i in range(len(rows))],
        "imageId": [p for p, *_ in rows],
    }


BUILDERS = {
    "scienceqa_img": scienceqa,
    "textvqa_val": textvqa,
    "pope": pope,
    "mme": mme,
    "mmvet": mmvet,
    "gqa": gqa,
}


def build(out: Path = OUT) -> dict[str, int]:
    import datasets

    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, fn in BUILDERS.items():
        ds = datasets.Dataset.from_dict(fn()).cast_column("image", datasets.Image())
        with atomic_path(out / f"{name}.parquet") as tmp:
            ds.to_parquet(str(tmp))
        counts[name] = len(ds)
    return counts


if __name__ == "__main__":
    for name, n in build().items():
        print(f"{name}: {n} samples → {OUT / (name + '.parquet')}")
