"""The `kernels` fixture: cuda_ext's kernel sources on a GPU ("cuda", skipped without one) or run on the
CPU by their emulation ("emu", docs/cuda_emulation.md), so every kernel test also runs in CI. The emulation
runs in its checking mode here: blocks and threads in seeded random orders, races and out-of-bounds
accesses fail the launch (GSV_EMU_SEED picks the orders; GSV_EMU_CHECK=0 turns the mode off)."""

import os
from dataclasses import dataclass

import pytest
import torch

import cuda_ext
from cuda_ext import _backend, ops


@dataclass(frozen=True)
class Kernels:
    name: str  # "cuda" | "emu"
    device: torch.device  # where their tensors live
    backend: str  # gs_encoder's name for them: "cuda" | "cuda-emu"

    @property
    def emulate(self) -> bool:
        return self.name == "emu"

    def render(self, *args, **kw):
        return ops.render_cuda(*args, emulate=self.emulate, **kw)

    def fit_steps(self, *args, **kw):
        return ops.fit_steps(*args, emulate=self.emulate, **kw)

    def prune_mask(self, *args, **kw):
        return ops.prune_mask(*args, emulate=self.emulate, **kw)

    def module(self):
        return _backend.emu_module() if self.emulate else _backend.cuda_module()


EMU_SEED = int(os.environ.get("GSV_EMU_SEED", "0"))


@pytest.fixture(scope="session", autouse=True)
def emulation_checks():
    if cuda_ext.emu_load_error() is not None or os.environ.get("GSV_EMU_CHECK") == "0":
        yield
        return
    module = _backend.emu_module()
    module.set_checking(True, EMU_SEED)
    yield
    module.set_checking(False, 0)


CUDA_PARAM = pytest.param(
    "cuda",
    marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(
            not cuda_ext.cuda_available(), reason=f"gsv_cuda_ops not built: {cuda_ext.cuda_load_error()}"
        ),
    ],
)


@pytest.fixture(params=[CUDA_PARAM, "emu"])
def kernels(request) -> Kernels:
    if request.param == "cuda":
        return Kernels("cuda", torch.device("cuda"), "cuda")
    err = cuda_ext.emu_load_error()
    if err is not None:
        if not cuda_ext.available():  # no C++ compiler worked here at all: nothing compiled can run
            pytest.skip(f"neither the CPU op nor the kernels' emulation is built: {err}")
        pytest.fail(f"the CPU op is built but the emulation of the CUDA kernels is not: {err}")
    return Kernels("emu", torch.device("cpu"), "cuda-emu")
