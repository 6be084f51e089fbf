"""How fast a fit reaches its quality from each initialisation: PSNR vs iterations and vs wall time.

    python -m eval.bench.fit_convergence [--threads 1] [--ns 400,1600,3136]   # the sealed test set
    python -m eval.bench.fit_convergence --tuning [--quick]                   # the exploration on the tuning photos

The default run is the headline (eval/bench/fit_sealed.py): the structured, density and learned inits
under the same optimiser, each with its warm-up chosen on the tuning set, fitted on the sealed test set
of eval/splits.py; writes eval/results/fit_convergence.{json,md,png}. `--ns` runs some of the Gaussian
counts (one process per core, each timed on its own; `--warmups` reuses one choice of warm-ups), and
`--from-json` merges such runs into one report.

`--tuning` is the exploration the defaults were chosen with, on the four tuning photographs at 224²
(centre crop; never part of the learned init's training data): each init (structured grid, GaussianImage's
random, the structure-tensor grid and the density grid of gs_encoder/fitting/init.py, the learned network of
gs_encoder/fitting/learned_init.py, and the learned init with coarse-to-fine: K iterations on the canvas
shrunk 2× first) and N ∈ {400, 1600, 3136}, one fit per budget K ∈ {50, 100, 300, 1000, 3000}, each a
complete K-iteration fit (random stops at 1000), timed from the raw image to the fitted splats; K = 0 is the
init itself; also the structured init with the benchmarks' baseline optimiser and the cost of the learned
network and the density init against 20 fit iterations. Writes eval/results/fit_convergence_tuning.*.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gs_encoder import FitConfig, fit_images, psnr, render, structured_init
from gs_encoder.fitting.fit import WARMUP_INITS
from gs_encoder.fitting.init import DENSITY_MIX, adaptive_init, density_init, random_init
from gs_encoder.fitting.learned_init import COLOUR_ITERS, learned_init, load_learned_init, weights_id
from gs_encoder.report import machine_info

from .common import BASELINE_OPTIMISER, PHOTOS, RESULTS, photos, timed, write_results

PREV = "structured-prev"  # the structured init fitted with BASELINE_OPTIMISER, FitConfig's earlier default
INITS = ("structured", "random", "adaptive", "density", "learned", "learned+c2f", PREV)
CANDIDATES = ("density", "learned")  # the fast inits the targets are checked for
SHORT = {"random": 1000}  # largest budget run for these inits
C2F = "+c2f"  # suffix: coarse-to-fine, K iterations on the canvas shrunk 2× before the K of the budget


def fit_config(init: str, n: int, k: int) -> FitConfig:
    """The FitConfig of budget K for `init` (a FitConfig init, one with the C2F suffix, or PREV)."""
    if init == PREV:
        return FitConfig(
            num_gaussians=n, iters=k, init="structured", check_every=max(k // 60, 1), **BASELINE_OPTIMISER
        )
    base = init.removesuffix(C2F)
    coarse = k if init.endswith(C2F) else 0
    return FitConfig(num_gaussians=n, iters=k, init=base, coarse_iters=coarse, check_every=max(k // 60, 1))


def base_init(init: str) -> str:
    """The initialisation behind a benchmark entry (PREV and the C2F entries start from a FitConfig init)."""
    return "structured" if init == PREV else init.removesuffix(C2F)


BUDGETS = (50, 100, 300, 1000, 3000)


def init_psnr(images: torch.Tensor, init: str, n: int, clamp: bool = False) -> tuple[list[float], float]:
    """(PSNR of each image's initial splats, seconds to make them); `clamp`: of the render clamped to
    [0, 1], as a fit's result is scored."""
    t = time.perf_counter()
    if init == "structured":
        sets = structured_init(images, n)
    elif init == "random":
        sets = random_init(images, n, torch.Generator().manual_seed(0))
    elif init == "adaptive":
        sets = adaptive_init(images, n)
    elif init == "density":
        sets = density_init(images, n)
    else:
        sets = learned_init(images, n)
    secs = time.perf_counter() - t
    with torch.no_grad():
        image = render(sets, size=images.shape[-1])
        score = psnr(image.clamp(0, 1) if clamp else image, images)
    return score.tolist(), secs


def run_fits(images, inits, budgets, ns) -> dict:
    data = {}
    for n in ns:
        for init in inits:
            p0, s0 = init_psnr(images, base_init(init), n)
            p0 = float(np.mean(p0))
            entry = {"psnr": {0: p0}, "seconds": {0: s0}, "per_image": {}}
            print(f"N={n:5d} {init:10s} K=   0 {p0:6.2f} dB  {s0:7.2f} s", flush=True)
            for k in [b for b in budgets if b <= SHORT.get(init, b)]:
                cfg = fit_config(init, n, k)
                t = time.perf_counter()
                res = fit_images(images, cfg)
                secs = time.perf_counter() - t
                entry["psnr"][k] = float(np.mean([r.psnr for r in res]))
                entry["seconds"][k] = secs
                entry["per_image"][k] = [r.psnr for r in res]
                if k == max(b for b in budgets if b <= SHORT.get(init, b)):
                    entry["history"] = np.mean([[p for _, p in r.history] for r in res], axis=0).tolist()
                    entry["history_iters"] = [i for i, _ in res[0].history]
                print(f"N={n:5d} {init:10s} K={k:4d} {entry['psnr'][k]:6.2f} dB  {secs:7.2f} s", flush=True)
            data[f"{init}/{n}"] = entry
    return data


def time_to(entry: dict, target: float) -> tuple[int | None, float | None, float | None]:
    """(first budget K reaching `target`, its measured seconds, seconds interpolated in PSNR between the
    budgets around the crossing) or Nones when no budget reaches it."""
    ks = sorted(entry["psnr"])
    for i, k in enumerate(ks):
        if entry["psnr"][k] >= target - 1e-9:
            if i == 0:
                return k, entry["seconds"][k], entry["seconds"][k]
            k0 = ks[i - 1]
            p0, p1 = entry["psnr"][k0], entry["psnr"][k]
            t0, t1 = entry["seconds"][k0], entry["seconds"][k]
            frac = (target - p0) / max(p1 - p0, 1e-9)
            return k, t1, t0 + frac * (t1 - t0)
    return None, None, None


def network_cost(image: torch.Tensor, ns, repeat: int = 5) -> dict:
    """Seconds for one image: the network alone, the learned init with its colour solve, the density init,
    20 fit iterations and 20 coarse-stage iterations (the canvas shrunk 2×) (structured init, the same N;
    marginal cost of 20 iterations = time(25) − time(5))."""
    net = load_learned_init()
    small = torch.nn.functional.interpolate(image, size=(image.shape[-1] // 2,) * 2, mode="area")
    out = {}

    def best(fn):
        return timed(fn, repeat, best=True)

    def fit20(img, n):
        def run(k):
            cfg = FitConfig(num_gaussians=n, iters=k, init="structured", check_every=10**6)
            return best(lambda: fit_images(img, cfg))

        return run(25) - run(5)

    for n in ns:
        with torch.no_grad():
            t_net = best(lambda n=n: net.splats(image, n))
        t_init = best(lambda n=n: learned_init(image, n))
        out[n] = {
            "network_s": t_net,
            "learned_init_s": t_init,
            "density_init_s": best(lambda n=n: density_init(image, n)),
            "fit20_s": fit20(image, n),
            "coarse20_s": fit20(small, n),
        }
        print(
            f"N={n}: network {1000 * t_net:.1f} ms, learned init {1000 * t_init:.1f} ms, density init "
            f"{1000 * out[n]['density_init_s']:.1f} ms, 20 fit iterations "
            f"{1000 * out[n]['fit20_s']:.1f} ms, 20 coarse iterations {1000 * out[n]['coarse20_s']:.1f} ms",
            flush=True,
        )
    return out


def iteration_cost(init: str, cost: dict) -> float:
    """Cost of one budget iteration in full-canvas fit iterations: 1, or with coarse-to-fine 1 plus one
    coarse-stage iteration."""
    return 1.0 + (cost["coarse20_s"] / cost["fit20_s"] if init.endswith(C2F) else 0.0)


def placement_figure(image: torch.Tensor, n: int, path: Path) -> None:
    """Where the structured, density and learned inits put N Gaussians on one photo [3, S, S]: centres over
    the photo (top) and the init's render with its PSNR (bottom); from the current code and weights."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed; placement figure skipped")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = image.shape[-1]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8.4))
    for j, init in enumerate(("structured", "density", "learned")):
        splats = {"structured": structured_init, "density": density_init, "learned": learned_init}[init](
            image[None], n
        )[0]
        with torch.no_grad():
            out = render(splats, size=size).clamp(0, 1)
        xy = splats[:, 0:2].numpy() * size
        top, bottom = axes[0][j], axes[1][j]
        top.imshow(image.permute(1, 2, 0).numpy())
        top.scatter(xy[:, 0] - 0.5, xy[:, 1] - 0.5, s=1.5, c="red", linewidths=0)
        top.set_title(f"{init}: where the {n} centres start")
        bottom.imshow(out.permute(1, 2, 0).numpy())
        bottom.set_title(f"{init} before fitting: {float(psnr(out, image)):.2f} dB")
        for a in (top, bottom):
            a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot(data, inits, ns, path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed; plot skipped")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(ns), figsize=(5 * len(ns), 8), squeeze=False)
    for j, n in enumerate(ns):
        for init in inits:
            e = data[f"{init}/{n}"]
            ks = sorted(e["psnr"])
            axes[0][j].plot([max(k, 1) for k in ks], [e["psnr"][k] for k in ks], "o-", label=init)
            axes[1][j].plot([e["seconds"][k] for k in ks], [e["psnr"][k] for k in ks], "o-", label=init)
        axes[0][j].set_xscale("log")
        axes[0][j].set_xlabel("fit iterations K (0 plotted at 1)")
        axes[1][j].set_xscale("log")
        axes[1][j].set_xlabel("wall time from raw image, 4 images (s)")
        for a in (axes[0][j], axes[1][j]):
            a.set_ylabel("mean PSNR (dB)")
            a.set_title(f"N = {n}, 224²")
            a.grid(alpha=0.3)
            a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def iters_to(entry: dict, target: float) -> float | None:
    """Iterations needed to reach `target`: the budgets around the crossing, interpolated in log K
    (linearly from K = 0); None when no budget reaches it."""
    ks = sorted(entry["psnr"])
    for i, k in enumerate(ks):
        if entry["psnr"][k] >= target - 1e-9:
            if i == 0:
                return float(k)
            k0, p0, p1 = ks[i - 1], entry["psnr"][ks[i - 1]], entry["psnr"][k]
            frac = (target - p0) / max(p1 - p0, 1e-9)
            return k0 + frac * (k - k0) if k0 == 0 else k0 * (k / k0) ** frac
    return None


def _int_keys(d: dict) -> dict:
    return {int(k): v for k, v in d.items()}


def load_run(path) -> dict:
    """A fit_convergence.json back into the dicts `report` takes (JSON turned the integer keys to str)."""
    import json

    run = json.loads(open(path).read())
    for entry in run["fits"].values():
        for key in ("psnr", "seconds", "per_image"):
            entry[key] = _int_keys(entry[key])
    run["network_cost"] = _int_keys(run["network_cost"])
    for derived in ("targets", "preset", "benchmark"):
        run.pop(derived, None)  # recomputed by report / write_results
    return run


def merge_runs(runs: list[dict]) -> dict:
    """One run from runs of the same settings over different Gaussian counts (`--ns`); each count's fits
    and costs keep the timings of the process that measured them. The first run's machine is reported."""
    merged = dict(runs[0])
    for other in runs[1:]:
        for key in ("size", "photos", "budgets", "inits", "optimiser"):
            if other.get(key) != merged.get(key):
                raise SystemExit(f"fit_convergence: cannot merge runs of different {key}")
        merged["fits"] = {**merged["fits"], **other["fits"]}
        merged["network_cost"] = {**merged["network_cost"], **other["network_cost"]}
        merged["ns"] = sorted({*merged["ns"], *other["ns"]})
        merged["measured"] = max(merged["measured"], other["measured"])
    return merged


def optimiser_settings(cfg: FitConfig) -> dict:
    """The Adam settings of a FitConfig that the report describes."""
    return {
        "lr": [cfg.lr_xy, cfg.lr_chol, cfg.lr_rgb],
        "lr_final": cfg.lr_final,
        "lr_decay": cfg.lr_decay,
        "betas": list(cfg.betas),
        "learned_warmup": replace(cfg, init="learned").warmup_iters,
        "warmup_inits": list(WARMUP_INITS),
    }


def learned_init_settings() -> dict:
    """Which learned-init weights a run used: their identity and network passes."""
    return {"weights_id": weights_id(), "passes": load_learned_init().passes}


def _adam(opt: dict) -> str:
    decay = "the whole fit" if opt["lr_decay"] >= 1 else f"the last {opt['lr_decay']:.0%} of the iterations"
    warm = opt.get("learned_warmup", 0)
    lr = opt.get("lr") or [opt.get(k) for k in ("lr_xy", "lr_chol", "lr_rgb")]
    sizes = f" ({lr[0]:g} / {lr[1]:g} px centres / Cholesky factors, {lr[2]:g} colours)" if lr[0] else ""
    return (
        f"Adam, β = ({opt['betas'][0]:g}, {opt['betas'][1]:g}), step sizes{sizes} decayed by a cosine over {decay} "
        f"to {opt['lr_final']:.0%} of their start"
        + (
            f", ramped up linearly over the first {warm} iterations after the "
            f"{' and '.join(opt.get('warmup_inits', ['learned']))} init(s)"
            if warm
            else ""
        )
    )


def _speed(run: dict, base: str, ref_k: int) -> tuple[dict, dict, list]:
    """Per reference (the baseline, structured): rows of how fast each init reaches its ref_k-iteration PSNR
    (measured and interpolated wall time, iteration equivalents); the equivalents by (reference, init); and
    the coarse-to-fine rows (its speed-up with and without)."""
    data, cost, names, inits = run["fits"], run["network_cost"], run["photos"], run["inits"]
    speed = {ref: [] for ref in dict.fromkeys((base, "structured"))}
    equiv, c2f_rows = {}, []
    for n in run["ns"]:
        per_it = cost[n]["fit20_s"] / 20  # one image, one iteration
        # each init's own cost in fit iterations (a coarse-to-fine entry has its base init's: the same network)
        init_its = {init: (data[f"{init}/{n}"]["seconds"][0] / len(names)) / per_it for init in inits}
        for ref, rows in speed.items():
            r = data[f"{ref}/{n}"]
            ref_p, ref_t = r["psnr"][ref_k], r["seconds"][ref_k]
            for init in inits:
                e = data[f"{init}/{n}"]
                k, t_meas, t_interp = time_to(e, ref_p)
                k_interp = iters_to(e, ref_p)
                own = init_its[base_init(init) if init.endswith(C2F) else init]
                eq = None if k_interp is None else ref_k / (k_interp * iteration_cost(init, cost[n]) + own)
                equiv[n, ref, init] = eq
                rows.append(
                    [
                        n,
                        init,
                        ref_p,
                        k,
                        None if k_interp is None else round(k_interp),
                        None if t_meas is None else ref_t / t_meas,
                        None if t_interp is None else ref_t / t_interp,
                        eq,
                    ]
                )
        for init in inits:
            if init.endswith(C2F):
                plain = init.removesuffix(C2F)
                cost_it = iteration_cost(init, cost[n])
                c2f_rows.append(
                    [n, plain, cost_it, equiv[n, "structured", init], equiv[n, "structured", plain]]
                )
    for row in c2f_rows:  # the coarse-to-fine decision: default only where it reaches the target sooner
        with_c2f, without = row[3], row[4]
        row.append("yes" if with_c2f is not None and (without is None or with_c2f > without) else "no")
    return speed, equiv, c2f_rows


def _targets(run: dict, base: str, candidates: list[str], equiv: dict, ref_k: int) -> dict:
    """N → {target: met} for each candidate init against the baseline and the structured grid."""
    data, cost, budgets = run["fits"], run["network_cost"], run["budgets"]
    top_k = budgets[-1]
    near = {k: min(budgets, key=lambda b, k=k: abs(b - k)) for k in (100, 300)}
    targets = {}
    for n in run["ns"]:
        s, b = data[f"structured/{n}"], data[f"{base}/{n}"]
        targets[n] = {}
        for cand in candidates:
            c = data[f"{cand}/{n}"]
            targets[n].update(
                {
                    f"{cand}@{near[100]} ≥ {base}@{ref_k}": c["psnr"][near[100]] >= b["psnr"][ref_k],
                    f"{cand}@{near[300]} ≥ {base}@{top_k}": c["psnr"][near[300]] >= b["psnr"][top_k],
                    f"{cand}@0 ≥ structured@0 + 3 dB": c["psnr"][0] >= s["psnr"][0] + 3.0,
                    f"{cand}@{top_k} ≥ structured@{top_k} − 0.1 dB": c["psnr"][top_k]
                    >= s["psnr"][top_k] - 0.1,
                    f"{cand}: time to {base}@{ref_k} ≥ 5× shorter": (equiv[n, base, cand] or 0.0) >= 5.0,
                    f"{cand} init costs ≤ 20 fit iterations": cost[n][f"{cand}_init_s"] <= cost[n]["fit20_s"],
                }
            )
    return targets


def _cost_rows(cost: dict) -> list[list]:
    return [
        [
            n,
            1000 * c["network_s"],
            1000 * c["learned_init_s"],
            1000 * c["density_init_s"] if "density_init_s" in c else None,
            1000 * c["fit20_s"],
            c["learned_init_s"] / c["fit20_s"],
            1000 * c["coarse20_s"] if "coarse20_s" in c else None,
        ]
        for n, c in cost.items()
    ]


def _preset(run: dict, base: str, candidates: list[str]) -> tuple[int, dict, list]:
    """The `gsv fit` default preset (N = 3136, the top budget) at the baseline's PSNR: (N, record, rows)."""
    data, cost, names, ns = run["fits"], run["network_cost"], run["photos"], run["ns"]
    top_k = run["budgets"][-1]
    preset_n = 3136 if 3136 in ns else ns[-1]
    b = data[f"{base}/{preset_n}"]
    per_it = cost[preset_n]["fit20_s"] / 20
    preset = {
        "baseline": base,
        "baseline_images_per_s_measured": len(names) / b["seconds"][top_k],
        "baseline_psnr": b["psnr"][top_k],
        "inits": {},
    }
    rows = []
    for cand in candidates or ["learned"]:
        c = data[f"{cand}/{preset_n}"]
        k_eq = iters_to(c, b["psnr"][top_k])
        init_its = (c["seconds"][0] / len(names)) / per_it
        speedup = None if k_eq is None else top_k / (k_eq + init_its)
        rate = None if speedup is None else preset["baseline_images_per_s_measured"] * speedup
        preset["inits"][cand] = {
            "iterations_at_equal_psnr": k_eq,
            "speedup_iteration_equivalent": speedup,
            "images_per_s_at_equal_psnr": rate,
        }
        rows.append(
            [
                cand,
                60 * preset["baseline_images_per_s_measured"],
                preset["baseline_psnr"],
                None if k_eq is None else round(k_eq),
                speedup,
                None if rate is None else 60 * rate,
            ]
        )
    return preset_n, preset, rows


def _notes(run: dict, name: str, candidates: list[str]) -> str:
    size, inits, refine = run["size"], run["inits"], run["learned_init"]["passes"] - 1
    return (
        "Regenerate: `python -m eval.bench.fit_convergence --tuning`. The exploration the fitting defaults "
        "were chosen with: these photos are the tuning set of eval/splits.py, so the figures here are not "
        "test results (the sealed set's are in fit_convergence.md). "
        f"Photos: scikit-image {', '.join(run['photos'])}, centre-cropped to {size}² (never in the "
        f"learned init's training data). One fit per budget K with the default FitConfig optimiser "
        f"({_adam(run['optimiser'])}), "
        f"as `gsv fit --iters K` runs it; {PREV}: the structured init fitted with FitConfig's earlier default "
        f"optimiser ({_adam(BASELINE_OPTIMISER)}), the baseline of the targets. PSNR of "
        "the fp32 result, mean over the photos; K = 0 is "
        "the init itself (random stops at K = 1000). Wall time: the whole batch of photos from raw image to "
        f"fitted splats (init and network included), {run['threads']} torch thread(s), compiled CPU renderer "
        "when built, on a CPU shared with other jobs: equal-K runs of different inits differ by up to ~30% "
        "in time, so the speed-ups are also given in fit-iteration equivalents (iterations to the target, "
        "interpolated in log K between budgets, plus the init's measured cost in fit iterations), which the "
        "sharing does not distort. Learned init: the shipped weights"
        + f" ({run['learned_init']['weights_id']})"
        + f", network + {refine} residual refinement pass{'es' if refine > 1 else ''} "
        f"+ {COLOUR_ITERS} conjugate-gradient steps of least-squares colours. Adaptive: structured grid shaped "
        "by the structure tensor + the same colour solve. Density: the grid warped so that its cells shrink "
        f"where the luminance gradient is large (mix {DENSITY_MIX:g}) + the same colour solve. Targets are "
        f"checked for {' and '.join(candidates) or 'learned'}. "
        f"Where the structured, density and learned inits put their Gaussians: {name}_placement.png "
        "(`--placement` redraws it). "
        f"{' / '.join(i for i in inits if i.endswith(C2F))}: the init, then K iterations on the "
        f"canvas area-averaged to {size // 2}² (own schedule), then the K iterations of the budget on the full canvas "
        "(FitConfig.coarse_iters = K); its iteration equivalents count a coarse iteration at its measured cost. "
        f"The fits of one N ran in one process (`--ns` runs, one per core, each timed on its own), finished "
        f"{run['measured']}."
    )


def report(run: dict, name: str, out_dir: Path = RESULTS) -> Path:
    """Tables, targets and plot of a measured run {fits, network_cost, size, photos, budgets, ns, threads}."""
    data, size, ns, budgets, inits = run["fits"], run["size"], run["ns"], run["budgets"], run["inits"]
    ks = [0, *budgets]
    curve_rows = [[n, init, *[data[f"{init}/{n}"]["psnr"].get(k) for k in ks]] for n in ns for init in inits]
    time_rows = [
        [n, init, *[data[f"{init}/{n}"]["seconds"].get(k) for k in ks]] for n in ns for init in inits
    ]
    ref_k = 1000 if 1000 in budgets else budgets[-1]
    top_k = budgets[-1]
    # the baseline ("today's default"): the structured init with the previous Adam settings, when run
    base = PREV if PREV in inits else "structured"
    candidates = [c for c in CANDIDATES if c in inits]
    speed, equiv, c2f_rows = _speed(run, base, ref_k)
    targets = _targets(run, base, candidates, equiv, ref_k)
    target_rows = [[n, t, "met" if ok else "missed"] for n in ns for t, ok in targets[n].items()]
    preset_n, preset, preset_rows = _preset(run, base, candidates)
    speed_cols = [
        "N",
        "init",
        "target dB",
        "first K reaching it",
        "K needed (interp.)",
        "speed-up, wall (measured K)",
        "speed-up, wall (interp.)",
        "speed-up, iteration equivalents",
    ]
    sections = [
        ("Mean PSNR (dB) after K iterations", ["N", "init", *[f"K={k}" for k in ks]], curve_rows),
        ("Wall time (s, 4 images) for K iterations", ["N", "init", *[f"K={k}" for k in ks]], time_rows),
        *[(f"Time to {ref}'s {ref_k}-iteration PSNR", speed_cols, rows) for ref, rows in speed.items()],
        (
            "Cost of the learned and density inits vs 20 fit iterations (one image, ms)",
            [
                "N",
                "network",
                "learned init (network + colour solve)",
                "density init",
                "20 fit iterations",
                "learned / 20 iterations",
                f"20 coarse iterations ({size // 2}²)",
            ],
            _cost_rows(run["network_cost"]),
        ),
        (
            f"Coarse-to-fine: K iterations on the 2×-shrunk canvas before the K of the budget (speed-up to structured@{ref_k} in iteration equivalents)",
            [
                "N",
                "init",
                "cost of one budget iteration (fit iterations)",
                "with coarse-to-fine",
                "without",
                "faster with it",
            ],
            c2f_rows,
        ),
        ("Targets", ["N", "target", "result"], target_rows),
        (
            f"`gsv fit` default preset (N = {preset_n}, {top_k} iterations) at equal PSNR",
            ["init", f"{base} images/min", f"{base} PSNR", "iterations needed", "speed-up", "images/min"],
            preset_rows,
        ),
    ]
    c2f = {
        f"{init}/{n}": {"iteration_cost": c, "speedup": w, "speedup_without": wo, "faster": f == "yes"}
        for n, init, c, w, wo, f in c2f_rows
    }
    md = write_results(
        name,
        "Fit convergence: structured vs random vs adaptive vs density vs learned initialisation "
        "(± coarse-to-fine), and the previous default",
        sections,
        {
            **{k: v for k, v in run.items() if k != "machine"},
            "targets": {str(n): t for n, t in targets.items()},
            "preset": preset,
            "coarse_to_fine": c2f,
        },
        _notes(run, name, candidates),
        out_dir=out_dir,
        machine=run.get("machine"),  # set when the tables are rebuilt from a measured run's JSON
    )
    plot(data, inits, ns, out_dir / f"{name}.png")
    return md


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: stable timings)")
    ap.add_argument(
        "--tuning", action="store_true", help="the exploration on the tuning photos (not the sealed set)"
    )
    ap.add_argument("--quick", action="store_true", help="tiny run to check the script (not for results)")
    ap.add_argument(
        "--ns", type=lambda s: [int(n) for n in s.split(",")], help="Gaussian counts (default 400,1600,3136)"
    )
    ap.add_argument(
        "--warmups", help="sealed run: the warm-up choice of an earlier run's JSON (its tuning-set scores)"
    )
    ap.add_argument(
        "--out", help="results name (default fit_convergence, with --tuning fit_convergence_tuning)"
    )
    ap.add_argument(
        "--placement",
        action="store_true",
        help="with --tuning: only draw <name>_placement.png (where each init puts its Gaussians) with the current code",
    )
    ap.add_argument(
        "--from-json",
        nargs="+",
        help="rebuild the tables and plot from a run's JSON, or merge runs of other --ns (no fitting)",
    )
    args = ap.parse_args(argv)
    if not args.tuning:
        return _sealed(args)
    name = args.out or ("fit_convergence_tuning_quick" if args.quick else "fit_convergence_tuning")
    if args.placement:
        path = RESULTS / f"{name}_placement.png"
        placement_figure(photos(224, PHOTOS[:1])[0], 1600, path)
        print(f"wrote {path}")
        return
    if args.from_json:
        md = report(merge_runs([load_run(p) for p in args.from_json]), name)  # header: the runs' machine
        print(md.read_text())
        return
    torch.set_num_threads(args.threads)
    size, names, ns, budgets = 224, PHOTOS, [400, 1600, 3136], list(BUDGETS)
    if args.quick:
        size, names, ns, budgets = 48, PHOTOS[:2], [64, 144], [10, 30]
    ns = args.ns or ns
    images = photos(size, names)
    cost = network_cost(images[:1], ns)
    data = run_fits(images, INITS, budgets, ns)
    run = {
        "size": size,
        "photos": list(names),
        "ns": ns,
        "budgets": budgets,
        "inits": list(INITS),
        "threads": args.threads,
        "optimiser": optimiser_settings(FitConfig(init="structured")),
        "measured": machine_info()["date"],
        "fits": data,
        "network_cost": cost,
        "learned_init": learned_init_settings(),
    }
    md = report(run, name)
    placement_figure(images[0], 1600 if size >= 64 else ns[-1], RESULTS / f"{name}_placement.png")
    print(md.read_text())


def _sealed_record(path: str) -> dict:
    """The JSON a sealed run wrote (its "run" holds "warmups" and "fits"); SystemExit naming the file otherwise."""
    import json

    try:
        record = json.loads(Path(path).read_text())
        if not {"warmups", "fits", "ns"} <= set(record["run"]):
            raise KeyError("warmups, fits, ns")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(
            f"{path}: not the JSON of a sealed fit_convergence run ({type(e).__name__}: {e}); give an "
            "eval/results/fit_convergence*.json written by `python -m eval.bench.fit_convergence`"
        ) from None
    return record


def _sealed(args) -> None:
    from . import fit_sealed

    name = args.out or ("fit_convergence_quick" if args.quick else "fit_convergence")
    if args.from_json:
        runs = [_sealed_record(p) for p in args.from_json]
        if any(r["run"]["warmups"]["chosen"] != runs[0]["run"]["warmups"]["chosen"] for r in runs):
            raise SystemExit("the runs chose different warm-ups on the tuning set; they cannot be merged")
        merged = {**runs[0]["run"], "fits": {}, "ns": [], "merged_from": []}
        for r in runs:
            merged["fits"].update(r["run"]["fits"])
            merged["ns"] += [n for n in r["run"]["ns"] if n not in merged["ns"]]
            # a merged run's record keeps its parts; a part is a run of its own
            merged["merged_from"] += r["run"].get("merged_from") or [
                {"ns": r["run"]["ns"], "finished": r["machine"]["date"], "commit": r["machine"]["git"]}
            ]
        merged["ns"].sort()
        merged["fits"] = {k: {f: _int_keys(v) for f, v in e.items()} for k, e in merged["fits"].items()}
        print(fit_sealed.report(merged, name, machine=runs[0]["machine"]).read_text())
        return
    torch.set_num_threads(args.threads)
    if args.quick:  # a check of the script: 48² canvases, tiny budgets (not for results)
        warmups = fit_sealed.choose_warmups(n=64, k=5, size=48)
        run = fit_sealed.run(args.ns or [64], [5, 10], warmups, size=48)
        print(fit_sealed.report(run, name).read_text())
        return
    if args.warmups:
        warmups = _sealed_record(args.warmups)["run"]["warmups"]
    else:
        warmups = fit_sealed.choose_warmups()
    run = fit_sealed.run(args.ns or fit_sealed.NS, fit_sealed.BUDGETS, warmups)
    print(fit_sealed.report(run, name).read_text())


if __name__ == "__main__":
    main()
