"""Fit convergence on the sealed test set: the headline of `python -m eval.bench.fit_convergence`.

Each initialisation (the structured grid, the density grid, the learned network) is fitted with the same
optimiser (the default FitConfig's Adam and schedule), each with its own best linear warm-up, chosen on
the tuning set (eval/splits.py) before any sealed picture is fitted. The previous default (the
structured grid with BASELINE_OPTIMISER) is a secondary row. Every fit is a complete K-iteration
fit of all sealed pictures in one batch (what `gsv fit --iters K` runs), timed from the raw image to the
fitted splats; K = 0 is the init itself. Reported per picture, with the mean, the median and a bootstrap
interval over pictures (the unit the data clusters in); speed-ups as measured wall time at measured
budgets, and separately as iteration equivalents (interpolated in log K: derived, and said so).
"""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from eval import splits
from gs_encoder import FitConfig, fit_images

from .common import BASELINE_OPTIMISER
from .fit_convergence import PREV, base_init, init_psnr

INITS = ("structured", "density", "learned")
BUDGETS = (50, 100, 300, 1000)
NS = (400, 1600, 3136)
WARMUPS = (0, 10, 30)  # linear warm-up lengths each init chooses from, on the tuning set
TUNE_N, TUNE_K = 1600, 100


def config(init: str, n: int, k: int, warmup: int) -> FitConfig:
    if init == PREV:
        return FitConfig(
            num_gaussians=n, iters=k, init="structured", check_every=max(k // 20, 1), **BASELINE_OPTIMISER
        )
    return FitConfig(num_gaussians=n, iters=k, init=init, lr_warmup=warmup, check_every=max(k // 20, 1))


def choose_warmups(n: int = TUNE_N, k: int = TUNE_K, size: int = 224) -> dict:
    """Each init's warm-up: the best mean PSNR over the tuning pictures at N = n, K = k."""
    names, images = splits.images("tuning", size)
    scores = {}
    for init in tqdm(INITS, desc="warm-ups on the tuning set", unit="init"):
        for w in WARMUPS:
            res = fit_images(images, config(init, n, k, w))
            scores[f"{init}/{w}"] = float(np.mean([r.psnr for r in res]))
    best = {init: max(WARMUPS, key=lambda w, i=init: scores[f"{i}/{w}"]) for init in INITS}
    return {"tuning_pictures": names, "n": n, "k": k, "scores": scores, "chosen": best}


def run(ns=NS, budgets=BUDGETS, warmups: dict | None = None, size: int = 224) -> dict:
    """Every init × N × K on the sealed pictures: per-picture PSNR and batch seconds."""
    names, images = splits.images("sealed", size)
    chosen = warmups["chosen"]
    fits = {}
    jobs = [(n, init) for n in ns for init in (*INITS, PREV)]
    for n, init in tqdm(jobs, desc="sealed fits", unit="init×N"):
        p0, s0 = init_psnr(images, base_init(init), n, clamp=True)
        entry = {"psnr": {0: p0}, "seconds": {0: s0}}
        for k in budgets:
            t = time.perf_counter()
            res = fit_images(images, config(init, n, k, chosen.get(init, 0)))
            entry["seconds"][k] = time.perf_counter() - t
            entry["psnr"][k] = [r.psnr for r in res]
        fits[f"{init}/{n}"] = entry
    kinds = {p.name: p.kind for p in splits.SEALED}
    return {"pictures": names, "kinds": [kinds[n] for n in names], "ns": list(ns), "budgets": list(budgets), "size": size,
            "inits": [*INITS, PREV], "warmups": warmups, "fits": fits}  # fmt: skip


def bootstrap_mean(x: np.ndarray, reps: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of per-picture values, resampling pictures."""
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(reps, len(x)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def iterations_to(entry: dict, target: float) -> float | None:
    """Iterations at which the mean PSNR reaches `target`, interpolated in log K between measured budgets
    (derived); None when no budget reaches it."""
    ks = sorted(k for k in entry["psnr"] if k > 0)
    means = [float(np.mean(entry["psnr"][k])) for k in ks]
    for i, (k, m) in enumerate(zip(ks, means, strict=True)):
        if m >= target:
            if i == 0:
                return float(k)
            k0, m0 = ks[i - 1], means[i - 1]
            frac = (target - m0) / max(m - m0, 1e-9)
            return float(np.exp(np.log(k0) + frac * (np.log(k) - np.log(k0))))
    return None


def _fmt(x, digits=2):
    return None if x is None else round(float(x), digits)


def report(run: dict, name: str = "fit_convergence", machine: dict | None = None, out_dir=None):
    """eval/results/<name>.{md,json,png} (or under `out_dir`) of a sealed run."""
    from .common import RESULTS, write_results

    out_dir = out_dir or RESULTS
    fits, ns, ks, pics = run["fits"], run["ns"], [0, *run["budgets"]], run["pictures"]
    arr = {key: {k: np.array(v) for k, v in e["psnr"].items()} for key, e in fits.items()}
    chosen = run["warmups"]["chosen"]
    head = []
    for n in ns:
        for init in run["inits"]:
            a = arr[f"{init}/{n}"]
            label = init + ("" if init == PREV else f" (warm-up {chosen[init]})")
            head.append([n, label, *[f"{a[k].mean():.2f} ({np.median(a[k]):.2f})" for k in ks]])
    paired = []
    for n in ns:
        for other in ("learned", "density"):
            for k in ks:
                d = arr[f"{other}/{n}"][k] - arr[f"structured/{n}"][k]
                lo, hi = bootstrap_mean(d)
                paired.append([n, f"{other} − structured", k, _fmt(d.mean()), f"[{lo:.2f}, {hi:.2f}]",
                               _fmt(np.median(d)), f"{int((d > 0).sum())} of {len(d)}"])  # fmt: skip
    measured, derived = [], []
    for n in ns:
        s = fits[f"structured/{n}"]
        for ref_k in [k for k in (300, 1000) if k in s["psnr"]] or [run["budgets"][-1]]:
            target = float(np.mean(s["psnr"][ref_k]))
            for init in ("density", "learned"):
                e = fits[f"{init}/{n}"]
                k = next((k for k in run["budgets"] if np.mean(e["psnr"][k]) >= target), None)
                measured.append([n, init, f"structured@{ref_k}: {target:.2f} dB, {s['seconds'][ref_k]:.1f} s",
                                 k, None if k is None else f"{np.mean(e['psnr'][k]):.2f} dB, {e['seconds'][k]:.1f} s",
                                 None if k is None else _fmt(s["seconds"][ref_k] / e["seconds"][k], 1)])  # fmt: skip
        for init in ("density", "learned"):
            e = fits[f"{init}/{n}"]
            for k in run["budgets"][:2]:
                goal, first, last = float(np.mean(e["psnr"][k])), run["budgets"][0], run["budgets"][-1]
                need = iterations_to(s, goal)
                if need is None:
                    shown_need, ratio = f"> {last}", f"> {last / k:.1f}"
                elif float(np.mean(s["psnr"][first])) >= goal:
                    shown_need, ratio = f"≤ {first}", f"≤ {first / k:.1f}"
                else:
                    shown_need, ratio = f"{need:.0f}", f"{need / k:.1f}"
                derived.append([n, init, k, _fmt(goal), shown_need, ratio])
    per_picture, shown = [], [k for k in (100, 1000) if k in run["budgets"]] or run["budgets"][-1:]
    for n in ns:
        for i, pic in enumerate(pics):
            per_picture.append([n, pic, run["kinds"][i], *[_fmt(arr[f"{init}/{n}"][k][i]) for k in shown
                                for init in INITS]])  # fmt: skip
    tune = run["warmups"]
    tune_rows = [
        [init, *[_fmt(tune["scores"][f"{init}/{w}"]) for w in WARMUPS], chosen[init]] for init in INITS
    ]
    notes = (
        "Regenerate: `python -m eval.bench.fit_convergence` (the exploration on the tuning photos: `--tuning`, "
        "fit_convergence_tuning.md).\n\n"
        f"The sealed test set of eval/splits.py ({len(pics)} pictures of mixed content at {run.get('size', 224)}², "
        "eval/images/README.md), used for no choice: the warm-ups below were chosen on the tuning set "
        f"({', '.join(tune['tuning_pictures'])}; N = {tune['n']}, K = {tune['k']}) before any sealed picture "
        "was fitted, and nothing was changed after. Every init runs the default FitConfig optimiser; "
        f"{PREV} (the structured grid with the previous default optimiser: Adam β2 = {BASELINE_OPTIMISER['betas'][1]}, "
        f"step sizes {BASELINE_OPTIMISER['lr_xy']} / {BASELINE_OPTIMISER['lr_chol']} / {BASELINE_OPTIMISER['lr_rgb']}, "
        "a cosine over the whole fit) is a secondary row. "
        "PSNR of the fp32 result; cells are mean (median) over the pictures. Wall time: the whole batch of "
        "pictures from raw image to fitted splats, init included, on a CPU that may be shared: measured "
        "speed-ups compare two measured fits; iteration equivalents interpolate between budgets (derived)."
    )
    if run.get("merged_from"):
        notes += (
            " Merged from runs of one process each (one thread, side by side on the machine): "
            + "; ".join(
                f"N = {', '.join(map(str, part['ns']))} finished {part['finished']} at commit {part['commit']}"
                for part in run["merged_from"]
            )
            + "."
        )
    sections = [
        ("Warm-up of each init, chosen on the tuning set (mean PSNR, dB)", ["init", *[f"warm-up {w}" for w in WARMUPS], "chosen"], tune_rows),
        ("PSNR (dB) after K iterations on the sealed set: mean (median), same optimiser", ["N", "init", *[f"K={k}" for k in ks]], head),
        ("Paired difference per picture (dB): mean, 95% bootstrap interval over pictures, median, pictures ahead", ["N", "pair", "K", "mean", "95% interval", "median", "ahead"], paired),
        ("Speed, measured: the first measured budget reaching structured@K's mean PSNR, and the ratio of measured wall times", ["N", "init", "reference (measured)", "K reaching it", "its PSNR, time (measured)", "time ratio"], measured),
        ("Speed, derived: iterations the structured grid needs for the init's K-iteration PSNR (interpolated in log K)", ["N", "init", "K", "its mean PSNR", "structured needs", "ratio"], derived),
        (f"Per picture: PSNR (dB) at K = {' and K = '.join(map(str, shown))}", ["N", "picture", "kind", *[f"{i}@{k}" for k in shown for i in INITS]], per_picture),
    ]  # fmt: skip
    md = write_results(name, "Fit convergence on the sealed test set: structured vs density vs learned initialisation, same optimiser",
                       sections, {"run": run}, notes, out_dir, machine)  # fmt: skip
    plot(run, out_dir / f"{name}.png")
    return md


def plot(run: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns, ks = run["ns"], [0, *run["budgets"]]
    fig, axes = plt.subplots(1, len(ns), figsize=(5 * len(ns), 4.2), squeeze=False)
    colours = {"structured": "#1f77b4", "density": "#2ca02c", "learned": "#d62728", PREV: "#7f7f7f"}
    x = [max(k, 10) for k in ks]  # K = 0 drawn at 10 on the log axis
    for ax, n in zip(axes[0], ns, strict=True):
        for init in run["inits"]:
            a = np.array([run["fits"][f"{init}/{n}"]["psnr"][k] for k in ks])  # [K, pictures]
            if init in ("structured", "learned"):
                ax.plot(x, a, color=colours[init], alpha=0.12, lw=0.8)
            ax.plot(
                x,
                a.mean(1),
                color=colours[init],
                lw=2.2,
                marker="o",
                ls="--" if init == PREV else "-",
                label=init,
            )
        ax.set_xscale("log")
        ax.set_xticks(x, ["init", *map(str, run["budgets"])])
        ax.set_title(f"N = {n}: sealed set ({len(run['pictures'])} pictures)")
        ax.set_xlabel("iterations K")
        ax.set_ylabel("PSNR (dB): mean, thin lines per picture")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
