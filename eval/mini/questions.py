"""Questions about a mini-world scene, of the six LLaVA-1.5 benchmark kinds, each answerable from the image
alone and checked against the scene description by the tests, and the dialogues that ask them in training:

- `sqa`    multiple choice (ScienceQA-IMG style): "Which shape is red?" + lettered options → a letter;
- `text`   reading (TextVQA style): "What word is written in the image?" → the word;
- `pope`   object existence yes/no (POPE style), balanced: "Is there a blue square in the image?";
- `mme`    perception yes/no (MME style), asked in Yes/No pairs on colour, count and position;
- `open`   open answers (MM-Vet style): "What shapes are in the image?" → "circle<AND>square";
- `gqa`    compositional (GQA style): "What colour is the shape left of the square?" → "red".
"""

from __future__ import annotations

import random

from .world import COLOURS, KINDS, LETTER, NUMBERS, SHAPES, SHORT, Scene, _list

__all__ = ["answer_style", "dialogue_turns", "dialogues", "questions", "reading_question", "with_reading"]


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
