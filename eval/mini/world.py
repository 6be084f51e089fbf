"""A small visual world that needs real vision: coloured shapes and written words on 64² images, with
captions and questions of the six LLaVA-1.5 benchmark kinds (the miniature reproduction, scripts/mini_repro.sh).

A scene holds 1–4 objects (shape × colour × size at a position, never overlapping) and, in some scenes, a
word written on a white label. Everything is a pure function of a seed, so the same call gives the same
scene, image bytes, caption and questions on every machine. Question kinds, each answerable from the image
alone and checked against the scene description by the tests:

- `sqa`    multiple choice (ScienceQA-IMG style): "Which shape is red?" + lettered options → a letter;
- `text`   reading (TextVQA style): "What word is written in the image?" → the word;
- `pope`   object existence yes/no (POPE style), balanced: "Is there a blue square in the image?";
- `mme`    perception yes/no (MME style), asked in Yes/No pairs on colour, count and position;
- `open`   open answers (MM-Vet style): "What shapes are in the image?" → "circle<AND>square";
- `gqa`    compositional (GQA style): "What colour is the shape left of the square?" → "red".

    python -m eval.mini.world --out data/mini --train 4000 --val 500 --test 500
Splits: train, val (every choice of the miniature is made on it) and test (scored once, at the end); val and
test scenes share neither a signature nor a caption with train or with each other (`content_keys`).
Writes per split: images/<split>/ (PNG; label-only caption images in images/<split>_words/), <split>_pretrain.json (captions, LLaVA plain format),
<split>_finetune.json (the questions as vicuna_v1 dialogues, see `dialogues`), <split>_reading.json (with
--finetune-words: the label-only images asked their word, also in <split>_finetune.json), <split>_questions.json (with kind and answer),
<split>_scenes.jsonl, blank.png with train_pretrain_blank.json / train_finetune_blank.json (the train
split with every image replaced by that one blank image: the blind floor's data), shards/test-NNNN.tar (png + caption) and shards/clip-NNNN.tar (the CLIP teacher's pairs: the train
scenes plus as many one-object scenes, see `clip_scenes`); zeroshot/ (24 classes "<colour> <shape>" in
CLIP_benchmark's layout), zeroshot_words/ (label-only scenes, the 12 words as classes) and classes.json.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from cuda_ext.files import atomic_path, atomic_write_text

__all__ = [
    "BLANK",
    "COLOURS",
    "KINDS",
    "SHAPES",
    "Obj",
    "Scene",
    "answer_style",
    "caption",
    "clip_scenes",
    "content_keys",
    "dialogue_turns",
    "dialogues",
    "label_size",
    "make_scene",
    "questions",
    "reading_question",
    "render",
    "scenes_for",
    "with_reading",
    "word_scenes",
    "write_blank_image",
    "write_blind",
    "write_split",
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


def _check_read_words(value: int, limit: int, name: str = "read_words", limit_name: str = "") -> None:
    """ValueError unless 0 ≤ `value` ≤ `limit`: only label-only caption images can be asked their word."""
    if not 0 <= value <= limit:
        bound = f"{limit_name} ({limit})" if limit_name else str(limit)
        raise ValueError(
            f"{name} asks the reading question of label-only caption images: 0 to {bound}, not {value}"
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


def _letters(options: list[str]) -> str:
    return "\n".join(f"{'ABCD'[i]}. {opt}" for i, opt in enumerate(options))


def questions(scene: Scene) -> list[dict]:
    """Questions about the scene, a few of each applicable kind: {kind, question, answer, ...}. One seeded
    generator serves the kinds in a fixed order, so a scene always asks the same questions."""
    rng = random.Random(scene.seed * 7919 + 17)
    out = _sqa(scene, rng)
    if scene.word:
        out.append(reading_question(scene))
    for ask in (_pope, _mme, _open, _gqa):
        out += ask(scene, rng)
    return out


def _sqa(scene: Scene, rng: random.Random) -> list[dict]:
    """Which shape has a colour / which colour has a shape, 3 lettered options (asked when unambiguous)."""
    objs = scene.objects
    o = rng.choice(objs)
    if rng.random() < 0.5:
        q, truth = f"Which shape is {o.colour}?", o.shape
        unique = sum(p.colour == o.colour for p in objs) == 1
        wrong = [x for x in SHAPES if x != o.shape]
    else:
        q, truth = f"What colour is the {o.shape}?", o.colour
        unique = sum(p.shape == o.shape for p in objs) == 1
        wrong = [x for x in COLOURS if x != o.colour]
    options = rng.sample(wrong, 2) + [truth]
    rng.shuffle(options)
    if not unique:
        return []
    return [
        {
            "kind": "sqa",
            "raw": q,
            "question": f"{q}\n{_letters(options)}{LETTER}",
            "answer": "ABCD"[options.index(truth)],
            "choices": options,
            "answer_index": options.index(truth),
            "stem": q,
        }
    ]


def _pope(scene: Scene, rng: random.Random) -> list[dict]:
    """Existence: one present object and one absent (colour, shape) pair, in a seeded order."""
    objs = scene.objects
    present = {(p.colour, p.shape) for p in objs}
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    c, s = rng.choice(absent)
    p = rng.choice(objs)
    pope = [(p.colour, p.shape, "yes"), (c, s, "no")]
    rng.shuffle(pope)
    out = []
    for colour, shape, ans in pope:
        raw = f"Is there a {colour} {shape} in the image?"
        out.append({"kind": "pope", "raw": raw, "question": raw + SHORT, "answer": ans})
    return out


def _mme(scene: Scene, rng: random.Random) -> list[dict]:
    """A Yes/No pair on one attribute (colour, count or position), as MME asks them."""
    objs = scene.objects
    topic = rng.choice(["color", "count"] + (["position"] if len(objs) >= 2 else []))
    if topic == "color":
        o = rng.choice(objs)
        other = rng.choice([c for c in COLOURS if c != o.colour])
        pair = (f"Is the {o.shape} {o.colour}?", f"Is the {o.shape} {other}?")
        if sum(q.shape == o.shape for q in objs) > 1:
            return []
    elif topic == "count":
        n = len(objs)
        wrong = rng.choice([k for k in range(1, 5) if k != n])
        pair = tuple(
            f"Is there {NUMBERS[k]} shape in the image?"
            if k == 1
            else f"Are there {NUMBERS[k]} shapes in the image?"
            for k in (n, wrong)
        )
    else:
        a, b = rng.sample(objs, 2)
        left, right = (a, b) if a.x < b.x else (b, a)
        pair = (
            f"Is the {left.name} left of the {right.name}?",
            f"Is the {right.name} left of the {left.name}?",
        )
    group, yn = f"{scene.seed}/{topic}", " Please answer yes or no."
    return [
        {"kind": "mme", "raw": q + yn, "question": q + SHORT, "answer": a, "category": topic, "pair": group}
        for q, a in zip(pair, ("Yes", "No"), strict=True)
    ]


def _open(scene: Scene, rng: random.Random) -> list[dict]:
    """An open answer, as MM-Vet asks: list the shapes (every one, <AND>), or count them."""
    objs = scene.objects
    if rng.random() < 0.5:
        shapes = sorted({o.shape for o in objs})
        raw, answer, reference = "What shapes are in the image?", "<AND>".join(shapes), _list(shapes)
    else:
        raw, answer = "How many shapes are in the image?", NUMBERS[len(objs)]
        reference = answer
    return [{"kind": "open", "raw": raw, "question": raw, "answer": answer, "reference": reference}]


def _gqa(scene: Scene, rng: random.Random) -> list[dict]:
    """A relational question (the colour of the shape left of another, or which is further left), or the
    colour of the only shape."""
    objs = scene.objects
    if len(objs) < 2:
        raw, answer = f"What colour is the {objs[0].shape}?", objs[0].colour
        return [{"kind": "gqa", "raw": raw, "question": raw + SHORT, "answer": answer}]
    a, b = rng.sample(objs, 2)
    left, right = (a, b) if a.x < b.x else (b, a)
    unique = sum(q.shape == right.shape for q in objs) == 1 and sum(q.shape == left.shape for q in objs) == 1
    if not unique:
        return []
    if sum(q.x < right.x for q in objs) == 1:  # exactly one shape left of `right`
        raw, answer = f"What colour is the shape left of the {right.shape}?", left.colour
    else:
        raw, answer = f"Which is further left, the {a.shape} or the {b.shape}?", left.shape
    return [{"kind": "gqa", "raw": raw, "question": raw + SHORT, "answer": answer}]


def reading_question(scene: Scene) -> dict:
    """The TextVQA-like question of a scene with a word label."""
    return {
        "kind": "text",
        "raw": "What word is written in the image?",
        "question": f"What word is written in the image?{SHORT}",
        "answer": scene.word.lower(),
    }


def answer_style(q: dict) -> str:
    """The answer text a model is trained to give (LLaVA-1.5's short-answer style)."""
    if q["kind"] == "pope":
        return q["answer"].capitalize()
    if q["kind"] == "open":
        return q["reference"].capitalize() + "."
    if q["kind"] == "text":
        return q["answer"].upper()
    return q["answer"]


def dialogues(scene: Scene, qs: list[dict], per_scene: int = 2) -> list[list[dict]]:
    """A scene's questions as `per_scene` LLaVA-style dialogues, each turn order shuffled.

    The Yes/No pairs (POPE, MME) are split across dialogues, so no dialogue holds both halves of a pair
    (the second answer would follow from the first, a shortcut the evaluation, asking each question
    alone, does not offer); and shuffling puts every kind in the first turn, where the evaluation asks
    it (with a fixed order the LM learnt to answer the first question with the usual first-turn answers)."""
    rng = random.Random(scene.seed * 104729 + 3)
    out: list[list[dict]] = [[] for _ in range(per_scene)]
    order = sorted(qs, key=lambda q: KINDS.index(q["kind"]) if q["kind"] not in ("pope", "mme") else -1)
    for i, q in enumerate(order):
        out[i % per_scene].append(q)
    for d in out:
        rng.shuffle(d)
    return [d for d in out if d]


def with_reading(scene: Scene, asked: list[list[dict]], times: int) -> list[list[dict]]:
    """The dialogues `asked` (from `dialogues`) with the scene's reading question asked `times` times: added
    at a seeded position to each dialogue that lacks it, then as questions of their own. times = 1 (or a
    scene without a word) leaves them as they are: a word is one question among many, and asked once it was
    learnt slowly (docs/mini.md, Reading)."""
    reading = [q for d in asked for q in d if q["kind"] == "text"]
    if times <= 1 or not reading:
        return asked
    q, rng = reading[0], random.Random(scene.seed * 15485863 + 5)
    out, count = [], 0
    for d in asked:
        d = list(d)
        if q not in d and count < times - 1:
            d.insert(rng.randrange(len(d) + 1), q)
        count += q in d
        out.append(d)
    return out + [[q] for _ in range(times - count)]


def dialogue_turns(dialogue: list[dict], context: str = "<image>") -> list[dict]:
    """Questions as LLaVA turns with their trained answers; `context` (the image, or a caption in its place)
    opens the first question."""
    turns = []
    for t, q in enumerate(dialogue):
        value = (context + "\n" if t == 0 else "") + q["question"]
        turns += [{"from": "human", "value": value}, {"from": "gpt", "value": answer_style(q)}]
    return turns


def content_keys(scenes: list[Scene]) -> set[str]:
    """The scenes' signatures and captions: a held-out scene may share neither with another split (two scenes
    with one caption ask nearly the same questions, whatever the positions)."""
    return {key for s in scenes for key in (s.signature(), caption(s))}


def _extra_scenes(base: int, n: int, exclude: set[str], **kind) -> list[Scene]:
    """The first n scenes `make_scene(base + k, **kind)`, k = 0, 1, …, whose signature and caption are
    not in `exclude` (see `content_keys`)."""
    out, k = [], 0
    while len(out) < n:
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


BLANK = "blank.png"  # the one image of the blind floor's data (`write_blind`)


def write_blank_image(out: Path) -> Path:
    """images/BLANK under `out`: the world's background alone."""
    path = out / "images" / BLANK
    if not path.exists():
        with atomic_path(path) as tmp:
            render(Scene(seed=-1, objects=[])).save(tmp)
    return path


def write_blind(out: Path, split: str = "train") -> dict:
    """The blind floor's data: <split>_pretrain_blank.json and <split>_finetune_blank.json (and
    <split>_reading_blank.json, when the split has reading questions) are the split's captions and dialogues
    with every image replaced by one blank image (BLANK: the world's background, no object, no label), so
    that a LLaVA trained on them by the same pipeline learns everything but vision; blank.json lists the
    image alone (for `gsv fit-shards`)."""
    write_blank_image(out)
    counts = {}
    for stem in (f"{split}_pretrain", f"{split}_finetune", f"{split}_reading"):
        if stem.endswith("_reading") and not (out / f"{stem}.json").exists():
            continue
        records = json.loads((out / f"{stem}.json").read_text())
        blind = [{**r, "image": BLANK} for r in records if "image" in r]
        _write_json(out / f"{stem}_blank.json", blind)
        counts[stem] = len(blind)
    blank = [{"id": "blank", "image": BLANK, "conversations": [{"from": "human", "value": "<image>\n"}]}]
    _write_json(out / "blank.json", blank)
    return counts


def _write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


def write_split(
    out: Path,
    split: str,
    scenes: list[Scene],
    caption_only: list[Scene] = (),
    reading: int = 1,
    read_words: int = 0,
) -> dict:
    """Images and LLaVA-format JSON for a split; returns counts. Files are written under temp names first.

    `caption_only` scenes (the label-only ones of `word_scenes`) go into the split's captions
    (<split>_pretrain.json) but ask no questions; their images sit apart, in images/<split>_words/, so that
    their splats (splats/<split>_words/ of `gsv fit-shards`) serve LLaVA's stage 1 but not the GS encoders,
    which distil on splats/<split>/ unless asked to (label-only images among the scenes distilled worse:
    docs/mini.md, Reading).
    `reading`: how often the finetuning dialogues ask a scene's reading question (`with_reading`); the
    test questions ask it once. `read_words`: the first that many `caption_only` scenes are also asked
    their reading question in finetuning (LLaVA-1.5's OCR-VQA in miniature), and those questions are also
    written alone to <split>_reading.json for a reading warm-up before finetuning."""
    _check_read_words(read_words, len(caption_only))
    words = f"{split}_words"
    for folder in [split, words] if caption_only else [split]:
        (out / "images" / folder).mkdir(parents=True, exist_ok=True)
    pretrain, finetune, test, reading_only = [], [], [], []
    read = {s.seed for s in caption_only[:read_words]}
    for s, folder in [*((s, split) for s in scenes), *((s, words) for s in caption_only)]:
        name = f"{folder}/{s.seed}.png"
        path = out / "images" / name
        if not path.exists():
            with atomic_path(path) as tmp:
                render(s).save(tmp)
        path.with_suffix(".txt").write_text(caption(s) + "\n")  # `gsv fit-shards` carries it to the splats
        pretrain.append(
            {
                "id": f"{split}-{s.seed}-cap",
                "image": name,
                "conversations": [
                    {"from": "human", "value": "<image>\n"},
                    {"from": "gpt", "value": caption(s)},
                ],
            }
        )
        if folder != split:
            if s.seed in read:
                turns = dialogue_turns([reading_question(s)])
                reading_only.append({"id": f"{split}-{s.seed}-read", "image": name, "conversations": turns})
            continue
        qs = questions(s)
        for j, dialogue in enumerate(with_reading(s, dialogues(s, qs), reading)):
            turns = dialogue_turns(dialogue)
            finetune.append({"id": f"{split}-{s.seed}-d{j}", "image": name, "conversations": turns})
        for i, q in enumerate(qs):
            test.append({"id": f"{split}-{s.seed}-{i}", "image": name, **q})
    files = [
        (f"{split}_pretrain.json", pretrain),
        (f"{split}_finetune.json", finetune + reading_only),
        (f"{split}_questions.json", test),
    ]
    if reading_only:  # the label-only reading questions alone too, for a reading warm-up before finetuning
        files.append((f"{split}_reading.json", reading_only))
    for fname, data in files:
        _write_json(out / fname, data)
    rows = (
        {
            "seed": s.seed,
            "objects": [asdict(o) for o in s.objects],
            "word": s.word,
            "word_xy": s.word_xy,
            "caption": caption(s),
        }
        for s in scenes
    )
    atomic_write_text(out / f"{split}_scenes.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return {
        "scenes": len(scenes),
        "questions": len(test),
        "caption_only": len(caption_only),
        "read_words": read_words,
    }


def write_shards(out: Path, split: str, scenes: list[Scene], shard_size: int = 1000) -> list[Path]:
    """img2dataset-style webdataset tars (<key>.png + <key>.txt caption) for open_clip and gsv fit-shards."""
    import tarfile

    from eval.mini_zeroshot import png_bytes
    from gs_encoder.shards import tar_add

    folder = out / "shards"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(0, len(scenes), shard_size):
        path = folder / f"{split}-{i // shard_size:04d}.tar"
        with atomic_path(path) as tmp, tarfile.open(tmp, "w") as tf:
            for s in scenes[i : i + shard_size]:
                key = f"{s.seed:09d}"
                tar_add(tf, f"{key}.png", png_bytes(render(s)))
                tar_add(tf, f"{key}.txt", caption(s).encode())
        paths.append(path)
    return paths


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


def write_zeroshot(root: Path, scenes: list[Scene], words: bool = False) -> Path:
    """Zero-shot classification in CLIP_benchmark layout: one-object scenes by their object's class, or with
    `words`, label-only scenes by their word (the reading zero-shot)."""
    from eval.mini_zeroshot import png_bytes, write_classification

    classes, templates = (list(WORDS), ZW_TEMPLATES) if words else (ZS_CLASSES, ZS_TEMPLATES)
    samples = [
        (f"{s.seed:09d}", png_bytes(render(s)), classes.index(s.word if words else s.objects[0].name))
        for s in scenes
    ]
    return write_classification(root, samples, classes, templates)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--val", type=int, default=500, help="validation scenes (every choice is made on them)")
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--zeroshot-per-class", type=int, default=10, help="single-object test scenes per class")
    options = (  # flag, type, default, help
        ("--label-scale", float, 1.0, "size of the word labels (1: 14 px high, 8 px per letter)"),
        ("--clip-words", int, 0, "label-only scenes added to the CLIP teacher's pairs"),
        (
            "--pretrain-words",
            int,
            0,
            "label-only scenes added to the train captions (LLaVA stage 1; no questions)",
        ),
        ("--reading", int, 1, "times the train dialogues ask a scene's reading question"),
        (
            "--finetune-words",
            int,
            0,
            "of the --pretrain-words scenes, how many are also asked their reading question in finetuning",
        ),
        (
            "--clip-single",
            int,
            None,
            "one-object scenes added to the teacher's pairs (default: as many as --train)",
        ),
    )
    for flag, kind, default, text in options:
        ap.add_argument(flag, type=kind, default=default, help=text)
    args = ap.parse_args(argv)
    if args.reading < 1:
        ap.error(f"--reading counts how often a reading question is asked: 1 or more, not {args.reading}")
    for flag, count in (("--clip-words", args.clip_words), ("--pretrain-words", args.pretrain_words)):
        if count < 0:
            ap.error(f"{flag} counts scenes to add: 0 or more, not {count}")
    try:
        _check_read_words(args.finetune_words, args.pretrain_words, "--finetune-words", "--pretrain-words")
        _check_label_scale(args.label_scale, "--label-scale")
    except ValueError as e:
        ap.error(str(e))
    out = Path(args.out)
    scale = args.label_scale
    train = scenes_for("train", args.train, args.seed, label_scale=scale)
    seen = content_keys(train)
    test = scenes_for("test", args.test, args.seed, exclude=seen, label_scale=scale)
    val = scenes_for("val", args.val, args.seed, exclude=seen | content_keys(test), label_scale=scale)
    held_out = content_keys(test) | content_keys(val)
    zeroshot = zeroshot_scenes(args.zeroshot_per_class, args.seed, exclude=seen)
    held_out |= content_keys(zeroshot)
    single = args.train if args.clip_single is None else args.clip_single
    clip = clip_scenes(train, single, args.seed, exclude=held_out, words=args.clip_words, label_scale=scale)
    words = word_scenes(args.pretrain_words, args.seed, scale, "pretrain")
    train_counts = write_split(
        out, "train", train, words, reading=args.reading, read_words=args.finetune_words
    )
    stats = {
        "train": train_counts,
        "val": write_split(out, "val", val),
        "test": write_split(out, "test", test),
    }
    stats["blind"] = write_blind(out)
    stats["shards"] = [p.name for p in write_shards(out, "clip", clip) + write_shards(out, "test", test)]
    stats["clip_pairs"] = len(clip)
    write_zeroshot(out / "zeroshot", zeroshot)
    words_zs = zeroshot_word_scenes(args.zeroshot_per_class, args.seed, scale)
    write_zeroshot(out / "zeroshot_words", words_zs, words=True)
    classes = {"shapes": list(SHAPES), "colours": list(COLOURS), "kinds": list(KINDS)}
    (out / "classes.json").write_text(json.dumps(classes, indent=1))
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
