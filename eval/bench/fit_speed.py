"""Fitting and rendering speed on this machine: ms per iteration vs N and batch size, render time, and the
speed-up of the windowed pair-list renderer over the dense reference, measured side by side.

    python -m eval.bench.fit_speed [--threads 2] [--quick]

Writes eval/results/fit_speed.{json,md} and fit_speed.png. A fit iteration is the whole step: render,
L2 loss, backward, Adam. "init" is the structured initialisation; "fitted" is the same image after
300 iterations, when Gaussians have grown in flat regions and moved (the slower, realistic state).
"""

from __future__ import annotations

import argparse
import time

import torch

from gs_encoder import FitConfig, fit_images, render_dense, render_torch, structured_init

from .common import RESULTS, photos, timed, write_results

TARGET_ITER_MS, TARGET_RENDER_MS = 30.0, 20.0  # issue 3, 224², N = 3136, 2 cores


def ms_per_iteration(images, initial, k1=5, k2=45, backend="torch", **cfg) -> float:
    """Marginal ms per fit iteration per image: time(k2) − time(k1), divided by (k2 − k1) and B."""

    def run(k):
        t = time.perf_counter()
        fit_images(
            images,
            FitConfig(num_gaussians=initial[0].shape[0], iters=k, check_every=10**6, backend=backend, **cfg),
            initial=initial,
        )
        return time.perf_counter() - t

    run(2)  # warm-up
    return (
        1000 * (min(run(k2) for _ in range(2)) - min(run(k1) for _ in range(2))) / (k2 - k1) / images.shape[0]
    )


def dense_ms_per_iteration(image, splats, repeat=2) -> float:
    """ms for one dense-reference step (render every Gaussian at every pixel, L2 loss, autograd backward)."""
    size = image.shape[-1]

    def step():
        p = splats.clone().requires_grad_(True)
        loss = (render_dense(p, size, chunk=128) - image).pow(2).mean()
        loss.backward()

    return 1000 * timed(step, repeat=repeat, warmup=0)


def pair_ms_single(image, splats, repeat=5) -> float:
    """The same step with the pair-list renderer (no Adam), for the like-for-like speed-up."""
    size = image.shape[-1]

    def step():
        p = splats.clone().requires_grad_(True)
        loss = (render_torch(p, size=size) - image).pow(2).mean()
        loss.backward()

    return 1000 * timed(step, repeat=repeat)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny run to check the script (not for results)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    size, budgets, batches, dense_budgets = 224, [400, 1600, 3136, 4900], [1, 4], [400, 3136]
    if args.quick:
        size, budgets, batches, dense_budgets = 48, [64, 144], [1, 2], [64]
    images = photos(size)
    fitted_iters = 30 if args.quick else 300

    iter_rows, data = (
        [],
        {"size": size, "threads": args.threads, "iterations": {}, "render": {}, "dense": {}, "margin": {}},
    )
    fitted = {}
    for n in budgets:
        res = fit_images(images, FitConfig(num_gaussians=n, iters=fitted_iters, check_every=10**6))
        fitted[n] = [r.splats for r in res]
        init = list(structured_init(images, n))
        row = [n]
        for b in batches:
            for state, sets in (("init", init), ("fitted", fitted[n])):
                ms = ms_per_iteration(images[:b], sets[:b])
                data["iterations"][f"{n}/{b}/{state}"] = ms
                row.append(ms)
        iter_rows.append(row)
        print("iteration ms/image", row, flush=True)

    render_rows = []
    for n in budgets:
        init = structured_init(images[:1], n)[0]
        with torch.no_grad():
            ms_init = 1000 * timed(lambda init=init: render_torch(init, size=size), repeat=10)
            ms_fit = 1000 * timed(lambda n=n: render_torch(fitted[n][0], size=size), repeat=10)
        data["render"][str(n)] = {"init_ms": ms_init, "fitted_ms": ms_fit}
        render_rows.append([n, ms_init, ms_fit, 1000 / ms_fit])

    dense_rows = []
    for n in dense_budgets:
        s = fitted[n][0]
        dense = dense_ms_per_iteration(images[0], s)
        pair = pair_ms_single(images[0], s)
        data["dense"][str(n)] = {"dense_ms": dense, "pair_ms": pair, "speedup": dense / pair}
        dense_rows.append([n, dense, pair, f"{dense / pair:.0f}×"])
        print("dense vs pair", n, dense, pair, flush=True)

    margin_rows = []
    n_m = budgets[2] if len(budgets) > 2 else budgets[-1]
    for margin in (0.0, 0.5, 1.0, 2.0):
        ms = ms_per_iteration(images[:1], fitted[n_m][:1], plan_margin=margin)
        data["margin"][str(margin)] = ms
        margin_rows.append([str(margin), ms])

    cpp_rows = []
    import cuda_ext

    if cuda_ext.available():  # issue 4's C++ CPU op, side by side with the pure-torch path
        data["cpp"] = {}
        for n in budgets:
            row = [n]
            for state, sets in (("init", list(structured_init(images[:1], n))), ("fitted", fitted[n][:1])):
                t_ms = data["iterations"][f"{n}/1/{state}"]
                c_ms = ms_per_iteration(images[:1], sets, backend="cpp")
                data["cpp"][f"{n}/{state}"] = c_ms
                row += [t_ms, c_ms, f"{t_ms / c_ms:.1f}×"]
            cpp_rows.append(row)
            print("cpp vs torch", row, flush=True)
    else:
        data["cpp"] = {"error": cuda_ext.load_error()}

    key = f"{n_m}/1/fitted"
    notes = (
        f"Canvas {size}², scikit-image photos (astronaut, chelsea, coffee, rocket), {args.threads} threads, pure-torch CPU path. "
        f"Targets (issue 3, N = 3136): ≤ {TARGET_ITER_MS:.0f} ms per iteration, render ≤ {TARGET_RENDER_MS:.0f} ms. "
        f"Measured: {data['iterations'].get(key, float('nan')):.1f} ms per iteration (one image, fitted state), "
        f"render {data['render'].get(str(n_m), {}).get('fitted_ms', float('nan')):.1f} ms. "
        "Dense reference: every Gaussian at every pixel in float32 with autograd, in the same run."
    )
    head = ["N"] + [f"B={b} {st}" for b in batches for st in ("init", "fitted")]
    sections = [
        ("Fit iteration, ms per image (render + loss + backward + Adam)", head, iter_rows),
        ("Render, no gradient, one image", ["N", "init ms", "fitted ms", "renders/s (fitted)"], render_rows),
        (
            "Pair-list vs dense reference, one step (render + loss + backward), fitted splats",
            ["N", "dense ms", "pair-list ms", "speed-up"],
            dense_rows,
        ),
        (
            f"Render-plan margin (pair reuse across iterations), N = {n_m}, fitted, ms per iteration",
            ["margin px", "ms"],
            margin_rows,
        ),
    ]
    if cpp_rows:
        sections.append(
            (
                "Compiled C++/OpenMP CPU op (cuda_ext) vs the pure-torch path, fit iteration, one image, ms",
                ["N", "torch init", "C++ init", "speed-up", "torch fitted", "C++ fitted", "speed-up"],
                cpp_rows,
            )
        )
    name = "fit_speed_quick" if args.quick else "fit_speed"
    md = write_results(name, "Fitting speed on CPU (issue 3)", sections, data, notes)
    plot(data, budgets, batches, RESULTS / f"{name}.png")
    print(md.read_text())


def plot(data, budgets, batches, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for b in batches:
        for state, style in (("init", "o--"), ("fitted", "o-")):
            ax.plot(
                budgets,
                [data["iterations"][f"{n}/{b}/{state}"] for n in budgets],
                style,
                label=f"B={b}, {state}",
            )
    ax.axhline(TARGET_ITER_MS, color="gray", lw=0.8, ls=":", label="target @3136")
    ax.set_xlabel("Gaussians N")
    ax.set_ylabel("ms per iteration per image")
    ax.set_title(f"CPU fit iteration, {data['size']}², {data['threads']} threads")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
