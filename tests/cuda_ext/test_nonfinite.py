"""NaN/Inf splat parameters have one behaviour on every backend: a ValueError at the API boundary
(gs_encoder.render, cuda_ext's ops) naming the tensor and the first bad row, before anything renders.
Below that boundary the two compiled backends agree too: a Gaussian with a NaN centre or scale gets an
empty pixel box, so it adds nothing (the CPU op used to reach that through an undefined cast)."""

import pytest
import torch

import cuda_ext
from cuda_ext import _backend, ops
from gs_encoder import render
from gs_encoder.fitting.fit_ops import cuda_ops

from ..gs_encoder.test_render import random_splats

BACKENDS = [
    "torch",
    pytest.param("cpp", marks=pytest.mark.skipif(not cuda_ext.available(), reason="no CPU op")),
]


def bad_splats(value: float) -> torch.Tensor:
    s = random_splats(6, dtype=torch.float32, seed=0, scale=(0.05, 0.2))
    s[4, 1] = value
    return s


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("backend", [*BACKENDS, "cuda-emu"])
def test_render_rejects_non_finite_splats_on_every_backend(backend, value):
    with pytest.raises(ValueError, match=r"render: splats holds 1 NaN/Inf values \(first in row \[4\]\)"):
        render(bad_splats(value), size=16, backend=backend)
    batch = torch.stack([bad_splats(0.5), bad_splats(value)])
    with pytest.raises(ValueError, match=r"first in row \[1, 4\]"):
        render(batch, size=16, backend=backend)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4] = False  # a dead row may hold anything: it is never read
    assert torch.isfinite(render(batch, mask, size=16, backend=backend)).all()


def test_kernel_ops_reject_non_finite_input(kernels):
    dev = kernels.device
    params = torch.cat([bad_splats(float("nan"))[:, 0:5] * 16, bad_splats(float("nan"))[:, 5:8]], 1)[None].to(
        dev
    )
    alive = torch.ones(1, 6, dtype=torch.bool, device=dev)
    with pytest.raises(
        ValueError, match=r"render_cuda: params holds 1 NaN/Inf values \(first in row \[0, 4\]\)"
    ):
        kernels.render(params, alive, 16)
    with pytest.raises(ValueError, match="prune_mask: params holds 1 NaN/Inf"):
        kernels.prune_mask(params, alive, 0.1)
    good = torch.nan_to_num(params, nan=4.0)
    target = torch.zeros(1, 16, 16, 3, device=dev)
    kw = {
        "it0": 0,
        "num_steps": 1,
        "iters_total": 1,
        "lr": (0.1, 0.1, 0.1),
        "lr_final": 1.0,
        "lambda_l1": 0.0,
    }
    active = torch.ones(1, dtype=torch.bool, device=dev)
    with pytest.raises(ValueError, match="fit_steps: params holds 1 NaN/Inf"):
        kernels.fit_steps(params, good * 0, good * 0, alive, active, target, min_scale=0.3, **kw)
    target[0, 3, 5, 1] = float("inf")
    with pytest.raises(
        ValueError, match=r"fit_steps: target holds 1 NaN/Inf values \(first in row \[0, 53\]\)"
    ):
        kernels.fit_steps(good, good * 0, good * 0, alive, active, target, min_scale=0.3, **kw)
    with pytest.raises(ValueError, match="render_cpu: xy holds 1 NaN/Inf"):
        ops.render_cpu(params[0, :, 0:2].cpu(), params[0, :, 2:5].cpu(), params[0, :, 5:8].cpu(),
                       torch.zeros(6, dtype=torch.long), 1, 16)  # fmt: skip
    with pytest.raises(
        ValueError, match="render_cuda: params holds 1 NaN/Inf"
    ):  # the batched fitter's ops too
        cuda_ops(emulate=kernels.emulate).render(params, alive, 16)


@pytest.mark.skipif(not cuda_ext.available(), reason=f"CPU op not built: {cuda_ext.load_error()}")
@pytest.mark.parametrize("column", [0, 1, 2, 4])  # x, y, l11, l22
def test_below_the_boundary_a_nan_gaussian_adds_nothing_on_both_compiled_backends(kernels, column):
    size = 16
    s = random_splats(6, dtype=torch.float32, seed=1, scale=(0.05, 0.2))
    rows = torch.cat([s[:, 0:5] * size, s[:, 5:8]], 1)
    without = torch.cat([rows[:4], rows[5:]])
    rows[4, column] = float("nan")
    mod = _backend.cpu_module()
    ids = torch.zeros(6, dtype=torch.long)
    cpu = mod.render_cpu_fwd(
        rows[:, 0:2].contiguous(), rows[:, 2:5].contiguous(), rows[:, 5:8].contiguous(), ids, 1, size
    )
    ref = mod.render_cpu_fwd(without[:, 0:2].contiguous(), without[:, 2:5].contiguous(),
                             without[:, 5:8].contiguous(), ids[:5], 1, size)  # fmt: skip
    alive = torch.ones(1, 6, dtype=torch.bool, device=kernels.device)
    dev = kernels.module().render_fwd(rows[None].to(kernels.device), alive, size, 64).cpu()
    torch.testing.assert_close(cpu, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(dev, ref, rtol=0, atol=1e-6)
