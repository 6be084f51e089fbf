"""Fitting quality: the paper's init ablation and pruning table on scikit-image photographs at 224².

    python -m eval.bench.fit_quality [--iters 1000] [--quick]

Writes eval/results/fit_quality.{json,md} and fit_quality.png (PSNR vs N, and PSNR vs iteration).
Iterations: 1000 on CPU by default (the issue's CPU budget), 3000 where a GPU runs it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from gs_encoder import FitConfig, fit_images, prune, psnr, render

from .common import PHOTOS, RESULTS, photos, write_results

PAPER = {  # GaussianVision's figures, for comparison (224² DataComp images)
    ("structured", 4900): 35.25,
    ("random", 4900): 28.24,
    ("structured", 400): 22.04,
    ("random", 400): 17.77,
}
TARGETS = {400: 25.0, 1600: 31.0, 3136: 35.0, 4900: 38.0}  # the fitting targets: mean PSNR at 1000 iterations


def _mean(xs):
    return float(np.mean(xs))


def run_init_ablation(images, budgets, iters, device):
    rows, data = [], {}
    for n in budgets:
        for init in ("structured", "random"):
            t = time.perf_counter()
            res = fit_images(
                images.to(device), FitConfig(num_gaussians=n, iters=iters, init=init, check_every=100)
            )
            secs = time.perf_counter() - t
            per = [r.psnr for r in res]
            data[f"{init}/{n}"] = {
                "psnr": per,
                "mean": _mean(per),
                "history": [r.history for r in res],
                "seconds": secs,
            }
            print(
                f"N={n:5d} {init:10s} mean {_mean(per):.2f} dB  {[round(p, 2) for p in per]}  ({secs:.0f} s)",
                flush=True,
            )
    for n in budgets:
        s, r = data[f"structured/{n}"]["mean"], data[f"random/{n}"]["mean"]
        rows.append([n, s, r, s - r, TARGETS.get(n), PAPER.get(("structured", n)), PAPER.get(("random", n))])
    return rows, data


def run_pruning(images, budgets, lambdas, taus, iters, finetune, device):
    rows, data = [], {}
    images = images.to(device)
    reference = {}  # PSNR of the plain fit (λ = 0, unpruned): the cost of pruning is measured from it
    for n in budgets:
        for lam in lambdas:
            base = fit_images(images, FitConfig(num_gaussians=n, iters=iters, lambda_l1=lam, check_every=100))
            unpruned = _mean([r.psnr for r in base])
            reference.setdefault(n, unpruned)
            for tau in taus:
                kept = [prune(r.splats, tau) for r in base]
                share = 1 - _mean([k.shape[0] / n for k in kept])
                with torch.no_grad():
                    after = _mean(
                        [
                            float(psnr(render(k.to(device), size=images.shape[-1]), img))
                            for k, img in zip(kept, images, strict=True)
                        ]
                    )
                tuned = fit_images(
                    images,
                    FitConfig(num_gaussians=n, iters=finetune, lambda_l1=0.0, check_every=100),
                    initial=kept,
                )
                ft = _mean([r.psnr for r in tuned])
                rows.append(
                    [n, str(lam), str(tau), f"{100 * share:.1f}%", unpruned, after, ft, reference[n] - ft]
                )
                data[f"{n}/{lam}/{tau}"] = {
                    "pruned_share": share,
                    "psnr_unpruned": unpruned,
                    "psnr_pruned": after,
                    "psnr_finetuned": ft,
                }
                print(
                    f"N={n} λ={lam} τ={tau}: pruned {100 * share:.1f}%, {unpruned:.2f} → {after:.2f} → {ft:.2f} dB",
                    flush=True,
                )
    return rows, data


def plot(ablation, budgets, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for init, style in (("structured", "o-"), ("random", "s--")):
        a.plot(
            budgets, [ablation[f"{init}/{n}"]["mean"] for n in budgets], style, label=f"{init} init (ours)"
        )
    a.plot(
        [400, 4900],
        [PAPER[("structured", 400)], PAPER[("structured", 4900)]],
        "k^",
        label="paper, structured",
    )
    a.plot([400, 4900], [PAPER[("random", 400)], PAPER[("random", 4900)]], "kv", label="paper, random")
    a.set_xlabel("Gaussians N")
    a.set_ylabel("mean PSNR (dB)")
    a.set_title("PSNR vs budget, 224²")
    a.grid(alpha=0.3)
    a.legend()
    for n in budgets:
        hist = ablation[f"structured/{n}"]["history"]
        its = [h[0] for h in hist[0]]
        b.plot(its, np.mean([[p for _, p in h] for h in hist], axis=0), label=f"N={n}")
    b.set_xlabel("iteration")
    b.set_ylabel("mean PSNR (dB)")
    b.set_title("structured init: PSNR vs iteration")
    b.grid(alpha=0.3)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=None, help="default: 3000 on a GPU, 1000 on CPU")
    ap.add_argument("--finetune", type=int, default=200, help="fine-tune iterations after pruning")
    ap.add_argument("--quick", action="store_true", help="tiny run to check the script (not for results)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    iters = args.iters or (3000 if args.device == "cuda" else 1000)
    budgets = [400, 900, 1600, 3136, 4900]
    prune_budgets, lambdas, taus = [1600, 3136], [0.0, 0.01, 0.05], [0.01, 0.02, 0.05]
    size, names = 224, PHOTOS
    if args.quick:
        iters, budgets, prune_budgets, lambdas, taus, size, names = (
            30,
            [64, 144],
            [144],
            [0.0, 0.01],
            [0.05],
            48,
            PHOTOS[:2],
        )
        args.finetune = 10
    images = photos(size, names)
    abl_rows, abl = run_init_ablation(images, budgets, iters, args.device)
    pr_rows, pr = run_pruning(images, prune_budgets, lambdas, taus, iters, args.finetune, args.device)
    name = "fit_quality_quick" if args.quick else "fit_quality"
    notes = (
        f"Photos: scikit-image {', '.join(names)}, centre-cropped to {size}². Adam, {iters} iterations, "
        f"default learning rates (FitConfig), L2 loss. Paper figures: GaussianVision at 3000 iterations on "
        "DataComp images (not the same images, shown for scale). Pruning: luminosity < τ dropped after the fit "
        f"with L1 weight λ on colours, then {args.finetune} fine-tune iterations without L1."
    )
    sections = [
        (
            "Structured vs random initialisation (mean PSNR, dB)",
            ["N", "structured", "random", "gain", "target", "paper structured", "paper random"],
            abl_rows,
        ),
        (
            "Luminosity pruning (mean PSNR, dB)",
            [
                "N",
                "λ",
                "τ",
                "pruned",
                "unpruned (with λ)",
                "pruned, no fine-tune",
                f"pruned + {args.finetune} it",
                "cost vs λ=0 unpruned",
            ],
            pr_rows,
        ),
    ]
    md = write_results(
        name,
        "Fitting quality (ablation)",
        sections,
        {"iters": iters, "size": size, "photos": list(names), "ablation": abl, "pruning": pr},
        notes,
    )
    plot(abl, budgets, RESULTS / f"{name}.png")
    print(md.read_text())


if __name__ == "__main__":
    main()
