"""Ship the miniature's best GS-LLaVA with the repository, for `bash scripts/demo.sh`.

    python -m eval.mini.ship_demo --out outputs/mini_repro --report eval/results/mini_repro.json \
        --dest eval/mini/demo_llava --command "bash scripts/mini_repro.sh"

Ships the GS-LLaVA the report chose on validation (`demo_choice`: the best mean validation score over all
questions, the head-size ablation's full-width model included, then its best validation seed; the test
split plays no part), and writes `dest/` the way a downloaded checkpoint is laid out:
- `model/`: the GS-LLaVA folder as finetune.sh saved it (config, safetensors weights, tokenizer, processor);
- `scenes/`: the first `--scenes` test scenes (64² PNG and caption) and `questions.json` with their
  questions and the answers in the style the model was taught;
- `train_log.json`: the model's training logs, the `log_history` (loss, learning rate, per logging step)
  of its projector pretraining (`pretrain`) and finetuning (`finetune`) from their trainer_state.json;
- `build.json`: which model, its validation score (and, for the record, its test score), the run, and the
  command that rebuilds it all.
The folder is written under a temporary name and renamed, so a failed run never leaves half a model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from cuda_ext.files import atomic_path

from .ask import scene_questions

# what a GS-LLaVA folder needs to load (weights, configs, tokenizer, processor); optimiser state, trainer
# logs and checkpoints stay behind
_MODEL_SUFFIXES = (".json", ".safetensors", ".model", ".txt", ".jinja")
_SKIP = ("trainer_state.json", "training_args.bin", "all_results.json", "train_results.json")


def _copy_model(src: Path, dst: Path) -> int:
    dst.mkdir(parents=True)
    size = 0
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix in _MODEL_SUFFIXES and f.name not in _SKIP:
            shutil.copy2(f, dst / f.name)
            size += f.stat().st_size
    if not (dst / "model.safetensors").is_file():
        raise FileNotFoundError(f"{src}: no model.safetensors (was finetune.sh's run finished?)")
    return size


def _copy_scenes(data: Path, dst: Path, n: int) -> list[dict]:
    """The first `n` test scenes (PNG + caption) and questions.json with their questions, image paths relative."""
    dst.mkdir(parents=True)
    qs = scene_questions(data, n)
    for image in sorted({q["image"] for q in qs}):
        for f in (Path(image), Path(image).with_suffix(".txt")):
            if f.is_file():
                shutil.copy2(f, dst / f.name)
    qs = [{**q, "image": Path(q["image"]).name} for q in qs]
    (dst / "questions.json").write_text(json.dumps(qs, indent=1, ensure_ascii=False) + "\n")
    return qs


def _train_log(llava: Path) -> dict[str, list]:
    """{stage: log_history} of the LLaVA folder's projector pretraining and finetuning (trainer_state.json)."""
    log = {}
    for stage, folder in (("pretrain", "pretrain"), ("finetune", "final")):
        state = llava / folder / "trainer_state.json"
        if not state.is_file():
            raise FileNotFoundError(f"{state}: missing (the training log shipped beside the model)")
        log[stage] = json.loads(state.read_text())["log_history"]
    return log


def ship(out: Path, report_path: Path, dest: Path, command: str, scenes: int = 2) -> dict:
    """Write dest/ (model/, scenes/, train_log.json, build.json) from a finished mini_repro run; returns
    build.json's data."""
    report = json.loads(report_path.read_text())
    choice = report.get("demo_choice")
    if not choice:
        raise ValueError(
            f"{report_path}: no demo_choice (no GS-LLaVA validation score); rerun eval.mini.report"
        )
    name, seed = choice["model"], choice["seed"]
    llava = out / ("" if seed == 0 else f"seed{seed}") / "llava" / name
    with atomic_path(dest, folder=True) as tmp:
        size = _copy_model(llava / "final", tmp / "model")
        qs = _copy_scenes(out / "data", tmp / "scenes", scenes)
        (tmp / "train_log.json").write_text(json.dumps(_train_log(llava), separators=(",", ":")) + "\n")
        build = _build(report, choice, command, size, qs)
        (tmp / "build.json").write_text(json.dumps(build, indent=1) + "\n")
    return build


def _build(report: dict, choice: dict, command: str, size: int, qs: list[dict]) -> dict:
    """build.json: which model was shipped, why, how it scored and how to rebuild it."""
    name, seed = choice["model"], choice["seed"]
    return {
        "model": name,
        "chosen_on": "validation: best mean score over all validation questions, then its best seed",
        "validation_score": round(choice["validation_score"], 4),
        "seed": seed,
        "validation_score_of_this_seed": round(choice["seed_validation_score"], 4),
        "test_score_per_kind": report["accuracy"][choice["label"]],
        "test_score_of_this_seed": round(report["accuracy_per_seed"][choice["label"]][seed]["all"], 4),
        "model_bytes": size,
        "scenes": sorted({q["image"] for q in qs}),
        "run": {"date": report["machine"]["date"], "commit": report["machine"]["git"], "command": command},
        "rebuild": f"{command}  (then this folder is rewritten from the run's best GS-LLaVA)",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the OUT folder of a finished scripts/mini_repro.sh run")
    ap.add_argument("--report", required=True, help="its report JSON (eval.mini.report)")
    ap.add_argument("--dest", required=True, help="folder to write (eval/mini/demo_llava ships)")
    ap.add_argument(
        "--command", default="bash scripts/mini_repro.sh", help="the run's command, for build.json"
    )
    ap.add_argument("--scenes", type=int, default=2, help="test scenes to ship with their questions")
    args = ap.parse_args(argv)
    try:
        build = ship(Path(args.out), Path(args.report), Path(args.dest), args.command, args.scenes)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"ship_demo: {e}", file=sys.stderr)
        return 2
    print(
        f"shipped {build['model']}, seed {build['seed']} (chosen on validation: "
        f"{100 * build['validation_score_of_this_seed']:.1f}%; test {100 * build['test_score_of_this_seed']:.1f}%, "
        f"{build['model_bytes'] / 1e6:.1f} MB) and {len(build['scenes'])} test scenes to {args.dest}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
