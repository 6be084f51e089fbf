"""The miniature reproduction's tables and plots, from what scripts/mini_repro.sh wrote under OUT.

    python -m eval.mini.report --out outputs/mini_repro --results eval/results/mini_repro [--seeds K] --command "..."

Sections (the paper's tables in small): splat budgets (bytes, compression vs raw 64² RGB, fit PSNR, load
time vs PNG decoding); zero-shot accuracy GS vs RGB and GS/RGB per encoder; VQA scores per question kind
(lmms-eval's own per-question scores, eval.mini.score) on the validation split, where every choice is made
(the demo model among them), and on the test split, scored once at the end of the run: RGB-LLaVA and each
GS-LLaVA beside the floors — chance, the question-only prior, the blind GS-LLaVA (trained and asked with
one blank image) and each model's shuffled-image control (± one scene-clustered bootstrap s.e.; with
--seeds K, mean ± between-seed s.d. over the K seeds of mini_repro.sh --seeds K); the targets on test (a
mean difference over seeds, met when it clears its threshold at one-sided 90%: by more than 1.28 × the
combined error of seeds and test scenes); the GS head's size per encoder (--head-ablation); the LLaVAs'
stage-1 caption loss; time per stage; lmms-eval's official metrics. Writes <results>.md, .json and .png.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .score import (
    SCORERS,
    chance,
    clustered_se,
    paired_difference,
    question_only_prior,
    read_samples,
    scene_clusters,
)
from .world import KINDS

RAW_BYTES = 64 * 64 * 3
Z90 = 1.2816  # one-sided 90% normal quantile: a target is met when it clears its threshold by Z90 × error
PRIOR = "question-only prior"
SPLIT_TITLES = {
    "val": "Validation: VQA score per question kind, where every choice is made",
    "test": "Test: VQA score per question kind, scored once at the end of the run",
}


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


def _zeroshot(run: Path, folder: str = "zeroshot") -> dict[str, dict]:
    """encoder → {"dataset", "gs", "rgb"} top-1 accuracies of one seed's zero-shot runs in run/folder
    (zeroshot: 24 shape classes; zeroshot_words: reading, the 12 words)."""
    data = {}
    for f in sorted((run / folder).glob("*/zeroshot.json")):
        for ds, r in json.loads(f.read_text())["results"].items():
            gs, rgb = r.get("GS", {}).get("acc1"), r.get("RGB", {}).get("acc1")
            if gs is not None and rgb is not None:
                data[f.parent.name] = {"dataset": ds, "gs": gs, "rgb": rgb}
    return data


def _zeroshot_over_seeds(per_seed: list[dict]) -> tuple[list[str], list[list], dict]:
    """Zero-shot rows: GS accuracy and GS / RGB, mean ± between-seed s.d. when there are several seeds."""
    rows, data = [], {}
    for name in sorted(per_seed[0]):
        seeds = [zs[name] for zs in per_seed if name in zs]
        gs, gs_sd = _mean_sd(100 * z["gs"] for z in seeds)
        rgb = 100 * seeds[0]["rgb"]  # the teacher: the same for every seed
        ratios = [z["gs"] / z["rgb"] for z in seeds if z["rgb"]]
        ratio, ratio_sd = _mean_sd(ratios) if ratios else (None, None)
        data[name] = {
            "gs": gs / 100,
            "rgb": rgb / 100,
            "gs_sd": None if gs_sd is None else gs_sd / 100,  # a fraction, as "gs"
            "gs_per_seed": [z["gs"] for z in seeds],
            "ratio": ratio,
            "ratio_sd": ratio_sd,
        }
        rows.append(
            [
                name,
                seeds[0]["dataset"],
                f"{rgb:.1f}",
                _pm(gs, gs_sd, 1),
                "–" if ratio is None else _pm(ratio, ratio_sd, 3),
            ]
        )
    headers = ["encoder", "dataset", "RGB acc %", "GS acc %", "GS / RGB"]
    if len(per_seed) > 1:
        headers[3:] = [f"GS acc % (mean ± s.d., {len(per_seed)} seeds)", "GS / RGB (mean ± s.d.)"]
    return headers, rows, data


def _pm(mean: float, sd: float | None, digits: int) -> str:
    return f"{mean:.{digits}f}" if sd is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _heads(out: Path, zs: dict) -> tuple[list[str], list[list], dict]:
    """Each GS encoder's head (seed 0's): width, feed-forward, parameters (what is not the ViT), zero-shot
    GS/RGB (mean over seeds)."""
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
        ratio = zs[name]["ratio"] if name in zs else None
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
    """Stage durations of the last invocation of mini_repro.sh that reached its report (from OUT/timings.tsv;
    the last one when none did), up to the report, and how many of its stages were skipped as already done
    (a resumed run's total is not a full run's time), and which stages skipped some part."""
    path = out / "timings.tsv"
    if not path.exists():
        return [], [], {}
    lines = [ln.split("\t", 1) for ln in path.read_text().splitlines() if "\t" in ln]
    starts = [i for i, (_, label) in enumerate(lines) if label.startswith("# run")]
    if not starts:
        return [], [], {}
    # the last invocation that reached its report: a later one stopped before it (killed, or failed) did
    # not write the results this report shows
    ends = [*starts[1:], len(lines)]
    reached = [
        (a, b) for a, b in zip(starts, ends, strict=True) if any(lb == "report" for _, lb in lines[a:b])
    ]
    first, last = reached[-1] if reached else (starts[-1], len(lines))
    run = [(int(t), label) for t, label in lines[first:last]]
    skipped = sum(label.startswith("# skipped") for _, label in run)
    partly_skipped, stage = set(), None
    for _, label in run[1:]:
        if label.startswith("# skipped"):
            partly_skipped.add(stage)
        else:
            stage = label
    run = [(t, label) for t, label in run if not label.startswith("# skipped")]
    stages = []
    for (t, label), (t_next, _) in zip(run[1:], run[2:], strict=False):
        if label == "report":
            break
        stages.append((label, t_next - t))
    total = sum(d for _, d in stages)
    rows = [[label, f"{d / 60:.1f}"] for label, d in stages] + [["**total**", f"**{total / 60:.1f}**"]]
    started, _, commit = run[0][1][len("# run ") :].partition(" commit ")
    data = {
        "started": started,
        "commit": commit or None,
        "stages": dict(stages),
        "total_s": total,
        "skipped": skipped,
        "skipped_stages": [label for label, _ in stages if label in partly_skipped],
    }
    return ["stage (this invocation; finished stages are skipped on a rerun)", "minutes"], rows, data


def _time_targets(timings: dict, seeds: int) -> list[dict]:
    """The run-time targets: one seed in 45 minutes on 2 cores, three in two hours (37.5 per further seed).
    A run of several seeds also gives the one-seed figure: its shared stages plus seed 0's are what a
    one-seed run (`bash scripts/mini_repro.sh`) runs before its report."""
    if not timings:
        return []
    untestable = f"not testable: {timings['skipped']} finished stages were skipped (a resumed run)"

    def row(what: str, seconds: float, limit: float) -> dict:
        met = untestable if timings["skipped"] else ("yes" if seconds / 60 <= limit else "no")
        return {"comparison": what, "points": seconds / 60, "target": f"≤ {limit:g} min", "met": met}

    rows = [
        row(
            f"time of the whole run, {seeds} seed{'s' * (seeds > 1)} (minutes)",
            timings["total_s"],
            45 + 37.5 * (seeds - 1),
        )
    ]
    if seeds > 1:
        later = tuple(f", seed {s}" for s in range(1, seeds))
        one = sum(d for label, d in timings["stages"].items() if not label.endswith(later))
        rows.append(row("time of one seed: the shared stages + seed 0's, within this run (minutes)", one, 45))
    return rows


@dataclass(frozen=True)
class _Check:
    """One target: `a` minus `b` (a model label, or a constant score in %) over all questions or one kind;
    met when the mean over seeds clears `threshold` (and stays below `upper`, when set) at one-sided 90%.
    A relative target (`reference` set) counts only when the reference's answers depend on the image."""

    name: str
    a: str
    b: str | float
    threshold: float
    target: str
    kind: str | None = None
    reference: str | None = None
    upper: float | None = None


def _pick(res: dict, label: str, kind: str | None) -> dict[str, list[float]]:
    return res[label] if kind is None else {kind: res[label][kind]}


def _mean_over(values: dict[str, list[float]]) -> float:
    every = [x for v in values.values() for x in v]
    return sum(every) / len(every)


def _seed_average(per_seed: list[dict], label: str, kind: str | None = None) -> dict[str, list[float]]:
    """kind → each question's score averaged over the seeds."""
    runs = [_pick(res, label, kind) for res in per_seed]
    return {k: [sum(xs) / len(xs) for xs in zip(*(r[k] for r in runs), strict=True)] for k in runs[0]}


def _over_seeds(per_seed: list[dict], clusters: dict[str, list[str]], c: _Check) -> dict:
    """A check's difference in points: mean over seeds, between-seed s.d., the test-set s.e. (a bootstrap
    over scenes of the seed-averaged per-question difference) and the combined error of the mean,
    sqrt(s.e.² + s.d.² / seeds): the test questions are the same for every seed, so their error does not
    shrink with more seeds."""
    ds = []
    for res in per_seed:
        a = _mean_over(_pick(res, c.a, c.kind))
        b = _mean_over(_pick(res, c.b, c.kind)) if isinstance(c.b, str) else c.b / 100
        ds.append(100 * (a - b))
    mean, sd = _mean_sd(ds)
    a = _seed_average(per_seed, c.a, c.kind)
    if isinstance(c.b, str):
        se = 100 * paired_difference(a, _seed_average(per_seed, c.b, c.kind), clusters)[1]
    else:
        se = 100 * clustered_se(a, clusters)
    combined = math.sqrt(se**2 + (sd or 0.0) ** 2 / len(ds))
    return {"points": mean, "sd": sd, "se": se, "error": combined}


def _met(r: dict, c: _Check) -> bool:
    """Whether a mean difference (from _over_seeds) clears the check's bounds at one-sided 90%."""
    margin = Z90 * r["error"]
    return r["points"] - c.threshold > margin and (c.upper is None or c.upper - r["points"] > margin)


def _mean_sd(xs) -> tuple[float, float | None]:
    xs = list(xs)
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def _checks(labels: list[str], chance: dict[str, float]) -> list[_Check]:
    """The miniature's targets for the models present: each model over the blind GS-LLaVA (+15) and over its
    shuffled-image control; GS vs RGB (within 3 points at the largest budget, 5 below); the narrow head vs
    the full-width one (≥ −3); K vs 2K tokens (within ±3); RGB reading above chance; 75% overall (stretch)."""
    blind = next((m for m in labels if m.startswith("blind ")), None)
    models = [m for m in labels if m != PRIOR and m != blind and not m.endswith(", shuffled images")]
    gs = {m: re.fullmatch(r"GS-LLaVA n(\d+)-k(\d+)(-wide)?", m) for m in models}
    gs = {m: (int(g[1]), int(g[2]), bool(g[3])) for m, g in gs.items() if g}
    top_n = max((n for n, _, _ in gs.values()), default=None)
    checks = []
    for m in models:
        if blind:
            checks.append(_Check(f"{m} − {blind}", m, blind, 15, "≥ +15"))
        if f"{m}, shuffled images" in labels:
            checks.append(_Check(f"{m} − its shuffled-image control", m, f"{m}, shuffled images", 0, "> 0"))
    if "RGB-LLaVA" in models:
        for m, (n, _, _) in gs.items():
            within = 3 if n == top_n else 5
            checks.append(
                _Check(f"{m} − RGB-LLaVA", m, "RGB-LLaVA", -within, f"≥ −{within}", reference="RGB-LLaVA")
            )
    for m, (_, _, wide) in gs.items():
        narrow = m.removesuffix("-wide")
        if wide and narrow in gs:  # the head-size ablation: the default narrow head vs the full width
            checks.append(_Check(f"{narrow} (narrow head) − {m}", narrow, m, -3, "≥ −3", reference=m))
    by_n: dict[int, dict[int, str]] = {}
    for m, (n, k, wide) in gs.items():
        if not wide:
            by_n.setdefault(n, {})[k] = m
    for n, ks in sorted(by_n.items()):
        if len(ks) >= 2:
            big, small = max(ks), min(ks)
            name = f"N = {n}: K = {small} − K = {big} tokens"
            checks.append(_Check(name, ks[small], ks[big], -3, "within ±3", reference=ks[big], upper=3))
    if "RGB-LLaVA" in models and "text" in chance:
        c = 100 * chance["text"]
        checks.append(
            _Check(f"RGB-LLaVA reading (text) − chance ({c:.1f}%)", "RGB-LLaVA", c, 0, "> 0", kind="text")
        )
    default_gs = max(
        (m for m, (n, _, w) in gs.items() if n == top_n and not w), key=lambda m: gs[m][1], default=None
    )
    for m in ("RGB-LLaVA", default_gs):
        if m in models:
            checks.append(_Check(f"{m}, score over all questions (stretch)", m, 0.0, 75, "≥ 75%"))
    return checks


def _targets(
    per_seed: list[dict], clusters: dict[str, list[str]], chance: dict[str, float]
) -> tuple[list[str], list[list], list[dict]]:
    """The targets as differences over the same test questions, in points: mean over seeds, between-seed s.d.,
    test-set s.e., and met when the mean clears the target at one-sided 90% (by more than 1.28 × the
    combined error).

    "Within x points of the reference" says nothing when the reference itself does not use the image: two
    models at the prior are trivially close. So a relative target (GS vs RGB, K vs 2K tokens, the head sizes)
    counts only when its reference beats its own shuffled-image control by the same rule; otherwise it is
    reported as not testable."""
    labels = list(per_seed[0])

    def sees(m: str) -> bool:  # the model's answers depend on the image
        control = f"{m}, shuffled images"
        if control not in labels:
            return True  # no control run: nothing to test against
        check = _Check("", m, control, 0, "")
        return _met(_over_seeds(per_seed, clusters, check), check)

    rows, data = [], []
    for c in _checks(labels, chance):
        r = _over_seeds(per_seed, clusters, c)
        if c.reference is not None and not sees(c.reference):
            met = f"not testable: {c.reference} does not beat its shuffled-image control"
        else:
            met = "yes" if _met(r, c) else "no"
        sd = "–" if r["sd"] is None else f"{r['sd']:.1f}"
        rows.append([c.name, f"{r['points']:+.1f}", sd, f"{r['se']:.1f}", f"{r['error']:.1f}", c.target, met])
        data.append({"comparison": c.name, **r, "seeds": len(per_seed), "target": c.target, "met": met})
    headers = [
        "comparison (all questions unless named, paired)",
        "points (mean over seeds)",
        "between-seed s.d.",
        "test-set s.e. (scene bootstrap)",
        "combined error",
        "target",
        "met (one-sided 90%)",
    ]
    return headers, rows, data


def _lm(out: Path) -> tuple[list[str], list[list], dict]:
    """The LM stand-in's own accuracy on the test scenes' questions with the caption given as text (from its
    pretraining log): what the LLaVAs could reach with a perfect vision side; and its loss on the plain
    captions with no image (when logged): where stage 1 starts if the projector's tokens told it nothing."""
    path = out / "lm" / "pretrain_log.json"
    if not path.exists():
        return [], [], {}
    last = json.loads(path.read_text())[-1]
    row = [f"pretrained Llama, {last['step']} steps, caption as text"]
    row += [f"{last[k]:.1f}" if k in last else "–" for k in KINDS] + [f"{last['all']:.1f}"]
    row.append(f"{last['caption_loss']:.3f}" if "caption_loss" in last else "not logged (answers-only LM)")
    return ["language model stand-in", *KINDS, "all", "caption loss, no image (nats)"], [row], last


def _stage1(runs: list[Path]) -> tuple[list[str], list[list], dict]:
    """Each LLaVA's stage-1 (projector pretraining on captions) loss: first step, mean of the first and of the
    last tenth of the steps (trainer_state.json of scripts/pretrain.sh, one logged loss per step), averaged
    over the seeds."""
    per_model: dict[str, list[dict]] = {}
    for run in runs:
        for state in sorted((run / "llava").glob("*/pretrain/trainer_state.json")):
            losses = [e["loss"] for e in json.loads(state.read_text())["log_history"] if "loss" in e]
            if losses:
                tenth = max(1, len(losses) // 10)
                per_model.setdefault(state.parent.parent.name, []).append(
                    {
                        "steps": len(losses),
                        "first": losses[0],
                        "first_tenth": sum(losses[:tenth]) / tenth,
                        "last_tenth": sum(losses[-tenth:]) / tenth,
                    }
                )
    rows, data = [], {}
    for name, seeds in per_model.items():
        data[name] = {k: sum(x[k] for x in seeds) / len(seeds) for k in seeds[0]}
        d = data[name]
        rows.append(
            [
                name,
                seeds[0]["steps"],
                f"{d['first']:.3f}",
                f"{d['first_tenth']:.3f}",
                f"{d['last_tenth']:.3f}",
            ]
        )
    headers = ["LLaVA", "steps", "loss at step 1", "mean, first tenth", "mean, last tenth"]
    if len(runs) > 1:
        headers[0] = f"LLaVA (mean over {len(runs)} seeds)"
    return headers, rows, data


def _official(out: Path, name: str) -> dict:
    """lmms-eval's own aggregate metrics of one model's test tasks (seed 0), from its results files."""
    results = {}
    for f in sorted((out / "vqa" / name).rglob("*_results.json")):
        results |= {t: r for t, r in json.loads(f.read_text())["results"].items() if t.startswith("mw_")}
    return results


def seed_runs(out: Path, seeds: int) -> list[Path]:
    """The folders of a run's seeds: seed 0 is OUT itself, seed s > 0 is OUT/seed<s>."""
    runs = [out, *(out / f"seed{s}" for s in range(1, seeds))]
    for run in runs[1:]:
        if not (run / "vqa").is_dir():
            raise FileNotFoundError(
                f"{run}: no vqa/ results for this seed; finish it with `bash scripts/mini_repro.sh --seeds {seeds}` "
                "(finished stages are skipped) or report fewer seeds"
            )
    return runs


def _label(folder: str) -> str:
    """The report's name of an lmms-eval folder: rgb, gs-<n>-<k>[-wide] or blind-<n>-<k>."""
    if folder == "rgb":
        return "RGB-LLaVA"
    if folder.startswith("blind-"):
        return f"blind GS-LLaVA {folder[6:]} (one blank image)"
    return f"GS-LLaVA {folder[3:]}"


def _vqa(run: Path, split: str, prior: dict) -> tuple[list[str], dict[str, dict[str, list[float]]]]:
    """(lmms-eval folder names, label → scores per kind) of one seed on one split: the prior, every model
    (the blind one on its blank-image tasks), then, on test, every model's shuffled-image control."""
    folders = sorted(p.name for p in (run / "vqa").glob("*") if p.is_dir()) if (run / "vqa").exists() else []
    folders.sort(key=lambda m: (m != "rgb", m.startswith("blind-"), m))
    models, controls = {PRIOR: prior}, {}
    for m in folders:
        label = _label(m)
        blind = m.startswith("blind-")
        models[label] = read_samples(run / "vqa" / m, split, "blank" if blind else "")
        if split == "test" and not blind:
            try:
                controls[f"{label}, shuffled images"] = read_samples(run / "vqa" / m, split, "shuffled")
            except FileNotFoundError:  # the control was not run
                pass
    return folders, {**models, **controls}


def _accuracy_over_seeds(
    per_seed: list[dict], clusters: dict[str, list[str]]
) -> tuple[list[str], list[list], dict, dict]:
    """Score rows per kind: '% ± s.e.' for one seed; 'mean ± between-seed s.d.' for several, with the
    split's s.e. of the overall score (the seed-averaged scores, bootstrapped over scenes). Also label →
    kind → mean score, and label → per-seed scores. Every s.e. is a bootstrap over scenes."""

    def acc(res: dict) -> dict[str, float | None]:
        out = {k: (sum(res[k]) / len(res[k]) if res.get(k) else None) for k in KINDS if k in res}
        return {**out, "all": _mean_over({k: res[k] for k in KINDS if k in res})}

    labels = list(per_seed[0])
    seeds = {label: [acc(res[label]) for res in per_seed] for label in labels}
    mean = {
        label: {k: (sum(x[k] for x in accs) / len(accs) if accs[0][k] is not None else None) for k in accs[0]}
        for label, accs in seeds.items()
    }
    rows = []
    for label, accs in seeds.items():
        avg = _seed_average(per_seed, label)
        se_all = f"{100 * clustered_se(avg, clusters):.1f}"
        row = [label]
        if len(per_seed) == 1:
            for k in KINDS:
                row.append(
                    f"{100 * mean[label][k]:.1f} ± {100 * clustered_se({k: avg[k]}, clusters):.1f}"
                    if k in avg
                    else "–"
                )
            rows.append([*row, f"{100 * mean[label]['all']:.1f} ± {se_all}"])
            continue
        for k in [*KINDS, "all"]:
            vals = [100 * a[k] for a in accs if a.get(k) is not None]
            row.append(_pm(*_mean_sd(vals), 1) if vals else "–")
        rows.append([*row, se_all])
    headers = ["model", *KINDS, "all"] + ([] if len(per_seed) == 1 else ["s.e. of the mean (all)"])
    return headers, rows, mean, seeds


def _split(out: Path, runs: list[Path], split: str, train: list[dict]) -> dict:
    """One split's scores for every seed: questions, clusters, chance, prior, per-seed results, table."""
    questions = json.loads((out / "data" / f"{split}_questions.json").read_text())
    ch = chance(train, questions)
    prior = question_only_prior(train, questions)
    folders, seed0 = _vqa(out, split, prior)
    per_seed = [seed0, *(_vqa(run, split, prior)[1] for run in runs[1:])]
    for run, res in zip(runs[1:], per_seed[1:], strict=True):
        if list(res) != list(seed0):
            raise ValueError(
                f"{run}: its models {sorted(res)} differ from seed 0's {sorted(seed0)}; rerun it"
            )
    clusters = scene_clusters(questions)
    headers, rows, accuracy, accuracy_per_seed = _accuracy_over_seeds(per_seed, clusters)
    chance_row = ["chance", *(f"{100 * ch[k]:.1f}" if k in ch else "–" for k in KINDS)]
    rows.insert(0, chance_row + [""] * (len(headers) - len(chance_row)))
    return {
        "folders": folders,
        "per_seed": per_seed,
        "clusters": clusters,
        "chance": ch,
        "table": (headers, rows),
        "accuracy": accuracy,
        "accuracy_per_seed": accuracy_per_seed,
        "counts": {k: len(v) for k, v in clusters.items()},
        "scenes": len({q["image"] for q in questions}),
    }


def demo_choice(val: dict) -> dict:
    """The GS-LLaVA that ships as the demo, chosen on validation: the best mean validation score over all
    questions (the blind floor excluded), then its best validation seed."""
    best = None
    for label, acc in val["accuracy"].items():
        if label.startswith("GS-LLaVA ") and (best is None or acc["all"] > best[1]):
            best = (label, acc["all"])
    if best is None:
        raise ValueError(
            "the run has no GS-LLaVA validation score; run scripts/mini_repro.sh to its end first"
        )
    per_seed = [a["all"] for a in val["accuracy_per_seed"][best[0]]]
    seed = max(range(len(per_seed)), key=per_seed.__getitem__)
    folder = "gs-" + best[0][len("GS-LLaVA ") :]
    return {
        "model": folder,
        "label": best[0],
        "validation_score": best[1],
        "seed": seed,
        "seed_validation_score": per_seed[seed],
    }


def build(out: Path, seeds: int = 1) -> tuple[list[tuple[str, list[str], list[list]]], dict]:
    train = json.loads((out / "data" / "train_questions.json").read_text())
    runs = seed_runs(out, seeds)
    splits = {split: _split(out, runs, split, train) for split in ("val", "test")}
    val, test = splits["val"], splits["test"]
    what = "± 1 s.e." if seeds == 1 else f"mean ± between-seed s.d. over {seeds} seeds"
    sections = [(f"{SPLIT_TITLES[split]} (%, {what})", *splits[split]["table"]) for split in ("val", "test")]
    targets, choice = [], None
    t_headers, t_rows, timings = _timings(out)
    if test["folders"]:
        g_headers, g_rows, targets = _targets(test["per_seed"], test["clusters"], test["chance"])
        for t in _time_targets(timings, seeds):
            g_rows.append([t["comparison"], f"{t['points']:.1f}", "", "", "", t["target"], t["met"]])
            targets.append(t)
        sections.append(("Targets (test)", g_headers, g_rows))
    if any(m.startswith("gs-") for m in val["folders"]):
        choice = demo_choice(val)
        sections.append(
            (
                "Choices made on validation",
                ["choice", "made", "validation score %"],
                [
                    [
                        "the demo model (scripts/demo.sh)",
                        f"{choice['label']}, seed {choice['seed']}",
                        f"{100 * choice['seed_validation_score']:.1f}",
                    ]
                ],
            )
        )
    b_headers, b_rows, budgets = _budgets(out)
    if b_rows:
        sections.insert(0, ("Splat budgets: storage, fidelity, loading", b_headers, b_rows))
    z_headers, z_rows, zs = _zeroshot_over_seeds([_zeroshot(run) for run in runs])
    if z_rows:
        sections.insert(1, ("Zero-shot classification, 24 classes (GS vs RGB)", z_headers, z_rows))
    w_headers, w_rows, zs_words = _zeroshot_over_seeds([_zeroshot(run, "zeroshot_words") for run in runs])
    if w_rows:  # runs before the reading zero-shot have none
        title = "Zero-shot reading, label-only scenes, 12 words, chance 8.3% (GS vs RGB)"
        sections.insert(2, (title, w_headers, w_rows))
    h_headers, h_rows, heads = _heads(out, zs)
    if h_rows:  # after the zero-shot sections (classes and reading), or first
        at = max(
            (i + 1 for i, (heading, _, _) in enumerate(sections) if heading.startswith("Zero-shot")),
            default=0,
        )
        sections.insert(at, ("GS head size per encoder", h_headers, h_rows))
    l_headers, l_rows, lm = _lm(out)
    if l_rows:
        vqa = next(i for i, (heading, _, _) in enumerate(sections) if heading.startswith("Validation"))
        sections.insert(
            vqa, ("Language model stand-in: questions with the caption as text", l_headers, l_rows)
        )
    s_headers, s_rows, stage1 = _stage1(runs)
    if s_rows:
        sections.append(
            ("Stage 1: caption loss of the projector pretraining (nats per token)", s_headers, s_rows)
        )
    sections.append(
        ("Scoring (lmms-eval's scorer per kind)", ["kind", "scored as"], [[k, SCORERS[k]] for k in KINDS])
    )
    if t_rows:
        sections.append(("Time per stage", t_headers, t_rows))
    data = {
        "seeds": seeds,
        "accuracy": test["accuracy"],
        "accuracy_per_seed": test["accuracy_per_seed"],
        "counts": test["counts"],
        "scenes": test["scenes"],
        "chance": test["chance"],
        "validation": {k: val[k] for k in ("accuracy", "accuracy_per_seed", "counts", "scenes", "chance")},
        "demo_choice": choice,
        "scoring": SCORERS,
        "budgets": budgets,
        "zeroshot": zs,
        "zeroshot_words": zs_words,
        "gs_heads": heads,
        "timings": timings,
        "lm_caption_qa": lm,
        "stage1_caption_loss": stage1,
        "targets": targets,
        "official_lmms_eval": {m: _official(out, m) for m in test["folders"]},
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
    acc = {k: v for k, v in data["accuracy"].items() if "shuffled" not in k and k != PRIOR}
    width = 0.8 / max(1, len(acc))
    x = np.arange(len(KINDS))
    per_seed = data["accuracy_per_seed"]
    for i, (name, res) in enumerate(acc.items()):
        sd = None
        if data["seeds"] > 1:  # error bars: the between-seed s.d.
            sd = [_mean_sd(100 * (a.get(k) or 0) for a in per_seed[name])[1] or 0 for k in KINDS]
        ax.bar(x + i * width, [100 * (res.get(k) or 0) for k in KINDS], width, yerr=sd, capsize=2, label=name)
    prior = data["accuracy"][PRIOR]
    ax.scatter(
        x + 0.4 - width / 2,
        [100 * (prior.get(k) or 0) for k in KINDS],
        marker="_",
        s=400,
        color="k",
        label=PRIOR,
        zorder=3,
    )
    ax.set_xticks(x + 0.4 - width / 2, KINDS)
    ax.set_ylabel("accuracy %")
    ax.set_title(
        "test score per question kind"
        + (f" (mean ± s.d., {data['seeds']} seeds)" if data["seeds"] > 1 else "")
    )
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # headroom: the legend sits above the bars
    ax.legend(fontsize=7, ncol=3, loc="upper left")

    ax = axes[1]
    zs = data["zeroshot"]
    names = sorted(zs)
    sets = [("24 classes", zs, "")] + [("12 words", w, "//") for w in [data.get("zeroshot_words")] if w]
    if names:
        x = np.arange(len(names))
        width = 0.8 / (2 * len(sets))
        for j, (label, res, hatch) in enumerate(sets):  # RGB CLIP and GS encoder per set, side by side
            for i, (tower, colour) in enumerate((("rgb", "C0"), ("gs", "C1"))):
                sd = (
                    [100 * (res[n]["gs_sd"] or 0) for n in names]
                    if tower == "gs" and data["seeds"] > 1
                    else None
                )
                ax.bar(
                    x - 0.4 + (2 * j + i + 0.5) * width,
                    [100 * res[n][tower] if n in res else 0 for n in names],
                    width,
                    yerr=sd,
                    capsize=2,
                    color=colour,
                    hatch=hatch,
                    edgecolor="w" if hatch else None,
                    label=f"{'RGB CLIP' if tower == 'rgb' else 'GS encoder'}, {label}",
                )
        ax.set_xticks(x, names, fontsize=7)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
        ax.legend(fontsize=6, ncol=2, loc="upper left")
    ax.set_ylabel("top-1 %")
    ax.set_title(
        "zero-shot: " + " / ".join(label + (" (hatched)" if hatch else "") for label, _, hatch in sets)
    )

    ax = axes[2]
    budgets = data["budgets"]
    ns = sorted(budgets, key=int)
    if ns:
        ax.plot([int(n) for n in ns], [budgets[n]["psnr"] for n in ns], "o-")
        for n in ns:
            ax.annotate(f"{budgets[n]['bytes']} B", (int(n), budgets[n]["psnr"]), fontsize=7)
        ax.margins(x=0.2, y=0.15)  # room for the labels at the ends
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
    ap.add_argument("--seeds", type=int, default=1, help="seeds of the run (mini_repro.sh --seeds)")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error(f"--seeds must be at least 1, got {args.seeds}")
    from gs_encoder.report import machine_info, markdown_table

    try:
        sections, data = build(Path(args.out), args.seeds)
    except (FileNotFoundError, ValueError) as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    info = machine_info()
    if data["timings"]:  # the run's own start and commit, not this report's (a rerun on a finished OUT)
        info["reported"], info["date"] = info["date"], data["timings"]["started"]
        if data["timings"]["commit"]:
            info["reported_git"], info["git"] = info["git"], data["timings"]["commit"]
    res = Path(args.results)
    res.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# GaussianVision in miniature",
        "",
        f"`{args.command}`, run {info['date']} on {info['cpu']} ({info['torch_threads']} torch threads), "
        f"torch {info['torch']}, commit {info['git']}. Test questions per kind ({data['scenes']} scenes): "
        + ", ".join(f"{k} {n}" for k, n in data["counts"].items())
        + f"; validation: {sum(data['validation']['counts'].values())} questions of "
        + f"{data['validation']['scenes']} scenes.",
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
