"""The compiled CPU op equals the pure-torch renderer: image and every gradient, fp64 and fp32."""

import pytest
import torch

import cuda_ext
from gs_encoder.fitting.render import render_flat

from ..gs_encoder.test_render import random_splats

pytestmark = pytest.mark.skipif(
    not cuda_ext.available(), reason=f"cuda_ext CPU op not built: {cuda_ext.load_error()}"
)


def inputs(n, size, dtype, seed, images=2):
    s = random_splats(n, dtype=dtype, seed=seed, scale=(0.01, 0.15))
    ids = torch.arange(n) % images
    return s[:, 0:2] * size, s[:, 2:5] * size, s[:, 5:8].clone(), ids


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("size", [17, 64])
def test_render_cpu_matches_torch(dtype, tol, size):
    from cuda_ext.ops import render_cpu

    xy, chol, rgb, ids = inputs(60, size, dtype, seed=size)
    a = [t.clone().requires_grad_(True) for t in (xy, chol, rgb)]
    b = [t.clone().requires_grad_(True) for t in (xy, chol, rgb)]
    img_c = render_cpu(*a, ids, 2, size)
    img_t, _ = render_flat(*b, ids, 2, size)
    torch.testing.assert_close(img_c, img_t, rtol=0, atol=tol)
    cot = torch.randn(img_t.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    ga = torch.autograd.grad((img_c * cot).sum(), a)
    gb = torch.autograd.grad((img_t * cot).sum(), b)
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4 if dtype == torch.float32 else 1e-8, atol=tol * 10)


def test_gradcheck_cpu_op():
    from cuda_ext.ops import render_cpu

    xy, chol, rgb, ids = inputs(12, 20, torch.float64, seed=5, images=1)
    args = [t.requires_grad_(True) for t in (xy, chol, rgb)]
    assert torch.autograd.gradcheck(
        lambda x, c, r: render_cpu(x, c, r, ids, 1, 20), args, eps=1e-6, atol=1e-7
    )


def test_bad_arguments():
    from cuda_ext.ops import render_cpu

    xy, chol, rgb, ids = inputs(4, 8, torch.float32, seed=0, images=1)
    with pytest.raises(ValueError, match="chol"):
        render_cpu(xy, chol[:, :2], rgb, ids, 1, 8)
    with pytest.raises(TypeError, match="float32/float64"):
        render_cpu(xy.half(), chol, rgb, ids, 1, 8)
    with pytest.raises(ValueError, match="num_images"):
        render_cpu(xy, chol, rgb, ids + 3, 1, 8)
