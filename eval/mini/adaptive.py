"""The miniature with rate control: the shipped GS-LLaVA fed adaptive-N splats (python -m eval.mini.adaptive).

The shipped demo model (eval/mini/demo_llava, chosen on validation by eval.mini.ship_demo) reads splats
fitted at a fixed N. Its adaptive twin is the same model whose processor fits with rate control
(`fit_max_gaussians=N, fit_target_psnr=P`): P is the mean PSNR the fixed N reaches on the world's
validation scenes (the one choice, made there), and each test scene gets the fewest Gaussians, up to the
model's own N, whose render reaches P. The cap is the model's N because its encoder never saw more.

Both are asked every test question through lmms-eval (the mini tasks, their scorers and the loopback judge,
as scripts/mini_repro.sh asks them), each from its own splat cache fitted here; the comparison is paired
question by question with a scene-clustered bootstrap s.e. (eval.mini.score). Target: the adaptive model
within 1 point of the fixed one, with fewer Gaussians on average.

The world is rewritten from its seeds when --data is missing (the full run's settings, WORLD) and checked
against the scenes shipped with the model. Finished stages are kept under --work and skipped on a rerun.
Writes eval/results/mini_adaptive.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "eval" / "mini" / "demo_llava"
# the world of scripts/mini_repro.sh's full run, whose best GS-LLaVA ships (build.json names the run)
WORLD = [
    "--train", "2000", "--val", "250", "--test", "250", "--zeroshot-per-class", "8", "--label-scale", "2",
    "--clip-words", "1000", "--pretrain-words", "1000", "--finetune-words", "1000", "--reading", "1",
]  # fmt: skip
TOLERANCE = 1.0  # points the adaptive model may lose (the target)
TOLERANCE_DB = 0.3  # a scene is counted as at its target within this (eval.bench.rate's rule)
BATCH = 32


def write_world(data: Path, tasks: Path) -> None:
    """The mini world's data and lmms-eval tasks, unless there; its test scenes must be the shipped ones."""
    if not (data / "test_questions.json").is_file():
        run([sys.executable, "-m", "eval.mini.data", "--out", str(data), *WORLD])
    if not (tasks / "_mw_all.yaml").is_file():
        run([sys.executable, "-m", "eval.mini.tasks", "--data", str(data), "--out", str(tasks)])
    for shipped in sorted((SHIPPED / "scenes").glob("*.png")):
        written = data / "images" / "test" / shipped.name
        if not written.is_file() or written.read_bytes() != shipped.read_bytes():
            raise SystemExit(
                f"mini_adaptive: {written} is not the shipped scene {shipped}: the world in {data} is not the "
                "one the model was trained and tested on (WORLD must match scripts/mini_repro.sh's full run)"
            )


def run(cmd: list[str], env: dict | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, **(env or {})})


def splat_sets(processor, images: list[Path], cache: Path) -> list[dict]:
    """Fit (or read back) each image's splats through the SplatCache lmms-eval will read; N and PSNR each."""
    from gs_encoder.fitting.fit import render_psnr
    from llava_gs.splat_cache import SplatCache

    sets = SplatCache(processor, cache).get([str(p) for p in images], progress=True)
    return [
        {"image": p.name, "n": int(s.shape[0]), "psnr": render_psnr(s, processor.to_canvas(str(p)))}
        for p, s in zip(images, sets, strict=True)
    ]


def ask(model: Path, tasks: Path, out: Path, cache: Path, judge: str, fit_args: str = "") -> None:
    """lmms-eval on the test questions with splats from `cache` (every one is there: nothing is refitted)."""
    if (out / ".done").is_file():
        print(f"   (done: {out})")
        return
    args = f"pretrained={model},progress=false,splat_cache={cache}{fit_args}"
    cmd = [
        sys.executable,
        "-m",
        "lmms_eval",
        *"--model llava_gs --tasks mw_all".split(),
        "--model_args",
        args,
    ]
    cmd += ["--include_path", str(tasks), "--batch_size", str(BATCH), "--output_path", str(out)]
    env = {"OPENAI_API_URL": judge, "OPENAI_API_KEY": "local", "HF_DATASETS_OFFLINE": "1"}
    run([*cmd, "--log_samples", "--verbosity", "WARNING"], env)
    (out / ".done").touch()


def summary(rows: list[dict]) -> dict:
    ns, ps = [r["n"] for r in rows], [r["psnr"] for r in rows]
    return {
        "n_mean": statistics.fmean(ns),
        "n_median": statistics.median(ns),
        "psnr_mean": statistics.fmean(ps),
        "psnr_median": statistics.median(ps),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(SHIPPED / "model"), help="a GS-LLaVA trained on the mini world")
    ap.add_argument(
        "--work", default="outputs/mini_adaptive", help="data, tasks, splat caches, lmms-eval logs"
    )
    ap.add_argument(
        "--results", default=str(ROOT / "eval" / "results" / "mini_adaptive"), help="no extension"
    )
    args = ap.parse_args(argv)
    model, work = Path(args.model), Path(args.work)
    if not (model / "model.safetensors").is_file():
        print(f"mini_adaptive: no GS-LLaVA in {model} (bash scripts/demo.sh ships one)", file=sys.stderr)
        return 2
    from llava_gs.processing_llava_gs import LlavaGSProcessor

    data, tasks = work / "data", work / "tasks"
    write_world(data, tasks)
    test_q = json.loads((data / "test_questions.json").read_text())
    val_images = sorted(
        {data / "images" / q["image"] for q in json.loads((data / "val_questions.json").read_text())}
    )
    test_images = sorted({data / "images" / q["image"] for q in test_q})

    proc = LlavaGSProcessor.from_pretrained(model).image_processor
    cap = int(proc.fit_config().num_gaussians)
    if proc.fit_config().max_gaussians is not None:
        print(f"mini_adaptive: {model} already fits with rate control; give a fixed-N model", file=sys.stderr)
        return 2
    print(f"validation: {len(val_images)} scenes at the model's fixed N = {cap}")
    val = splat_sets(proc, val_images, work / "cache" / "fixed")
    target = round(statistics.fmean(r["psnr"] for r in val), 2)  # P: what fixed N reaches on average
    print(f"target PSNR {target} dB (mean over validation)")
    fixed = splat_sets(proc, test_images, work / "cache" / "fixed")
    adaptive_proc = LlavaGSProcessor.from_pretrained(model).image_processor
    adaptive_proc.update(max_gaussians=cap, target_psnr=target)
    adaptive = splat_sets(adaptive_proc, test_images, work / "cache" / "adaptive")

    from eval.mini_judge import serve

    with serve() as judge:
        ask(model, tasks, work / "vqa" / "fixed", work / "cache" / "fixed", judge)
        fit_args = f",fit_max_gaussians={cap},fit_target_psnr={target}"
        ask(model, tasks, work / "vqa" / "adaptive", work / "cache" / "adaptive", judge, fit_args)

    from .report import _mean_over
    from .score import clustered_se, paired_difference, read_samples, scene_clusters

    clusters = scene_clusters(test_q)
    scores = {name: read_samples(work / "vqa" / name, "test") for name in ("fixed", "adaptive")}
    diff, se = paired_difference(scores["adaptive"], scores["fixed"], clusters)
    result = {
        "model": str(model),
        "cap": cap,
        "target_psnr": target,
        "validation": {**summary(val), "scenes": len(val)},
        "test": {
            name: {
                **summary(rows),
                "score": _mean_over(scores[name]),
                "se": clustered_se(scores[name], clusters),
                "per_kind": {k: statistics.fmean(v) for k, v in scores[name].items()},
            }
            for name, rows in (("fixed", fixed), ("adaptive", adaptive))
        },
        "difference": {"points": 100 * diff, "se_points": 100 * se},
        "per_scene": [
            {"image": f["image"], "n_fixed": f["n"], "psnr_fixed": f["psnr"], "n": a["n"], "psnr": a["psnr"]}
            for f, a in zip(fixed, adaptive, strict=True)
        ],
        "reached": sum(a["psnr"] >= target - TOLERANCE_DB for a in adaptive),
        "at_cap": sum(a["n"] == cap for a in adaptive),
    }
    write(result, len(test_q), Path(args.results))
    return 0


def write(r: dict, questions: int, res: Path) -> None:
    from gs_encoder.report import machine_info, markdown_table

    info = machine_info()
    r["machine"] = info
    t = r["test"]
    fewer = t["adaptive"]["n_mean"] < r["cap"]
    within = r["difference"]["points"] >= -TOLERANCE
    scenes = len(r["per_scene"])
    rows = [
        [
            name if name == "fixed" else f"adaptive (target {r['target_psnr']} dB, cap {r['cap']})",
            f"{t[name]['n_mean']:.1f} ({t[name]['n_median']:g})",
            f"{t[name]['psnr_mean']:.2f} ({t[name]['psnr_median']:.2f})",
            f"{100 * t[name]['score']:.1f} ± {100 * t[name]['se']:.1f}",
            *(f"{100 * t[name]['per_kind'][k]:.1f}" for k in t["fixed"]["per_kind"]),
        ]
        for name in ("fixed", "adaptive")
    ]
    d = r["difference"]
    lines = [
        "# The miniature with rate control: adaptive N against the fixed N the model was trained at",
        "",
        f"`python -m eval.mini.adaptive`, measured {info['date']} on {info['cpu']}, torch {info['torch']}, "
        f"commit {info['git']}. Model: `{_shown(r['model'])}` (fixed N = {r['cap']}). Target PSNR "
        f"{r['target_psnr']} dB: the mean PSNR of its fixed-N fits over the {r['validation']['scenes']} validation "
        f"scenes (chosen there; median {r['validation']['psnr_median']:.2f} dB). Test: {scenes} scenes, {questions} questions, "
        "scored by lmms-eval's mini tasks; ± is a bootstrap s.e. over scenes.",
        "",
        markdown_table(
            ["splats", "N mean (median)", "PSNR dB mean (median)", "score %", *t["fixed"]["per_kind"]], rows
        ),
        "",
        f"Adaptive − fixed, paired over the same questions: **{d['points']:+.1f} ± {d['se_points']:.1f} points**. "
        f"Rate control came within {TOLERANCE_DB} dB of the target (or above) on {r['reached']} of {scenes} test "
        f"scenes; {r['at_cap']} used the cap of {r['cap']}. A scene whose fixed-N fit falls short of the target "
        "keeps that fit (at the cap); one above it is cut down to it, so the mean PSNR falls with N.",
        "",
        markdown_table(
            ["target", "value", "verdict"],
            [
                [
                    f"adaptive within {TOLERANCE:g} point of fixed N = {r['cap']}",
                    f"{d['points']:+.1f} ± {d['se_points']:.1f}",
                    "met" if within else "failed",
                ],
                [
                    "with fewer Gaussians on average",
                    f"{t['adaptive']['n_mean']:.1f} vs {r['cap']} ({t['adaptive']['n_mean'] / r['cap']:.2f}×)",
                    "met" if fewer else "failed",
                ],
            ],
        ),
        "",
        "![N per test scene and PSNR, fixed and adaptive](mini_adaptive.png)",
        "",
    ]
    res.parent.mkdir(parents=True, exist_ok=True)
    res.with_suffix(".md").write_text("\n".join(lines))
    res.with_suffix(".json").write_text(json.dumps(r, indent=1) + "\n")
    plot(r, res.with_suffix(".png"))
    print("\n".join(lines))


def _shown(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenes = r["per_scene"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.hist([s["n"] for s in scenes], bins=30, color="tab:orange")
    a.axvline(r["cap"], color="k", ls="--", label=f"fixed N = {r['cap']} (the cap)")
    a.set(xlabel="Gaussians chosen per test scene", ylabel="scenes", title="rate control's N")
    a.legend()
    b.scatter([s["psnr_fixed"] for s in scenes], [s["psnr"] for s in scenes], s=8, alpha=0.6)
    lo = min(min(s["psnr"] for s in scenes), min(s["psnr_fixed"] for s in scenes))
    hi = max(max(s["psnr"] for s in scenes), max(s["psnr_fixed"] for s in scenes))
    b.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
    b.axhline(r["target_psnr"], color="tab:red", ls=":", label=f"target {r['target_psnr']} dB")
    b.set(xlabel="PSNR at fixed N (dB)", ylabel="PSNR with rate control (dB)", title="per test scene")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
