"""The pretrained Vicuna stand-in of the miniature (eval/mini/lm, built by eval.mini.pretrain_lm)."""

import json
from pathlib import Path

import pytest

from eval.mini import data, questions, world
from eval.mini.pretrain_lm import LM_SEED_BASE, caption_dialogues, evaluate, main, plain_caption

SHIPPED = Path(__file__).resolve().parents[2] / "eval" / "mini" / "lm"


def test_caption_takes_the_place_of_the_image_and_answers_are_the_training_ones():
    seed = LM_SEED_BASE + 7
    scene = world.make_scene(seed)
    dialogues = caption_dialogues(seed)
    expected = [
        [(q["question"], questions.answer_style(q)) for q in d]
        for d in questions.dialogues(scene, questions.questions(scene))
    ]
    assert len(dialogues) == len(expected) >= 1
    for turns, qa in zip(dialogues, expected, strict=True):
        assert all("<image>" not in t["value"] for t in turns)
        assert turns[0]["value"].startswith(world.caption(scene) + "\n")
        got = [
            (h["value"].removeprefix(world.caption(scene) + "\n"), g["value"])
            for h, g in zip(turns[::2], turns[1::2], strict=True)
        ]
        assert got == qa


def test_plain_caption_is_the_stage_1_sample_without_its_image(tiny_tokenizer):
    from llava_gs.conversation import IGNORE_INDEX, tokenize_conversation

    seed = LM_SEED_BASE + 11
    cap = world.caption(world.make_scene(seed))
    sample = plain_caption(seed, tiny_tokenizer)
    # what stage 1 trains on, with K = 4 image tokens, is the same caption after those tokens
    stage1 = {"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": cap}
    ids, labels = tokenize_conversation(list(stage1), tiny_tokenizer, "plain", 1, 4)
    image_id = tiny_tokenizer.convert_tokens_to_ids("<image>")
    assert ids.count(image_id) == 4 and image_id not in sample["input_ids"]
    kept = [(i, t) for i, t in zip(ids, labels, strict=True) if i != image_id]
    assert [i for i, _ in kept] == sample["input_ids"] and [t for _, t in kept] == sample["labels"]
    target = [t for t in sample["labels"] if t != IGNORE_INDEX]
    assert tiny_tokenizer.decode(target, skip_special_tokens=True).strip() == cap


def test_caption_fraction_mixes_plain_captions_into_the_training_stream(tmp_path, monkeypatch):
    from eval.mini import pretrain_lm

    seen = []
    real = pretrain_lm.plain_caption
    monkeypatch.setattr(pretrain_lm, "plain_caption", lambda seed, tok: seen.append(seed) or real(seed, tok))
    args = (
        "--steps 2 --batch-size 4 --hidden 32 --layers 1 --heads 2 --warmup 1 --eval-every 2 --eval-scenes 2"
    )
    assert main(["--out", str(tmp_path / "a"), *args.split(), "--threads", "1"]) == 0
    assert seen == [s.seed for s in world.scenes_for("val", 2)]  # only the logged caption loss
    seen.clear()
    assert main(["--out", str(tmp_path / "b"), *args.split(), "--caption-fraction", "0.5"]) == 0
    trained = [s for s in seen if s >= LM_SEED_BASE]
    assert len(trained) >= 8  # 0.5: one caption per dialogue, two dialogues a scene, 32+ samples pooled
    log = json.loads((tmp_path / "b" / "pretrain_log.json").read_text())
    assert log[-1]["caption_loss"] > 0
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "c"), "--caption-fraction", "1"])


def test_lm_scenes_are_not_train_validation_or_test_scenes():
    splits = [world.scenes_for(split, 300) for split in ("train", "val", "test")]
    held = {s.signature() for scenes in splits for s in scenes}
    seeds = {s.seed for scenes in splits for s in scenes}
    lm_seeds = {LM_SEED_BASE + offset + i for offset in (1_000_000, 2_000_000) for i in range(300)}
    assert not seeds & lm_seeds
    lm = {world.make_scene(seed).signature() for seed in lm_seeds}
    # scenes are drawn from a large space: a few coincidences are possible, the seed ranges are what is disjoint
    assert len(lm & held) <= 6


def test_a_few_steps_write_a_loadable_checkpoint_and_its_log(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "lm"
    args = (
        "--steps 3 --batch-size 4 --hidden 32 --layers 1 --heads 2 --warmup 1 --eval-every 3 --eval-scenes 2"
    )
    assert main(["--out", str(out), *args.split(), "--threads", "1"]) == 0
    log = json.loads((out / "pretrain_log.json").read_text())
    assert [e["step"] for e in log] == [3] and 0 <= log[0]["all"] <= 100
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 1 and tok.convert_tokens_to_ids("<image>") == 3


def test_init_continues_a_previous_lm_its_tokenizer_and_its_log(tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM

    small = "--batch-size 4 --hidden 32 --layers 1 --heads 2 --warmup 1 --eval-scenes 2 --threads 1"
    first = tmp_path / "first"
    assert main(["--out", str(first), "--steps", "2", "--eval-every", "2", *small.split()]) == 0
    before = AutoModelForCausalLM.from_pretrained(first).state_dict()
    out = tmp_path / "cont"
    args = [
        "--init",
        str(first),
        "--out",
        str(out),
        "--steps",
        "2",
        "--eval-every",
        "1",
        "--caption-fraction",
        "0.3",
    ]
    assert main([*args, *small.split()]) == 0
    log = json.loads((out / "pretrain_log.json").read_text())
    assert [e["step"] for e in log] == [2, 3, 4]  # the first run's entry, then its steps continued
    assert log[-1]["continued_from"] == str(first) and log[-1]["caption_fraction"] == 0.3
    assert (out / "tokenizer.json").read_text() == (first / "tokenizer.json").read_text()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    assert not list(tmp_path.glob(".cont.*"))  # no temporary folder left
    with pytest.raises(SystemExit, match="no model.safetensors"):
        main(["--init", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"), "--steps", "1"])


@pytest.mark.skipif(
    not (SHIPPED / "model.safetensors").exists(), reason="eval/mini/lm is not in this checkout"
)
def test_shipped_lm_reads_captions_and_answers_the_world_questions():
    """The committed checkpoint: the world's words are single tokens and, given the caption as text, it answers
    the validation scenes' questions far above the question-only prior (~39%)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(SHIPPED)
    model = AutoModelForCausalLM.from_pretrained(SHIPPED)
    scenes = world.scenes_for("val", 24)
    for word in [*world.COLOURS, *world.SHAPES, *world.SIZES, *world.NUMBERS[1:]]:  # one token each
        assert len(tok(" " + word, add_special_tokens=False)["input_ids"]) == 1, word
    acc = evaluate(model, tok, scenes)
    assert acc["all"] >= 60, acc
    assert acc["text"] >= 90 and acc["open"] >= 90, acc


def test_random_lm_ablation_builds_from_a_world_folder(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from eval.mini import make_lm

    data.write_split(tmp_path / "data", "train", world.scenes_for("train", 6))
    args = [
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "lm"),
        *"--hidden 32 --layers 1 --heads 2".split(),
    ]
    assert make_lm.main(args) == 0
    tok = AutoTokenizer.from_pretrained(tmp_path / "lm")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    assert model.config.vocab_size == len(tok) and model.config.hidden_size == 32
