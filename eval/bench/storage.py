"""Storage per image: fp16 splats vs .gsq vs JPEG, with PSNR, and a rate–distortion plot.

    python -m eval.bench.storage [--iters 1000] [--quick]

Writes eval/results/storage.{json,md,png}. Compression ratios are against raw 224² RGB (150,528 bytes),
the paper's reference; the fp16 payload ratios must equal the paper's 3.00/5.88/10.45/23.52×.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
import torch
from PIL import Image

from gs_encoder import FitConfig, fit_images, psnr, render
from gs_encoder.codec import decode_gsq, default_bits, encode_gsq
from gs_encoder.splat_io import RAW_RGB_BYTES, as_stored, payload_bytes, splat_npy_bytes

from .common import PHOTOS, RESULTS, photos, write_results

PAPER_RATIO = {3136: 3.00, 1600: 5.88, 900: 10.45, 400: 23.52}
GSQ_SETTINGS = [
    (12, 8, 8),
    (11, 7, 7),
    (10, 6, 6),
]  # (xy, scale, colour) bits; the default is default_bits(N)


def jpeg(img: torch.Tensor, quality: int) -> tuple[int, float]:
    """(bytes, PSNR) of the [3, S, S] image saved as JPEG at `quality`."""
    arr = (img.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    back = torch.from_numpy(
        np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32) / 255
    ).permute(2, 0, 1)
    return len(buf.getvalue()), float(psnr(back, img))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="tiny run to check the script (not for results)")
    args = ap.parse_args(argv)
    size, budgets, iters = 224, [3136, 1600, 900, 400], args.iters
    if args.quick:
        size, budgets, iters = 32, [64, 16], 20
    images = photos(size)
    rows, gsq_rows, rd, data = [], [], {"fp16": [], "gsq": [], "jpeg": []}, {"budgets": {}, "jpeg": {}}
    for n in budgets:
        res = fit_images(images, FitConfig(num_gaussians=n, iters=iters, check_every=10**6))
        per = {"file_bytes": [], "psnr_fp16": [], "gsq": {}}
        for r, img in zip(res, images, strict=True):
            per["file_bytes"].append(len(splat_npy_bytes(r.splats)))
            per["psnr_fp16"].append(float(psnr(render(as_stored(r.splats), size=size), img)))
            for bits in GSQ_SETTINGS:
                blob = encode_gsq(r.splats, *bits)
                entry = per["gsq"].setdefault(str(bits), {"bytes": [], "psnr": []})
                entry["bytes"].append(len(blob))
                entry["psnr"].append(float(psnr(render(decode_gsq(blob), size=size), img)))
        payload = payload_bytes(n)
        p16 = float(np.mean(per["psnr_fp16"]))
        g = per["gsq"][str(default_bits(n))]
        gb, gp = float(np.mean(g["bytes"])), float(np.mean(g["psnr"]))
        rows.append(
            [
                n,
                payload,
                f"{RAW_RGB_BYTES / payload:.2f}×",
                f"{PAPER_RATIO.get(n, float('nan')):.2f}×",
                float(np.mean(per["file_bytes"])),
                p16,
                gb,
                f"{RAW_RGB_BYTES / gb:.1f}×",
                f"{payload / gb:.2f}×",
                gp,
                p16 - gp,
            ]
        )
        for bits in GSQ_SETTINGS:
            e = per["gsq"][str(bits)]
            b_, p_ = float(np.mean(e["bytes"])), float(np.mean(e["psnr"]))
            gsq_rows.append([n, str(bits), b_, f"{payload / b_:.2f}×", p_, p16 - p_])
            rd["gsq"].append((b_, p_, f"{n} {bits}"))
        rd["fp16"].append((payload, p16, str(n)))
        data["budgets"][str(n)] = {"payload_bytes": payload, "ratio_vs_raw": RAW_RGB_BYTES / payload, **per}
        print(rows[-1], flush=True)
    jpeg_rows = []
    for q in (10, 30, 50, 75, 90, 95):
        b_, p_ = zip(*(jpeg(img, q) for img in images), strict=True)
        jb, jp = float(np.mean(b_)), float(np.mean(p_))
        data["jpeg"][str(q)] = {"bytes": list(b_), "psnr": list(p_)}
        rd["jpeg"].append((jb, jp, f"q{q}"))
        if q in (75, 90):
            jpeg_rows.append([f"JPEG q{q}", jb, f"{RAW_RGB_BYTES / jb:.1f}×", jp])
    data["rate_distortion"] = rd
    notes = (
        f"Photos: scikit-image {', '.join(PHOTOS)} centre-cropped to {size}²; splats fitted with {iters} iterations "
        "(structured init, default learning rates). Bytes are means per image. `.gs.npy` file = payload + 128-byte header. "
        "`.gsq` = this project's quantised codec (gs_encoder/codec.py) with its default bits for N (xy/scale/colour "
        "11/7/7 up to 1024 Gaussians, 12/8/8 above); target ≥ 2× smaller than fp16 at ≤ 0.5 dB loss."
    )
    sections = [
        (
            "Splat storage per image (means over the photos)",
            [
                "N",
                "fp16 payload B",
                "vs raw 224²",
                "paper",
                ".gs.npy file B",
                "PSNR fp16 dB",
                ".gsq B",
                ".gsq vs raw",
                ".gsq vs fp16",
                "PSNR .gsq dB",
                "loss dB",
            ],
            rows,
        ),
        ("JPEG of the same 224² images", ["codec", "bytes", "vs raw 224²", "PSNR dB"], jpeg_rows),
        (
            ".gsq bit settings (xy, scale, colour)",
            ["N", "bits", "bytes", "vs fp16", "PSNR dB", "loss vs fp16 dB"],
            gsq_rows,
        ),
    ]
    name = "storage_quick" if args.quick else "storage"
    md = write_results(name, "Storage: splats vs JPEG", sections, data, notes)
    plot(rd, RESULTS / f"{name}.png")
    print(md.read_text())


def plot(rd, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, style, label in (("fp16", "o-", "splats, fp16 .gs.npy"), ("jpeg", "s-", "JPEG (q10–95)")):
        pts = sorted(rd[key])
        ax.plot([p[0] / 1024 for p in pts], [p[1] for p in pts], style, label=label)
        for b, p, t in pts:
            ax.annotate(t, (b / 1024, p), fontsize=7, xytext=(3, 3), textcoords="offset points")
    default = sorted(
        p for p in rd["gsq"] if p[2] == f"{p[2].split()[0]} {default_bits(int(p[2].split()[0]))}"
    )
    ax.plot([p[0] / 1024 for p in default], [p[1] for p in default], "^-", label=".gsq, default bits")
    others = [p for p in rd["gsq"] if p not in default]
    ax.plot(
        [p[0] / 1024 for p in others], [p[1] for p in others], "^", alpha=0.4, label=".gsq other bit settings"
    )
    ax.set_xscale("log")
    ax.set_xlabel("KiB per image")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("Rate–distortion at 224²")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
