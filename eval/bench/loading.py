"""Single-core loading throughput: JPEG (decode + resize to 224 + to tensor) vs .gs.npy (read + fp32 tensor)
vs .gsq (read + decode), through the same torch DataLoader, side by side in one run.

    python -m eval.bench.loading [--repeat 200] [--quick]

Writes eval/results/loading.{json,md}. The JPEGs are the photographs at their own resolution (as a
dataset stores them); the splat files hold N Gaussians (loading cost does not depend on their values).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import skimage.data
import torch
from PIL import Image
from torchvision import transforms

from gs_encoder import load_splats, save_splats, structured_init
from gs_encoder.codec import load_gsq, save_gsq

from .common import PHOTOS, photos, write_results

PAPER_SPEEDUP = {3136: 6.71, 1600: 13.43, 900: 18.80, 400: 31.33}


class Files(torch.utils.data.Dataset):
    """The shared loader: one file → one tensor through `read`."""

    def __init__(self, paths, read):
        self.paths, self.read = paths, read

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.read(self.paths[i])


def throughput(paths, read) -> float:
    """Items per second through a single-process DataLoader (batch_size=None: no collation cost)."""
    loader = torch.utils.data.DataLoader(Files(paths, read), batch_size=None, num_workers=0)
    for _ in zip(range(5), loader, strict=False):  # warm the page cache and the code paths
        pass
    t = time.perf_counter()
    for _ in loader:
        pass
    return len(paths) / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=200, help="loads per photo and format")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    budgets = [3136, 1600, 900, 400]
    repeat = 5 if args.quick else args.repeat
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jpgs = []
        for name in PHOTOS:
            buf = io.BytesIO()
            Image.fromarray(getattr(skimage.data, name)()).save(buf, format="JPEG", quality=90)
            (tmp / f"{name}.jpg").write_bytes(buf.getvalue())
            jpgs.append(tmp / f"{name}.jpg")
        clip_preprocess = transforms.Compose(
            [
                transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
            ]
        )
        jpeg_rate = throughput(jpgs * repeat, lambda p: clip_preprocess(Image.open(p).convert("RGB")))
        sizes = {name: Image.open(p).size for name, p in zip(PHOTOS, jpgs, strict=True)}
        rows, data = [], {"jpeg_per_s": jpeg_rate, "jpeg_sizes": sizes, "splats": {}}
        canvas = photos(224)
        for n in budgets:
            npys, gsqs = [], []
            for name, s in zip(PHOTOS, structured_init(canvas, n), strict=True):
                npys.append(save_splats(tmp / f"{name}-{n}.gs.npy", s))
                gsqs.append(save_gsq(tmp / f"{name}-{n}.gsq", s))
            npy_rate = throughput(npys * repeat, load_splats)
            gsq_rate = throughput(gsqs * repeat, load_gsq)
            data["splats"][str(n)] = {"npy_per_s": npy_rate, "gsq_per_s": gsq_rate}
            rows.append(
                [
                    n,
                    jpeg_rate,
                    npy_rate,
                    f"{npy_rate / jpeg_rate:.1f}×",
                    f"{PAPER_SPEEDUP[n]:.2f}×",
                    gsq_rate,
                    f"{gsq_rate / jpeg_rate:.1f}×",
                ]
            )
            print(rows[-1], flush=True)
    notes = (
        "One process, one thread, `torch.utils.data.DataLoader(num_workers=0)` over the same file list per format, "
        f"{repeat} loads of each of the {len(PHOTOS)} photos (page cache warm). JPEG: the scikit-image photographs at their "
        f"own sizes ({', '.join(f'{w}×{h}' for w, h in sizes.values())}), quality 90, CLIP's torchvision preprocessing "
        "(PIL decode, bicubic resize of the short side to 224, centre crop, ToTensor). `.gs.npy`: `load_splats` (read, validate, fp16 → fp32). "
        "`.gsq`: `load_gsq` (read, range-decode in plain Python, check, dequantise). Paper: JPEG vs splats speed-up for its own loader."
    )
    sections = [
        (
            "Loading throughput, items/s on one core",
            ["N", "JPEG/s", ".gs.npy/s", "speed-up", "paper", ".gsq/s", ".gsq speed-up"],
            rows,
        )
    ]
    name = "loading_quick" if args.quick else "loading"
    md = write_results(name, "Loading: splat files vs JPEG", sections, data, notes)
    print(md.read_text())


if __name__ == "__main__":
    main()
