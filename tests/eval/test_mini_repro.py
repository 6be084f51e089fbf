"""The miniature reproduction: its scorer, and `scripts/mini_repro.sh --smoke` running every stage."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eval.mini.score import _logged_score, chance, question_only_prior, score, template

ROOT = Path(__file__).resolve().parents[2]


def _q(kind: str, answer: str, **extra) -> dict:
    return {"kind": kind, "raw": "q", "question": "q", "answer": answer, "image": "x.png", **extra}


def test_each_kind_is_scored_by_the_lmms_eval_scorer_of_its_benchmark():
    sqa = _q("sqa", "B", choices=["circle", "square", "triangle"], answer_index=1)
    assert score("sqa", sqa, "B") == 1 and score("sqa", sqa, "B. square") == 1
    assert (
        score("sqa", sqa, "A") == 0 and score("sqa", sqa, "The answer is B") == 0
    )  # the letter, as LLaVA parses
    assert (
        score("pope", _q("pope", "yes"), "Yes") == 1
        and score("pope", _q("pope", "yes"), "Yes, there is.") == 0
    )
    mme = _q("mme", "No", pair="p0", category="color")
    assert (
        score("mme", mme, "no") == 1
        and score("mme", mme, "No, it is not.") == 1
        and score("mme", mme, "") == 0
    )
    # TextVQA: the EvalAI normalisation, then exact; GQA: exact match with case and punctuation ignored
    assert (
        score("text", _q("text", "owl"), "OWL") == 1 and score("text", _q("text", "owl"), "an owl sign") == 0
    )
    assert score("gqa", _q("gqa", "red"), "Red.") == 1 and score("gqa", _q("gqa", "red"), "red circle") == 0
    # MM-Vet's judge: every part of an <AND> answer, and a listed item that is none of them counts against
    shapes = _q("open", "circle<AND>square")
    assert score("open", shapes, "A square and a circle.") == 1 and score("open", shapes, "A circle.") == 0.5
    assert score("open", shapes, "circle, square, triangle and diamond") == 0.5  # naming every shape
    with pytest.raises(ValueError, match="unknown question kind"):
        score("vqa", shapes, "x")


def test_prior_uses_the_question_template_only():
    assert template("Is there a red circle in the image?") == template("Is there a blue square in the image?")
    assert template("Which shape is red?\nA. circle\nB. square") == "which shape is _?"
    train = [
        _q("pope", a, question=f"Is there a {c} circle in the image?")
        for c, a in (("red", "yes"), ("blue", "yes"), ("green", "no"))
    ]
    test = [_q("pope", a, question="Is there a purple square in the image?") for a in ("yes", "no")]
    assert question_only_prior(train, test) == {"pope": [1.0, 0.0]}
    assert chance(train, test) == {"pope": 0.5}


@pytest.mark.parametrize(
    "knobs, args",
    [
        ({"WARM_EPOCHS": "1"}, ["--smoke"]),
        ({"WARM_EPOCHS": "two"}, []),
        ({"WARM_EPOCHS": "2", "FT_WORDS": "0"}, []),
    ],
)
def test_reading_warm_up_needs_label_only_reading_questions(tmp_path, knobs, args):
    """WARM_EPOCHS trains on the FT_WORDS reading questions: without them (none by default), or not a count,
    one line and exit 2 before anything is written."""
    env = dict(os.environ, OUT=str(tmp_path / "repro"), **knobs)
    res = subprocess.run(
        ["bash", "scripts/mini_repro.sh", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 2 and "WARM_EPOCHS (epochs of the reading warm-up) must be" in res.stderr
    assert not (tmp_path / "repro").exists()


@pytest.mark.slow
def test_mini_repro_smoke_runs_every_stage(tmp_path):
    env = dict(
        os.environ,
        OUT=str(tmp_path / "repro"),
        JUDGE_PORT="18793",
        MASTER_PORT="29593",
        HF_HOME=str(tmp_path / "hf"),
        # the reading options: larger labels, label-only scenes for the teacher, for stage 1 and (4 of
        # them) asked their word in finetuning, after a one-epoch warm-up on those alone
        LABEL_SCALE="1.45",
        CLIP_WORDS="8",
        PT_WORDS="8",
        FT_WORDS="4",
        READING="3",
        WARM_EPOCHS="1",
    )
    res = subprocess.run(
        ["bash", "scripts/mini_repro.sh", "--smoke"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    data = tmp_path / "repro" / "data"
    label_only = [
        r
        for r in json.loads((data / "train_pretrain.json").read_text())
        if re.fullmatch(r"The word [A-Z]+\.", r["conversations"][1]["value"])
    ]
    assert len(label_only) == 8  # stage-1 captions of label-only scenes, fitted to splats like the rest
    read = [r for r in json.loads((data / "train_finetune.json").read_text()) if r["id"].endswith("-read")]
    assert {r["image"] for r in read} <= {r["image"] for r in label_only} and len(read) == 4
    assert json.loads((data / "train_reading.json").read_text()) == read  # the warm-up's data
    for name in ("rgb", "gs-n36-k16"):  # warm-up, then the finetuning from its folder and projector
        llava = tmp_path / "repro" / "llava" / name
        assert all((llava / stage / "model.safetensors").is_file() for stage in ("warm", "final"))
    splats = tmp_path / "repro" / "splats" / "n16"
    assert len(list((splats / "train").rglob("*.gs.npy"))) == 64  # the GS encoders' data: the scenes
    assert len(list((splats / "train_words").rglob("*.gs.npy"))) == 8  # LLaVA's stage 1 ...
    for stage in ("stage1", "stage2"):  # ... and, beside the scenes, the GS encoders' data
        config = tmp_path / "repro" / "encoders" / "gs-n16-k16" / stage / "distill_config.json"
        assert json.loads(config.read_text())["data"] == [str(splats / "train"), str(splats / "train_words")]
    report = json.loads((tmp_path / "repro" / "report" / "mini_repro.json").read_text())
    # the report names the settings given in the environment
    assert (
        "LABEL_SCALE=1.45 CLIP_WORDS=8 PT_WORDS=8 FT_WORDS=4 READING=3 WARM_EPOCHS=1 bash scripts/mini_repro.sh --smoke"
        in report["command"]
    )
    # dated by the run's start and commit in timings.tsv, not by the time the report was written
    runs = [ln for ln in (tmp_path / "repro" / "timings.tsv").read_text().splitlines() if "\t# run " in ln]
    started, commit = runs[-1].split("\t# run ")[1].split(" commit ")
    assert report["machine"]["date"] == started and report["machine"]["reported"] >= started
    assert report["machine"]["git"] == commit == report["timings"]["commit"] and commit
    models = {"RGB-LLaVA", "GS-LLaVA n16-k16", "GS-LLaVA n36-k16", "GS-LLaVA n36-k8"}
    assert models <= set(report["accuracy"]) and "question-only prior" in report["accuracy"]
    assert {f"{m}, shuffled images" for m in models} <= set(report["accuracy"])
    # the blind floor: the default GS-LLaVA's pipeline on one blank image, asked with that image
    blind = "blind GS-LLaVA n36-k16 (one blank image)"
    assert blind in report["accuracy"] and f"{blind}, shuffled images" not in report["accuracy"]
    assert f"RGB-LLaVA − {blind}" in {t["comparison"] for t in report["targets"]}
    # validation beside test, and the demo chosen there
    assert set(report["validation"]["accuracy"]) == {m for m in report["accuracy"] if "shuffled" not in m}
    assert report["demo_choice"]["label"] in models
    # every per-question score is the one lmms-eval logged, and score() gives the same for the same answer
    questions = json.loads((data / "test_questions.json").read_text())
    checked = 0
    for f in (tmp_path / "repro" / "vqa" / "rgb").rglob("*_samples_mw_*.jsonl"):
        kind = re.search(r"_samples_mw_([a-z]+)\.jsonl$", f.name)
        if not kind:
            continue
        kind = kind.group(1)
        of_kind = [q for q in questions if q["kind"] == kind]
        for line in f.read_text().splitlines():
            sample = json.loads(line)
            response = sample["filtered_resps"]
            while isinstance(response, list):
                response = response[0]
            i = sample["doc_id"]
            assert score(kind, of_kind[i], response, i) == _logged_score(kind, sample, f.name), (
                kind,
                response,
            )
            checked += 1
    assert checked == len(questions)
    assert set(report["budgets"]) == {"16", "36"} and len(report["zeroshot"]) == 3  # the three GS encoders
    assert report["zeroshot_words"].keys() == report["zeroshot"].keys()  # reading, for every GS encoder
    for name in report["zeroshot_words"]:
        run = json.loads((tmp_path / "repro" / "zeroshot_words" / name / "zeroshot.json").read_text())
        assert set(run["results"]) == {"wds/mini_words"} and run["args"]["num_gaussians"] == int(
            name.split("-")[1][1:]
        )
    # the best GS-LLaVA, shipped the way eval/mini/demo_llava is, answers its scenes' questions
    shipped = tmp_path / "repro" / "report" / "demo_llava"
    build = json.loads((shipped / "build.json").read_text())
    assert build["model"] == report["demo_choice"]["model"] and build["chosen_on"].startswith("validation")
    assert (shipped / "model" / "model.safetensors").is_file()
    assert len(build["scenes"]) == 2 and all((shipped / "scenes" / s).is_file() for s in build["scenes"])
    train_log = json.loads((shipped / "train_log.json").read_text())
    assert all(any("loss" in e for e in train_log[stage]) for stage in ("pretrain", "finetune"))
    asked = subprocess.run(
        [
            sys.executable,
            "-m",
            "eval.mini.ask",
            "--model",
            str(shipped / "model"),
            "--scenes",
            str(shipped / "scenes"),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    n = len(json.loads((shipped / "scenes" / "questions.json").read_text()))
    assert asked.returncode == 0 and f" of {n} answered right" in asked.stdout, asked.stderr[-2000:]
    assert report["stage1_caption_loss"] and all(
        v["steps"] >= 1 for v in report["stage1_caption_loss"].values()
    )
    comparisons = {t["comparison"] for t in report["targets"]}
    assert "N = 36: K = 8 − K = 16 tokens" in comparisons
    for m in models:
        assert set(report["accuracy"][m]) == {"sqa", "text", "pope", "mme", "open", "gqa", "all"}
    assert (tmp_path / "repro" / "report" / "mini_repro.png").stat().st_size > 0
    # a rerun with a second seed and the head-size ablation skips every finished stage of seed 0 and the
    # shared data, trains seed 1 in OUT/seed1 and the wide-head encoder for both, and the report gives the
    # mean over both seeds (the ablation runs here only: one run of it is enough, and each costs minutes)
    again = subprocess.run(
        ["bash", "scripts/mini_repro.sh", "--smoke", "--head-ablation", "--seeds", "2"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert again.returncode == 0 and again.stdout.count("(done:") >= 10, (again.stdout + again.stderr)[-4000:]
    assert (tmp_path / "repro" / "seed1" / "llava" / "gs-n36-k16" / "final" / "model.safetensors").is_file()
    two = json.loads((tmp_path / "repro" / "report" / "mini_repro.json").read_text())
    assert two["seeds"] == 2 and all(len(two["accuracy_per_seed"][m]) == 2 for m in models)
    for m in models:
        seeds = [a["all"] for a in two["accuracy_per_seed"][m]]
        assert abs(two["accuracy"][m]["all"] - sum(seeds) / 2) < 1e-9
    assert all(t["seeds"] == 2 for t in two["targets"] if "seeds" in t)
    # the head-size ablation: the default narrow head (64, ×1) beside the full-width one (128, ×4)
    assert len(two["accuracy_per_seed"]["GS-LLaVA n36-k16-wide"]) == 2 and len(two["zeroshot"]) == 4
    heads = two["gs_heads"]
    assert (heads["gs-n36-k16"]["gs_width"], heads["gs-n36-k16-wide"]["gs_width"]) == (64, 128)
    assert heads["gs-n36-k16-wide"]["head_params"] > 2 * heads["gs-n36-k16"]["head_params"]
    assert heads["gs-n36-k16"]["vit_params"] == heads["gs-n36-k16-wide"]["vit_params"]
    assert "GS-LLaVA n36-k16 (narrow head) − GS-LLaVA n36-k16-wide" in {
        t["comparison"] for t in two["targets"]
    }
    time_row = next(t for t in two["targets"] if t["comparison"].startswith("time of the whole run"))
    assert time_row["met"].startswith("not testable")  # a resumed run's time is not a whole run's
