"""A small visual world that needs real vision: coloured shapes and written words on 64² images (the
miniature reproduction, scripts/mini_repro.sh).

A scene holds 1–4 objects (shape × colour × size at a position, never overlapping) and, in some scenes, a
word written on a white label. Everything is a pure function of a seed, so the same call gives the same
scene, image bytes and caption on every machine. This module holds the scenes, their images and captions
and the splits' scene streams; eval/mini/questions.py asks about them and eval/mini/data.py writes the
datasets. Splits: train, val (every choice of the miniature is made on it) and test (scored once, at the
end); val and test scenes share neither a signature nor a caption with train or with each other
(`content_keys`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "COLOURS",
    "KINDS",
    "NUMBERS",
    "SHAPES",
    "SIZE",
    "SIZES",
    "SPLIT_SEEDS",
    "WORDS",
    "Obj",
    "Scene",
    "caption",
    "clip_scenes",
    "content_keys",
    "label_size",
    "make_scene",
    "render",
    "scenes_for",
    "word_scenes",
    "zeroshot_scenes",
    "zeroshot_word_scenes",
]

SIZE = 64
SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (150, 60, 190),
    "orange": (245, 130, 20),
}
SIZES = {"small": 7, "large": 11}  # radius in pixels on the 64² canvas
LABEL = {"height": 14, "char": 8, "font": 11}  # the word label in pixels at label_scale 1
LABEL_SCALES = (0.5, 2.0)  # label_scale bounds: a label that fits the 64² canvas
WORDS = ("CAT", "SUN", "BOX", "GO", "TOP", "MAP", "RED", "ZIP", "OWL", "FOX", "HAT", "JAM")
KINDS = ("sqa", "text", "pope", "mme", "open", "gqa")
SHORT = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."
NUMBERS = ("zero", "one", "two", "three", "four")


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    x: int  # centre, pixels
    y: int

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass
class Scene:
    seed: int
    objects: list[Obj]
    word: str | None = None
    word_xy: tuple[int, int] | None = None  # label's top-left corner
    background: tuple[int, int, int] = (235, 235, 235)
    meta: dict = field(default_factory=dict)
    label_scale: float = 1.0  # the label's size against LABEL

    def signature(self) -> str:
        """Identity of the scene's content (with its caption, keeps the splits disjoint: `content_keys`)."""
        objs = sorted((o.shape, o.colour, o.size, o.x, o.y) for o in self.objects)
        return json.dumps([objs, self.word, self.word_xy, self.label_scale])

    def label_size(self) -> tuple[int, int]:
        """(width, height) of the word label in pixels."""
        return label_size(self.word or "", self.label_scale)


def label_size(word: str, scale: float = 1.0) -> tuple[int, int]:
    """(width, height) in pixels of the label that holds `word` at `scale`."""
    return round(LABEL["char"] * scale) * len(word) + 6, round(LABEL["height"] * scale)


def _overlaps(x, y, r, placed, label_box) -> bool:
    for o in placed:
        if (x - o.x) ** 2 + (y - o.y) ** 2 < (r + SIZES[o.size] + 3) ** 2:
            return True
    if label_box is not None:
        x0, y0, x1, y1 = label_box
        if x + r + 2 > x0 and x - r - 2 < x1 and y + r + 2 > y0 and y - r - 2 < y1:
            return True
    return False


def _check_label_scale(value: float, name: str = "label_scale") -> None:
    """ValueError unless `value` lies in LABEL_SCALES (NaN does not)."""
    if not LABEL_SCALES[0] <= value <= LABEL_SCALES[1]:
        raise ValueError(
            f"{name} must lie in {list(LABEL_SCALES)} (a label that fits the 64² canvas), not {value}"
        )


def make_scene(
    seed: int, text_prob: float = 0.35, num_objects: int | None = None, label_scale: float = 1.0
) -> Scene:
    """The scene of `seed`: 1–4 (or `num_objects`, 0 for a label alone) non-overlapping objects with distinct
    (colour, shape), maybe a word on a label `label_scale` × the default size."""
    _check_label_scale(label_scale)
    rng = random.Random(seed)
    word = word_xy = None
    label_box = None
    if rng.random() < text_prob:
        word = rng.choice(WORDS)
        w, h = label_size(word, label_scale)
        word_xy = (rng.randint(2, SIZE - w - 2), rng.choice([2, SIZE - h - 2]))
        label_box = (word_xy[0], word_xy[1], word_xy[0] + w, word_xy[1] + h)
    n = rng.randint(1, 4) if num_objects is None else num_objects
    objects: list[Obj] = []
    used = set()
    for _ in range(200):
        if len(objects) == n:
            break
        shape, colour, size = rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(SIZES))
        if (shape, colour) in used:
            continue
        r = SIZES[size]
        x, y = rng.randint(r + 1, SIZE - r - 2), rng.randint(r + 1, SIZE - r - 2)
        if _overlaps(x, y, r, objects, label_box):
            continue
        # left/right questions need a clear horizontal order
        if any(abs(x - o.x) < 6 for o in objects):
            continue
        objects.append(Obj(shape, colour, size, x, y))
        used.add((shape, colour))
    shade = rng.randint(225, 245)
    return Scene(seed, objects, word, word_xy, (shade, shade, shade), label_scale=label_scale)


def render(scene: Scene, size: int = SIZE) -> Image.Image:
    """The scene as an RGB image (drawn at 4× and downsampled, so edges are anti-aliased)."""
    k = 4
    im = Image.new("RGB", (SIZE * k, SIZE * k), scene.background)
    d = ImageDraw.Draw(im)
    for o in scene.objects:
        r, x, y, c = SIZES[o.size] * k, o.x * k, o.y * k, COLOURS[o.colour]
        if o.shape == "circle":
            d.ellipse([x - r, y - r, x + r, y + r], fill=c)
        elif o.shape == "square":
            s = int(r * 0.85)
            d.rectangle([x - s, y - s, x + s, y + s], fill=c)
        elif o.shape == "triangle":
            d.polygon([(x, y - r), (x + r, y + int(r * 0.8)), (x - r, y + int(r * 0.8))], fill=c)
        else:  # diamond
            d.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=c)
    if scene.word:
        x0, y0 = scene.word_xy
        w, h = scene.label_size()
        d.rectangle(
            [x0 * k, y0 * k, (x0 + w) * k, (y0 + h) * k], fill=(255, 255, 255), outline=(0, 0, 0), width=k
        )
        font = ImageFont.load_default(size=LABEL["font"] * scene.label_scale * k)
        d.text(((x0 + 3) * k, (y0 + 1) * k), scene.word, fill=(0, 0, 0), font=font)
    im = im.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return im if size == SIZE else im.resize((size, size), Image.Resampling.LANCZOS)


def _list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def caption(scene: Scene) -> str:
    """A left-to-right description: 'a large red circle, a small blue square and the word CAT.'"""
    objs = sorted(scene.objects, key=lambda o: o.x)
    parts = [f"a {o.size} {o.colour} {o.shape}" for o in objs]
    if scene.word:
        parts.append(f"the word {scene.word}")
    text = _list(parts)
    return text[0].upper() + text[1:] + "."


def content_keys(scenes: list[Scene]) -> set[str]:
    """The scenes' signatures and captions: a held-out scene may share neither with another split (two scenes
    with one caption ask nearly the same questions, whatever the positions)."""
    return {key for s in scenes for key in (s.signature(), caption(s))}


def _extra_scenes(base: int, n: int, exclude: set[str], **kind) -> list[Scene]:
    """The first n scenes `make_scene(base + k, **kind)`, k = 0, 1, …, whose signature and caption are
    not in `exclude` (see `content_keys`)."""
    out, k = [], 0
    while len(out) < n:
        if k >= 1000 * (n + 100):  # every candidate excluded: the excluded set covers what this kind can draw
            raise ValueError(f"only {len(out)} of {n} scenes found outside the excluded ones in {k} draws")
        s = make_scene(base + k, **kind)
        k += 1
        if s.signature() not in exclude and caption(s) not in exclude:
            out.append(s)
    return out


SPLIT_SEEDS = {"train": 0, "test": 10_000_000, "val": 70_000_000}  # disjoint seed ranges per split


def scenes_for(
    split: str, n: int, seed: int = 0, exclude: set[str] | None = None, label_scale: float = 1.0
) -> list[Scene]:
    """n scenes of a split from its own seed range, skipping any whose signature or caption is in `exclude`
    (`content_keys` of the other splits)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, not {split!r}")
    base = SPLIT_SEEDS[split] + seed * 100_000_000
    return _extra_scenes(base, n, exclude or set(), label_scale=label_scale)


def word_scenes(n: int, seed: int = 0, label_scale: float = 1.0, purpose: str = "clip") -> list[Scene]:
    """`n` scenes holding a word label and nothing else (caption "The word CAT."), from a seed range of
    their own per `purpose` ("clip": the teacher's pairs, "pretrain": LLaVA's stage-1 captions).

    A caption that names shapes and colours is matched by them, so neither the contrastive teacher nor
    the projector pretraining needs the word; captions that differ only in the word make both learn it."""
    base = {"clip": 40_000_000, "pretrain": 50_000_000}[purpose] + seed * 100_000_000
    return _extra_scenes(base, n, set(), text_prob=1.0, num_objects=0, label_scale=label_scale)


def clip_scenes(
    train: list[Scene],
    single: int,
    seed: int = 0,
    exclude: set[str] | None = None,
    words: int = 0,
    label_scale: float = 1.0,
) -> list[Scene]:
    """The CLIP teacher's image-text pairs: the train scenes plus `single` one-object scenes and `words`
    label-only scenes (`word_scenes`), shuffled.

    With captions alone a contrastive batch is told apart by colours, sizes and words, so a small CLIP
    learns colour at once and shape only after many epochs. One-object scenes put captions that differ only
    in shape into every batch.
    `exclude`: signatures never to use (the test and zero-shot scenes)."""
    exclude = exclude or set()
    base = 30_000_000 + seed * 100_000_000
    extra = _extra_scenes(base, single, exclude, text_prob=0.0, num_objects=1)
    extra += word_scenes(words, seed, label_scale, "clip")
    out = list(train) + extra
    random.Random(seed).shuffle(out)
    return out


ZS_TEMPLATES = ["a {c}.", "a picture of a {c}.", "a {c} on a grey background."]


ZS_CLASSES = [f"{c} {s}" for c in COLOURS for s in SHAPES]


ZW_TEMPLATES = ["the word {c}."]  # the teacher's caption of a label-only image ("The word CAT.")


def _balanced(base: int, per_class: int, classes: list[str], label, exclude=None, **kind) -> list[Scene]:
    """`per_class` scenes `make_scene(base + k, **kind)` of each class, in seed order; `label(scene)` names
    its class; excluded signatures are skipped."""
    counts = dict.fromkeys(classes, 0)
    out, k = [], 0
    while min(counts.values()) < per_class:
        scene = make_scene(base + k, **kind)
        k += 1
        name = label(scene)
        if counts[name] >= per_class or (exclude and scene.signature() in exclude):
            continue
        counts[name] += 1
        out.append(scene)
    return out


def zeroshot_scenes(per_class: int = 10, seed: int = 0, exclude: set[str] | None = None) -> list[Scene]:
    """`per_class` one-object scenes of each of the 24 classes '<colour> <shape>'."""
    base = 20_000_000 + seed * 100_000_000
    return _balanced(
        base, per_class, ZS_CLASSES, lambda s: s.objects[0].name, exclude, text_prob=0.0, num_objects=1
    )


def zeroshot_word_scenes(per_class: int = 10, seed: int = 0, label_scale: float = 1.0) -> list[Scene]:
    """`per_class` label-only scenes of each of the 12 words, from a seed range of their own (the reading
    zero-shot: can an image tower name the word, with "the word {c}." as the class prompt)."""
    base = 60_000_000 + seed * 100_000_000
    return _balanced(
        base, per_class, list(WORDS), lambda s: s.word, text_prob=1.0, num_objects=0, label_scale=label_scale
    )
