"""Ask a GS-LLaVA the questions of a few mini-world test scenes, from their images, beside the true answers.

    python -m eval.mini.ask --model eval/mini/demo_llava/model --scenes eval/mini/demo_llava/scenes
    python -m eval.mini.ask --model outputs/mini_repro/llava/gs-n144-k64/final --data outputs/mini_repro/data

Each image is fitted on the fly by the model's own processor (its Gaussian budget and iterations), as
`python -m llava_gs.chat --image` does; each question is asked alone (a fresh conversation), greedily, the
way the evaluation asks it. `bash scripts/demo.sh` ends with this.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from .questions import answer_style
from .score import score


def scene_questions(data: Path, scenes: int) -> list[dict]:
    """The questions of the first `scenes` test scenes of a mini-world data folder (eval.mini.data), each
    as the world wrote it (kind, question, true answer, ...) with its image path and the answer in the style
    the models are taught (`shown`)."""
    questions = json.loads((data / "test_questions.json").read_text())
    images = sorted({q["image"] for q in questions})[:scenes]
    return [
        {**q, "image": str(data / "images" / q["image"]), "shown": answer_style(q)}
        for image in images
        for q in questions
        if q["image"] == image
    ]


def shipped_questions(scenes: Path) -> list[dict]:
    """A scenes folder written by eval.mini.ship_demo: its questions.json, image paths made whole."""
    qs = json.loads((scenes / "questions.json").read_text())
    return [{**q, "image": str(scenes / q["image"])} for q in qs]


def ask(model_dir: str, questions: list[dict], out=sys.stdout) -> tuple[float, int]:
    """Print each scene's caption, then question → model answer (true answer, ✓/✗ or the judge's partial
    score); returns (score summed over the questions, asked)."""
    from llava_gs.builder import load_pretrained_model
    from llava_gs.chat import ChatSession
    from llava_gs.splat_cache import SplatCache

    build = Path(model_dir).parent / "build.json"  # a model shipped by eval.mini.ship_demo says what it is
    if build.is_file():
        b = json.loads(build.read_text())
        print(
            f"{b['model']} (seed {b['seed']}) of `{b['run']['command']}` ({b['run']['date'][:10]}), chosen on "
            f"validation: {100 * b['validation_score_of_this_seed']:.1f}% of its validation questions, "
            f"{100 * b['test_score_of_this_seed']:.1f}% of its test questions",
            file=out,
        )
    model, processor = load_pretrained_model(model_dir)
    quiet = io.StringIO()  # the session streams answers; here they are printed in the table below
    cache = SplatCache(processor.image_processor, None)  # fitted on the fly, nothing written
    session = ChatSession(model, processor, cache, out=quiet, temperature=0.0, max_new_tokens=16)
    right, image = 0, None
    for q in questions:
        if q["image"] != image:
            image = q["image"]
            caption = Path(image).with_suffix(".txt")
            print(f"\n{image}", file=out)
            if caption.is_file():
                print(f"  the scene: {caption.read_text().strip()}", file=out)
            session.set_image(image)
        session.reset()
        reply = session.ask(q["question"])
        got = score(q["kind"], q, reply)  # as lmms-eval scores the question's benchmark (eval.mini.score)
        right += got
        question = " ".join(q["question"].split())  # multiple-choice options on the same line
        mark = {1.0: "✓", 0.0: "✗"}.get(got, f"{got:.1f}")
        print(f"  {mark} {question} → {reply!r}  (true: {q['shown']})", file=out, flush=True)
    print(f"\n{right:g} of {len(questions)} answered right", file=out)
    return right, len(questions)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a GS-LLaVA folder trained on the mini world")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--scenes", help="a folder with questions.json and its images (eval.mini.ship_demo)")
    where.add_argument("--data", help="a mini-world data folder (eval.mini.data); its first test scenes")
    ap.add_argument("-n", "--num-scenes", type=int, default=2, help="test scenes to ask about (with --data)")
    args = ap.parse_args(argv)
    try:
        if args.scenes:
            qs = shipped_questions(Path(args.scenes))
        else:
            qs = scene_questions(Path(args.data), args.num_scenes)
        ask(args.model, qs)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
