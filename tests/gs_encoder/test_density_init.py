"""The density init (a grid warped towards detail) and the learned network on its cells."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gs_encoder import FitConfig, fit_images, psnr, render, structured_init
from gs_encoder.fitting.fit import LEARNED_WARMUP
from gs_encoder.fitting.init import (
    _band_integral,
    _inverse_cdf,
    density_grid,
    density_init,
    density_start,
)
from gs_encoder.fitting.learned_init import (
    MIN_SCALE_PX,
    LearnedInitError,
    SplatInitNet,
    _read_weights,
    _rect_means,
    learned_init,
    save_learned_init,
)


def test_inverse_cdf_of_known_densities():
    q = torch.tensor([0.0, 0.25, 0.5, 1.0])
    torch.testing.assert_close(_inverse_cdf(torch.ones(4), q), q)
    # all the mass in the second of two bins: every quantile lands in [0.5, 1], linearly
    torch.testing.assert_close(
        _inverse_cdf(torch.tensor([0.0, 1.0]), q), torch.tensor([0.5, 0.625, 0.75, 1.0])
    )
    # three times the mass in the first half: its median is at 1/3
    torch.testing.assert_close(
        _inverse_cdf(torch.tensor([3.0, 1.0]), torch.tensor([0.5])), torch.tensor([1 / 3])
    )


def test_band_integral_counts_fractional_rows():
    d = torch.rand(2, 8, 8)
    edges = torch.tensor([[0.0, 0.25, 1.0], [0.0, 0.3125, 1.0]])  # 2 px; 2.5 px
    bands = _band_integral(d, edges)
    torch.testing.assert_close(bands[0, 0], d[0, :2].sum(0))
    torch.testing.assert_close(bands[1, 0], d[1, :2].sum(0) + 0.5 * d[1, 2])
    torch.testing.assert_close(bands.sum(1), d.sum(1))


def test_flat_image_gives_the_structured_geometry():
    img = torch.full((1, 3, 32, 32), 0.4)
    for n in (64, 60):  # a full grid and one with a partly empty last row
        s, ref = density_init(img, n), structured_init(img, n)
        torch.testing.assert_close(s[..., 0:5], ref[..., 0:5], atol=1e-6, rtol=0)
    assert abs(float(render(density_init(img, 64)[0], size=32).mean()) - 0.4) < 0.01


def test_gaussians_gather_where_the_detail_is(photo):
    img = torch.full((1, 3, 64, 64), 0.5)
    img[..., :, :32] = photo("astronaut", size=64)[:, :, :32]  # left half a photo, right half flat
    s = density_init(img, 256)[0]
    left = (s[:, 0] < 0.5).float().mean()
    assert left > 0.65, float(left)
    # smaller Gaussians on the detailed side
    assert s[s[:, 0] < 0.4, 2].mean() < 0.7 * s[s[:, 0] > 0.6, 2].mean()


@pytest.mark.parametrize("n, size", [(1, 8), (5, 4), (37, 32), (400, 64), (1000, 40)])
def test_output_contract_deterministic_and_batched(n, size, photo):
    imgs = torch.stack([photo(p, size=size) for p in ("chelsea", "coffee")])
    s = density_init(imgs, n)
    assert s.shape == (2, n, 8) and torch.isfinite(s).all()
    assert (s[..., 0:2] >= 0).all() and (s[..., 0:2] <= 1).all()
    assert (s[..., 2] >= 0.3 / size - 1e-7).all() and (s[..., 4] >= 0.3 / size - 1e-7).all()
    assert torch.equal(s, density_init(imgs, n))
    torch.testing.assert_close(density_init(imgs[1:], n)[0], s[1], atol=1e-5, rtol=1e-5)


def test_density_init_beats_structured_after_50_iterations(photo):
    """chelsea is a benchmark photo; the comparison is at equal fitting settings (warm-up included)."""
    img = photo("chelsea", size=64)[None]
    cfg = FitConfig(num_gaussians=256, iters=50, init="density")
    assert cfg.warmup_iters == LEARNED_WARMUP
    dens = fit_images(img, cfg)[0].psnr
    structured = fit_images(img, FitConfig(num_gaussians=256, iters=50, init="structured"))[0].psnr
    assert dens > structured + 0.5, (dens, structured)


def test_bad_mix():
    with pytest.raises(ValueError, match="mix"):
        density_init(torch.rand(1, 3, 16, 16), 16, mix=1.0)


# --- the learned network on the density grid ---------------------------------------------------------


def test_rect_means_are_exact_area_averages():
    x = torch.rand(2, 3, 16, 16)
    # a regular grid: adaptive average pooling
    e = torch.linspace(0, 1, 9)[None].repeat(2, 1)
    means = _rect_means(x, e, e[:, None].repeat(1, 8, 1))
    torch.testing.assert_close(means, F.adaptive_avg_pool2d(x, 8), atol=1e-5, rtol=0)
    # edges on quarter pixels: the image upsampled 4× (nearest) and summed over whole sub-pixels
    ye = torch.tensor([[0.0, 1.25, 7.5, 16.0]]) / 16
    xe = torch.tensor([[[0.0, 3.75, 16.0], [0.0, 0.25, 16.0], [0.0, 9.0, 16.0]]]) / 16
    fine = x[:1].repeat_interleave(4, -1).repeat_interleave(4, -2)
    got = _rect_means(x[:1], ye, xe)
    for i in range(3):
        y0, y1 = round(float(ye[0, i]) * 64), round(float(ye[0, i + 1]) * 64)
        for j in range(2):
            x0, x1 = round(float(xe[0, i, j]) * 64), round(float(xe[0, i, j + 1]) * 64)
            torch.testing.assert_close(got[0, :, i, j], fine[0, :, y0:y1, x0:x1].mean((-1, -2)))


def test_untrained_density_network_is_the_density_start(photo):
    imgs = torch.stack([photo("chelsea", size=48), photo("coffee", size=48)])
    net = SplatInitNet(width=8, cell_width=8, blocks=1, passes=2, base="density").eval()
    with torch.no_grad():
        s = net.splats(imgs, 100)
    ref = density_start(imgs, 100, density_grid(imgs, 100))
    torch.testing.assert_close(s, ref, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("n, size", [(1, 8), (37, 32), (400, 64)])
def test_density_network_contract_and_batch(n, size, photo, tmp_path):
    imgs = torch.stack([photo(p, size=size) for p in ("chelsea", "astronaut")])
    torch.manual_seed(0)
    net = SplatInitNet(width=8, cell_width=8, blocks=1, passes=2, base="density")
    for p in net.parameters():  # a network that moves every number
        torch.nn.init.normal_(p, std=0.2)
    path = save_learned_init(tmp_path / "d.safetensors", net)
    s = learned_init(imgs, n, weights=path)
    assert s.shape == (2, n, 8) and torch.isfinite(s).all()
    assert (s[..., 0:2] >= 0).all() and (s[..., 0:2] <= 1).all()
    assert (s[..., 2] >= MIN_SCALE_PX / size - 1e-7).all() and (s[..., 4] >= MIN_SCALE_PX / size - 1e-7).all()
    torch.testing.assert_close(learned_init(imgs[1:], n, weights=path)[0], s[1], atol=1e-5, rtol=1e-5)
    assert _read_weights(path).base == "density"


def test_weights_files_name_their_grid(tmp_path):
    from safetensors.torch import load_file, save_file

    net = SplatInitNet(width=8, cell_width=8, blocks=1)
    path = save_learned_init(tmp_path / "s.safetensors", net)
    tensors = load_file(str(path))
    v1 = {
        "arch": "gsv-cellnet-v1",
        "width": "8",
        "cell_width": "8",
        "blocks": "1",
        "reach": "0.5",
        "passes": "1",
    }
    save_file(tensors, str(tmp_path / "v1.safetensors"), metadata=v1)  # an older format: refused, by name
    with pytest.raises(LearnedInitError, match="format 'gsv-cellnet-v1'"):
        _read_weights(tmp_path / "v1.safetensors")
    assert _read_weights(path).base == "structured"  # the current format names its grid
    save_file(tensors, str(tmp_path / "v2.safetensors"), metadata={**v1, "arch": "gsv-cellnet-v2"})
    with pytest.raises(LearnedInitError, match="base"):
        _read_weights(tmp_path / "v2.safetensors")
    bad = {**v1, "arch": "gsv-cellnet-v2", "base": "hexagons"}
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=bad)
    with pytest.raises(LearnedInitError, match="hexagons"):
        _read_weights(tmp_path / "bad.safetensors")


def test_cli_fit_density(tmp_path, photo_path):
    from gs_encoder.cli import main

    out = tmp_path / "out"
    args = ["fit", str(photo_path()), "-o", str(out), "--init", "density", "--num-gaussians", "64"]
    assert main([*args, "--iters", "5", "--size", "32"]) == 0
    import json

    (sidecar,) = out.glob("*.json")
    rec = json.loads(sidecar.read_text())
    assert rec["init"] == "density" and rec["lr_warmup"] == LEARNED_WARMUP


def test_density_init_psnr_matches_its_render(photo):
    img = photo("coffee", size=32)[None]
    s = density_init(img, 64)
    assert float(psnr(render(s[0], size=32), img[0])) > float(
        psnr(render(structured_init(img, 64)[0], size=32), img[0])
    )


def test_train_on_the_density_grid_from_structured_weights(tmp_path):
    # the shipped recipe's last step: weights trained on the uniform grid fine-tuned on the density grid; the
    # result names its grid and resumes as such
    from gs_encoder.train_init import TrainInitConfig, train_init

    small = dict(batch_size=2, canvas=[32], width=8, cell_width=8, blocks=1, passes=2, log_every=1)
    first = train_init(TrainInitConfig(out_dir=str(tmp_path / "a"), steps=2, **small), progress=False)
    assert _read_weights(first).base == "structured"
    cfg = TrainInitConfig(
        out_dir=str(tmp_path / "b"), steps=3, base="density", from_weights=str(first), **small
    )
    final = train_init(cfg, progress=False)
    net = _read_weights(final)
    assert net.base == "density" and net.passes == 2
    s = learned_init(torch.rand(2, 3, 32, 32), 64, weights=final)
    assert s.shape == (2, 64, 8) and torch.isfinite(s).all()
    resumed = train_init(TrainInitConfig(**{**cfg.__dict__, "steps": 4}), progress=False)
    assert _read_weights(resumed).base == "density"
    with pytest.raises(ValueError, match="--base"):
        TrainInitConfig(base="hexagons")
