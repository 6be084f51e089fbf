"""How gs_encoder reaches the CUDA kernels, checked on CPU: backend choice (CUDA tensors → kernels; no
kernels → one warning and the pure-torch path) and the batched fitter's driver, run with the kernels'
pure-torch twins, which must reproduce the flat fitting loop exactly."""

import logging
import math
import time

import pytest
import torch

import cuda_ext
from gs_encoder import FitConfig, fit_images, prune, render, structured_init
from gs_encoder.fitting import backend as backend_mod
from gs_encoder.fitting import fit as fit_mod
from gs_encoder.fitting import fit_batched
from gs_encoder.fitting.backend import resolve_backend
from gs_encoder.fitting.fit_batched import fit_sets, fit_steps_torch, prune_mask_torch, torch_ops

CUDA = torch.device("cuda")  # a device object only: nothing here allocates on it
CPU_RENDER = "cpp" if cuda_ext.available() else "torch"


@pytest.fixture
def fresh_announcements(monkeypatch):
    monkeypatch.setattr(backend_mod, "_announced", set())


def test_auto_without_kernels_warns_once_and_uses_torch(monkeypatch, caplog, fresh_announcements):
    monkeypatch.setattr(cuda_ext, "cuda_load_error", lambda: "gsv_cuda_ops is not built (test)")
    with caplog.at_level(logging.INFO, logger=backend_mod.__name__):
        assert resolve_backend("auto", CUDA) == "torch"
        assert resolve_backend("auto", CUDA) == "torch"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "not built (test)" in msg and "pure-torch" in msg and "scripts/build_ext.sh" in msg


def test_auto_picks_the_kernels_for_cuda_tensors(monkeypatch, fresh_announcements):
    monkeypatch.setattr(cuda_ext, "cuda_load_error", lambda: None)
    assert resolve_backend("auto", CUDA) == "cuda"
    assert resolve_backend("auto", CUDA, torch.float64) == "torch"  # the kernels are float32 only
    assert resolve_backend("auto", torch.device("cpu")) == CPU_RENDER


def test_explicit_cuda_backend_errors(monkeypatch):
    with pytest.raises(ValueError, match="backend 'cuda' runs on a CUDA device, got tensors on cpu"):
        resolve_backend("cuda", torch.device("cpu"))
    with pytest.raises(TypeError, match="float32"):
        resolve_backend("cuda", CUDA, torch.float64)
    with pytest.raises(ValueError, match="backend 'cuda' runs on a CUDA device"):
        render(torch.rand(3, 8), size=8, backend="cuda")
    with pytest.raises(ValueError, match="backend 'cuda' runs on a CUDA device"):
        fit_images(torch.rand(1, 3, 8, 8), FitConfig(num_gaussians=4, iters=1, backend="cuda"))

    def missing():
        raise ImportError("gsv_cuda_ops is not built (test)")

    monkeypatch.setattr(cuda_ext._backend, "cuda_module", missing)
    with pytest.raises(ImportError, match="not built"):
        resolve_backend("cuda", CUDA)


def _images(photo, size=24):
    return torch.stack([photo("chelsea", size), photo("coffee", size), photo("rocket", size)])


def _fit_both(images, cfg, initial=None):
    """(flat loop, batched driver on the twins) for the same job."""
    sets = initial if initial is not None else list(structured_init(images, cfg.num_gaussians))
    flat = fit_images(images, cfg, initial=sets)  # both from the same start (the default init is learned)
    targets = images.permute(0, 2, 3, 1).contiguous()
    batched = fit_sets(sets, targets, cfg, torch_ops(CPU_RENDER), False, time.perf_counter())
    return flat, batched


def _assert_same(flat, batched):
    for a, b in zip(flat, batched, strict=True):
        assert a.splats.shape == b.splats.shape and a.iters == b.iters and a.num_initial == b.num_initial
        torch.testing.assert_close(b.splats, a.splats, rtol=1e-4, atol=1e-5)  # measured: bit-equal with cpp
        assert abs(a.psnr - b.psnr) < 1e-3 and abs(a.psnr_unpruned - b.psnr_unpruned) < 1e-3
        assert [it for it, _ in a.history] == [it for it, _ in b.history]


@pytest.mark.parametrize(
    "cfg",
    [
        FitConfig(num_gaussians=36, iters=30, check_every=7),
        FitConfig(num_gaussians=36, iters=40, lambda_l1=0.05, tau=0.05, finetune_iters=10, check_every=9),
        FitConfig(num_gaussians=36, iters=40, lambda_l1=0.05, tau=0.05, prune_at=13, finetune_iters=5),
    ],
    ids=["plain", "prune-after", "prune-mid-fit"],
)
def test_batched_driver_equals_the_flat_loop(photo, cfg):
    cfg = FitConfig(**{**cfg.__dict__, "backend": CPU_RENDER})
    images = _images(photo)
    sets = list(structured_init(images, 36))
    sets[1] = sets[1][:29]  # unequal sizes: padded rows must not count
    flat, batched = _fit_both(images, cfg, initial=sets)
    _assert_same(flat, batched)
    if cfg.tau is not None:
        assert sum(r.num_gaussians for r in flat) < sum(r.num_initial for r in flat)  # pruning did act


def test_batched_driver_early_stop(photo):
    flat_grey = torch.full((3, 24, 24), 0.4)
    images = torch.stack([flat_grey, photo("astronaut", 24), flat_grey * 1.5])
    cfg = FitConfig(num_gaussians=16, iters=120, target_psnr=31.0, check_every=10, backend=CPU_RENDER)
    flat, batched = _fit_both(images, cfg)
    _assert_same(flat, batched)
    assert 0 < flat[0].iters < 120 and flat[1].iters == 120  # the grey images stop, the photo runs on


def test_fit_images_hands_cuda_jobs_to_the_batched_fitter(photo, monkeypatch):
    images = _images(photo)
    cfg = FitConfig(
        num_gaussians=25, iters=20, lambda_l1=0.02, tau=0.02, finetune_iters=4, backend=CPU_RENDER
    )
    flat = fit_images(images, cfg)
    calls = []

    def fake_cuda_ops(emulate=False):  # the kernels' twins stand in for the kernels
        calls.append(True)
        return torch_ops(CPU_RENDER)

    monkeypatch.setattr(fit_mod, "resolve_backend", lambda backend, device, dtype=None: "cuda")
    monkeypatch.setattr(fit_batched, "cuda_ops", fake_cuda_ops)
    batched = fit_images(images, cfg)
    assert calls == [True]
    _assert_same(flat, batched)


def test_fit_steps_torch_freezes_inactive_images_but_constrains_them():
    g = torch.Generator().manual_seed(0)
    params = torch.rand(2, 5, 8, generator=g) * 6 + 1
    params[1, :, 2] = -0.1  # l11 < 0 and below min_scale: the constraint flips and clamps it
    params[0, 4] = 99.0  # a dead row: never read, never written
    alive = torch.ones(2, 5, dtype=torch.bool)
    alive[0, 4] = False
    active = torch.tensor([True, False])
    m, v = torch.zeros_like(params), torch.zeros_like(params)
    before = params.clone()
    target = torch.rand(2, 8, 8, 3, generator=g)
    fit_steps_torch(
        params, m, v, alive, active, target, it0=0, num_steps=3, iters_total=10, lr=(0.1, 0.04, 0.02),
        lr_final=0.05, lambda_l1=0.01, min_scale=0.3, backend="torch",
    )  # fmt: skip
    assert torch.equal(params[0, 4], before[0, 4]) and not m[0, 4].any()
    assert not torch.equal(params[0, :4], before[0, :4]) and m[0, :4].abs().sum() > 0
    frozen = before[1].clone()
    frozen[:, 2:4] = -frozen[:, 2:4]
    frozen[:, 2] = frozen[:, 2].clamp(min=0.3)
    torch.testing.assert_close(params[1], frozen, rtol=0, atol=0)
    assert not m[1].any() and not v[1].any()


def test_prune_mask_twin_equals_prune(photo):
    res = fit_images(photo("coffee", 24)[None], FitConfig(num_gaussians=49, iters=30, lambda_l1=0.05))
    s = res[0].splats
    params = torch.stack([s, s.flip(0)])
    alive = torch.ones(2, 49, dtype=torch.bool)
    alive[1, :9] = False
    keep = prune_mask_torch(params, alive, 0.05)
    assert torch.equal(params[0][keep[0]], prune(s, 0.05))
    assert torch.equal(params[1][keep[1]], prune(s.flip(0)[9:], 0.05))
    assert keep[1, :9].sum() == 0
    nothing = prune_mask_torch(params, alive, math.inf)  # all below tau: the brightest stays
    assert nothing.sum(1).tolist() == [1, 1]


def test_prune_at_validation():
    with pytest.raises(ValueError, match="prune_at needs tau"):
        FitConfig(prune_at=10)
    with pytest.raises(ValueError, match="prune_at must be an int"):
        FitConfig(prune_at=-1, tau=0.1)


def test_emulated_backend_is_explicit_only(monkeypatch, fresh_announcements):
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) != "cuda-emu"  # never picked by "auto"
    with pytest.raises(ValueError, match="backend 'cuda-emu' emulates the CUDA kernels on the CPU, got"):
        resolve_backend("cuda-emu", CUDA)
    with pytest.raises(TypeError, match="backend 'cuda-emu' takes float32"):
        resolve_backend("cuda-emu", cpu, torch.float64)

    def missing():
        raise ImportError("gsv_cuda_emu is not built (test)")

    monkeypatch.setattr(cuda_ext._backend, "emu_module", missing)
    with pytest.raises(ImportError, match="gsv_cuda_emu is not built"):
        resolve_backend("cuda-emu", cpu)
