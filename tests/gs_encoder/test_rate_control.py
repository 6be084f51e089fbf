"""Rate control: N chosen per image for a PSNR or a .gsq size, and its bad settings."""

import json
import math
import random

import pytest
import torch

from gs_encoder import FitConfig, fit_images
from gs_encoder.cli import main
from gs_encoder.fitting.rate_control import TOLERANCE_DB, _smallest, gsq_bytes

FAST = {"iters": 60, "check_every": 20}


@pytest.fixture(scope="module")
def pictures(photo):
    flat = torch.zeros(3, 48, 48)
    flat[0], flat[1], flat[2] = 0.8, 0.5, 0.2
    flat[:, 24:] *= 0.5  # two flat halves: a few Gaussians suffice
    return torch.stack([photo("chelsea", size=48), flat])


def test_each_image_gets_the_fewest_gaussians_that_reach_the_target(pictures):
    target = 27.0
    photo, flat = fit_images(pictures, FitConfig(max_gaussians=600, target_psnr=target, **FAST))
    for r in (photo, flat):
        assert r.target_reached and r.psnr >= target and r.num_gaussians <= r.num_initial <= 600
    assert photo.psnr <= target + TOLERANCE_DB + 0.1  # within the tolerance (a Gaussian changes little here)
    assert flat.num_gaussians <= 8 and photo.num_gaussians > 4 * flat.num_gaussians
    # fewer Gaussians than chosen miss the target: a fixed-N fit at 80% of the photo's N stays below it
    (fewer,) = fit_images(pictures[:1], FitConfig(num_gaussians=int(0.8 * photo.num_gaussians), **FAST))
    assert fewer.psnr < target


def test_an_unreachable_target_stops_at_the_cap_and_says_so(pictures):
    (r,) = fit_images(pictures[:1], FitConfig(max_gaussians=20, target_psnr=45.0, **FAST))
    assert r.target_reached is False and r.num_gaussians <= 20 and r.psnr < 45.0
    # a cap above the canvas's pixel count: at most one Gaussian a pixel
    noise = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    (r,) = fit_images(noise, FitConfig(max_gaussians=3136, target_psnr=40.0, **FAST))
    assert r.num_gaussians <= 144 and r.target_reached == (r.psnr >= 40.0)


def test_a_byte_budget(pictures):
    small, large = 300, 1200
    for budget in (small, large):
        photo, flat = fit_images(pictures, FitConfig(max_gaussians=800, target_bytes=budget, **FAST))
        assert photo.target_reached and gsq_bytes(photo.splats, pictures[0]) <= budget
        if budget == small:
            few = photo.num_gaussians
    assert photo.num_gaussians > few


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_gaussians must be an int ≥ 1"):
        FitConfig(max_gaussians=0, target_psnr=30.0)
    with pytest.raises(ValueError, match="fp16"):
        FitConfig(max_gaussians=100, target_psnr=90.0)
    with pytest.raises(ValueError, match="needs one target"):
        FitConfig(max_gaussians=100)
    with pytest.raises(ValueError, match="needs one target"):
        FitConfig(max_gaussians=100, target_psnr=30.0, target_bytes=1000)
    with pytest.raises(ValueError, match="target_bytes needs max_gaussians"):
        FitConfig(target_bytes=1000)
    with pytest.raises(ValueError, match="does not combine"):
        FitConfig(max_gaussians=100, target_psnr=30.0, tau=0.01)


def test_the_cut_search_finds_the_smallest_count_in_few_probes():
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(1, 4000)
        t = rng.randint(1, n)
        probes = []

        def ok(c, t=t, n=n, probes=probes):
            assert 1 <= c <= n
            probes.append(c)
            return c >= t

        lo, hi = _smallest(n, ok, int(t * rng.uniform(0.8, 1.25)))
        assert t <= hi <= max(math.ceil(t * 1.03), t + 1) and lo < t  # hi within 3% above; lo verified short
        assert len(probes) <= 8
    # where the value climbs steeply with the count, the search goes on until the value is close enough
    value = lambda c: 30.0 + 40.0 * c / 1000  # noqa: E731 (0.04 dB a Gaussian)
    lo, hi = _smallest(1000, lambda c: value(c) >= 54.0, 640, settled=lambda c: value(c) <= 54.15)
    assert 600 <= hi <= 603  # 54 dB at 600 Gaussians, 54.15 at 603.75; 3% alone would allow 618


def test_gsv_fit_records_the_target(tmp_path, photo_path, capsys):
    out = tmp_path / "out"
    args = ["fit", str(photo_path("coffee.png")), "-o", str(out), "--size", "48", "--iters", "60"]
    assert main([*args, "--max-gaussians", "400", "--target-psnr", "26"]) == 0
    meta = json.loads((out / "coffee.json").read_text())
    assert meta["target_psnr"] == 26.0 and meta["max_gaussians"] == 400 and meta["target_reached"] is True
    assert meta["num_gaussians"] <= meta["num_gaussians_initial"] <= 400
    capsys.readouterr()
    assert main([*args, "--max-gaussians", "0", "--target-psnr", "26"]) == 2
    assert "max_gaussians must be an int ≥ 1" in capsys.readouterr().err
    assert main([*args, "--max-gaussians", "100", "--num-gaussians", "50", "--target-psnr", "26"]) == 2
    assert "give one" in capsys.readouterr().err
