"""Encoder forward cost: the GS encoder (N Gaussians → K tokens → ViT-B/16) vs the RGB ViT-B/16 on 224² pixels.

    python -m eval.bench.encoder [--batch 8] [--quick]

Each configuration runs in its own process (so peak-memory figures do not mix): images/s of the
forward (no gradient) and peak memory: `torch.cuda.max_memory_allocated` on a GPU, the rise of the
process's peak RSS during the forward on CPU. Writes eval/results/encoder.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from .common import write_results


def _one(kind: str, n: int, k: int, batch: int, reps: int, device: str, arch: str) -> dict:
    from gs_encoder.modeling_gs_vision import GSVisionConfig, GSVisionModel, RGBVisionModel

    torch.manual_seed(0)
    if kind == "rgb":
        model = RGBVisionModel(GSVisionConfig.from_open_clip(arch, input="rgb"))
        size = model.config.vision_cfg["image_size"]
        x = (torch.rand(batch, 3, size, size, device=device),)
    else:
        model = GSVisionModel(GSVisionConfig.from_open_clip(arch, num_tokens=k))
        s = torch.rand(batch, n, 8, device=device)
        s[..., 2:5] = 0.01 + 0.02 * s[..., 2:5]
        x = (s, torch.ones(batch, n, dtype=torch.bool, device=device))
    model = model.to(device).eval()
    with torch.no_grad():
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # peak so far: weights and inputs
        model(*x)  # warm-up; its activations set the peak
        t = time.perf_counter()
        for _ in range(reps):
            model(*x)
        if device == "cuda":
            torch.cuda.synchronize()
        secs = (time.perf_counter() - t) / reps
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device == "cuda"
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    )
    return {"images_per_s": batch / secs, "peak_mib": peak}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--arch", default="ViT-B-16")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--one", nargs=3, metavar=("KIND", "N", "K"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        kind, n, k = args.one[0], int(args.one[1]), int(args.one[2])
        print(json.dumps(_one(kind, n, k, args.batch, args.reps, args.device, args.arch)))
        return
    configs = [("rgb", 0, 196)] + [("gs", n, k) for n in (400, 1600, 3136) for k in (196, 98)]
    if args.quick:
        configs, args.batch, args.reps = [("rgb", 0, 196), ("gs", 400, 98)], 1, 1
    results = {}
    for kind, n, k in configs:
        cmd = [
            sys.executable,
            "-m",
            "eval.bench.encoder",
            "--one",
            kind,
            str(n),
            str(k),
            "--batch",
            str(args.batch),
            "--reps",
            str(args.reps),
            "--device",
            args.device,
            "--arch",
            args.arch,
        ]
        run = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[f"{kind}/{n}/{k}"] = json.loads(run.stdout.strip().splitlines()[-1])
        print(kind, n, k, results[f"{kind}/{n}/{k}"], flush=True)
    rgb = results["rgb/0/196"]
    rows = [["RGB ViT-B/16, 224² pixels", "", 196, rgb["images_per_s"], "1.00×", rgb["peak_mib"]]]
    for key, r in results.items():
        kind, n, k = key.split("/")
        if kind == "gs":
            rows.append(
                [
                    "GS encoder",
                    n,
                    k,
                    r["images_per_s"],
                    f"{r['images_per_s'] / rgb['images_per_s']:.2f}×",
                    r["peak_mib"],
                ]
            )
    mem = (
        "peak CUDA memory allocated (MiB)"
        if args.device == "cuda"
        else "peak RSS rise during the forward (MiB)"
    )
    notes = (
        f"Forward only (no gradient), batch {args.batch}, {args.reps} timed repetitions after a warm-up, device {args.device}, "
        f"architecture {args.arch} with random weights (cost does not depend on them). GS encoder = stem + 2-layer Perceiver "
        "resampler + the same ViT blocks on 1 + K tokens. On CPU, absolute figures only describe this machine; ratios are "
        "measured side by side in one run."
    )
    name = "encoder_quick" if args.quick else "encoder"
    md = write_results(
        name,
        "Encoder forward: GS vs RGB",
        [("Throughput and memory", ["encoder", "N", "tokens K", "images/s", "vs RGB", mem], rows)],
        {"device": args.device, "batch": args.batch, "results": results},
        notes,
    )
    print(md.read_text())


if __name__ == "__main__":
    main()
