"""The CUDA render kernels equal the CPU path (docs/format.md): image and every gradient, at 224² with
N = 3136 at the structured init and after a 200-iteration fit, at odd sizes, with padding, off-canvas
and huge Gaussians, and whatever the tile lists hold. Each test runs on the GPU (`kernels` "cuda",
`pytest -m cuda`) and on the CPU through the kernels' emulation ("emu", every run)."""

import pytest
import torch

import cuda_ext
from gs_encoder import FitConfig, fit_images, render, structured_init
from gs_encoder.fitting.render import render_flat

from ..gs_encoder.test_render import random_splats

# the reference: the compiled CPU op, which decides the 3σ edge on the same q bits as the kernels
CPU_RENDER = "cpp" if cuda_ext.available() else "torch"


def to_px(splats: torch.Tensor, size: int) -> torch.Tensor:
    """Canvas-unit rows [..., 8] → pixel units (x, y, l11, l21, l22 scaled by S)."""
    return torch.cat([splats[..., 0:5] * size, splats[..., 5:8]], dim=-1)


def render_cpu_with_grad(rows_px, image_ids, num_images, size, cot):
    """CPU reference: image [B, S, S, 3] and d(Σ image·cot)/d rows [Nt, 8]."""
    rows = rows_px.detach().cpu().clone().requires_grad_(True)
    image, _ = render_flat(rows[:, 0:2], rows[:, 2:5], rows[:, 5:8], image_ids.cpu(), num_images, size,
                           backend=CPU_RENDER)  # fmt: skip
    (grad,) = torch.autograd.grad((image * cot.cpu()).sum(), rows)
    return image.detach(), grad


def render_gpu_with_grad(kernels, params_px, mask, size, cot, **kw):
    """The kernels: image [B, S, S, 3] and d(Σ image·cot)/d params [B, N, 8] (on the CPU)."""
    dev = kernels.device
    p = params_px.detach().to(dev).clone().requires_grad_(True)
    image = kernels.render(p, mask.to(dev), size, **kw)
    (grad,) = torch.autograd.grad((image * cot.to(dev)).sum(), p)
    return image.detach().cpu(), grad.cpu()


def assert_grads_close(got, ref, floor=2e-5):
    """rtol 1e-4 on every entry of [N, 8], with an absolute floor of `floor` × each column group's largest
    entry: a near-zero entry is a cancelling sum, and float32 sums taken in another order differ there
    by ~1e-7 of the terms' size, more after the chain rule into L. The floors: 5× the largest such
    difference measured with the kernels' source run on the CPU (3.8e-6 at 224², fitted state); 1e-4 for
    needle-like Gaussians (l21 ≫ l11, l22), where both float32 paths are only that close to float64."""
    for cols in (slice(0, 2), slice(2, 5), slice(5, 8)):
        scale = float(ref[:, cols].abs().max())
        torch.testing.assert_close(got[:, cols], ref[:, cols], rtol=1e-4, atol=floor * scale)


@pytest.fixture(scope="module")
def astronaut_224(photo):
    """The astronaut at 224² with N = 3136 at init and after 200 CPU iterations (anisotropic, grown)."""
    img = photo("astronaut", size=224)
    init = structured_init(img[None], 3136)[0]
    (fitted,) = fit_images(img[None], FitConfig(num_gaussians=3136, iters=200, backend=CPU_RENDER))
    return {"init": init, "fitted": fitted.splats}


@pytest.mark.parametrize("state", ["init", "fitted"])
def test_render_matches_cpu_at_224(kernels, astronaut_224, state):
    size = 224
    rows = to_px(astronaut_224[state], size)
    n = rows.shape[0]
    cot = torch.randn(1, size, size, 3, generator=torch.Generator().manual_seed(0))
    img_ref, g_ref = render_cpu_with_grad(rows, torch.zeros(n, dtype=torch.long), 1, size, cot)
    img, g = render_gpu_with_grad(kernels, rows[None], torch.ones(1, n, dtype=torch.bool), size, cot)
    torch.testing.assert_close(img, img_ref, rtol=0, atol=1e-5)
    assert_grads_close(g[0], g_ref)
    if state == "fitted":
        # sheared Gaussians, so that every term of d/dl21 (zero where l21 = 0, as at the grid) is checked
        assert float(rows[:, 3].abs().median()) > 0.05 and float(rows[:, 3].abs().max()) > 1.0
        assert float(g_ref[:, 3].abs().max()) > 0.1 * float(g_ref[:, 2].abs().max())
    if kernels.emulate and CPU_RENDER == "cpp" and torch.get_num_threads() == 1:
        # the same float operations in the same order as the CPU op (one thread: index order)
        assert torch.equal(img, img_ref)


@pytest.mark.parametrize("size", [1, 7, 17, 100])
def test_any_size_padding_and_odd_gaussians(kernels, size):
    a = random_splats(40, dtype=torch.float32, seed=size, scale=(0.01, 0.2))  # some off the canvas
    b = random_splats(23, dtype=torch.float32, seed=size + 1, scale=(0.01, 0.2))
    b[0] = torch.tensor([0.5, 0.5, 3.0, 0.5, 2.0, 0.3, 0.3, 0.3])  # far larger than the canvas
    b[1] = torch.tensor([-0.5, 0.5, 0.01, 0.0, 0.01, 1.0, 1.0, 1.0])  # entirely off the canvas
    params = torch.full((2, 40, 8), 99.0)  # garbage in padded rows must never be read
    params[0], params[1, :23] = to_px(a, size), to_px(b, size)
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[0], mask[1, :23] = True, True
    cot = torch.randn(2, size, size, 3, generator=torch.Generator().manual_seed(1))
    b_idx, g_idx = mask.nonzero(as_tuple=True)
    img_ref, g_ref = render_cpu_with_grad(params[b_idx, g_idx], b_idx, 2, size, cot)
    img, g = render_gpu_with_grad(kernels, params, mask, size, cot)
    torch.testing.assert_close(img, img_ref, rtol=0, atol=1e-5)
    assert_grads_close(g[b_idx, g_idx], g_ref, floor=1e-4)
    assert not g[~mask].any()  # padded rows get zero gradient


def test_tile_lists_never_change_the_result(kernels):
    # 600 Gaussians piled on one corner: with tile_cap 4 every tile there overflows its list and the
    # forward scans all N boxes instead; the summation order, and so every bit, stays the same
    g = torch.Generator().manual_seed(2)
    params = torch.zeros(2, 600, 8)
    params[..., 0:2] = torch.rand(2, 600, 2, generator=g) * 12
    params[..., 2] = params[..., 4] = 1.0 + 3 * torch.rand(2, 600, generator=g)
    params[..., 3] = torch.randn(2, 600, generator=g)
    params[..., 5:8] = torch.rand(2, 600, 3, generator=g)
    mask = torch.ones(2, 600, dtype=torch.bool)
    p, m = params.to(kernels.device), mask.to(kernels.device)
    full = kernels.render(p, m, 48, tile_cap=600)
    assert torch.equal(kernels.render(p, m, 48, tile_cap=4), full)
    assert torch.equal(kernels.render(p, m, 48), full)  # the default cap
    assert torch.equal(kernels.render(p, m, 48), full)  # and run to run


def test_crowded_tiles_at_block_edges(kernels):
    # 192² is 12 × 12 = 144 tiles, two blocks of the binning kernel (128 tiles each): crowded tiles at the
    # last thread of block 0 (tile 127), the first of block 1 (128) and the last tile of the image (143),
    # with neighbours that hold Gaussians of their own. A list that overflows its cap must neither spill
    # into the next tile's list nor past the buffer; the result is the same whatever the cap.
    size, per_tile = 192, 40
    g = torch.Generator().manual_seed(4)
    rows = []
    for tile in (126, 127, 128, 129, 142, 143):
        x0, y0 = (tile % 12) * 16, (tile // 12) * 16
        n = per_tile if tile in (127, 128, 143) else 3
        r = torch.zeros(n, 8)
        r[:, 0] = x0 + 4 + 8 * torch.rand(n, generator=g)
        r[:, 1] = y0 + 4 + 8 * torch.rand(n, generator=g)
        r[:, 2] = r[:, 4] = 0.6 + 0.6 * torch.rand(n, generator=g)  # 3σ boxes stay inside the tile
        r[:, 3] = 0.2 * torch.randn(n, generator=g)
        r[:, 5:8] = torch.rand(n, 3, generator=g)
        rows.append(r)
    one = torch.cat(rows)
    params = torch.stack([one, one.flip(0)])  # the second image lists them in another order
    mask = torch.ones(params.shape[:2], dtype=torch.bool)
    p, m = params.to(kernels.device), mask.to(kernels.device)
    full = kernels.render(p, m, size, tile_cap=params.shape[1])
    for cap in (8, per_tile - 1, per_tile):
        assert torch.equal(kernels.render(p, m, size, tile_cap=cap), full), cap
    b_idx, g_idx = mask.nonzero(as_tuple=True)
    ref, _ = render_flat(params[b_idx, g_idx][:, 0:2], params[b_idx, g_idx][:, 2:5], params[b_idx, g_idx][:, 5:8],
                         b_idx, 2, size, backend=CPU_RENDER)  # fmt: skip
    torch.testing.assert_close(full.cpu(), ref, rtol=0, atol=1e-5)


def test_empty_batches_and_sets(kernels):
    dev = kernels.device
    assert kernels.render(torch.zeros(0, 5, 8, device=dev), None, 16).shape == (0, 16, 16, 3)
    empty = kernels.render(torch.zeros(2, 0, 8, device=dev), None, 16)
    assert empty.shape == (2, 16, 16, 3) and not empty.any()
    p = torch.zeros(2, 0, 8, device=dev, requires_grad=True)
    (grad,) = torch.autograd.grad(kernels.render(p, None, 16).sum(), p)
    assert grad.shape == (2, 0, 8)


def test_public_render_uses_the_kernels(kernels):
    s = random_splats(30, dtype=torch.float32, seed=3, scale=(0.02, 0.1))
    batch = torch.zeros(2, 30, 8)
    batch[0], batch[1, :20] = s, s[:20]
    mask = torch.zeros(2, 30, dtype=torch.bool)
    mask[0], mask[1, :20] = True, True
    dev, be = kernels.device, kernels.backend
    ref = render(batch, mask, size=40, backend=CPU_RENDER)
    if not kernels.emulate:  # "auto" picks the kernels for CUDA tensors (never the emulation)
        got = render(batch.to(dev), mask.to(dev), size=40)
        torch.testing.assert_close(got.cpu(), ref, rtol=0, atol=1e-5)
    got = render(batch.to(dev), mask.to(dev), size=40, backend=be)
    torch.testing.assert_close(got.cpu(), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(render(s.to(dev), size=40, backend=be).cpu(), ref[0], rtol=0, atol=1e-5)
    # the flat layout pads per image on the way in; gradients flow back through the padding
    xy = (s[:, 0:2] * 40).to(dev).requires_grad_(True)
    ids = (torch.arange(30) % 2).to(dev)
    img, _ = render_flat(xy, (s[:, 2:5] * 40).to(dev), s[:, 5:8].to(dev), ids, 2, 40, backend=be)
    xy_ref = (s[:, 0:2] * 40).requires_grad_(True)
    img_ref, _ = render_flat(xy_ref, s[:, 2:5] * 40, s[:, 5:8], ids.cpu(), 2, 40, backend=CPU_RENDER)
    torch.testing.assert_close(img.detach().cpu(), img_ref.detach(), rtol=0, atol=1e-5)
    (gx,) = torch.autograd.grad(img.sum(), xy)
    (gx_ref,) = torch.autograd.grad(img_ref.sum(), xy_ref)
    assert_grads_close(
        torch.cat([gx.cpu(), torch.zeros(30, 6)], 1), torch.cat([gx_ref, torch.zeros(30, 6)], 1), floor=1e-4
    )
