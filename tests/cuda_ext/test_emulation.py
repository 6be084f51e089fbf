"""The CPU emulation of the CUDA kernels (docs/cuda_emulation.md) is faithful: its barriers, shuffles
and ballots exchange data as on the device and it fails a launch that breaks their rules; the kernel
sources it runs give the CPU op's image bit for bit (the same float operations in the same order, one
OpenMP thread), over the cases that break kernels: odd canvas sizes, empty sets, garbage in padded
rows, Gaussians on and beyond the border, tiny and huge scales, several images of different N, tiles
holding more Gaussians than their list. Gradients and fit steps, summed in another order, are
checked with tolerances in test_render_cuda.py and test_fit_cuda.py, which run on the emulation too."""

import ctypes
import re
import shutil
from pathlib import Path

import pytest
import torch

import cuda_ext
from cuda_ext import build, ops
from gs_encoder.fitting.render import render_flat

from ..gs_encoder.test_render import random_splats

CASES = Path(__file__).resolve().parent / "emu_cases" / "rules.cpp"


@pytest.fixture(scope="module")
def rules_lib(tmp_path_factory):
    """tests/cuda_ext/emu_cases/rules.cpp built with the emulation's shim and runtime (no torch)."""
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    out = tmp_path_factory.mktemp("emu_rules")
    src = out / "rules_emu.cpp"
    src.write_text(build.emulation_source(CASES.read_text(), str(CASES)))
    dll = ctypes.CDLL(str(build.emu_library(src, out / "librules.so")))
    dll.run_case.restype = ctypes.c_int
    return dll


RED = 64  # floats of red zone on each side of a checked case's buffer


def run_case(lib, which: int, n_out: int, blocks: int = 1, check: bool = False, seed: int = 0):
    """(out, the launch's error message or ""); `check`: in the emulator's checking mode."""
    storage = torch.full((n_out + 2 * RED,), float("nan"))
    out = storage[RED : RED + n_out]
    msg = ctypes.create_string_buffer(1024)
    code = lib.run_case(
        which, ctypes.c_void_p(out.data_ptr()), blocks, msg, 1024, int(check), n_out, seed, RED
    )
    assert code in (0, 719), code
    return out, msg.value.decode()


def test_barriers_shuffles_and_ballots_behave_as_on_the_device(rules_lib):
    blocks = 5
    out, msg = run_case(rules_lib, 0, 3 * blocks * 64, blocks)
    assert msg == ""
    block_sum, warp_sum, ballot = out.view(3, blocks, 64)
    for b in range(blocks):
        assert torch.all(block_sum[b] == float(sum(b * 1000 + t for t in range(64))))
    first, second = float(sum(range(32))), float(sum(range(32, 64)))
    assert torch.equal(warp_sum[0], torch.where(torch.arange(64) < 32, first, second))
    assert torch.all(ballot == 16)  # 16 odd lanes in each warp


def test_a_missing_barrier_shows_as_a_wrong_result(rules_lib):
    good, msg = run_case(rules_lib, 1, 64)
    assert msg == "" and torch.equal(good, (torch.arange(64) + 1) % 64 + 1.0)
    # without __syncthreads, thread t reads slot t + 1 before thread t + 1 has written it this launch
    racy, msg = run_case(rules_lib, 2, 64)
    assert msg == "" and not torch.equal(racy, good)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_checking_mode_passes_kernels_that_keep_the_rules(rules_lib, seed):
    # shuffled blocks and threads, every access checked: the same results, no finding
    blocks = 5
    plain, _ = run_case(rules_lib, 0, 3 * blocks * 64, blocks)
    checked, msg = run_case(rules_lib, 0, 3 * blocks * 64, blocks, check=True, seed=seed)
    assert msg == "" and torch.equal(checked, plain)
    good, msg = run_case(rules_lib, 8, blocks, blocks, check=True, seed=seed)
    assert msg == "" and torch.equal(good, torch.full((blocks,), 64.0))


def test_checking_mode_catches_a_planted_race_on_global_memory(rules_lib):
    # unchecked, the race goes unseen: the last block's store simply wins
    _, msg = run_case(rules_lib, 6, 1 + 3 * 64, blocks=3)
    assert msg == ""
    _, msg = run_case(rules_lib, 6, 1 + 3 * 64, blocks=3, check=True)
    assert re.search(
        r"racy_store_kernel: block \(\d, 0, 0\), thread \(0, 0, 0\) writes `out` at byte 0 \(element 0 of 193\), "
        r"which racy_store_kernel: block \(\d, 0, 0\), thread \(0, 0, 0\) also wrote it \(a write-write race\)",
        msg,
    ), msg


def test_checking_mode_catches_a_planted_overrun(rules_lib):
    _, msg = run_case(rules_lib, 7, 64)
    assert msg == ""  # unchecked, the store lands in the red zone unseen
    _, msg = run_case(rules_lib, 7, 64, check=True)
    assert re.search(
        r"overrun_kernel: block \(0, 0, 0\), thread \(63, 0, 0\) writes 4 bytes at byte 256 of `out` \(256 bytes\): "
        r"past its end \(out of bounds\)",
        msg,
    ), msg


@pytest.mark.parametrize("seed", [0, 1])
def test_checking_mode_catches_a_missing_barrier_before_shared_reads(rules_lib, seed):
    # in thread order the missing barrier happens to give the right sums; checked, it is a race however
    # the threads are shuffled
    _, msg = run_case(rules_lib, 9, 4, blocks=4, check=True, seed=seed)
    assert re.search(
        r"shared_race_kernel: .* `shared memory` .* \(a (read-after-write|write-after-read) race\)", msg
    ), msg


@pytest.mark.parametrize(
    "which, message",
    [
        (3, r"early_return_kernel: block \(0, 0, 0\), thread \(\d+, 0, 0\) waits at __syncthreads, but "
         r"early_return_kernel: block \(0, 0, 0\), thread \(5, 0, 0\) has returned"),
        (4, r"divergent_kernel: .* waits at __syncthreads while lane \d+ of its warp waits at __shfl_xor_sync"),
        (5, r"exited_lane_kernel: block \(0, 0, 0\), thread \(3, 0, 0\) has returned while lane \d+ of its "
         r"warp waits at __shfl_xor_sync"),
    ],
)  # fmt: skip
def test_a_broken_rule_fails_the_launch_naming_the_thread(rules_lib, which, message):
    _, msg = run_case(rules_lib, which, 64)
    assert msg, "the launch should have failed"
    assert re.search(message, msg), msg


def test_launch_rewrite():
    src = "  k<<<g, b, 0, s>>>(x, y);\n  t<T, 2><<<dim3(a, c), 64, 0, st>>>(args, b0);\n"
    out = build.emulation_source(src, "x.cu")
    assert '::gsv_emu::launch("k", g, b, 0, s, k, x, y);' in out
    assert '::gsv_emu::launch("t<T, 2>", dim3(a, c), 64, 0, st, t<T, 2>, args, b0);' in out
    with pytest.raises(RuntimeError, match=r"x.cu:2: a kernel launch the emulation build cannot rewrite"):
        build.emulation_source("ok();\nk<<<g,\n b>>>(x);\n", "x.cu")
    with pytest.raises(RuntimeError, match="no kernel launch"):
        build.emulation_source("int main() {}\n", "x.cu")


@pytest.fixture
def one_thread():
    """One OpenMP thread: the CPU op then sums each pixel in Gaussian order, as the forward kernel does."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cpu_op_image(params: torch.Tensor, alive: torch.Tensor, size: int) -> torch.Tensor:
    b_idx, g_idx = alive.nonzero(as_tuple=True)
    rows = params[b_idx, g_idx]
    image, _ = render_flat(
        rows[:, 0:2], rows[:, 2:5], rows[:, 5:8], b_idx, params.shape[0], size, backend="cpp"
    )
    return image


def hard_batch(size: int, sub_pixel: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Three images: 40 random Gaussians (some beyond the border), 23 with extreme ones, and none.
    `sub_pixel`: two of them 1e-7 of the canvas wide (their float32 chain rule overflows: no gradients)."""
    a = random_splats(40, dtype=torch.float32, seed=size, scale=(0.01, 0.3))
    b = random_splats(23, dtype=torch.float32, seed=size + 1, scale=(0.01, 0.2))
    b[0] = torch.tensor([0.5, 0.5, 50.0, 3.0, 40.0, 0.3, 0.3, 0.3])  # huge: far past every border
    b[1] = torch.tensor([-0.5, 0.5, 0.01, 0.0, 0.01, 1.0, 1.0, 1.0])  # entirely off the canvas
    b[2] = torch.tensor([1.0, 0.0, 0.05, 0.01, 0.05, 0.5, 0.2, 0.9])  # centred on the corner
    b[3] = torch.tensor([0.5, 0.5, 1e-7, 0.0, 1e-7, 1.0, 0.5, 0.25])  # far below a pixel
    b[4] = torch.tensor(
        [(3 + 0.5) / size, (2 + 0.5) / size, 1e-7, 0.0, 1e-7, 0.7, 0.7, 0.7]
    )  # on a pixel centre
    b[5] = torch.tensor([0.3, 0.6, 0.002, 0.4, 0.002, 0.4, 0.1, 0.6])  # a needle
    if not sub_pixel:
        b[3:5, 2] = b[3:5, 4] = 0.02
    params = torch.full((3, 40, 8), 99.0)  # garbage in padded rows: never read
    params[0] = torch.cat([a[:, 0:5] * size, a[:, 5:8]], 1)
    params[1, :23] = torch.cat([b[:, 0:5] * size, b[:, 5:8]], 1)
    alive = torch.zeros(3, 40, dtype=torch.bool)
    alive[0], alive[1, :23] = True, True
    return params, alive


@pytest.mark.skipif(not cuda_ext.available(), reason=f"CPU op not built: {cuda_ext.load_error()}")
@pytest.mark.parametrize("size", [1, 7, 17, 33, 100])
def test_forward_kernel_equals_the_cpu_op_bit_for_bit(one_thread, size):
    params, alive = hard_batch(size)
    ref = cpu_op_image(params, alive, size)
    for cap in (1, 4, 512):  # every tile over its list (the all-N scan), some, none
        got = ops.render_cuda(params, alive, size, tile_cap=cap, emulate=True)
        assert torch.equal(got, ref), (cap, float((got - ref).abs().max()))
    assert not got[2].any()  # the empty set
    if size >= 7:
        assert got[1, 2, 3].sum() > 0  # the sub-pixel Gaussian on a pixel centre is seen there


@pytest.mark.skipif(not cuda_ext.available(), reason=f"CPU op not built: {cuda_ext.load_error()}")
def test_crowded_tiles_equal_the_cpu_op_bit_for_bit(one_thread):
    # 600 Gaussians over 3 tiles of a 48² canvas: lists overflow at the default cap too
    g = torch.Generator().manual_seed(5)
    params = torch.zeros(2, 600, 8)
    params[..., 0:2] = torch.rand(2, 600, 2, generator=g) * 20
    params[..., 2] = params[..., 4] = 0.5 + 3 * torch.rand(2, 600, generator=g)
    params[..., 3] = torch.randn(2, 600, generator=g)
    params[..., 5:8] = torch.rand(2, 600, 3, generator=g)
    alive = torch.ones(2, 600, dtype=torch.bool)
    alive[1, 450:] = False
    ref = cpu_op_image(params, alive, 48)
    for cap in (8, 512):
        assert torch.equal(ops.render_cuda(params, alive, 48, tile_cap=cap, emulate=True), ref)


def test_gradients_match_the_pure_torch_renderer():
    # the third implementation: the windowed pair list, float32, another summation order again
    size = 29
    params, alive = hard_batch(size, sub_pixel=False)
    cot = torch.randn(3, size, size, 3, generator=torch.Generator().manual_seed(3))
    p = params.clone().requires_grad_(True)
    image = ops.render_cuda(p, alive, size, emulate=True)
    (grad,) = torch.autograd.grad((image * cot).sum(), p)
    b_idx, g_idx = alive.nonzero(as_tuple=True)
    rows = params[b_idx, g_idx].clone().requires_grad_(True)
    ref, _ = render_flat(rows[:, 0:2], rows[:, 2:5], rows[:, 5:8], b_idx, 3, size, backend="torch")
    (grad_ref,) = torch.autograd.grad((ref * cot).sum(), rows)
    torch.testing.assert_close(image.detach(), ref.detach(), rtol=0, atol=1e-5)
    for cols in (slice(0, 2), slice(2, 5), slice(5, 8)):
        scale = float(grad_ref[:, cols].abs().max())
        torch.testing.assert_close(
            grad[b_idx, g_idx][:, cols], grad_ref[:, cols], rtol=1e-4, atol=1e-4 * scale
        )
    assert not grad[~alive].any()
