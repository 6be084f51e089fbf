"""The miniature reproduction's tables and plots, from what scripts/mini_repro.sh wrote under OUT.

    python -m eval.mini.report --out outputs/mini_repro --results eval/results/mini_repro --command "..."

Sections (the paper's tables in small): splat budgets (bytes, compression vs raw 64² RGB, fit PSNR, load
time vs PNG decoding); zero-shot accuracy GS vs RGB and GS/RGB per encoder; VQA accuracy per question
kind for RGB-LLaVA and each GS-LLaVA with chance, the question-only prior and the shuffled-image control
(± one standard error); the GS head's size per encoder (the head-size ablation of --head-ablation: narrow
head vs the full-width one, zero-shot and VQA); lmms-eval's official metrics. Writes <results>.md, .json and .png.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

from .score import accuracy_table, chance, paired_difference, question_only_prior, read_samples

KINDS = ["sqa", "text", "pope", "mme", "open", "gqa"]
RAW_BYTES = 64 * 64 * 3


def _budgets(out: Path) -> tuple[list[str], list[list], dict]:
    import numpy as np
    from PIL import Image

    from gs_encoder.splat_io import load_splats, sidecar_path

    rows, data = [], {}
    pngs = sorted((out / "data" / "images" / "test").glob("*.png"))[:200]
    t = time.perf_counter()
    for p in pngs:
        np.asarray(Image.open(p).convert("RGB"), dtype=np.float32)
    png_s = (time.perf_counter() - t) / max(1, len(pngs))
    for folder in sorted((out / "splats").glob("n*"), key=lambda p: int(p.name[1:])):
        n = int(folder.name[1:])
        files = sorted((folder / "test").glob("*.gs.npy"))[:200]
        psnr = [json.loads(sidecar_path(f).read_text())["psnr"] for f in files]
        t = time.perf_counter()
        for f in files:
            load_splats(f)
        load_s = (time.perf_counter() - t) / max(1, len(files))
        nbytes = 16 * n
        data[n] = {
            "bytes": nbytes,
            "ratio": RAW_BYTES / nbytes,
            "psnr": sum(psnr) / max(1, len(psnr)),
            "load_ms": 1e3 * load_s,
            "png_ms": 1e3 * png_s,
        }
        rows.append(
            [
                n,
                nbytes,
                f"{RAW_BYTES / nbytes:.2f}×",
                f"{data[n]['psnr']:.2f}",
                f"{1e3 * load_s:.3f}",
                f"{1e3 * png_s:.3f}",
            ]
        )
    headers = ["N", "bytes (fp16)", "vs raw 64² RGB", "fit PSNR dB", "load ms (.gs.npy)", "load ms (PNG)"]
    return headers, rows, data


def _zeroshot(out: Path) -> tuple[list[str], list[list], dict]:
    rows, data = [], {}
    for f in sorted((out / "zeroshot").glob("*/zeroshot.json")):
        res = json.loads(f.read_text())
        for ds, r in res["results"].items():
            gs, rgb = r.get("GS", {}).get("acc1"), r.get("RGB", {}).get("acc1")
            if gs is None or rgb is None:
                continue
            name = f.parent.name
            data[name] = {"gs": gs, "rgb": rgb}
            rows.append([name, ds, f"{100 * rgb:.1f}", f"{100 * gs:.1f}", f"{gs / rgb:.3f}" if rgb else "–"])
    return ["encoder", "dataset", "RGB acc %", "GS acc %", "GS / RGB"], rows, data


def _heads(out: Path, zs: dict) -> tuple[list[str], list[list], dict]:
    """Each GS encoder's head: width, feed-forward, parameters (what is not the ViT), zero-shot GS/RGB."""
    from safetensors import safe_open

    from gs_encoder.modeling_gs_vision import GSVisionConfig

    rows, data = [], {}
    for final in sorted((out / "encoders").glob("gs-*/stage2/final")):
        name = final.parent.parent.name
        cfg = GSVisionConfig.from_dict(json.loads((final / "config.json").read_text()))  # older: full width
        with safe_open(str(final / "model.safetensors"), "pt") as f:
            sizes = {k: f.get_slice(k).get_shape() for k in f.keys()}
        head = sum(math.prod(shape) for k, shape in sizes.items() if not k.startswith("visual."))
        vit = sum(math.prod(shape) for k, shape in sizes.items() if k.startswith("visual."))
        width, ff = cfg.gs_width, cfg.gs_ff_mult
        ratio = zs[name]["gs"] / zs[name]["rgb"] if name in zs and zs[name]["rgb"] else None
        data[name] = {
            "gs_width": width,
            "gs_ff_mult": ff,
            "head_params": head,
            "vit_params": vit,
            "zs_ratio": ratio,
        }
        rows.append(
            [
                name,
                width,
                ff,
                f"{head / 1e3:.0f} k",
                f"{vit / 1e3:.0f} k",
                "–" if ratio is None else f"{ratio:.3f}",
            ]
        )
    headers = [
        "encoder",
        "head width",
        "feed-forward ×",
        "GS head parameters",
        "ViT parameters",
        "zero-shot GS / RGB",
    ]
    return headers, rows, data


def _timings(out: Path) -> tuple[list[str], list[list], dict]:
    """Stage durations of the last invocation of mini_repro.sh (from OUT/timings.tsv), up to the report."""
    path = out / "timings.tsv"
    if not path.exists():
        return [], [], {}
    lines = [ln.split("\t", 1) for ln in path.read_text().splitlines() if "\t" in ln]
    starts = [i for i, (_, label) in enumerate(lines) if label.startswith("# run")]
    if not starts:
        return [], [], {}
    run = [(int(t), label) for t, label in lines[starts[-1] :]]
    stages = []
    for (t, label), (t_next, _) in zip(run[1:], run[2:], strict=False):
        if label == "report":
            break
        stages.append((label, t_next - t))
    total = sum(d for _, d in stages)
    rows = [[label, f"{d / 60:.1f}"] for label, d in stages] + [["**total**", f"**{total / 60:.1f}**"]]
    data = {"started": run[0][1][len("# run ") :], "stages": dict(stages), "total_s": total}
    return ["stage (this invocation; finished stages are skipped on a rerun)", "minutes"], rows, data


def _clearly_positive(d: float, se: float) -> bool:
    """A difference more than two standard errors above zero."""
    return d - 2 * se > 0


def _targets(runs: dict, controls: dict) -> tuple[list[str], list[list], list[dict]]:
    """The miniature's targets as paired differences over the same test questions (points, ± 1 s.e.).

    "Within x points of the reference" says nothing when the reference itself does not use the image: two
    models at the prior are trivially close. So a relative target (GS vs RGB, K vs 2K tokens) counts only
    when its reference beats its own shuffled-image control by more than 2 s.e.; otherwise it is reported
    as not testable."""
    prior = runs["question-only prior"]
    models = [m for m in runs if m != "question-only prior"]

    def sees(m: str) -> bool:  # the model's answers depend on the image (beyond 2 s.e. of its control)
        control = controls.get(f"{m}, shuffled images")
        if control is None:
            return True  # no control run: nothing to test against
        return _clearly_positive(*paired_difference(runs[m], control))

    checks = []  # (comparison, a, b, target text, test on the difference, reference model or None)
    for m in models:
        checks.append((f"{m} − question-only prior", runs[m], prior, "≥ +20", lambda d: d >= 20, None))
        if f"{m}, shuffled images" in controls:
            checks.append(
                (
                    f"{m} − its shuffled-image control",
                    runs[m],
                    controls[f"{m}, shuffled images"],
                    "> 0",
                    None,
                    None,
                )
            )
    if "RGB-LLaVA" in runs:
        for m in models:
            if m.startswith("GS-LLaVA"):
                checks.append(
                    (f"{m} − RGB-LLaVA", runs[m], runs["RGB-LLaVA"], "≥ −5", lambda d: d >= -5, "RGB-LLaVA")
                )
    gs = {}  # N → {K: label}
    for m in models:
        match = re.fullmatch(r"GS-LLaVA n(\d+)-k(\d+)", m)
        if match:
            gs.setdefault(int(match[1]), {})[int(match[2])] = m
        wide = m.removesuffix("-wide")
        if wide != m and wide in runs:  # the head-size ablation: the default narrow head vs the full width
            checks.append((f"{wide} (narrow head) − {m}", runs[wide], runs[m], "≥ −3", lambda d: d >= -3, m))
    for n, ks in sorted(gs.items()):
        if len(ks) >= 2:
            big, small = max(ks), min(ks)
            checks.append(
                (
                    f"N = {n}: K = {small} − K = {big} tokens",
                    runs[ks[small]],
                    runs[ks[big]],
                    "≥ −3",
                    lambda d: d >= -3,
                    ks[big],
                )
            )
    rows, data = [], []
    for name, a, b, target, ok, reference in checks:
        d, se = paired_difference(a, b)
        d, se = 100 * d, 100 * se
        if reference is not None and not sees(reference):
            met = f"not testable: {reference} does not beat its shuffled-image control"
        elif ok is None:
            met = "yes" if _clearly_positive(d, se) else "no (within 2 s.e.)"
        else:
            met = "yes" if ok(d) else "no"
        rows.append([name, f"{d:+.1f} ± {se:.1f}", target, met])
        data.append({"comparison": name, "points": d, "se": se, "target": target, "met": met})
    return ["comparison (all questions, paired)", "points", "target", "met"], rows, data


def _lm(out: Path) -> tuple[list[str], list[list], dict]:
    """The LM stand-in's own accuracy on the test scenes' questions with the caption given as text (from its
    pretraining log): what the LLaVAs could reach with a perfect vision side."""
    path = out / "lm" / "pretrain_log.json"
    if not path.exists():
        return [], [], {}
    last = json.loads(path.read_text())[-1]
    row = [f"pretrained Llama, {last['step']} steps, caption as text"]
    row += [f"{last[k]:.1f}" if k in last else "–" for k in KINDS] + [f"{last['all']:.1f}"]
    return ["language model stand-in", *KINDS, "all"], [row], last


def _stage1(out: Path) -> tuple[list[str], list[list], dict]:
    """Each LLaVA's stage-1 (projector pretraining on captions) loss: first step, mean of the first and of the
    last tenth of the steps (trainer_state.json of scripts/pretrain.sh, one logged loss per step)."""
    rows, data = [], {}
    for state in sorted((out / "llava").glob("*/pretrain/trainer_state.json")):
        losses = [e["loss"] for e in json.loads(state.read_text())["log_history"] if "loss" in e]
        if not losses:
            continue
        tenth = max(1, len(losses) // 10)
        name = state.parent.parent.name
        first, head, tail = losses[0], sum(losses[:tenth]) / tenth, sum(losses[-tenth:]) / tenth
        data[name] = {"steps": len(losses), "first": first, "first_tenth": head, "last_tenth": tail}
        rows.append([name, len(losses), f"{first:.3f}", f"{head:.3f}", f"{tail:.3f}"])
    headers = ["LLaVA", "steps", "loss at step 1", "mean, first tenth", "mean, last tenth"]
    return headers, rows, data


def _official(out: Path, name: str) -> dict:
    files = sorted((out / "vqa" / name).rglob("*_results.json"))
    return json.loads(files[-1].read_text())["results"] if files else {}


def build(out: Path) -> tuple[list[tuple[str, list[str], list[list]]], dict]:
    train = json.loads((out / "data" / "train_questions.json").read_text())
    test = json.loads((out / "data" / "test_questions.json").read_text())
    runs: dict[str, dict[str, list[bool]]] = {}
    ch = chance(train, test)
    runs["question-only prior"] = question_only_prior(train, test)
    controls: dict[str, dict[str, list[bool]]] = {}
    models = sorted(p.name for p in (out / "vqa").glob("*") if p.is_dir()) if (out / "vqa").exists() else []
    models.sort(key=lambda m: (m != "rgb", m))
    for m in models:
        label = "RGB-LLaVA" if m == "rgb" else f"GS-LLaVA {m[3:]}"
        runs[label] = read_samples(out / "vqa" / m)
        try:
            controls[f"{label}, shuffled images"] = read_samples(out / "vqa" / m, shuffled=True)
        except FileNotFoundError:  # the control was not run
            pass
    headers, rows = accuracy_table({**runs, **controls}, KINDS)
    rows.insert(0, ["chance", *(f"{100 * ch[k]:.1f}" if k in ch else "–" for k in KINDS), ""])
    sections = [("VQA accuracy per question kind (%, ± 1 s.e.)", headers, rows)]
    targets = []
    if models:
        g_headers, g_rows, targets = _targets(runs, controls)
        sections.append(("Targets: differences in accuracy points", g_headers, g_rows))
    b_headers, b_rows, budgets = _budgets(out)
    if b_rows:
        sections.insert(0, ("Splat budgets: storage, fidelity, loading", b_headers, b_rows))
    z_headers, z_rows, zs = _zeroshot(out)
    if z_rows:
        sections.insert(1, ("Zero-shot classification, 24 classes (GS vs RGB)", z_headers, z_rows))
    h_headers, h_rows, heads = _heads(out, zs)
    if h_rows:  # after the zero-shot section, or first
        at = next((i + 1 for i, (heading, _, _) in enumerate(sections) if heading.startswith("Zero-shot")), 0)
        sections.insert(at, ("GS head size per encoder", h_headers, h_rows))
    l_headers, l_rows, lm = _lm(out)
    if l_rows:
        vqa = next(i for i, (heading, _, _) in enumerate(sections) if heading.startswith("VQA accuracy"))
        sections.insert(
            vqa, ("Language model stand-in: the test questions with the caption as text", l_headers, l_rows)
        )
    s_headers, s_rows, stage1 = _stage1(out)
    if s_rows:
        sections.append(
            ("Stage 1: caption loss of the projector pretraining (nats per token)", s_headers, s_rows)
        )
    t_headers, t_rows, timings = _timings(out)
    if t_rows:
        sections.append(("Time per stage", t_headers, t_rows))
    official = {m: _official(out, m) for m in models}
    data = {
        "accuracy": {
            name: {k: (sum(v) / len(v) if v else None) for k, v in res.items()}
            for name, res in {**runs, **controls}.items()
        },
        "counts": {k: sum(q["kind"] == k for q in test) for k in KINDS},
        "chance": ch,
        "budgets": budgets,
        "zeroshot": zs,
        "gs_heads": heads,
        "timings": timings,
        "lm_caption_qa": lm,
        "stage1_caption_loss": stage1,
        "targets": targets,
        "official_lmms_eval": official,
    }
    return sections, data


def _plot(data: dict, path: Path) -> None:
    """VQA per kind (with the question-only prior), zero-shot GS vs RGB, and fit PSNR / size per budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), gridspec_kw={"width_ratios": [2.4, 1, 1]})
    ax = axes[0]
    acc = {k: v for k, v in data["accuracy"].items() if "shuffled" not in k and k != "question-only prior"}
    width = 0.8 / max(1, len(acc))
    x = np.arange(len(KINDS))
    for i, (name, res) in enumerate(acc.items()):
        ax.bar(x + i * width, [100 * (res.get(k) or 0) for k in KINDS], width, label=name)
    prior = data["accuracy"]["question-only prior"]
    ax.scatter(
        x + 0.4 - width / 2,
        [100 * (prior.get(k) or 0) for k in KINDS],
        marker="_",
        s=400,
        color="k",
        label="question-only prior",
        zorder=3,
    )
    ax.set_xticks(x + 0.4 - width / 2, KINDS)
    ax.set_ylabel("accuracy %")
    ax.set_title("VQA per question kind")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # headroom: the legend sits above the bars
    ax.legend(fontsize=7, ncol=3, loc="upper left")

    ax = axes[1]
    zs = data["zeroshot"]
    names = sorted(zs)
    if names:
        x = np.arange(len(names))
        ax.bar(x - 0.2, [100 * zs[n]["rgb"] for n in names], 0.4, label="RGB CLIP")
        ax.bar(x + 0.2, [100 * zs[n]["gs"] for n in names], 0.4, label="GS encoder")
        ax.set_xticks(x, names, fontsize=7)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.2)
        ax.legend(fontsize=7, ncol=2, loc="upper left")
    ax.set_ylabel("top-1 %")
    ax.set_title("zero-shot, 24 classes")

    ax = axes[2]
    budgets = data["budgets"]
    ns = sorted(budgets, key=int)
    if ns:
        ax.plot([int(n) for n in ns], [budgets[n]["psnr"] for n in ns], "o-")
        for n in ns:
            ax.annotate(f"{budgets[n]['bytes']} B", (int(n), budgets[n]["psnr"]), fontsize=7)
    ax.set_xlabel("Gaussians N (64² canvas)")
    ax.set_ylabel("fit PSNR dB")
    ax.set_title("splat budgets")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the OUT folder of scripts/mini_repro.sh")
    ap.add_argument("--results", required=True, help="path without extension for .md/.json/.png")
    ap.add_argument("--command", default="bash scripts/mini_repro.sh")
    args = ap.parse_args(argv)
    from gs_encoder.report import machine_info, markdown_table

    sections, data = build(Path(args.out))
    info = machine_info()
    res = Path(args.results)
    res.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# GaussianVision in miniature",
        "",
        f"`{args.command}`, run {info['date']} on {info['cpu']} ({info['torch_threads']} torch threads), "
        f"torch {info['torch']}, commit {info['git']}. Questions per kind: "
        + ", ".join(f"{k} {n}" for k, n in data["counts"].items())
        + ".",
        "",
    ]
    for heading, headers, rows in sections:
        lines += [f"## {heading}", "", markdown_table(headers, rows), ""]
    lines += [f"![accuracy per kind]({res.name}.png)", ""]
    res.with_suffix(".md").write_text("\n".join(lines))
    res.with_suffix(".json").write_text(
        json.dumps({"command": args.command, "machine": info, **data}, indent=2, default=str) + "\n"
    )
    _plot(data, res.with_suffix(".png"))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
