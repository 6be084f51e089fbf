"""lmms-eval result JSONs → the paper's VQA table: RGB vs GS per benchmark, with published numbers beside.

    python -m eval.vqa_table --gs outputs/vqa/gs --rgb outputs/vqa/rgb [--label GS-3136] -o outputs/vqa/table

Each of --gs / --rgb is a folder lmms-eval wrote (`--output_path`); the newest `*_results.json` under it is
read (several runs are merged, newest first, so a folder may hold one run per task). Tasks are matched by
name, real (`scienceqa_img`) or mini (`gv_scienceqa_img`). Scores are shown as LLaVA-1.5's paper shows
them: accuracy in %, POPE F1 in %, MME perception as a sum, MM-Vet 0–100. Writes <out>.md, <out>.json and
<out>.png. The "published" column is LLaVA-1.5-7B (Liu et al., 2023, "Improved Baselines with Visual
Instruction Tuning"); mini tasks are not comparable with it and are marked so. Below it, the published
rows of the GaussianVision paper (its own RGB and GS models) and of VisionZip (visual-token reduction on
LLaVA-1.5-7B), each labelled with its source and its RGB baseline.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# benchmark → (task name, metric key, scale to the paper's unit, published LLaVA-1.5-7B)
BENCHMARKS = {
    "SQA-IMG": ("scienceqa_img", "exact_match,none", 100.0, 66.8),
    "TextVQA": ("textvqa_val", "exact_match,none", 100.0, 58.2),
    "POPE (F1)": ("pope", "pope_f1_score,none", 100.0, 85.9),
    "MME (perception)": ("mme", "mme_perception_score,none", 1.0, 1510.7),
    "MM-Vet": ("mmvet", "gpt_eval_score,none", 1.0, 31.1),
    "GQA": ("gqa", "exact_match,none", 100.0, 62.0),
}


# Published rows to compare with, in BENCHMARKS' order (SQA-IMG, TextVQA, POPE, MME, MM-Vet, GQA), each
# beside the RGB baseline it was measured against (MME as each source reports it).
PAPER = "GaussianVision (CVPR 2026), LLaVA + Vicuna-7B"
PAPER_BASELINE = "RGB: ViT-B/16 trained on 12.8M DataComp, 196 tokens"
REFERENCE_ROWS = [
    # (source, model, visual tokens, baseline, scores)
    (PAPER, "RGB", 196, PAPER_BASELINE, (63.81, 44.66, 77.83, 1398.98, 16.60, 51.42)),
    (PAPER, "GS-3136", 196, PAPER_BASELINE, (64.70, 45.20, 77.80, 1414.37, 19.40, 52.25)),
    (PAPER, "GS-1600", 196, PAPER_BASELINE, (64.85, 44.71, 78.13, 1379.26, 16.50, 51.52)),
    (PAPER, "GS-900", 196, PAPER_BASELINE, (64.95, 44.29, 77.32, 1336.83, 14.70, 49.27)),
    (PAPER, "GS-400", 196, PAPER_BASELINE, (64.80, 44.60, 76.91, 1297.56, 16.70, 50.21)),
    # what a user would pick instead to save visual tokens (VisionZip, CVPR 2025; MME = perception + cognition)
    (
        "VisionZip (CVPR 2025)",
        "LLaVA-1.5-7B",
        576,
        "itself (CLIP ViT-L/14-336)",
        (69.5, 58.2, 85.9, 1862, 31.1, 61.9),
    ),
    (
        "VisionZip (CVPR 2025)",
        "VisionZip",
        192,
        "LLaVA-1.5-7B, 576 tokens",
        (68.9, 57.3, 85.3, 1782, 31.7, 59.3),
    ),
    (
        "VisionZip (CVPR 2025)",
        "VisionZip",
        64,
        "LLaVA-1.5-7B, 576 tokens",
        (69.0, 55.5, 77.0, 1690, 31.7, 55.1),
    ),
]
# the paper's zero-shot mean over the 38 DataComp datasets, with 196 / 98 visual tokens
PAPER_ZERO_SHOT = {
    "RGB": (22, 19),
    "GS-3136": (20, 20),
    "GS-1600": (20, 20),
    "GS-900": (20, 19),
    "GS-400": (19, 19),
}


def reference_table() -> tuple[list[str], list[list]]:
    """The published rows above as a table (headers, rows)."""
    headers = ["source", "model", "tokens", *BENCHMARKS, "baseline"]
    rows = [
        [src, model, str(tokens), *(f"{v:g}" for v in scores), base]
        for src, model, tokens, base, scores in REFERENCE_ROWS
    ]
    return headers, rows


def load_results(folder: str | Path) -> dict[str, dict]:
    """task → metrics from every *_results.json under `folder` (newer files win)."""
    files = sorted(Path(folder).rglob("*_results.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(
            f"{folder}: no lmms-eval *_results.json (did the run fail? lmms-eval exits 0)"
        )
    merged: dict[str, dict] = {}
    for f in files:
        merged.update(json.loads(f.read_text()).get("results", {}))
    return merged


def _score(results: dict, task: str, key: str, scale: float) -> tuple[float | None, bool]:
    for name, mini in ((task, False), (f"gv_{task}", True)):
        if name in results and isinstance(results[name].get(key), (int, float)):
            return float(results[name][key]) * scale, mini
    return None, False


def build_table(gs: dict, rgb: dict | None, label: str) -> tuple[list[str], list[list], dict]:
    headers = ["benchmark", "RGB", label, f"{label} / RGB", "LLaVA-1.5-7B (published)"]
    rows, data = [], {}
    for bench, (task, key, scale, published) in BENCHMARKS.items():
        g, mini_g = _score(gs, task, key, scale)
        r, mini_r = _score(rgb, task, key, scale) if rgb is not None else (None, False)
        if g is None and r is None:
            continue
        ratio = f"{g / r:.3f}" if g is not None and r not in (None, 0.0) else "–"
        mini = mini_g or mini_r
        rows.append(
            [
                bench + (" (mini)" if mini else ""),
                "–" if r is None else f"{r:.1f}",
                "–" if g is None else f"{g:.1f}",
                ratio,
                "not comparable" if mini else f"{published}",
            ]
        )
        data[bench] = {
            "task": task,
            "metric": key,
            "rgb": r,
            "gs": g,
            "mini": mini,
            "published_llava15_7b": published,
        }
    if not rows:
        raise ValueError("none of the six benchmarks is in the given results")
    return headers, rows, data


def _plot(data: dict, label: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(data)
    fig, axes = plt.subplots(1, len(names), figsize=(2.2 * len(names), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        d = data[name]
        vals = [d["rgb"] or 0.0, d["gs"] or 0.0]
        ax.bar(np.arange(2), vals, color=["#4c72b0", "#dd8452"])
        ax.set_xticks(np.arange(2), ["RGB", label], fontsize=8)
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gs", required=True, help="lmms-eval output folder of the GS model")
    ap.add_argument("--rgb", help="lmms-eval output folder of the RGB model")
    ap.add_argument("--label", default="GS")
    ap.add_argument("-o", "--out", required=True, help="output path without extension")
    args = ap.parse_args(argv)
    try:
        gs = load_results(args.gs)
        rgb = load_results(args.rgb) if args.rgb else None
        headers, rows, data = build_table(gs, rgb, args.label)
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as e:
        print(f"error: {e}")
        return 2
    from gs_encoder.report import machine_info, markdown_table

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    md = [
        "# VQA: RGB vs GS (lmms-eval)",
        "",
        f"Made {info['date']} from `{args.gs}`" + (f" and `{args.rgb}`" if args.rgb else "") + ".",
        "",
        markdown_table(headers, rows),
        "",
        "Units as in LLaVA-1.5's paper: accuracy %, POPE F1 %, MME perception (sum of acc + acc+ over"
        " categories), MM-Vet 0–100 (GPT-graded; the mini tasks use the rule-based stand-in judge).",
        "",
        "## Published rows",
        "",
        f"{PAPER} (each row against its own RGB baseline: {PAPER_BASELINE}), and the token-reduction"
        " method a user would pick instead (VisionZip, on LLaVA-1.5-7B with CLIP ViT-L/14-336; its MME is"
        " perception + cognition):",
        "",
        markdown_table(*reference_table()),
        "",
        "The paper's zero-shot mean over the 38 DataComp datasets (196 / 98 visual tokens): "
        + ", ".join(f"{m} {a} / {b}" for m, (a, b) in PAPER_ZERO_SHOT.items())
        + ".",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(md))
    published = [
        {
            "source": src,
            "model": model,
            "tokens": tokens,
            "baseline": base,
            "scores": dict(zip(BENCHMARKS, scores, strict=True)),
            "mme": "perception + cognition" if src.startswith("VisionZip") else "as the paper reports it",
        }
        for src, model, tokens, base, scores in REFERENCE_ROWS
    ]
    record = {
        "machine": info,
        "benchmarks": data,
        "published": published,
        "paper_zero_shot_mean": PAPER_ZERO_SHOT,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    _plot(data, args.label, out.with_suffix(".png"))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
