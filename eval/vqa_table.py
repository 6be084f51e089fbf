"""lmms-eval result JSONs → the paper's VQA table: RGB vs GS per benchmark, with published numbers beside.

    python -m eval.vqa_table --gs outputs/vqa/gs --rgb outputs/vqa/rgb [--label GS-3136] -o outputs/vqa/table

Each of --gs / --rgb is a folder lmms-eval wrote (`--output_path`); the newest `*_results.json` under it is
read (several runs are merged, newest first, so a folder may hold one run per task). Tasks are matched by
name, real (`scienceqa_img`) or mini (`gv_scienceqa_img`). Scores are shown as LLaVA-1.5's paper shows
them: accuracy in %, POPE F1 in %, MME perception as a sum, MM-Vet 0–100. Writes <out>.md, <out>.json and
<out>.png. The "published" column is LLaVA-1.5-7B (Liu et al., 2023, "Improved Baselines with Visual
Instruction Tuning"); mini tasks are not comparable with it and are marked so.
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
    ]
    out.with_suffix(".md").write_text("\n".join(md))
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "benchmarks": data}, indent=2) + "\n")
    _plot(data, args.label, out.with_suffix(".png"))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
