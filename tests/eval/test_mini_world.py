"""The miniature world: deterministic, answers checked against the scene description, disjoint splits."""

import json
import math
import re
from datetime import UTC
from pathlib import Path

import pytest
from PIL import Image

from eval.mini.data import write_split
from eval.mini.questions import answer_style, questions
from eval.mini.world import (
    COLOURS,
    NUMBERS,
    SHAPES,
    SIZES,
    caption,
    make_scene,
    render,
    scenes_for,
    word_scenes,
)


def test_same_seed_same_scene_image_and_questions():
    a, b = make_scene(123), make_scene(123)
    assert a == b and render(a).tobytes() == render(b).tobytes()
    assert questions(a) == questions(b) and caption(a) == caption(b)
    assert render(make_scene(124)).tobytes() != render(a).tobytes()


def _by_name(scene):
    return {(o.colour, o.shape): o for o in scene.objects}


def check(scene, q):
    """Recompute q's answer from the scene description alone."""
    objs, names = scene.objects, _by_name(scene)
    text = q["question"]
    if q["kind"] == "pope":
        colour, shape = re.match(r"Is there a (\w+) (\w+) in the image\?", text).groups()
        return "yes" if (colour, shape) in names else "no"
    if q["kind"] == "text":
        return scene.word.lower()
    if q["kind"] == "sqa":
        stem = q["stem"]
        if m := re.match(r"Which shape is (\w+)\?", stem):
            truth = [o.shape for o in objs if o.colour == m.group(1)]
        else:
            truth = [
                o.colour for o in objs if o.shape == re.match(r"What colour is the (\w+)\?", stem).group(1)
            ]
        assert len(truth) == 1 and sum(c in truth for c in q["choices"]) == 1
        return "ABC"[q["choices"].index(truth[0])]
    if q["kind"] == "mme":
        if m := re.match(r"(?:Is there|Are there) (\w+) shapes? in the image", text):
            return "Yes" if NUMBERS.index(m.group(1)) == len(objs) else "No"
        if m := re.match(r"Is the (\w+) (\w+) left of the (\w+) (\w+)\?", text):
            a, b = names[(m.group(1), m.group(2))], names[(m.group(3), m.group(4))]
            return "Yes" if a.x < b.x else "No"
        shape, colour = re.match(r"Is the (\w+) (\w+)\?", text).groups()
        (o,) = [o for o in objs if o.shape == shape]
        return "Yes" if o.colour == colour else "No"
    if q["kind"] == "open":
        if text.startswith("How many"):
            return NUMBERS[len(objs)]
        return "<AND>".join(sorted({o.shape for o in objs}))
    if q["kind"] == "gqa":
        if m := re.match(r"What colour is the shape left of the (\w+)\?", text):
            (right,) = [o for o in objs if o.shape == m.group(1)]
            (left,) = [o for o in objs if o.x < right.x]
            return left.colour
        if m := re.match(r"Which is further left, the (\w+) or the (\w+)\?", text):
            (a,), (b,) = ([o for o in objs if o.shape == m.group(k)] for k in (1, 2))
            return (a if a.x < b.x else b).shape
        (o,) = [o for o in objs if o.shape == re.match(r"What colour is the (\w+)\?", text).group(1)]
        return o.colour
    raise AssertionError(q["kind"])


def test_answers_follow_from_the_scene():
    kinds = {}
    pope = {"yes": 0, "no": 0}
    for seed in range(300):
        scene = make_scene(seed)
        assert 1 <= len(scene.objects) <= 4
        assert len(_by_name(scene)) == len(scene.objects)  # (colour, shape) identifies an object
        for o in scene.objects:
            r = SIZES[o.size]
            assert r <= o.x < 64 - r and r <= o.y < 64 - r and o.shape in SHAPES and o.colour in COLOURS
        for q in questions(scene):
            assert check(scene, q) == q["answer"], (seed, q)
            kinds[q["kind"]] = kinds.get(q["kind"], 0) + 1
            if q["kind"] == "pope":
                pope[q["answer"]] += 1
    assert set(kinds) == {"sqa", "text", "pope", "mme", "open", "gqa"} and min(kinds.values()) >= 50
    assert pope["yes"] == pope["no"]  # balanced, as POPE is


def test_objects_are_drawn_where_the_scene_says():
    scene = make_scene(7)
    im = render(scene)
    for o in scene.objects:
        assert max(abs(a - b) for a, b in zip(im.getpixel((o.x, o.y)), COLOURS[o.colour], strict=True)) < 40


def test_validation_and_test_scenes_share_no_signature_or_caption_with_train_or_each_other():
    from eval.mini.world import caption, content_keys

    train = scenes_for("train", 300)
    test = scenes_for("test", 60, exclude=content_keys(train))
    val = scenes_for("val", 60, exclude=content_keys(train) | content_keys(test))
    splits = {"train": train, "test": test, "val": val}
    for a, b in (("train", "test"), ("train", "val"), ("test", "val")):
        assert not {s.signature() for s in splits[a]} & {s.signature() for s in splits[b]}, (a, b)
        assert not {caption(s) for s in splits[a]} & {caption(s) for s in splits[b]}, (a, b)
        assert not {s.seed for s in splits[a]} & {s.seed for s in splits[b]}, (a, b)
    # the rule bites: without the caption rule, test scenes repeat training captions (one-object ones mostly)
    unfiltered = scenes_for("test", 60, exclude={s.signature() for s in train})
    assert {caption(s) for s in unfiltered} & {caption(s) for s in train}
    with pytest.raises(ValueError, match="split must be one of"):
        scenes_for("dev", 1)


def test_blind_data_replaces_every_image_by_the_one_blank_image(tmp_path):
    from eval.mini.data import BLANK, write_blind

    write_split(tmp_path, "train", scenes_for("train", 12), word_scenes(3, purpose="pretrain"), read_words=2)
    counts = write_blind(tmp_path)
    blank = Image.open(tmp_path / "images" / BLANK)
    assert len(blank.getcolors()) == 1  # one colour: no object, no label
    for stem in ("train_pretrain", "train_finetune", "train_reading"):
        real = json.loads((tmp_path / f"{stem}.json").read_text())
        blind = json.loads((tmp_path / f"{stem}_blank.json").read_text())
        assert counts[stem] == len(real) == len(blind) and {r["image"] for r in blind} == {BLANK}
        assert [r["conversations"] for r in blind] == [r["conversations"] for r in real]
    assert json.loads((tmp_path / "blank.json").read_text())[0]["image"] == BLANK


def test_splits_are_written_in_llava_format(tmp_path, tiny_tokenizer):
    from llava_gs.conversation import tokenize_conversation

    train = scenes_for("train", 40)
    stats = write_split(tmp_path, "train", train)
    assert stats["scenes"] == 40 and len(list((tmp_path / "images" / "train").glob("*.png"))) == 40
    finetune = json.loads((tmp_path / "train_finetune.json").read_text())
    pretrain = json.loads((tmp_path / "train_pretrain.json").read_text())
    questions_ = json.loads((tmp_path / "train_questions.json").read_text())
    asked = []
    for rec in finetune:  # dialogues: the image in the first turn, each question once, pairs split
        turns = rec["conversations"]
        assert turns[0]["value"].startswith("<image>\n")
        assert sum("<image>" in t["value"] for t in turns) == 1
        kinds = []
        for human, gpt in zip(turns[::2], turns[1::2], strict=True):
            q = next(
                q
                for q in questions_
                if q["image"] == rec["image"] and q["question"] == human["value"].removeprefix("<image>\n")
            )
            assert gpt["value"] == answer_style(q)
            asked.append((q["image"], q["question"]))
            kinds.append(q["kind"])
        assert kinds.count("pope") <= 1 and kinds.count("mme") <= 1
    assert sorted(asked) == sorted((q["image"], q["question"]) for q in questions_)
    firsts = {
        next(q["kind"] for q in questions_ if q["question"] == rec["conversations"][0]["value"][8:])
        for rec in finetune
    }
    assert firsts == {"sqa", "text", "pope", "mme", "open", "gqa"}  # every kind is asked first somewhere
    for rec in finetune[:10]:
        ids, labels = tokenize_conversation(rec["conversations"], tiny_tokenizer, "vicuna_v1", 1, 4)
        assert any(lab != -100 for lab in labels)
    for rec in pretrain[:10]:
        tokenize_conversation(rec["conversations"], tiny_tokenizer, "plain", 1, 4)
    q = json.loads((tmp_path / "train_questions.json").read_text())[0]
    assert {"id", "image", "kind", "question", "answer"} <= set(q)


@pytest.mark.parametrize("kind", ["pope", "open", "text"])
def test_answer_style(kind):
    for seed in range(50):
        for q in questions(make_scene(seed)):
            if q["kind"] == kind:
                styled = answer_style(q)
                assert styled and styled.lower().rstrip(".") in (q["answer"], q.get("reference", ""))
                return
    pytest.fail(f"no {kind} question in 50 scenes")


def test_lmms_tasks_rebuild_the_training_prompts_and_score_true_answers(tmp_path, monkeypatch):
    pytest.importorskip("lmms_eval")
    import yaml
    from lmms_eval.tasks.gqa import utils as gqa
    from lmms_eval.tasks.mme import utils as mme
    from lmms_eval.tasks.pope import utils as pope
    from lmms_eval.tasks.scienceqa import utils as sqa
    from lmms_eval.tasks.textvqa import utils as textvqa

    from eval.mini.data import write_blank_image
    from eval.mini.tasks import write_tasks

    data = tmp_path / "world"
    write_split(data, "test", scenes_for("test", 30))
    write_split(data, "val", scenes_for("val", 10))
    blank_png = write_blank_image(data).read_bytes()
    counts = write_tasks(data, tmp_path / "tasks")
    shuffled = write_tasks(data, tmp_path / "tasks", variant="shuffled")
    blank = write_tasks(data, tmp_path / "tasks", variant="blank")
    val = write_tasks(data, tmp_path / "tasks", "val")
    assert set(counts) == {f"mw_{k}" for k in ("sqa", "text", "pope", "mme", "open", "gqa")}
    assert {k + "_shuffled": v for k, v in counts.items()} == shuffled
    assert {k + "_blank": v for k, v in counts.items()} == blank
    assert set(val) == {k.replace("mw_", "mwval_") for k in counts}
    assert "mwval_pope" in (tmp_path / "tasks" / "_mwval_all.yaml").read_text()
    import datasets

    rows = datasets.load_dataset("parquet", data_files=str(tmp_path / "tasks" / "mw_pope_blank.parquet"))
    stored = rows["train"].cast_column("image", datasets.Image(decode=False))
    assert {r["image"]["bytes"] for r in stored} == {blank_png}

    to_text = {
        "sqa": sqa.sqa_doc_to_text,
        "text": textvqa.textvqa_doc_to_text,
        "pope": pope.pope_doc_to_text,
        "mme": mme.mme_doc_to_text,
        "gqa": gqa.gqa_doc_to_text,
    }
    questions = json.loads((data / "test_questions.json").read_text())
    for kind, fn in to_text.items():
        cfg = yaml.safe_load(
            "\n".join(
                line
                for line in (tmp_path / "tasks" / f"mw_{kind}.yaml").read_text().splitlines()
                if "!function" not in line
            )
        )
        rows = datasets.load_dataset("parquet", data_files=str(tmp_path / "tasks" / f"mw_{kind}.parquet"))[
            "train"
        ]
        expected = [q["question"] for q in questions if q["kind"] == kind]
        built = [fn(row, cfg["lmms_eval_specific_kwargs"]["default"]) for row in rows]
        assert built == expected, kind


def test_clip_pairs_add_one_object_scenes_and_keep_held_out_scenes_out():
    from eval.mini.world import clip_scenes, zeroshot_scenes

    train = scenes_for("train", 30)
    zs = zeroshot_scenes(per_class=1)
    assert sorted(s.objects[0].name for s in zs) == sorted({s.objects[0].name for s in zs})
    assert len(zs) == 24 and all(len(s.objects) == 1 and s.word is None for s in zs)
    held_out = {s.signature() for s in zs}
    pairs = clip_scenes(train, 50, exclude=held_out)
    assert len(pairs) == 80 and {s.seed for s in train} <= {s.seed for s in pairs}
    extra = [s for s in pairs if s.seed not in {t.seed for t in train}]
    assert len(extra) == 50 and all(len(s.objects) == 1 for s in extra)
    assert not {s.signature() for s in pairs} & held_out
    assert [s.seed for s in clip_scenes(train, 50, exclude=held_out)] == [s.seed for s in pairs]
    # an excluded scene is skipped, not repeated
    first = extra[0]
    again = clip_scenes(train, 50, exclude=held_out | {first.signature()})
    assert first.seed not in {s.seed for s in again} and len(again) == 80


def _white(scene) -> int:
    """Pixels of the rendered scene that are (nearly) pure white: the label's paper."""
    return sum(1 for p in render(scene).getdata() if min(p) >= 250)


def test_label_scale_enlarges_the_label_and_objects_keep_clear_of_it():
    big = [make_scene(s, text_prob=1.0, label_scale=1.45) for s in range(40)]
    small = [make_scene(s, text_prob=1.0) for s in range(40)]
    for a, b in zip(big, small, strict=True):
        assert a.word == b.word  # the same draw, only the label's size differs
        (w, h), (w0, h0) = a.label_size(), b.label_size()
        assert (w, h) == (12 * len(a.word) + 6, 20) and (w0, h0) == (8 * len(b.word) + 6, 14)
        x0, y0 = a.word_xy
        assert 0 <= x0 and x0 + w <= 64 and 0 <= y0 and y0 + h <= 64
        for o in a.objects:  # no object's box reaches into the label
            r = SIZES[o.size]
            assert o.x + r <= x0 or o.x - r >= x0 + w or o.y + r <= y0 or o.y - r >= y0 + h
    ratio = sum(map(_white, big)) / sum(map(_white, small))
    assert 1.6 < ratio < 2.6  # ~1.45² more white paper
    with pytest.raises(ValueError, match="label_scale"):
        make_scene(0, label_scale=3.0)


def test_word_scenes_hold_a_label_alone_and_reach_the_teacher_and_stage_one(tmp_path):
    from eval.mini.world import clip_scenes, word_scenes

    words = word_scenes(12, label_scale=1.45)
    assert words == word_scenes(12, label_scale=1.45)  # deterministic
    assert all(not s.objects and s.word and caption(s) == f"The word {s.word}." for s in words)
    assert len({s.word for s in words}) > 3
    assert not {s.seed for s in words} & {s.seed for s in word_scenes(12, purpose="pretrain")}
    train = scenes_for("train", 10)
    pairs = clip_scenes(train, 5, words=7)
    assert len(pairs) == 22 and sum(not s.objects for s in pairs) == 7
    counts = write_split(tmp_path, "train", train, word_scenes(4, purpose="pretrain"))
    assert counts["scenes"] == 10 and counts["caption_only"] == 4
    pre = json.loads((tmp_path / "train_pretrain.json").read_text())
    fin = json.loads((tmp_path / "train_finetune.json").read_text())
    qs = json.loads((tmp_path / "train_questions.json").read_text())
    assert len(pre) == 14 and all((tmp_path / "images" / r["image"]).is_file() for r in pre)
    label_only = [r for r in pre if r["conversations"][1]["value"].startswith("The word ")]
    assert len(label_only) >= 4
    only = {r["image"] for r in pre} - {r["image"] for r in fin}
    assert len(only) == 4 and not only & {q["image"] for q in qs}  # captions only: no questions
    # apart from the scenes, so that the GS encoders' splats (of images/train/) leave them out
    assert all(name.startswith("train_words/") for name in only)
    assert all(r["image"].startswith("train/") for r in fin)


def test_the_reading_zero_shot_set_holds_each_word_on_its_own_labels(tmp_path):
    import tarfile

    from eval.mini.data import write_zeroshot
    from eval.mini.world import WORDS, clip_scenes, word_scenes, zeroshot_word_scenes

    scenes = zeroshot_word_scenes(per_class=2, label_scale=2.0)
    assert scenes == zeroshot_word_scenes(per_class=2, label_scale=2.0)  # deterministic
    assert sorted(s.word for s in scenes) == sorted(WORDS * 2)  # balanced: each word twice
    assert all(not s.objects and s.label_scale == 2.0 for s in scenes)
    # seeds of their own: none is a teacher pair or a stage-1 caption image
    seen = {s.seed for s in clip_scenes([], 0, words=300) + word_scenes(300, purpose="pretrain")}
    assert not {s.seed for s in scenes} & seen
    root = write_zeroshot(tmp_path / "zeroshot_words", scenes, words=True)
    assert (root / "classnames.txt").read_text().split("\n")[:-1] == list(WORDS)
    assert (root / "zeroshot_classification_templates.txt").read_text() == "the word {c}.\n"
    with tarfile.open(root / "test" / "0.tar") as tf:
        labels = {
            m.name[: -len(".cls")]: int(tf.extractfile(m).read()) for m in tf if m.name.endswith(".cls")
        }
    assert labels == {f"{s.seed:09d}": WORDS.index(s.word) for s in scenes}


def test_reading_is_asked_as_often_as_asked_for_and_nothing_else_changes(tmp_path):
    from eval.mini.questions import dialogues, with_reading

    scene = next(s for s in scenes_for("train", 40) if s.word)
    base = dialogues(scene, questions(scene))
    assert with_reading(scene, base, 1) is base
    for times in (2, 3, 5):
        more = with_reading(scene, base, times)
        assert more == with_reading(scene, base, times)  # seeded
        reading = [q for d in more for q in d if q["kind"] == "text"]
        assert len(reading) == times and all(sum(q["kind"] == "text" for q in d) == 1 for d in more)
        others = [[q for q in d if q["kind"] != "text"] for d in more[: len(base)]]
        assert others == [[q for q in d if q["kind"] != "text"] for d in base]  # the rest as it was
    plain = next(s for s in scenes_for("train", 40) if not s.word)
    assert with_reading(plain, dialogues(plain, questions(plain)), 3) == dialogues(plain, questions(plain))
    # the finetuning data ask it three times, the test questions once
    write_split(tmp_path, "train", [scene], reading=3)
    fin = json.loads((tmp_path / "train_finetune.json").read_text())
    asked = [t for r in fin for t in r["conversations"] if t["value"].endswith(scene.word)]
    assert len(asked) == 3 and len(fin) == len(base) + 1
    qs = json.loads((tmp_path / "train_questions.json").read_text())
    assert sum(q["kind"] == "text" for q in qs) == 1


def test_finetune_words_ask_the_first_label_only_images_their_word_and_nothing_else_changes(tmp_path):
    from eval.mini.world import word_scenes

    train, words = scenes_for("train", 6), word_scenes(5, purpose="pretrain")
    write_split(tmp_path / "a", "train", train, words)
    counts = write_split(tmp_path / "b", "train", train, words, read_words=3)
    assert counts["read_words"] == 3

    def load(folder, split):
        return json.loads((tmp_path / folder / f"train_{split}.json").read_text())

    for split in ("pretrain", "questions"):
        assert load("a", split) == load("b", split)  # captions and test questions as they were
    fin_a, fin_b = load("a", "finetune"), load("b", "finetune")
    assert fin_b[: len(fin_a)] == fin_a
    added = fin_b[len(fin_a) :]
    assert [r["image"] for r in added] == [f"train_words/{s.seed}.png" for s in words[:3]]
    for r, s in zip(added, words[:3], strict=True):
        human, gpt = r["conversations"]
        assert human["value"].startswith("<image>\nWhat word is written in the image?")
        assert gpt["value"] == s.word  # the word as the reading questions of the scenes answer it
    assert load("b", "reading") == added  # alone too, for the reading warm-up
    assert not (tmp_path / "a" / "train_reading.json").exists()
    with pytest.raises(ValueError, match="0 to 5, not 6"):
        write_split(tmp_path / "c", "train", train, words, read_words=6)


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--pretrain-words", "2", "--finetune-words", "3"], "0 to --pretrain-words (2), not 3"),
        (["--label-scale", "3"], "--label-scale must lie in"),
        (["--label-scale", "nan"], "--label-scale must lie in"),
        (["--clip-words", "-5"], "--clip-words counts scenes"),
        (["--pretrain-words", "-1"], "--pretrain-words counts scenes"),
        (["--reading", "0"], "--reading counts"),
    ],
)
def test_world_command_rejects_bad_reading_options(tmp_path, capsys, bad, message):
    from eval.mini.data import main

    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "w"), "--train", "4", "--test", "2", *bad])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # rejected before anything is written


def _one_scene_each(n: int) -> dict[str, list[str]]:
    return {"pope": [f"scene{i}" for i in range(n)]}


def test_relative_targets_need_a_reference_that_uses_the_image():
    """GS within 3 points of RGB is only evidence when RGB's answers depend on the image."""
    from eval.mini.report import _targets

    n = 400
    seeing = {"pope": [1.0] * n}  # answers every question right
    blind = {"pope": [float(i % 4 < 2) for i in range(n)]}  # right half the time, whatever the image
    runs = {"question-only prior": blind, "RGB-LLaVA": blind, "GS-LLaVA n144-k64": blind}
    runs["RGB-LLaVA, shuffled images"] = blind
    _, _, rows = _targets([runs], _one_scene_each(n), {"pope": 0.5})
    gs_vs_rgb = next(r for r in rows if r["comparison"] == "GS-LLaVA n144-k64 − RGB-LLaVA")
    assert gs_vs_rgb["points"] == 0 and gs_vs_rgb["met"].startswith("not testable")
    runs["RGB-LLaVA"] = seeing  # now RGB reads the image: +50 points over its control
    _, _, rows = _targets([runs], _one_scene_each(n), {"pope": 0.5})
    gs_vs_rgb = next(r for r in rows if r["comparison"] == "GS-LLaVA n144-k64 − RGB-LLaVA")
    assert gs_vs_rgb["points"] == -50 and gs_vs_rgb["met"] == "no" and gs_vs_rgb["target"] == "≥ −3"


def test_head_ablation_is_compared_with_the_default_head_and_kept_out_of_the_token_comparison():
    from eval.mini.report import _targets

    n = 200
    right = {"pope": [1.0] * n}
    half = {"pope": [float(i % 2 == 0) for i in range(n)]}
    runs = {
        "question-only prior": half,
        "GS-LLaVA n144-k64": right,
        "GS-LLaVA n144-k32": right,
        "GS-LLaVA n144-k64-wide": half,
    }
    _, _, rows = _targets([runs], _one_scene_each(n), {})
    by_name = {r["comparison"]: r for r in rows}
    head = by_name["GS-LLaVA n144-k64 (narrow head) − GS-LLaVA n144-k64-wide"]
    assert head["points"] == 50 and head["met"] == "yes"
    tokens = by_name["N = 144: K = 32 − K = 64 tokens"]
    assert tokens["points"] == 0 and tokens["target"] == "within ±3" and tokens["met"] == "yes"
    assert not any("-wide" in r["comparison"] and "K = " in r["comparison"] for r in rows)


def _answers(right: int, n: int = 400) -> dict[str, list[float]]:
    return {"pope": [float(i < right) for i in range(n)]}


BLIND = "blind GS-LLaVA n144-k64 (one blank image)"


def test_targets_over_seeds_take_the_mean_and_need_it_to_clear_the_threshold_at_one_sided_90():
    """Three seeds: the mean difference, the between-seed s.d., the scene-bootstrap s.e. of the seed-averaged
    difference; met only when the mean clears the threshold by more than 1.28 × sqrt(s.e.² + s.d.² / seeds)."""
    from eval.mini.report import Z90, _targets
    from eval.mini.score import paired_difference

    n = 400
    clusters = _one_scene_each(n)
    seeds = [
        {
            "question-only prior": _answers(160),
            "RGB-LLaVA": _answers(right),
            "GS-LLaVA n144-k64": _answers(right - 10),
            "GS-LLaVA n144-k32": _answers(right + 14),  # 3.5 points above K = 64: outside ±3
            BLIND: _answers(160),
        }
        for right in (248, 256, 264)  # 62, 64, 66%: +22, +24, +26 over the blind floor
    ]
    _, _, rows = _targets(seeds, clusters, {"pope": 0.5})
    by_name = {r["comparison"]: r for r in rows}
    rgb = by_name[f"RGB-LLaVA − {BLIND}"]
    assert rgb["seeds"] == 3 and abs(rgb["points"] - 24) < 1e-9 and abs(rgb["sd"] - 2) < 1e-9
    averaged = {"pope": [sum(s["RGB-LLaVA"]["pope"][i] for s in seeds) / 3 for i in range(n)]}
    _, se = paired_difference(averaged, _answers(160), clusters)
    assert abs(rgb["se"] - 100 * se) < 1e-9 and 1.5 < rgb["se"] < 3  # ≈ sqrt(p(1−p)/n) for these answers
    assert abs(rgb["error"] - math.sqrt(rgb["se"] ** 2 + 4 / 3)) < 1e-9
    assert rgb["met"] == ("yes" if 24 - 15 > Z90 * rgb["error"] else "no") == "yes"
    # GS 2.5 points below RGB in every seed: within 3, but not by 1.28 × the error
    gs = by_name["GS-LLaVA n144-k64 − RGB-LLaVA"]
    assert abs(gs["points"] + 2.5) < 1e-9 and gs["sd"] == 0 and gs["met"] == "no"
    tokens = by_name["N = 144: K = 32 − K = 64 tokens"]
    assert abs(tokens["points"] - 6) < 1e-9 and tokens["met"] == "no"  # above the upper bound
    # the stretch target is the plain score over all questions
    assert abs(by_name["RGB-LLaVA, score over all questions (stretch)"]["points"] - 64) < 1e-9
    assert by_name["RGB-LLaVA, score over all questions (stretch)"]["met"] == "no"
    assert not any(r["comparison"].startswith(BLIND) for r in rows)  # the floor is not a model under test


def test_clustered_errors_grow_with_questions_that_share_a_scene():
    """The questions of a scene are not independent: with every question of a scene right or wrong
    together, the scene bootstrap's s.e. is that of the 100 scenes, not of the 500 questions."""
    from eval.mini.score import clustered_se, paired_difference

    scenes = [f"s{i}" for i in range(100) for _ in range(5)]
    together = {"pope": [float(int(s[1:]) % 2) for s in scenes]}
    se = clustered_se(together, {"pope": scenes})
    assert se == pytest.approx(math.sqrt(0.25 / 100), rel=0.15)
    assert se > 2 * math.sqrt(0.25 / 500)
    independent = {"pope": [float(i % 2) for i in range(500)]}
    assert clustered_se(independent, {"pope": scenes}) < 0.5 * se  # mixed within each scene
    assert clustered_se(together, {"pope": scenes}) == se  # seeded: the same draws every time
    d, d_se = paired_difference(together, together, {"pope": scenes})
    assert d == 0 and d_se == 0
    with pytest.raises(ValueError, match="not the same questions"):
        paired_difference(together, {"pope": [1.0]}, {"pope": scenes})


def test_the_demo_model_is_chosen_on_validation_among_the_gs_llavas():
    from eval.mini.report import demo_choice

    val = {
        "accuracy": {
            "RGB-LLaVA": {"all": 0.9},  # not a GS model
            "GS-LLaVA n144-k64": {"all": 0.65},
            "GS-LLaVA n144-k32": {"all": 0.675},
            BLIND: {"all": 0.99},  # the floor never ships
        },
        "accuracy_per_seed": {"GS-LLaVA n144-k32": [{"all": 0.66}, {"all": 0.70}, {"all": 0.665}]},
    }
    choice = demo_choice(val)
    assert choice["model"] == "gs-n144-k32" and choice["seed"] == 1
    assert choice["validation_score"] == 0.675 and choice["seed_validation_score"] == 0.70
    with pytest.raises(ValueError, match="no GS-LLaVA validation score"):
        demo_choice({"accuracy": {"RGB-LLaVA": {"all": 1.0}}, "accuracy_per_seed": {}})


def test_run_time_targets_give_the_one_seed_time_of_a_several_seed_run():
    from eval.mini.report import _time_targets

    stages = {
        "world": 60,
        "teacher": 120,
        "LLaVA rgb, seed 0": 600,
        "eval, seed 0": 60,
        "LLaVA rgb, seed 1": 900,
    }
    timings = {"stages": stages, "total_s": sum(stages.values()), "skipped": 0}
    whole, one = _time_targets(timings, 2)
    assert (
        whole["points"] == pytest.approx(29.0) and whole["target"] == "≤ 82.5 min" and whole["met"] == "yes"
    )
    assert one["points"] == pytest.approx(14.0) and one["target"] == "≤ 45 min" and one["met"] == "yes"
    (single,) = _time_targets({**timings, "total_s": 46 * 60}, 1)
    assert single["met"] == "no" and single["comparison"].startswith("time of the whole run, 1 seed ")
    resumed = _time_targets({**timings, "skipped": 3}, 2)
    assert all(t["met"].startswith("not testable: 3 finished stages") for t in resumed)
    assert _time_targets({}, 2) == []


def test_report_reads_each_zero_shot_set_from_its_own_folder(tmp_path):
    from eval.mini.report import _zeroshot, _zeroshot_over_seeds

    def write(run, folder, dataset, gs, rgb):
        f = run / folder / "gs-n144-k64" / "zeroshot.json"
        f.parent.mkdir(parents=True)
        f.write_text(json.dumps({"results": {dataset: {"GS": {"acc1": gs}, "RGB": {"acc1": rgb}}}}))

    seeds = [tmp_path / "s0", tmp_path / "s1"]
    for run, gs in zip(seeds, (0.2, 0.3), strict=True):
        write(run, "zeroshot", "wds/mini_world", 0.5, 0.6)
        write(run, "zeroshot_words", "wds/mini_words", gs, 0.5)
    _, rows, words = _zeroshot_over_seeds([_zeroshot(run, "zeroshot_words") for run in seeds])
    assert rows[0][:3] == ["gs-n144-k64", "wds/mini_words", "50.0"]
    assert words["gs-n144-k64"]["gs"] == pytest.approx(0.25) and words["gs-n144-k64"][
        "ratio"
    ] == pytest.approx(0.5)
    # the between-seed s.d. in the unit of the mean (a fraction; the plot's error bars scale both by 100)
    assert words["gs-n144-k64"]["gs_sd"] == pytest.approx(0.0707, abs=1e-4)
    assert _zeroshot(seeds[0])["gs-n144-k64"]["dataset"] == "wds/mini_world"  # the 24 classes by default
    assert _zeroshot(tmp_path / "older run", "zeroshot_words") == {}  # runs before the reading set


def test_report_refuses_a_seed_that_did_not_finish(tmp_path):
    from eval.mini.report import seed_runs

    (tmp_path / "vqa").mkdir()
    assert seed_runs(tmp_path, 1) == [tmp_path]
    with pytest.raises(FileNotFoundError, match="seed1: no vqa/ results.*--seeds 2"):
        seed_runs(tmp_path, 2)
    (tmp_path / "seed1" / "vqa").mkdir(parents=True)
    assert seed_runs(tmp_path, 2) == [tmp_path, tmp_path / "seed1"]


def test_the_shipped_demo_carries_both_training_logs(tmp_path):
    from eval.mini.ship_demo import _train_log

    llava = tmp_path / "llava" / "gs-n144-k64"
    for folder, loss in (("pretrain", 2.5), ("final", 0.7)):
        (llava / folder).mkdir(parents=True)
        (llava / folder / "trainer_state.json").write_text(
            json.dumps({"global_step": 3, "log_history": [{"step": 1, "loss": loss}]})
        )
    assert _train_log(llava) == {
        "pretrain": [{"step": 1, "loss": 2.5}],
        "finetune": [{"step": 1, "loss": 0.7}],
    }
    (llava / "final" / "trainer_state.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"final/trainer_state.json: missing"):
        _train_log(llava)


SHIPPED_DEMO = Path(__file__).resolve().parents[2] / "eval" / "mini" / "demo_llava"


@pytest.mark.skipif(
    not (SHIPPED_DEMO / "model" / "model.safetensors").exists(), reason="no shipped demo model"
)
def test_the_shipped_demo_model_answers_its_scenes_from_their_images():
    """What `bash scripts/demo.sh` ends with: the shipped GS-LLaVA, its images fitted on the fly."""
    import io

    from eval.mini.ask import ask, shipped_questions

    qs = shipped_questions(SHIPPED_DEMO / "scenes")
    out = io.StringIO()
    right, asked = ask(str(SHIPPED_DEMO / "model"), qs, out)
    text = out.getvalue()
    build = json.loads((SHIPPED_DEMO / "build.json").read_text())
    assert asked == len(qs) >= 10 and build["model"] in text
    assert text.count("✓") == right and text.count("✗") == asked - right
    # the model answers ~70% of all its test questions (build.json) and 11 of the 14 here; the bar is the
    # question-only prior (~40% in the committed run), so a broken processor or projector fails it
    assert right >= 0.4 * asked


TINY_VIT = {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8}


def _tiny_mini_out(root, counts: dict[str, int]):
    """A miniature OUT laid out as mini_repro.sh writes it: per split `counts[split]` random 32² scenes
    (images, N = 20 splats, scenes.jsonl alternating a red circle and a blue square), a tiny random RGB tower and
    a tiny random GS encoder gs-n20-k8 (K = 8, the half budget of the 4×4 grid). Returns (out, gs model)."""
    import numpy as np
    import torch
    from PIL import Image

    from gs_encoder.modeling_gs_vision import GSVisionConfig, GSVisionModel, RGBVisionModel
    from gs_encoder.splat_io import save_splats

    torch.manual_seed(0)
    out = root / "out"
    rng = np.random.default_rng(0)
    for split, count in counts.items():
        (out / "data" / "images" / split).mkdir(parents=True)
        lines = []
        for i in range(count):
            img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(img).save(out / "data" / "images" / split / f"{i}.png")
            s = torch.rand(20, 8)
            s[:, 2:5] = torch.tensor([0.05, 0.0, 0.05])
            save_splats(out / "splats" / "n20" / split / f"{i}.gs.npy", s)
            obj = [("red", "circle"), ("blue", "square")][i % 2]
            lines.append(json.dumps({"seed": i, "objects": [{"colour": obj[0], "shape": obj[1]}]}))
        (out / "data" / f"{split}_scenes.jsonl").write_text("\n".join(lines) + "\n")
    RGBVisionModel(GSVisionConfig(vision_cfg=TINY_VIT, embed_dim=32, input="rgb")).save_pretrained(
        out / "encoders" / "rgb"
    )
    gs = GSVisionModel(
        GSVisionConfig(vision_cfg=TINY_VIT, embed_dim=32, num_tokens=8, resampler_heads=2, gs_width=32)
    )
    gs.save_pretrained(out / "encoders" / "gs-n20-k8" / "stage2" / "final")
    return out, gs.eval()


def test_token_agreement_measures_each_encoder_against_the_rgb_tower(tmp_path, capsys):
    # the printed cosine is the mean over tokens of the GS tokens against the RGB grid resized as the positions
    # are; a stage or OUT without encoders is one line naming what is missing
    import torch
    import torch.nn.functional as F

    from eval.mini.token_agreement import main as agreement_main
    from gs_encoder.data import pad_splat_sets
    from gs_encoder.image_io import load_image
    from gs_encoder.modeling_gs_vision import RGBVisionModel, resize_token_grid
    from gs_encoder.splat_io import load_splats
    from gs_encoder.teacher import clip_normalise

    out, gs = _tiny_mini_out(tmp_path, {"test": 3})
    assert agreement_main(["--out", str(out), "--json", str(tmp_path / "a.json")]) == 0
    got = json.loads((tmp_path / "a.json").read_text())["gs-n20-k8"]
    images = sorted((out / "data" / "images" / "test").glob("*.png"))
    rgb = RGBVisionModel.from_pretrained(out / "encoders" / "rgb").eval()
    with torch.no_grad():
        r = rgb(clip_normalise(torch.stack([load_image(p, 32) for p in images]), 32)).hidden_states[-2][:, 1:]
        splats, mask = pad_splat_sets(
            [load_splats(out / "splats" / "n20" / "test" / f"{p.stem}.gs.npy") for p in images]
        )
        g = gs(splats, mask).hidden_states[-2][:, 1:]
    r = resize_token_grid(r, 8)
    assert got["cosine"] == pytest.approx(F.cosine_similarity(g, r, dim=-1).mean().item(), abs=1e-5)
    gc, rc = g - g.mean(1, keepdim=True), r - r.mean(1, keepdim=True)
    assert got["cosine_centred"] == pytest.approx(F.cosine_similarity(gc, rc, dim=-1).mean().item(), abs=1e-5)
    assert "probe_auc" not in got and "| gs-n20-k8 |" in capsys.readouterr().out
    assert agreement_main(["--out", str(out), "--stage", "1"]) == 2
    assert f"{out}/encoders holds no gs-*/stage1/final encoder" in capsys.readouterr().err
    assert agreement_main(["--out", str(tmp_path)]) == 2
    assert f"is {tmp_path} a mini_repro.sh OUT?" in capsys.readouterr().err
    assert agreement_main(["--out", str(out), "--probe"]) == 2  # no train scenes to learn from
    assert f"{out}/data/train_scenes.jsonl is missing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # too few train scenes to pick the ridge weight: usage error
        agreement_main(["--out", str(out), "--probe", "--probe-train", "0"])
    assert (
        exit_.value.code == 2
        and "--probe-train 0: the probe picks its ridge weight" in capsys.readouterr().err
    )


def test_object_probe_auc_is_exact_and_tells_informative_features_from_noise():
    import torch

    from eval.mini.token_agreement import _auc, probe_auc

    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: three of four pairs ordered; a tie counts half
    assert _auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == 0.75
    assert _auc(torch.tensor([1.0, 1.0]), torch.tensor([1, 0])) == 0.5
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(300, 6, generator=g) < 0.3).float()
    signal = y @ torch.randn(6, 40, generator=g) + 0.3 * torch.randn(300, 40, generator=g)
    noise = torch.randn(300, 40, generator=g)
    assert probe_auc(signal[:200], y[:200], signal[200:], y[200:]) > 0.97
    assert abs(probe_auc(noise[:200], y[:200], noise[200:], y[200:]) - 0.5) < 0.08


def test_object_probe_scores_pooled_tokens_of_each_encoder_and_the_rgb_tower(tmp_path, capsys):
    # --probe: the ridge probe learns (colour, shape) presence from the train scenes' pooled tokens and is
    # scored on every test scene, for each GS encoder and the RGB tower
    import torch

    from eval.mini.token_agreement import main as agreement_main
    from eval.mini.token_agreement import pool_tokens, presence_labels, probe_auc
    from gs_encoder.data import pad_splat_sets
    from gs_encoder.splat_io import load_splats

    out, gs = _tiny_mini_out(tmp_path, {"train": 12, "test": 4})
    args = ["--out", str(out), "--probe", "--probe-train", "10", "--json", str(tmp_path / "p.json")]
    assert agreement_main(args) == 0
    got = json.loads((tmp_path / "p.json").read_text())
    printed = capsys.readouterr().out
    assert "object probe AUC" in printed and "| RGB tower |" in printed

    def tokens(split, seeds):
        sets = [load_splats(out / "splats" / "n20" / split / f"{i}.gs.npy") for i in seeds]
        with torch.no_grad():
            return pool_tokens(gs(*pad_splat_sets(sets)).hidden_states[-2][:, 1:])

    scenes = {
        split: [
            json.loads(line) for line in (out / "data" / f"{split}_scenes.jsonl").read_text().splitlines()
        ]
        for split in ("train", "test")
    }
    pairs = [("blue", "square"), ("red", "circle")]
    want = probe_auc(
        tokens("train", range(10)),
        presence_labels(scenes["train"][:10], pairs),
        tokens("test", range(4)),
        presence_labels(scenes["test"], pairs),
    )
    assert got["gs-n20-k8"]["probe_auc"] == pytest.approx(want, abs=1e-6)
    assert 0.0 <= got["rgb"]["probe_auc"] <= 1.0


def test_report_times_a_run_by_its_own_start_and_commit(tmp_path):
    from datetime import datetime

    from eval.mini.report import _timings

    older, run, later = (
        datetime(2026, 12, d, h, tzinfo=UTC).isoformat() for d, h in ((1, 10), (4, 20), (4, 21))
    )
    (tmp_path / "timings.tsv").write_text(
        f"100\t# run {older} commit 0000000\n100\tworld\n160\tteacher\n400\treport\n"  # an older run
        f"1000\t# run {run} commit abc1234\n1000\tworld\n1030\t# skipped data\n"
        "1030\tteacher\n1330\treport\n"
    )
    headers, rows, data = _timings(tmp_path)
    assert data["started"] == run and data["commit"] == "abc1234"
    assert data["stages"] == {"world": 30, "teacher": 300} and data["skipped"] == 1 and data["total_s"] == 330
    # a later invocation stopped before its report (killed): the report is still the finished one's
    with (tmp_path / "timings.tsv").open("a") as f:
        f.write(f"2000\t# run {later} commit def5678\n2000\t# skipped world\n2000\tencoders\n")
    assert _timings(tmp_path)[2]["commit"] == "abc1234"


def test_the_teachers_one_object_pairs_keep_every_class_beside_the_zero_shot_scenes(tmp_path):
    """The zero-shot scenes hold all 48 one-object captions: held-out scenes are kept from the teacher's
    one-object pairs by signature, so those pairs still cover the classes (not one caption left over); a
    stream whose every candidate is excluded is an error, not an endless loop; split sizes must be ≥ 1."""
    import tarfile

    from eval.mini.data import main
    from eval.mini.world import _extra_scenes, zeroshot_scenes

    assert main(["--out", str(tmp_path / "w"), "--train", "60", "--val", "2", "--test", "2"]) == 0
    with tarfile.open(tmp_path / "w" / "shards" / "clip-0000.tar") as tf:
        captions = [tf.extractfile(m).read().decode() for m in tf.getmembers() if m.name.endswith(".txt")]
    singles = {c for c in captions if "," not in c and " and " not in c and "word" not in c}
    assert len(singles) > 20  # the train split alone holds about ten
    every = {caption(s) for s in zeroshot_scenes(10)}
    with pytest.raises(ValueError, match="scenes found outside the excluded ones"):
        _extra_scenes(30_000_000, 5, every, text_prob=0.0, num_objects=1)
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x"), "--train", "10", "--val", "0", "--test", "2"])
