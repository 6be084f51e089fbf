"""The mini world's datasets on disk, for scripts/mini_repro.sh.

    python -m eval.mini.data --out data/mini --train 4000 --val 500 --test 500

Writes per split: images/<split>/ (PNG; label-only caption images in images/<split>_words/),
<split>_pretrain.json (captions, LLaVA plain format), <split>_finetune.json (the questions as vicuna_v1
dialogues, see questions.dialogues), <split>_reading.json (with --finetune-words: the label-only images asked
their word, also in <split>_finetune.json), <split>_questions.json (with kind and answer), <split>_scenes.jsonl;
blank.png with train_pretrain_blank.json / train_finetune_blank.json (the train split with every image
replaced by that one blank image: the blind floor's data); shards/test-NNNN.tar (png + caption) and
shards/clip-NNNN.tar (the CLIP teacher's pairs: the train scenes plus as many one-object scenes, see
world.clip_scenes); zeroshot/ (24 classes "<colour> <shape>" in CLIP_benchmark's layout), zeroshot_words/
(label-only scenes, the 12 words as classes) and classes.json. Every file is written under a temporary name
and renamed.
"""

from __future__ import annotations

import argparse
import json
import tarfile
from dataclasses import asdict
from pathlib import Path

from cuda_ext.files import atomic_path, atomic_write_text

from .questions import dialogue_turns, dialogues, questions, reading_question, with_reading
from .world import (
    COLOURS,
    KINDS,
    SHAPES,
    WORDS,
    ZS_CLASSES,
    ZS_TEMPLATES,
    ZW_TEMPLATES,
    Scene,
    _check_label_scale,
    caption,
    clip_scenes,
    content_keys,
    render,
    scenes_for,
    word_scenes,
    zeroshot_scenes,
    zeroshot_word_scenes,
)

__all__ = [
    "BLANK",
    "main",
    "write_blank_image",
    "write_blind",
    "write_shards",
    "write_split",
    "write_zeroshot",
]


def _check_read_words(value: int, limit: int, name: str = "read_words", limit_name: str = "") -> None:
    """ValueError unless 0 ≤ `value` ≤ `limit`: only label-only caption images can be asked their word."""
    if not 0 <= value <= limit:
        bound = f"{limit_name} ({limit})" if limit_name else str(limit)
        raise ValueError(
            f"{name} asks the reading question of label-only caption images: 0 to {bound}, not {value}"
        )


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
    for flag, count in (("--train", args.train), ("--val", args.val), ("--test", args.test)):
        if count < 1:
            ap.error(f"{flag} counts the split's scenes: 1 or more, not {count}")
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
    zeroshot = zeroshot_scenes(args.zeroshot_per_class, args.seed, exclude=seen)
    # the teacher's one-object pairs skip the held-out scenes by signature only: their 48 captions are the
    # zero-shot classes themselves, all of which the zero-shot scenes hold
    held_out = {s.signature() for s in (*test, *val, *zeroshot)}
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
