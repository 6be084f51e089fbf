"""lmms-eval with the `llava_gs` plugin on the offline mini tasks (eval/tasks/mini), and the stand-in judge."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lmms_eval")

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "eval" / "tasks" / "mini"
METRICS = {
    "gv_scienceqa_img": ["exact_match,none"],
    "gv_textvqa_val": ["exact_match,none"],
    "gv_pope": ["pope_accuracy,none", "pope_precision,none", "pope_recall,none", "pope_f1_score,none"],
    "gv_mme": ["mme_perception_score,none", "mme_cognition_score,none"],
    "gv_mmvet": ["gpt_eval_score,none"],
    "gv_gqa": ["exact_match,none"],
}


@pytest.fixture(scope="module")
def judge():
    """The loopback MM-Vet judge; its URL is in the environment before lmms-eval's MM-Vet scorer loads."""
    from eval.mini_judge import serve

    with serve() as url:
        old = {k: os.environ.get(k) for k in ("OPENAI_API_URL", "OPENAI_API_KEY")}
        os.environ.update(OPENAI_API_URL=url, OPENAI_API_KEY="local")
        yield url
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_judge_applies_the_mmvet_rule():
    from eval.mini_judge import grade

    head = "Compare ...\ngpt_query_prompt | Ground truth | Prediction | Correctness\n--- | --- | --- | ---\n"
    assert grade(head + "What is it? | cat <AND> orange | An orange cat. |") == 1.0
    assert grade(head + "What is it? | cat <AND> orange | A cat. |") == 0.5
    assert grade(head + "Drink? | coffee <OR> latte | It is a latte |") == 1.0
    assert grade(head + "Sign? | STOP | stopping |") == 0.0  # whole words only
    with pytest.raises(ValueError):
        grade("no table here")


def _run_cli(model_dir, cache, out, env):
    cmd = [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        "llava_gs",
        "--model_args",
        f"pretrained={model_dir},splat_cache={cache},progress=false",
        "--tasks",
        "gv_mini",
        "--include_path",
        str(TASKS),
        "--batch_size",
        "4",
        "--output_path",
        str(out),
        "--verbosity",
        "DEBUG",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    found = sorted(Path(out).rglob("*_results.json"))
    assert found, (
        f"lmms-eval wrote no results JSON (it exits 0 even when a task fails):\n{res.stderr[-3000:]}"
    )
    return json.loads(found[-1].read_text()), res.stdout + res.stderr


@pytest.mark.slow
def test_cli_runs_every_mini_task_and_reuses_the_splat_cache(tiny_init, tmp_path, judge):
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),
        PYTHONPATH=str(ROOT),
    )
    cache = tmp_path / "splats"
    results, log = _run_cli(tiny_init, cache, tmp_path / "run1", env)
    for task, keys in METRICS.items():
        assert task in results["results"], task
        for key in keys:
            value = results["results"][task][key]
            assert isinstance(value, (int, float)), (task, key, value)
    n_images = len(list(cache.rglob("*.gs.npy")))
    assert n_images >= 10  # the distinct mini-task images, fitted once each
    _, log2 = _run_cli(tiny_init, cache, tmp_path / "run2", env)
    counts = re.findall(r"llava_gs splat cache: (\d+) hits, (\d+) fitted", log2)
    assert counts and all(int(fitted) == 0 for _, fitted in counts)  # every image came from the cache
    assert int(counts[-1][0]) > 0
    assert len(list(cache.rglob("*.gs.npy"))) == n_images


def _oracle():
    """An lmms model that answers every question with its ground truth."""
    from lmms_eval.api.model import lmms

    class Oracle(lmms):
        def generate_until(self, requests):
            out = []
            for req in requests:
                _, _, doc_to_visual, doc_id, task, split = req.args
                doc = self.task_dict[task][split][doc_id]
                assert all(im.mode == "RGB" for im in doc_to_visual(doc))
                if "choices" in doc:  # ScienceQA style: the option letter
                    out.append("ABC"[doc["answer"]])
                else:
                    out.append(str(doc["answer"]).replace("<AND>", " and ").replace("<OR>", " or "))
            return out

        def loglikelihood(self, requests):
            raise NotImplementedError

        def generate_until_multi_round(self, requests):
            raise NotImplementedError

    return Oracle()


def test_oracle_answers_score_full_marks(judge, tmp_path, monkeypatch):
    """The mini tasks' data, YAMLs and the official scorers agree: true answers get full marks."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))

    tm = TaskManager(include_path=str(TASKS), include_defaults=False)
    res = simple_evaluate(model=_oracle(), tasks=["gv_mini"], task_manager=tm, log_samples=False)["results"]
    assert res["gv_scienceqa_img"]["exact_match,none"] == 1.0
    assert res["gv_textvqa_val"]["exact_match,none"] == 1.0
    assert res["gv_gqa"]["exact_match,none"] == 1.0
    assert res["gv_pope"]["pope_accuracy,none"] == 1.0 and res["gv_pope"]["pope_f1_score,none"] == 1.0
    assert res["gv_mme"]["mme_perception_score,none"] == 600.0  # 3 perception categories × (acc + acc+)
    assert res["gv_mme"]["mme_cognition_score,none"] == 200.0
    assert res["gv_mmvet"]["gpt_eval_score,none"] == 100.0


def test_loglikelihood_is_finite_and_greedy_flag_is_consistent(tiny_init, tmp_path):
    from lmms_eval.api.instance import Instance
    from PIL import Image

    from llava_gs.eval.lmms_plugin import LlavaGSLmms

    lm = LlavaGSLmms(pretrained=str(tiny_init), splat_cache="none", progress=False)
    photo = Image.new("RGB", (40, 30), (200, 80, 20))
    lm.task_dict = {"t": {"test": [{"q": "Colour?"}]}}
    reqs = [
        Instance(
            "loglikelihood",
            ("What colour is it?", target, lambda d: [photo], 0, "t", "test"),
            0,
            {"task": "t", "doc_id": 0, "repeats": 1},
        )
        for target in ("orange", "a blue car")
    ]
    scores = lm.loglikelihood(reqs)
    assert all(isinstance(s, float) and s < 0 and s == s for s, _ in scores)
    # each score is −(number of target tokens) × the model's own mean loss on them: no off-by-one
    vision = lm._vision([photo])
    prompt = lm._ids([{"from": "human", "value": lm._turn("What colour is it?", 1)}], 1, generation=True)
    for (score, greedy), target in zip(scores, ("orange", "a blue car"), strict=True):
        cont = lm.tokenizer(" " + target, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + cont])
        labels = torch.tensor([[-100] * len(prompt) + cont])
        with torch.no_grad():
            out = lm.model(input_ids=ids, labels=labels, **vision)
            argmax = out.logits[0, len(prompt) - 1 : -1].argmax(-1)
        assert score == pytest.approx(-float(out.loss) * len(cont), rel=1e-4)
        assert greedy == bool((argmax == torch.tensor(cont)).all())
    # generation agrees with a plain greedy `generate` on the same prompt and image
    gen = Instance(
        "generate_until",
        ("What colour is it?", {"max_new_tokens": 3, "until": []}, lambda d: [photo], 0, "t", "test"),
        0,
        {"task": "t", "doc_id": 0, "repeats": 1},
    )
    (answer,) = lm.generate_until([gen])
    with torch.no_grad():
        direct = lm.model.generate(input_ids=torch.tensor([prompt]), **vision, max_new_tokens=3, do_sample=False,
                                   eos_token_id=lm.tokenizer.eos_token_id, pad_token_id=lm.tokenizer.pad_token_id)  # fmt: skip
    assert answer == lm.tokenizer.decode(direct[0, len(prompt) :], skip_special_tokens=True).strip()
    assert lm.cache.misses == 1 and lm.cache.hits >= 2  # one fit, reused by every later request


def test_decoding_follows_lmms_evals_llava_wrapper(tiny_init, monkeypatch):
    # temperature > 0 samples even when the task says do_sample: false (MM-Vet), seeded; 0 is greedy
    from lmms_eval.api.instance import Instance
    from PIL import Image

    from llava_gs.eval.lmms_plugin import LlavaGSLmms

    lm = LlavaGSLmms(pretrained=str(tiny_init), splat_cache="none", progress=False, seed=7)
    lm.task_dict = {"t": {"test": [{"q": "?"}]}}
    photo = Image.new("RGB", (40, 30), (20, 80, 200))
    seen = []
    real = lm.model.generate

    def spy(**kw):
        seen.append({k: kw.get(k) for k in ("do_sample", "temperature")} | {"rng": torch.rand(1).item()})
        return real(**kw)

    monkeypatch.setattr(lm.model, "generate", spy)
    for kwargs in ({"temperature": 0.2, "do_sample": False}, {"temperature": 0, "do_sample": True}):
        req = Instance("generate_until", ("Q?", kwargs | {"max_new_tokens": 2}, lambda d: [photo], 0, "t", "test"), 0,
                       {"task": "t", "doc_id": 0, "repeats": 1})  # fmt: skip
        lm.generate_until([req, req])
    sampled, greedy = seen[0], seen[-1]  # two requests a call, batch size 1: four generate calls
    assert len(seen) == 4 and seen[1]["rng"] == sampled["rng"]
    assert sampled["do_sample"] is True and sampled["temperature"] == 0.2
    assert greedy["do_sample"] is False and greedy["temperature"] is None
    torch.manual_seed(7)
    assert sampled["rng"] == torch.rand(1).item()  # seeded with the model arg just before generating


def test_vqa_table_matches_tasks_and_units(tmp_path):
    from eval.vqa_table import build_table

    gs = {"gv_pope": {"pope_f1_score,none": 0.8}, "gv_mme": {"mme_perception_score,none": 700.0}}
    rgb = {"gv_pope": {"pope_f1_score,none": 0.9}, "gv_mme": {"mme_perception_score,none": 800.0}}
    headers, rows, data = build_table(gs, rgb, "GS")
    assert [r[0] for r in rows] == ["POPE (F1) (mini)", "MME (perception) (mini)"]
    assert rows[0][1:4] == ["90.0", "80.0", "0.889"] and rows[1][4] == "not comparable"
    _, rows, data = build_table({"pope": {"pope_f1_score,none": 0.859}}, None, "GS")
    assert rows == [["POPE (F1)", "–", "85.9", "–", "85.9"]] and not data["POPE (F1)"]["mini"]


def test_vqa_table_shows_the_papers_rows(tmp_path):
    from eval.vqa_table import main as vqa_table

    folder = tmp_path / "gs"
    folder.mkdir()
    (folder / "x_results.json").write_text(json.dumps({"results": {"gv_pope": {"pope_f1_score,none": 0.8}}}))
    assert vqa_table(["--gs", str(folder), "-o", str(tmp_path / "table")]) == 0
    md = (tmp_path / "table.md").read_text()
    # the paper's own GS-3136 row and VisionZip's 64-token row, with their sources and baselines
    assert (
        "| GaussianVision (CVPR 2026), LLaVA + Vicuna-7B | GS-3136 | 196 | 64.7 | 45.2 | 77.8 | 1414.37 | 19.4 | 52.25 |"
        in md
    )
    assert (
        "| VisionZip (CVPR 2025) | VisionZip | 64 | 69 | 55.5 | 77 | 1690 | 31.7 | 55.1 | LLaVA-1.5-7B, 576 tokens |"
        in md
    )
    assert "RGB: ViT-B/16 trained on 12.8M DataComp, 196 tokens" in md and "GS-400 19 / 19" in md
    record = json.loads((tmp_path / "table.json").read_text())
    rgb = next(r for r in record["published"] if r["model"] == "RGB")
    assert rgb["scores"]["MME (perception)"] == 1398.98 and rgb["scores"]["GQA"] == 51.42


@pytest.mark.slow
def test_run_vqa_script_on_the_mini_tasks(tiny_init, tmp_path):
    env = dict(
        os.environ,
        MODEL=str(tiny_init),
        TASKS="mini",
        OUT=str(tmp_path / "vqa"),
        BATCH_SIZE="4",
        JUDGE_PORT="18791",
        MODEL_ARGS="splat_cache=none,progress=false",
        HF_HOME=str(tmp_path / "hf"),
        PYTHONPATH=str(ROOT),
    )
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    res = subprocess.run(
        ["bash", "eval/run_vqa.sh"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    table = json.loads((tmp_path / "vqa" / "table.json").read_text())["benchmarks"]
    assert len(table) == 6 and all(v["mini"] and v["gs"] is not None for v in table.values())
    assert (tmp_path / "vqa" / "table.png").stat().st_size > 0
    assert "| SQA-IMG (mini) |" in (tmp_path / "vqa" / "table.md").read_text()


def test_multi_round_carries_the_dialogue(tiny_init):
    from lmms_eval.api.instance import Instance
    from PIL import Image

    from llava_gs.eval.lmms_plugin import LlavaGSLmms

    lm = LlavaGSLmms(pretrained=str(tiny_init), splat_cache="none", progress=False)
    lm.task_dict = {"t": {"test": [{"id": 0}]}}
    photo = Image.new("RGB", (32, 32), (20, 90, 200))
    seen = []

    def doc_to_text(doc, previous_output, round_idx, previous_round_info):
        seen.append((round_idx, list(previous_output), previous_round_info))
        done = round_idx >= 3
        return None, f"Question {round_idx}?", done, [previous_output], {"round": round_idx}

    req = Instance(
        "generate_until_multi_round",
        ("Question 0?", {"max_new_tokens": 2}, lambda d: [photo], doc_to_text, 0, "t", "test"),
        0,
        {"task": "t", "doc_id": 0, "repeats": 1},
    )
    (answers,) = lm.generate_until_multi_round([req])
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    assert [r for r, _, _ in seen] == [1, 2, 3]
    assert seen[1][1] == answers[:2] and seen[1][2] == {"round": 1}
    assert lm.cache.misses == 1  # the picture is fitted once for the whole dialogue


def test_mini_world_tasks_score_true_answers(judge, tmp_path, monkeypatch):
    """eval.mini.tasks rows + the official scorers: the world's true answers get full marks."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from eval.mini.data import write_split
    from eval.mini.tasks import write_tasks
    from eval.mini.world import scenes_for

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    write_split(tmp_path / "world", "test", scenes_for("test", 20))
    write_tasks(tmp_path / "world", tmp_path / "tasks")
    tm = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    res = simple_evaluate(model=_oracle(), tasks=["mw_all"], task_manager=tm, log_samples=False)["results"]
    assert res["mw_sqa"]["exact_match,none"] == 1.0 and res["mw_gqa"]["exact_match,none"] == 1.0
    assert res["mw_text"]["exact_match,none"] == 1.0 and res["mw_pope"]["pope_accuracy,none"] == 1.0
    assert res["mw_open"]["gpt_eval_score,none"] == 100.0
    questions = json.loads((tmp_path / "world" / "test_questions.json").read_text())
    categories = {q["category"] for q in questions if q["kind"] == "mme"}
    assert res["mw_mme"]["mme_perception_score,none"] == pytest.approx(200.0 * len(categories))  # acc + acc+


def test_rate_controlled_photos_batch_through_the_lmms_model_and_chat(tiny_init, tmp_path):
    """lmms-eval's model args and the chat's flags turn rate control on; photos of different content get
    different N, and a batch of them answers as each photo alone does."""
    from PIL import Image

    from llava_gs.chat import main as chat
    from llava_gs.eval.lmms_plugin import LlavaGSLmms

    args = {"fit_max_gaussians": "300", "fit_target_psnr": "24", "fit_iters": "20"}
    lm = LlavaGSLmms(pretrained=str(tiny_init), splat_cache="none", progress=False, batch_size=2, **args)
    flat = Image.new("RGB", (40, 30), (200, 80, 20))
    rng = np.random.default_rng(0)
    busy = Image.fromarray((rng.random((40, 30, 3)) * 255).astype(np.uint8))
    vision = lm._vision([busy, flat])
    counts = vision["gaussians_mask"].sum(1).tolist()
    assert counts[0] > counts[1]
    prompt = lm._ids([{"from": "human", "value": lm._turn("Colour?", 1)}], 1, generation=True)
    with torch.no_grad():
        both = lm.model(input_ids=torch.tensor([prompt] * 2), **vision).logits
        for b, picture in enumerate((busy, flat)):
            one = lm.model(input_ids=torch.tensor([prompt]), **lm._vision([picture])).logits[0]
            torch.testing.assert_close(both[b], one, rtol=1e-4, atol=1e-4)
    busy.save(tmp_path / "busy.png")
    flags = ["--fit-max-gaussians", "300", "--fit-target-psnr", "24", "--fit-iters", "20"]
    assert chat(["--model", str(tiny_init), "--image", str(tmp_path / "busy.png"), "--prompt", "Hi?",
                 "--no-cache", "--max-new-tokens", "2", "--temperature", "0", *flags]) == 0  # fmt: skip
