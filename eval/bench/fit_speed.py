"""Fitting and rendering speed on this machine, in two parts.

    python -m eval.bench.fit_speed [--part all|cpu|gpu] [--threads 2] [--quick] [--budget-s SECONDS]

CPU part (eval/results/fit_speed.{json,md,png}): ms per iteration vs N and batch size, render time, the
speed-up of the windowed pair-list renderer over the dense reference, and the compiled C++ op against
the pure-torch path, measured side by side. A fit iteration is the whole step: render, L2 loss,
backward, Adam. "init" is the structured initialisation; "fitted" is the same image after 300
iterations, when Gaussians have grown in flat regions and moved (the slower, realistic state).

GPU part (eval/results/fit_speed_gpu.{json,md,png}; skipped, with the reason, without a CUDA device or
the built kernels): the fused batched fitter in images/s per GPU at 224², N ∈ {3136, 400, 1600} (the
headline N first), 3000 iterations, over a batch sweep, with GPU utilisation sampled during the fit and
peak memory; the same images fitted the GaussianImage way (one image at a time, Python per iteration:
the pure-torch path on the GPU) in the same run for the speed-up; batched render throughput at 224².
--budget-s bounds its wall time (scripts/gpu_check.sh uses it): runs predicted to overrun are skipped
and listed in the results.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import threading
import time

import torch

from gs_encoder import FitConfig, fit_images, render, render_dense, render_torch, structured_init

from .common import RESULTS, photos, timed, write_results

TARGET_ITER_MS, TARGET_RENDER_MS = 30.0, 20.0  # targets at 224², N = 3136, 2 cores
# targets on one H100: fused fit at N = 3136, 3000 iterations; over the per-image loop; batched render
TARGET_GPU_FIT, TARGET_GPU_SPEEDUP, TARGET_GPU_RENDER = 100.0, 90.0, 10_000.0
GPU = "cuda"  # the device of the GPU part


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


def _cpp_rows(images, budgets: list[int], fitted: dict, data: dict) -> list[list]:
    """The compiled C++ CPU op side by side with the pure-torch path (one image, init and fitted states);
    recorded in data["cpp"] (its load error when it is not built)."""
    import cuda_ext

    if not cuda_ext.available():
        data["cpp"] = {"error": cuda_ext.load_error()}
        return []
    data["cpp"], rows = {}, []
    for n in budgets:
        row = [n]
        for state, sets in (("init", list(structured_init(images[:1], n))), ("fitted", fitted[n][:1])):
            t_ms = data["iterations"][f"{n}/1/{state}"]
            c_ms = ms_per_iteration(images[:1], sets, backend="cpp")
            data["cpp"][f"{n}/{state}"] = c_ms
            row += [t_ms, c_ms, f"{t_ms / c_ms:.1f}×"]
        rows.append(row)
        print("cpp vs torch", row, flush=True)
    return rows


def cpu_part(args):
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

    cpp_rows = _cpp_rows(images, budgets, fitted, data)
    key = f"{n_m}/1/fitted"
    notes = (
        f"Canvas {size}², scikit-image photos (astronaut, chelsea, coffee, rocket), {args.threads} threads, pure-torch CPU path. "
        f"Targets (N = 3136): ≤ {TARGET_ITER_MS:.0f} ms per iteration, render ≤ {TARGET_RENDER_MS:.0f} ms. "
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
    md = write_results(name, "Fitting speed on CPU", sections, data, notes)
    plot(data, budgets, batches, RESULTS / f"{name}.png")
    print(md.read_text())


class UtilSampler:
    """GPU busy % sampled every `period` s in a thread: torch.cuda.utilization (pynvml) if it works,
    else `nvidia-smi`, else nothing ("n/a")."""

    def __init__(self, device: torch.device, period: float = 0.1):
        self.device, self.period = device, period
        self.samples: list[float] = []
        self.source = self._pick_source()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _pick_source(self):
        try:
            torch.cuda.utilization(self.device)
            return "pynvml"
        except (ModuleNotFoundError, ImportError, RuntimeError, ValueError, OSError):
            pass
        if shutil.which("nvidia-smi") and self._smi() is not None:
            return "nvidia-smi"
        return None

    def _smi(self) -> float | None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
        index = self.device.index or 0
        gpu = visible[index] if index < len(visible) and visible[index].strip().isdigit() else str(index)
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", gpu],
                capture_output=True, text=True, timeout=5, check=True,
            )  # fmt: skip
            return float(out.stdout.strip().splitlines()[0])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None

    def _run(self):
        while not self._stop.wait(self.period):
            value = torch.cuda.utilization(self.device) if self.source == "pynvml" else self._smi()
            if value is not None:
                self.samples.append(float(value))

    def __enter__(self):
        if self.source:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self) -> dict:
        if not self.samples:
            why = (
                "no sampler (install nvidia-ml-py or put nvidia-smi on PATH)"
                if not self.source
                else "no sample"
            )
            return {"mean": None, "max": None, "samples": 0, "source": self.source, "note": f"n/a: {why}"}
        return {
            "mean": sum(self.samples) / len(self.samples),
            "max": max(self.samples),
            "samples": len(self.samples),
            "source": self.source,
        }


def _pool(images: torch.Tensor, b: int) -> torch.Tensor:
    """b images from the photos and their flips (16 distinct views), repeated as needed."""
    views = [images, images.flip(-1), images.flip(-2), images.flip(-1, -2)]
    pool = torch.cat(views)
    return pool[torch.arange(b) % pool.shape[0]]


def _util_cell(u: dict) -> str:
    return u.get("note", "n/a") if u["mean"] is None else f"{u['mean']:.0f}% (max {u['max']:.0f}%)"


class Budget:
    """Wall-clock allowance of the GPU part (None: unlimited): runs predicted to overrun are skipped."""

    def __init__(self, seconds: float | None):
        self.seconds, self.start = seconds, time.perf_counter()

    def left(self) -> float:
        if self.seconds is None:
            return float("inf")
        return self.seconds - (time.perf_counter() - self.start)

    def allows(self, predicted: float) -> bool:
        return predicted <= self.left()


def _fused_fits(dev, images, budgets, batches, iters, budget, data, fitted) -> list[list]:
    """The batch sweep of the fused fitter; fills data["fit"] and fitted[n]; returns the table rows.
    The first N given is measured first (the headline one), each N from its smallest batch up, and a run
    whose predicted time (batch / rate at the last batch of that N, or of the N before, scaled by N)
    would overrun the budget is skipped and recorded as such."""
    rows, rate_any = [], None
    for n in budgets:
        fit_images(_pool(images, 2).to(dev), FitConfig(num_gaussians=n, iters=5))  # warm-up, allocator
        rate = None
        for b in batches:
            guess = rate if rate is not None else (rate_any[1] * rate_any[0] / n if rate_any else None)
            if guess is not None and not budget.allows(1.2 * b / guess):
                data["skipped"].append(
                    f"fit N={n} B={b}: predicted {b / guess:.0f} s, {budget.left():.0f} s left"
                )
                print("gpu fit skipped", data["skipped"][-1], flush=True)
                continue
            imgs = _pool(images, b).to(dev)
            cfg = FitConfig(num_gaussians=n, iters=iters, check_every=10**9)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(dev)
            with UtilSampler(dev) as sampler:
                start = time.perf_counter()
                res = fit_images(imgs, cfg)  # ends with a host copy of the results: synchronised
                seconds = time.perf_counter() - start
            rate = b / seconds
            rate_any = (n, rate)
            peak = torch.cuda.max_memory_allocated(dev) / 2**30
            util = sampler.summary()
            psnr = sum(r.psnr for r in res) / b
            data["fit"][f"{n}/{b}"] = {
                "images_per_s": rate,
                "seconds": seconds,
                "peak_gib": peak,
                "psnr": psnr,
                "util": util,
            }
            rows.append([n, b, rate, seconds, psnr, peak, _util_cell(util)])
            print("gpu fit", rows[-1], flush=True)
            fitted[n] = [r.splats for r in res]
    return sorted(rows, key=lambda r: (r[0], r[1]))


def _loop_rates(dev, images, budgets, iters, loop_iters, budget, data) -> list[list]:
    """The GaussianImage way: one image at a time, Python per iteration (the pure-torch path on the
    GPU), over each distinct photo (fewer when the budget is short); its rate is the marginal ms per
    iteration × iters. Fills data["loop"]; returns the table rows."""
    rows = []
    k1, k2 = loop_iters
    for n in budgets:
        best = max((v["images_per_s"] for k, v in data["fit"].items() if k.startswith(f"{n}/")), default=None)
        per_photo = []
        for k in range(images.shape[0]):
            # a measurement runs 2 + 2·k2 + 2·k1 iterations; predict it from the photos done so far
            cost = (2 + 2 * (k1 + k2)) * (sum(per_photo) / len(per_photo)) / 1000 if per_photo else 0.0
            if per_photo and not budget.allows(1.2 * cost):
                data["skipped"].append(f"loop N={n}: photos {k + 1}-{images.shape[0]} (budget)")
                break
            one = images[k : k + 1].to(dev)
            init = list(structured_init(one, n))
            per_photo.append(ms_per_iteration(one, init, k1=k1, k2=k2, backend="torch"))
        ms = sum(per_photo) / len(per_photo)
        loop_rate = 1000.0 / (ms * iters)
        data["loop"][str(n)] = {
            "ms_per_iteration": ms,
            "images_per_s": loop_rate,
            "photos": len(per_photo),
            "speedup": best / loop_rate if best else None,
        }
        rows.append([n, ms, loop_rate, best, f"{best / loop_rate:.0f}×" if best else "n/a"])
        print("gpu loop", rows[-1], flush=True)
    return sorted(rows, key=lambda r: r[0])


def gpu_part(args):
    """The GPU measurements; returns None (after printing why) when there is nothing to measure on."""
    import cuda_ext

    if not torch.cuda.is_available():
        reason = "no CUDA device (torch.cuda.is_available() is False)"
    elif not cuda_ext.cuda_available():
        reason = f"cuda_ext's CUDA kernels are not available: {cuda_ext.cuda_load_error()}"
    else:
        reason = None
    if reason:
        print(f"GPU part skipped: {reason}", flush=True)
        return None
    dev = torch.device(GPU)
    budget = Budget(args.budget_s)
    # the headline N (the GPU target's) first, so a short budget still measures it
    size, budgets, iters, batches, loop_iters = 224, [3136, 400, 1600], 3000, [16, 64, 256], (10, 60)
    render_batches = [64, 256, 1024]
    if args.quick:
        size, budgets, iters, batches, loop_iters, render_batches = 64, [64], 30, [2, 4], (3, 8), [4, 16]
    images = photos(size)
    data = {
        "size": size,
        "iters": iters,
        "device": torch.cuda.get_device_name(dev),
        "budget_s": args.budget_s,
        "fit": {},
        "loop": {},
        "render": {},
        "skipped": [],
    }
    fitted: dict[int, list[torch.Tensor]] = {}
    fit_rows = _fused_fits(dev, images, budgets, batches, iters, budget, data, fitted)
    loop_rows = _loop_rates(dev, images, budgets, iters, loop_iters, budget, data)

    render_rows = []
    n_r = budgets[0] if budgets[0] in fitted else next(iter(fitted), None)
    sets_r = fitted[n_r] if n_r is not None else list(structured_init(images, budgets[0]))
    n_r = n_r if n_r is not None else budgets[0]
    for b in render_batches:
        splats = torch.stack([sets_r[k % len(sets_r)] for k in range(b)]).to(dev)
        mask = torch.ones(splats.shape[:2], dtype=torch.bool, device=dev)

        def run(splats=splats, mask=mask):
            render(splats, mask, size=size)
            torch.cuda.synchronize()

        with torch.no_grad():
            seconds = timed(run, repeat=5, warmup=2)
        data["render"][str(b)] = {"images_per_s": b / seconds, "ms": 1000 * seconds}
        render_rows.append([b, 1000 * seconds, b / seconds])

    n_t = budgets[0]
    best_t = max((v["images_per_s"] for k, v in data["fit"].items() if k.startswith(f"{n_t}/")), default=None)
    speedup = data["loop"].get(str(n_t), {}).get("speedup")
    notes = (
        f"{data['device']}; canvas {size}², scikit-image photos and their flips, {iters} iterations, structured "
        f"init, default learning rates, no early stop. Targets (one H100): ≥ {TARGET_GPU_FIT:.0f} images/s "
        f"at N = 3136, ≥ {TARGET_GPU_SPEEDUP:.0f}× over the per-image loop, render ≥ {TARGET_GPU_RENDER:,.0f} "
        f"images/s at 224². Measured: "
        + (f"{best_t:.1f} images/s at N = {n_t}, " if best_t else f"no fused fit at N = {n_t} (budget), ")
        + (f"{speedup:.0f}× over the loop, " if speedup else "")
        + f"render {max(v['images_per_s'] for v in data['render'].values()):,.0f} images/s. The per-image loop's rate is "
        f"its marginal ms per iteration (iterations {loop_iters[0]}→{loop_iters[1]}, mean over the photos) × "
        f"{iters}, measured in this run. Fit time is the whole fit_images call (init, fit, final PSNR) over the batch. GPU "
        "utilisation: nvidia-smi / NVML busy time sampled every 0.1 s during the fit."
        + (
            f" Skipped to fit the {args.budget_s:.0f} s budget: " + "; ".join(data["skipped"]) + "."
            if data["skipped"]
            else ""
        )
    )
    sections = [
        (
            f"Fused batched fit, {iters} iterations, {size}²",
            ["N", "batch", "images/s", "seconds", "PSNR dB", "peak GiB", "GPU util"],
            fit_rows,
        ),
        (
            "Per-image loop (pure-torch path on the GPU, one image, Python per iteration) vs the fused fitter",
            ["N", "loop ms/iteration", "loop images/s", "fused images/s (best batch)", "speed-up"],
            loop_rows,
        ),
        (f"Batched render, {size}², N = {n_r} fitted splats", ["batch", "ms", "images/s"], render_rows),
    ]
    name = "fit_speed_gpu_quick" if args.quick else "fit_speed_gpu"
    md = write_results(name, "Fitting and rendering speed on the GPU", sections, data, notes)
    plot_gpu(data, RESULTS / f"{name}.png")
    print(md.read_text())
    return data


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("all", "cpu", "gpu"), default="all", help="which measurements to run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny run to check the script (not for results)")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="GPU part: wall-clock seconds it may take; fused fits and loop photos predicted to overrun "
        "are skipped and listed in the results (default: the full sweep)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.part in ("all", "cpu"):
        cpu_part(args)
    if args.part in ("all", "gpu"):
        gpu_part(args)


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or None (with a printed note) when matplotlib is missing:
    the plots are optional, the tables and the JSON are the results."""
    try:
        import matplotlib
    except ImportError:
        print("note: matplotlib is not installed; plot skipped (pip install matplotlib)", flush=True)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(data, budgets, batches, path):
    plt = _pyplot()
    if plt is None:
        return
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


def plot_gpu(data, path):
    """images/s of the fused fitter against the batch size, one line per N, with the target."""
    plt = _pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for n in sorted({int(k.split("/")[0]) for k in data["fit"]}):
        pts = sorted(
            (int(k.split("/")[1]), v["images_per_s"]) for k, v in data["fit"].items() if k.startswith(f"{n}/")
        )
        ax.plot([b for b, _ in pts], [r for _, r in pts], "o-", label=f"N={n}")
    ax.axhline(TARGET_GPU_FIT, color="gray", lw=0.8, ls=":", label="target @3136")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch (images per launch)")
    ax.set_ylabel("images/s")
    ax.set_title(f"Fused fit, {data['size']}², {data['iters']} iterations, {data['device']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
