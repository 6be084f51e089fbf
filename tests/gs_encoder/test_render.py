"""The renderer of docs/format.md, Rendering: exactness against the dense definition, gradients, batching."""

import math

import pytest
import torch

from gs_encoder.fitting.render import build_plan, render, render_dense, render_flat, render_torch


def random_splats(n, dtype=torch.float64, seed=0, spread=1.3, scale=(0.02, 0.12)):
    g = torch.Generator().manual_seed(seed)
    s = torch.zeros(n, 8, dtype=dtype)
    s[:, 0:2] = torch.rand(n, 2, generator=g, dtype=dtype) * spread - (spread - 1) / 2  # some off-canvas
    s[:, 2] = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=g, dtype=dtype)
    s[:, 3] = (torch.rand(n, generator=g, dtype=dtype) - 0.5) * 2 * scale[1]  # negative l21 included
    s[:, 4] = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=g, dtype=dtype)
    s[:, 5:8] = torch.rand(n, 3, generator=g, dtype=dtype) * 1.4 - 0.2  # colours may leave [0, 1]
    return s


def test_matches_dense_definition_float64():
    s = random_splats(48)
    assert (s[:, 3] < 0).any() and ((s[:, 0] < 0) | (s[:, 0] > 1)).any()
    torch.testing.assert_close(render_torch(s, size=24), render_dense(s, 24), rtol=0, atol=1e-12)


def test_matches_dense_float32_at_224():
    s = random_splats(300, dtype=torch.float32, seed=1, scale=(0.005, 0.05))
    torch.testing.assert_close(render_torch(s, size=224), render_dense(s, 224), rtol=0, atol=2e-5)


def test_gradcheck_custom_backward():
    s = random_splats(16, seed=2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: render_torch(x, size=24), (s,), eps=1e-6, atol=1e-7)


def test_gradients_equal_autograd_through_dense():
    s = random_splats(20, seed=3)
    cot = torch.randn(3, 20, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = s.clone().requires_grad_(True)
    b = s.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad((render_torch(a, size=20) * cot).sum(), a)
    (gb,) = torch.autograd.grad((render_dense(b, 20) * cot).sum(), b)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


def test_single_gaussian_peak_and_support():
    # one isotropic Gaussian centred on pixel (5, 5) of a 11² canvas, σ = 2 px
    s = torch.tensor([[5.5 / 11, 5.5 / 11, 2 / 11, 0.0, 2 / 11, 1.0, 0.5, 0.25]], dtype=torch.float64)
    img = render_torch(s, size=11)
    cut = math.exp(-4.5)
    torch.testing.assert_close(img[:, 5, 5], torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64) * (1 - cut))
    # 5 px = 2.5σ away: w = e^{-25/8} − e^{-4.5}; the corner (7.07 px > 3σ) is outside the support
    torch.testing.assert_close(img[0, 5, 10], torch.tensor(math.exp(-25 / 8) - cut, dtype=torch.float64))
    assert img[0, 0, 0] == 0


def test_huge_and_offcanvas_gaussians():
    s = torch.tensor(
        [
            [0.5, 0.5, 3.0, 0.5, 2.0, 0.3, 0.3, 0.3],  # far larger than the canvas
            [-0.5, 0.5, 0.01, 0.0, 0.01, 1.0, 1.0, 1.0],  # entirely off the canvas
            [1.02, 0.3, 0.05, -0.03, 0.04, 0.9, 0.1, 0.4],  # centre off the canvas, support on it
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(render_torch(s, size=16), render_dense(s, 16), rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [1, 7, 64])
def test_any_resolution(size):
    s = random_splats(10, seed=4)
    torch.testing.assert_close(render_torch(s, size=size), render_dense(s, size), rtol=0, atol=1e-12)


def test_batch_with_mask_equals_single_renders():
    a, b = random_splats(12, seed=5), random_splats(7, seed=6)
    batch = torch.zeros(2, 12, 8, dtype=torch.float64)
    batch[0], batch[1, :7] = a, b
    batch[1, 7:] = 99.0  # garbage in padded rows must be ignored
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0], mask[1, :7] = True, True
    out = render_torch(batch, mask, size=16)
    torch.testing.assert_close(out[0], render_torch(a, size=16), rtol=0, atol=1e-14)
    torch.testing.assert_close(out[1], render_torch(b, size=16), rtol=0, atol=1e-14)


def test_reused_plan_and_margin_do_not_change_the_image():
    s = random_splats(30, seed=7)
    size = 32
    xy, chol, rgb = s[:, 0:2] * size, s[:, 2:5] * size, s[:, 5:8]
    ids = torch.zeros(30, dtype=torch.long)
    ref, plan = render_flat(xy, chol, rgb, ids, 1, size)
    wide = build_plan(xy, chol, ids, 1, size, margin=3.0)
    img_wide, plan2 = render_flat(xy, chol, rgb, ids, 1, size, plan=wide)
    assert plan2 is wide  # still covers: reused
    torch.testing.assert_close(img_wide, ref, rtol=0, atol=1e-13)
    moved = xy + 2.5  # beyond a zero margin: the stale plan must be rebuilt, not trusted
    assert not plan.covers(moved, chol)
    img_moved, _ = render_flat(moved, chol, rgb, ids, 1, size, plan=plan)
    shifted = s.clone()
    shifted[:, 0:2] += 2.5 / size
    torch.testing.assert_close(img_moved[0].permute(2, 0, 1), render_dense(shifted, size), rtol=0, atol=1e-12)


def test_clamp_and_bad_inputs():
    s = random_splats(5, seed=8)
    s[:, 5:8] = 5.0
    assert render(s, size=8, clamp=True).max() <= 1.0
    with pytest.raises(ValueError, match=r"\[N, 8\]"):
        render(torch.zeros(4, 7))
    with pytest.raises(ValueError, match="mask"):
        render(torch.zeros(2, 4, 8), mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="backend"):
        render(s, backend="vulkan")
    with pytest.raises(TypeError):
        render(s.numpy())
