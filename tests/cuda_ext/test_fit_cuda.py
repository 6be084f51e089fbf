"""The fused CUDA fitter equals the CPU path: its Adam against torch.optim.Adam, its steps against their
pure-torch twin, whole fits against the CPU fit (within 0.01 dB), batch independence, determinism and
the pruning mask. Each test runs on the GPU (`kernels` "cuda", `pytest -m cuda`) and on the CPU
through the kernels' emulation ("emu", every run)."""

from dataclasses import replace

import pytest
import torch

import cuda_ext
from gs_encoder import FitConfig, fit_images, prune, structured_init
from gs_encoder.fitting.fit_ops import fit_steps_torch
from tests.tiny import SMALL_STEPS

CPU_RENDER = "cpp" if cuda_ext.available() else "torch"
LR = (0.1, 0.04, 0.02)  # step sizes of the step-by-step comparisons: xy, Cholesky factor, colour


def problem(photo, size=64, n=100, names=("astronaut", "coffee")):
    """(params_px [B, N, 8], alive [B, N], targets [B, S, S, 3]) on the CPU, from the structured init."""
    images = torch.stack([photo(name, size) for name in names])
    params = structured_init(images, n).clone()
    params[..., 0:5] *= size
    alive = torch.ones(params.shape[:2], dtype=torch.bool)
    return params, alive, images.permute(0, 2, 3, 1).contiguous()


@pytest.mark.parametrize("betas", [(0.9, 0.999), FitConfig().betas])  # textbook Adam, the fit's default
def test_fused_adam_matches_torch_optim_adam(kernels, photo, betas):
    # 10 steps, each from the same state on both sides: the fused step (constant step sizes, no L1, a
    # constraint that never binds: plain Adam) against torch.optim.Adam fed the kernels' own gradient.
    # Step by step, because over several steps a 1-ulp difference (torch's Adam rounds differently) can
    # move a pair across the 3σ edge, where dw/dq jumps, and a near-zero Cholesky gradient then changes
    # by far more than any tolerance worth having (seen on the kernels' source run on the CPU: 4e-5 on
    # one l21 after 10 steps, ~1e-6 when each step starts from the same state).
    params, alive, targets = problem(photo)
    size = targets.shape[1]
    p, a, t = params.to(kernels.device), alive.to(kernels.device), targets.to(kernels.device)
    start = p.clone()
    active = torch.ones(2, dtype=torch.bool, device=kernels.device)
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    cols = (slice(0, 2), slice(2, 5), slice(5, 8))
    for k in range(10):
        groups = [p[..., c].clone().requires_grad_(True) for c in cols]
        opt = torch.optim.Adam(
            [{"params": [g], "lr": lr} for g, lr in zip(groups, LR, strict=True)],
            betas=betas,
            eps=1e-8,
        )
        for g, c in zip(groups, cols, strict=True):
            opt.state[g] = {
                "step": torch.tensor(float(k)),
                "exp_avg": m[..., c].clone(),
                "exp_avg_sq": v[..., c].clone(),
            }
        image = kernels.render(torch.cat(groups, dim=-1), a, size)
        (image - t).pow(2).mean(dim=(1, 2, 3)).sum().backward()
        opt.step()
        kernels.fit_steps(p, m, v, a, active, t, it0=k, num_steps=1, iters_total=10, lr=LR, lr_final=1.0,
                      lambda_l1=0.0, min_scale=1e-6, betas=betas)  # fmt: skip
        ref = [torch.cat([x.detach() if j == 0 else opt.state[x][key] for x in groups], dim=-1)
               for j, key in enumerate((None, "exp_avg", "exp_avg_sq"))]  # fmt: skip
        # 1e-6: one step, the same gradient bits, only Adam's rounding differs (lerp, √v/√bc2)
        torch.testing.assert_close(p, ref[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(m, ref[1], rtol=1e-5, atol=1e-6 * float(ref[1].abs().max()))
        torch.testing.assert_close(v, ref[2], rtol=1e-5, atol=0.0)
    assert (p - start).abs().max() > 0.5  # the steps did move things (10 × lr_xy = 1 px at most)


def test_fit_steps_match_their_torch_twin(kernels, photo):
    params, alive, targets = problem(photo)
    params = torch.cat([params, torch.full((2, 20, 8), 99.0)], dim=1)  # padded rows: never read or written
    alive = torch.cat([alive, torch.zeros(2, 20, dtype=torch.bool)], dim=1)
    alive[1, 90:] = False  # and a pruned tail
    params[1, :, 2] *= -1  # image 1 is frozen; its negative l11 must still be flipped by the constraint
    active = torch.tensor([True, False])
    # a schedule whose warm-up (to iteration 7) ends and whose decay (the last 30% of 24 iterations: from
    # iteration 16.1) starts inside the steps run
    kw = {
        "iters_total": 24,
        "lr": LR,
        "lr_final": 0.05,
        "lr_decay": 0.3,
        "lr_warmup": 8,
        "lambda_l1": 0.02,
        "min_scale": 0.3,
        "betas": (0.9, 0.9),
    }
    # 15 steps, each from the twin's state on both sides (see the Adam test: several steps compound
    # edge flips; measured step by step with the kernels' source on the CPU: params 3e-6, moments 3e-5)
    state = [params.clone(), torch.zeros_like(params), torch.zeros_like(params)]
    for it in range(5, 20):
        ref = [x.clone() for x in state]
        fit_steps_torch(*ref, alive, active, targets, backend=CPU_RENDER, it0=it, num_steps=1, **kw)
        got = [x.to(kernels.device) for x in state]
        kernels.fit_steps(
            *got,
            alive.to(kernels.device),
            active.to(kernels.device),
            targets.to(kernels.device),
            it0=it,
            num_steps=1,
            **kw,
        )
        got = [x.cpu() for x in got]
        torch.testing.assert_close(got[0][alive], ref[0][alive], rtol=1e-4, atol=1e-5)
        assert torch.equal(got[0][~alive], params[~alive])  # dead rows untouched
        assert torch.equal(got[0][1], ref[0][1])  # the frozen image: exactly the constrained input
        for k in (1, 2):  # Adam moments of the active image
            scale = float(ref[k][0].abs().max())
            torch.testing.assert_close(got[k][0], ref[k][0], rtol=1e-3, atol=1e-4 * scale)
        assert not got[1][1].any() and not got[2][1].any()
        state = ref
    # one call of 15 steps (the next setup computed by the update kernel, the schedule and t advanced in
    # the C++ loop) equals 15 calls of one step (each starting from a fresh setup): every bit
    one = [x.to(kernels.device) for x in (params, torch.zeros_like(params), torch.zeros_like(params))]
    steps = [x.clone() for x in one]
    dev = [x.to(kernels.device) for x in (alive, active, targets)]
    kernels.fit_steps(*one, *dev, it0=5, num_steps=15, **kw)
    for it in range(5, 20):
        kernels.fit_steps(*steps, *dev, it0=it, num_steps=1, **kw)
    for x, y in zip(one, steps, strict=True):
        assert torch.equal(x, y)


@pytest.mark.slow  # whole fits: 12–19 s each on the checked emulation
def test_image_in_a_batch_equals_a_single_image_run(kernels, photo):
    images = torch.stack([photo("chelsea", 64), photo("coffee", 64), photo("rocket", 64)])
    sets = list(structured_init(images, 144))
    sets[1] = sets[1][:100]  # different N per image: padding
    cfg = FitConfig(num_gaussians=144, iters=60, lambda_l1=0.01, check_every=20, backend=kernels.backend)
    gpu = images.to(kernels.device)
    batch = fit_images(gpu, cfg, initial=[s.to(kernels.device) for s in sets])
    for i in range(3):
        (single,) = fit_images(gpu[i : i + 1], cfg, initial=[sets[i].to(kernels.device)])
        assert torch.equal(batch[i].splats, single.splats)  # no coupling, a fixed order: every bit
        assert abs(batch[i].psnr - single.psnr) < 1e-4


@pytest.mark.slow  # whole fits: 12–19 s each on the checked emulation
def test_fit_is_deterministic(kernels, photo):
    images = torch.stack([photo("astronaut", 96), photo("chelsea", 96)]).to(kernels.device)
    cfg = FitConfig(num_gaussians=400, iters=50, backend=kernels.backend)
    a, b = fit_images(images, cfg), fit_images(images, cfg)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.splats, y.splats)


@pytest.mark.slow
def test_100_iteration_fit_matches_the_cpu_fit_at_224(kernels, photo):
    images = torch.stack([photo("astronaut", 224), photo("coffee", 224)])
    cfg = FitConfig(num_gaussians=3136, iters=100, check_every=25, **SMALL_STEPS)
    cpu = fit_images(images, cfg)
    gpu = fit_images(images.to(kernels.device), replace(cfg, backend=kernels.backend))
    for c, g in zip(cpu, gpu, strict=True):
        assert abs(c.psnr - g.psnr) < 0.01, (c.psnr, g.psnr)
        assert [it for it, _ in c.history] == [it for it, _ in g.history]
        assert all(abs(x - y) < 0.01 for (_, x), (_, y) in zip(c.history, g.history, strict=True))
    # the default step sizes: the same fit up to the rounding they amplify
    cfg = FitConfig(num_gaussians=3136, iters=100, check_every=10**6)
    cpu = fit_images(images, cfg)
    gpu = fit_images(images.to(kernels.device), replace(cfg, backend=kernels.backend))
    for c, g in zip(cpu, gpu, strict=True):
        assert abs(c.psnr - g.psnr) < 0.05, (c.psnr, g.psnr)


@pytest.mark.slow  # whole fits: 12–19 s each on the checked emulation
def test_fit_with_l1_pruning_and_finetune_matches_the_cpu_fit(kernels, photo):
    images = torch.stack([photo("chelsea", 64), photo("rocket", 64)])
    # From the structured init, with the warm-up: the learned init renders on the fit's backend, and the
    # rounding of those renders tips a Gaussian over the pruning threshold (one more pruned, 0.1 dB apart after
    # pruning; measured); without a warm-up, the fine-tune's first Adam steps (±lr whatever the gradient's size)
    # amplify rounding to 0.017 dB. So set, the pruned fits agree to 0.001 dB.
    pruned = {"num_gaussians": 256, "iters": 80, "lambda_l1": 0.05, "tau": 0.05, "init": "structured"}
    pruned.update(SMALL_STEPS, lr_warmup=10)
    for cfg in (FitConfig(**pruned, finetune_iters=20), FitConfig(**pruned, prune_at=40, finetune_iters=10)):
        cpu = fit_images(images, cfg)
        gpu = fit_images(images.to(kernels.device), replace(cfg, backend=kernels.backend))
        for c, g in zip(cpu, gpu, strict=True):
            assert g.num_gaussians < 256
            assert abs(c.num_gaussians - g.num_gaussians) <= 2, (c.num_gaussians, g.num_gaussians)
            assert abs(c.psnr - g.psnr) < 0.01 and abs(c.psnr_unpruned - g.psnr_unpruned) < 0.01


def test_coarse_to_fine_matches_the_cpu_fit(kernels, photo):
    images = torch.stack([photo("chelsea", 64), photo("rocket", 64)])
    cfg = FitConfig(num_gaussians=256, iters=40, coarse_iters=40, init="structured")
    cpu = fit_images(images, cfg)
    gpu = fit_images(images.to(kernels.device), replace(cfg, backend=kernels.backend))
    for c, g in zip(cpu, gpu, strict=True):
        assert abs(c.psnr - g.psnr) < 0.01 and c.iters == g.iters == 40


def test_early_stop_on_the_gpu(kernels, photo):
    grey = torch.full((3, 32, 32), 0.4)
    images = torch.stack([grey, photo("astronaut", 32)]).to(kernels.device)
    cfg = FitConfig(num_gaussians=16, iters=200, target_psnr=30.0, check_every=10, backend=kernels.backend)
    flat, hard = fit_images(images, cfg)
    assert flat.iters < 200 and flat.psnr >= 30.0 and hard.iters == 200


def test_prune_mask_matches_cpu_pruning(kernels, photo):
    params, alive, targets = problem(photo, n=256)
    p, a = params.to(kernels.device), alive.to(kernels.device)
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    kernels.fit_steps(p, m, v, a, torch.ones(2, dtype=torch.bool, device=kernels.device), targets.to(kernels.device), it0=0,
                  num_steps=60, iters_total=60, lr=LR, lr_final=0.05, lambda_l1=0.05, min_scale=0.3)  # fmt: skip
    fitted = p.cpu()
    alive[1, 200:] = False  # a padded tail takes no part
    for tau in (0.02, 0.05, 0.1, 1e9):
        keep = kernels.prune_mask(fitted.to(kernels.device), alive.to(kernels.device), tau).cpu()
        for b in range(2):
            assert torch.equal(fitted[b][keep[b]], prune(fitted[b][alive[b]], tau)), (tau, b)
        assert not keep[1, 200:].any()
