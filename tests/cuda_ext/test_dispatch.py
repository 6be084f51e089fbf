"""How gs_encoder reaches the CUDA kernels, checked on CPU: backend choice (CUDA tensors → kernels; no
kernels → one warning and the pure-torch path), the fitting loop run on the kernels' pure-torch twins
(stretches between checks, padding, early stop, CUDA jobs handed to the kernels' ops), and the twins."""

import logging
import math
import time
from dataclasses import replace

import pytest
import torch

import cuda_ext
from gs_encoder import FitConfig, fit_images, prune, render, structured_init
from gs_encoder.fitting import backend as backend_mod
from gs_encoder.fitting import fit as fit_mod
from gs_encoder.fitting.backend import resolve_backend
from gs_encoder.fitting.fit import fit_sets
from gs_encoder.fitting.fit_ops import fit_steps_torch, prune_mask_torch, torch_ops
from tests.tiny import SMALL_STEPS

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


def _fit(images, cfg, sets, renderer=CPU_RENDER):
    """fit_sets on the pure-torch twins from the given start (the default init is learned)."""
    targets = images.permute(0, 2, 3, 1).contiguous()
    return fit_sets(sets, targets, cfg, torch_ops(renderer, cfg.plan_margin), False, time.perf_counter())


def _assert_same(xs, ys):
    for a, b in zip(xs, ys, strict=True):
        assert a.splats.shape == b.splats.shape and a.iters == b.iters and a.num_initial == b.num_initial
        # a batch sums in another order than one image alone: measured ≤ 4.7e-5 apart (canvas units) since the
        # learned init warms up (≤ 1e-5 before)
        torch.testing.assert_close(b.splats, a.splats, rtol=1e-4, atol=1e-4)
        assert abs(a.psnr - b.psnr) < 1e-3 and abs(a.psnr_unpruned - b.psnr_unpruned) < 1e-3
        assert [it for it, _ in a.history] == [it for it, _ in b.history]


@pytest.mark.parametrize("renderer", sorted({"torch", CPU_RENDER}))
@pytest.mark.parametrize(
    "cfg",
    [
        FitConfig(num_gaussians=36, iters=30, check_every=7),
        FitConfig(num_gaussians=36, iters=40, lambda_l1=0.05, tau=0.05, finetune_iters=10, check_every=9),
        FitConfig(num_gaussians=36, iters=40, lambda_l1=0.05, tau=0.05, prune_at=13, finetune_iters=5),
    ],
    ids=["plain", "prune-after", "prune-mid-fit"],
)
def test_stretches_between_checks_do_not_change_the_fit(photo, cfg, renderer):
    # The loop calls fit_steps once per stretch between PSNR checks; stretches (and the torch renderer's
    # plan carried from one to the next) must give the fit of one stretch per phase: every bit.
    images = _images(photo)
    sets = list(structured_init(images, 36))
    sets[1] = sets[1][:29]  # unequal sizes: padded rows must not count
    many = _fit(images, cfg, sets, renderer)
    one = _fit(images, replace(cfg, check_every=10**6), sets, renderer)
    for a, b in zip(many, one, strict=True):
        assert torch.equal(a.splats, b.splats) and a.iters == b.iters == cfg.iters
        assert a.psnr == b.psnr and a.psnr_unpruned == b.psnr_unpruned
    checks = sorted(set(range(0, cfg.iters, cfg.check_every)) | {cfg.iters - 1})
    assert [it for it, _ in many[1].history] == checks
    assert [it for it, _ in one[1].history] == [0, cfg.iters - 1]
    if cfg.tau is not None:
        assert sum(r.num_gaussians for r in many) < sum(r.num_initial for r in many)  # pruning did act


@pytest.mark.parametrize(
    "cfg",
    [
        FitConfig(
            num_gaussians=36, iters=40, lambda_l1=0.05, tau=0.05, prune_at=13, finetune_iters=5, **SMALL_STEPS
        ),
        FitConfig(num_gaussians=16, iters=120, target_psnr=31.0, check_every=10, **SMALL_STEPS),
    ],
    ids=["prune-mid-fit", "early-stop"],
)
def test_an_image_in_a_padded_batch_equals_a_single_image_run(photo, cfg):
    grey = torch.full((3, 24, 24), 0.4)
    images = torch.stack([grey, photo("astronaut", 24), grey * 1.5])
    sets = list(structured_init(images, cfg.num_gaussians))
    sets[0] = sets[0][:-3]  # unequal sizes: padded rows must not count
    batch = _fit(images, cfg, sets)
    _assert_same(batch, [_fit(images[i : i + 1], cfg, [sets[i]])[0] for i in range(3)])
    if cfg.target_psnr is not None:
        assert 0 < batch[0].iters < 120 and batch[1].iters == 120  # the grey images stop, the photo runs on


def test_fit_images_hands_cuda_jobs_to_the_kernels(photo, monkeypatch):
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
    monkeypatch.setattr(fit_mod, "cuda_ops", fake_cuda_ops)
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
