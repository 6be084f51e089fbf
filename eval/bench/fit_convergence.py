"""How fast a fit reaches its quality from each initialisation: PSNR vs iterations and vs wall time.

    python -m eval.bench.fit_convergence [--threads 1] [--quick]

For each init (structured grid, GaussianImage's random, the content-adaptive grid of
gs_encoder/fitting/init.py, the learned network of gs_encoder/fitting/learned_init.py) and N ∈ {400, 1600, 3136} on the four benchmark photos at 224²
(centre crop; never part of the learned init's training data), one fit per iteration budget
K ∈ {50, 100, 300, 1000, 3000}, each with the full learning-rate schedule of a K-iteration fit (what
`gsv fit --iters K` runs; random stops at 1000 to save time), timed from the raw image to the fitted splats (init, network included);
K = 0 is the init itself. Also: the cost of the learned network against 20 fit iterations.

Writes eval/results/fit_convergence.{json,md,png}.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from gs_encoder import FitConfig, fit_images, psnr, render, structured_init
from gs_encoder.fitting.init import adaptive_init, random_init
from gs_encoder.fitting.learned_init import COLOUR_ITERS, learned_init, load_learned_init

from .common import PHOTOS, RESULTS, photos, write_results

INITS = ("structured", "random", "adaptive", "learned")
SHORT = {"random": 1000}  # largest budget run for these inits
BUDGETS = (50, 100, 300, 1000, 3000)


def init_psnr(images: torch.Tensor, init: str, n: int) -> tuple[float, float]:
    """(mean PSNR of the initial splats, seconds to make them)."""
    t = time.perf_counter()
    if init == "structured":
        sets = structured_init(images, n)
    elif init == "random":
        sets = random_init(images, n, torch.Generator().manual_seed(0))
    elif init == "adaptive":
        sets = adaptive_init(images, n)
    else:
        sets = learned_init(images, n)
    secs = time.perf_counter() - t
    with torch.no_grad():
        score = psnr(render(sets, size=images.shape[-1]), images)
    return float(score.mean()), secs


def run_fits(images, inits, budgets, ns) -> dict:
    data = {}
    for n in ns:
        for init in inits:
            p0, s0 = init_psnr(images, init, n)
            entry = {"psnr": {0: p0}, "seconds": {0: s0}, "per_image": {}}
            print(f"N={n:5d} {init:10s} K=   0 {p0:6.2f} dB  {s0:7.2f} s", flush=True)
            for k in [b for b in budgets if b <= SHORT.get(init, b)]:
                cfg = FitConfig(num_gaussians=n, iters=k, init=init, check_every=max(k // 60, 1))
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
    """Seconds for one image: the network alone, the learned init with its colour solve, and 20 fit
    iterations (structured init, the same N; marginal cost of 20 iterations = time(25) − time(5))."""
    net = load_learned_init()
    out = {}

    def best(fn):
        fn()
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    for n in ns:
        with torch.no_grad():
            t_net = best(lambda n=n: net.splats(image, n))
        t_init = best(lambda n=n: learned_init(image, n))
        t5 = best(lambda n=n: fit_images(image, FitConfig(num_gaussians=n, iters=5, check_every=10**6)))
        t25 = best(lambda n=n: fit_images(image, FitConfig(num_gaussians=n, iters=25, check_every=10**6)))
        out[n] = {"network_s": t_net, "learned_init_s": t_init, "fit20_s": t25 - t5}
        print(
            f"N={n}: network {1000 * t_net:.1f} ms, learned init {1000 * t_init:.1f} ms, 20 fit iterations "
            f"{1000 * (t25 - t5):.1f} ms",
            flush=True,
        )
    return out


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: stable timings)")
    ap.add_argument("--quick", action="store_true", help="tiny run to check the script (not for results)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    size, names, ns, budgets = 224, PHOTOS, [400, 1600, 3136], list(BUDGETS)
    if args.quick:
        size, names, ns, budgets = 48, PHOTOS[:2], [64, 144], [10, 30]
    images = photos(size, names)
    cost = network_cost(images[:1], ns)
    data = run_fits(images, INITS, budgets, ns)

    ks = [0, *budgets]
    curve_rows = [[n, init, *[data[f"{init}/{n}"]["psnr"].get(k) for k in ks]] for n in ns for init in INITS]
    time_rows = [
        [n, init, *[data[f"{init}/{n}"]["seconds"].get(k) for k in ks]] for n in ns for init in INITS
    ]
    ref_k = 1000 if 1000 in budgets else budgets[-1]
    top_k = budgets[-1]
    speed_rows, targets = [], {}
    for n in ns:
        s = data[f"structured/{n}"]
        ref_p, ref_t = s["psnr"][ref_k], s["seconds"][ref_k]
        for init in INITS:
            k, t_meas, t_interp = time_to(data[f"{init}/{n}"], ref_p)
            speed_rows.append(
                [
                    n,
                    init,
                    ref_p,
                    k,
                    t_meas,
                    None if t_meas is None else ref_t / t_meas,
                    None if t_interp is None else ref_t / t_interp,
                ]
            )
        le = data[f"learned/{n}"]
        targets[n] = {
            f"learned@100 ≥ structured@{ref_k}": le["psnr"][min(budgets, key=lambda b: abs(b - 100))]
            >= ref_p,
            f"learned@300 ≥ structured@{top_k}": le["psnr"][min(budgets, key=lambda b: abs(b - 300))]
            >= s["psnr"][top_k],
            "learned@0 ≥ structured@0 + 3 dB": le["psnr"][0] >= s["psnr"][0] + 3.0,
            f"learned@{top_k} ≥ structured@{top_k} − 0.1 dB": le["psnr"][top_k] >= s["psnr"][top_k] - 0.1,
        }
    target_rows = [[n, name, "met" if ok else "missed"] for n in ns for name, ok in targets[n].items()]
    cost_rows = [
        [
            n,
            1000 * c["network_s"],
            1000 * c["learned_init_s"],
            1000 * c["fit20_s"],
            c["learned_init_s"] / c["fit20_s"],
        ]
        for n, c in cost.items()
    ]
    preset_n = 3136 if 3136 in ns else ns[-1]
    s, le = data[f"structured/{preset_n}"], data[f"learned/{preset_n}"]
    k_eq, t_eq, _ = time_to(le, s["psnr"][top_k])
    preset = {
        "structured_images_per_s": len(names) / s["seconds"][top_k],
        "structured_psnr": s["psnr"][top_k],
        "learned_budget_at_equal_psnr": k_eq,
        "learned_images_per_s_at_equal_psnr": None if t_eq is None else len(names) / t_eq,
    }
    notes = (
        f"Photos: scikit-image {', '.join(names)}, centre-cropped to {size}² (benchmark photos, never in the "
        "learned init's training data). One fit per budget K with the full cosine schedule of a K-iteration "
        "fit and default FitConfig learning rates; PSNR of the fp32 result, mean over the photos; K = 0 is "
        "the init itself. Wall time: the whole batch of photos from raw image to fitted splats (init and "
        f"network included), {args.threads} torch thread(s), compiled CPU renderer when built. Learned init: "
        f"the shipped weights, {COLOUR_ITERS} conjugate-gradient steps of least-squares colours after the "
        "network. Time to quality: the first budget whose PSNR reaches structured's at "
        f"{ref_k} iterations; 'interpolated' assumes PSNR linear in time between the two budgets around it."
    )
    sections = [
        ("Mean PSNR (dB) after K iterations", ["N", "init", *[f"K={k}" for k in ks]], curve_rows),
        ("Wall time (s, 4 images) for K iterations", ["N", "init", *[f"K={k}" for k in ks]], time_rows),
        (
            f"Time to structured's {ref_k}-iteration PSNR",
            [
                "N",
                "init",
                "target dB",
                "first K reaching it",
                "seconds",
                "speed-up (measured K)",
                "speed-up (interpolated)",
            ],
            speed_rows,
        ),
        (
            "Cost of the learned init vs 20 fit iterations (one image, ms)",
            ["N", "network", "network + colour solve", "20 fit iterations", "ratio"],
            cost_rows,
        ),
        ("Targets", ["N", "target", "result"], target_rows),
        (
            f"`gsv fit` default preset (N = {preset_n}, {top_k} iterations) at equal PSNR",
            ["structured images/s", "structured PSNR", "learned: first K reaching it", "learned images/s"],
            [
                [
                    preset["structured_images_per_s"],
                    preset["structured_psnr"],
                    preset["learned_budget_at_equal_psnr"],
                    preset["learned_images_per_s_at_equal_psnr"],
                ]
            ],
        ),
    ]
    name = "fit_convergence_quick" if args.quick else "fit_convergence"
    md = write_results(
        name,
        "Fit convergence: structured vs random vs learned initialisation",
        sections,
        {
            "size": size,
            "photos": list(names),
            "budgets": budgets,
            "fits": data,
            "network_cost": cost,
            "targets": {str(n): t for n, t in targets.items()},
            "preset": preset,
            "threads": args.threads,
        },
        notes,
    )
    plot(data, INITS, ns, RESULTS / f"{name}.png")
    print(md.read_text())


if __name__ == "__main__":
    main()
