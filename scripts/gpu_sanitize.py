"""The workload scripts/gpu_check.sh runs under compute-sanitizer (memcheck, racecheck): every kernel on
small, odd-sized problems (padding and dead rows, tile lists that overflow a cap of 4, a frozen image,
off-canvas and huge Gaussians), then a short fit of a real photo through the fused fitter with pruning.

    python scripts/gpu_sanitize.py              # CUDA tensors (needs the built gsv_cuda_ops and a GPU)
    python scripts/gpu_sanitize.py --emulate    # the same on the kernels' CPU emulation, checking mode on

`--emulate` is what CI runs (tests/cuda_ext/test_gpu_check_script.py), so the workload is known to run
before a GPU ever sees it; there the emulator's own race and bounds checks stand in for the sanitizer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cuda_ext import _backend, ops  # noqa: E402


def kernels_on_odd_problems(device: str, emulate: bool) -> None:
    g = torch.Generator().manual_seed(0)
    for size, n, cap in ((17, 40, 4), (33, 300, 512), (48, 600, 4)):
        p = torch.zeros(2, n, 8)
        p[..., 0:2] = torch.rand(2, n, 2, generator=g) * size * 1.4 - 0.2 * size
        p[..., 2] = p[..., 4] = 0.5 + 3 * torch.rand(2, n, generator=g)
        p[..., 3] = torch.randn(2, n, generator=g)
        p[0, 0, 2:5] = torch.tensor([40.0, 5.0, 30.0])
        p[..., 5:8] = torch.rand(2, n, 3, generator=g)
        alive = torch.rand(2, n, generator=g) > 0.2
        p, alive = p.to(device), alive.to(device)
        pr = p.clone().requires_grad_(True)
        ops.render_cuda(pr, alive, size, tile_cap=cap, emulate=emulate).square().sum().backward()
        m, v = torch.zeros_like(p), torch.zeros_like(p)
        active = torch.tensor([True, False], device=device)
        target = torch.rand(2, size, size, 3, generator=g).to(device)
        ops.fit_steps(p, m, v, alive, active, target, it0=0, num_steps=3, iters_total=3, lr=(0.1, 0.04, 0.02),
                      lr_final=0.05, lambda_l1=0.01, min_scale=0.3, tile_cap=cap, emulate=emulate)  # fmt: skip
        ops.prune_mask(p, alive, 0.05, emulate=emulate)


def short_fit(device: str, emulate: bool) -> float:
    from eval.bench.common import sample_photo
    from gs_encoder import FitConfig, fit_images
    from gs_encoder.image_io import to_canvas

    images = torch.stack([to_canvas(sample_photo(n) / 255.0, 48, "crop") for n in ("astronaut", "coffee")])
    cfg = FitConfig(num_gaussians=256, iters=20, lambda_l1=0.01, tau=0.02, finetune_iters=5,
                    backend="cuda-emu" if emulate else "cuda")  # fmt: skip
    results = fit_images(images.to(device), cfg)
    return min(r.psnr for r in results)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--emulate", action="store_true", help="run on the CPU emulation in its checking mode")
    args = ap.parse_args(argv)
    device = "cpu" if args.emulate else "cuda"
    if args.emulate:
        _backend.emu_module().set_checking(True, 0)
    kernels_on_odd_problems(device, args.emulate)
    psnr = short_fit(device, args.emulate)
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"sanitizer workload done (short fit: lowest PSNR {psnr:.2f} dB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
