"""The CUDA module builds and imports without a GPU, and every CUDA op refuses to run without a device
with an error that says so. Runs on every machine (CPU-only CI included)."""

import json

import pytest
import torch

import cuda_ext
from cuda_ext import _backend, build, ops


def _cuda_build_expected() -> tuple[bool, str]:
    """Was a CUDA build expected here? The last build's status file says (scripts/build_ext.sh writes
    it); without one, whether a usable toolkit exists."""
    if _backend.CUDA_STATUS.exists():
        status = json.loads(_backend.CUDA_STATUS.read_text())
        return bool(status.get("expected")), status.get("reason", "")
    try:
        build.find_toolkit()
    except build.ToolkitError as e:
        return False, str(e)
    return True, "a toolkit is present"


def test_cuda_module_builds_and_imports():
    expected, why = _cuda_build_expected()
    if not expected:
        pytest.skip(f"no CUDA toolkit on this machine, the CUDA build was not attempted: {why}")
    # strict from here: a toolkit is present (as in CI), so the module must have built and must import
    err = cuda_ext.cuda_load_error()
    assert err is None, f"a CUDA toolkit is present but gsv_cuda_ops does not load: {err}"
    mod = _backend.cuda_module()
    for name in ("render_fwd", "render_bwd", "fit_steps", "prune_mask"):
        assert callable(getattr(mod, name)), name
    status = json.loads(_backend.CUDA_STATUS.read_text())
    # the version rule: same CUDA major as torch; a minor mismatch builds and leaves a warning
    assert status["ok"] and status["nvcc"].split(".")[0] == torch.version.cuda.split(".")[0]
    assert ("warning" in status) == (status["nvcc"] != torch.version.cuda), status
    if status["archs"] == build.DEFAULT_ARCHS:  # sm_80 and sm_90 cubins, plus sm_90 PTX
        ninja = (_backend.CUDA_BUILD_DIR / "build.ninja").read_text()
        for flag in ("arch=compute_80,code=sm_80", "arch=compute_90,code=sm_90", "code=compute_90"):
            assert flag in ninja, flag
    assert cuda_ext.available(), "the CPU op must survive next to the CUDA module"


def test_emulation_module_builds_and_imports():
    # it needs only the C++ compiler that built the CPU op: where that op loads, so must the emulation
    if not cuda_ext.available():
        pytest.skip(f"the CPU op is not built either: {cuda_ext.load_error()}")
    mod = _backend.emu_module()
    for name in ("render_fwd", "render_bwd", "fit_steps", "prune_mask"):
        assert callable(getattr(mod, name)), name
    params, mask = _splats()
    with pytest.raises(RuntimeError, match=r"render_bwd: grad_image must be \[B, S, S, 3\]"):
        mod.render_bwd(params, mask, torch.zeros(1, 8, 9, 3))  # the host code's TORCH_CHECKs run too
    with pytest.raises(TypeError, match="with emulate=True, params must be a CPU tensor"):
        ops.render_cuda(params.to("meta"), mask.to("meta"), 8, emulate=True)


def _splats(b=1, n=4, device="cpu"):
    params = torch.zeros(b, n, 8, device=device)
    params[..., 2] = params[..., 4] = 2.0
    return params, torch.ones(b, n, dtype=torch.bool, device=device)


def test_cuda_ops_refuse_cpu_tensors_with_a_clear_error():
    # checked in Python before the module is loaded or a kernel launched: works with or without a build
    params, mask = _splats()
    with pytest.raises(TypeError, match=r"render_cuda: params must be on a CUDA device, got cpu"):
        ops.render_cuda(params, mask, 8)
    if not torch.cuda.is_available():
        with pytest.raises(TypeError, match=r"torch.cuda.is_available\(\) is False"):
            ops.render_cuda(params, None, 8)
    target = torch.zeros(1, 8, 8, 3)
    kw = {"it0": 0, "num_steps": 1, "iters_total": 1, "lr": (0.1, 0.1, 0.1), "lr_final": 1.0}
    with pytest.raises(TypeError, match="fit_steps: params must be on a CUDA device"):
        ops.fit_steps(
            params, params.clone(), params.clone(), mask, mask[:, 0], target, **kw, lambda_l1=0, min_scale=0.3
        )
    with pytest.raises(TypeError, match="prune_mask: params must be on a CUDA device"):
        ops.prune_mask(params, mask, 0.1)


def test_cuda_ops_name_the_bad_argument():
    params, mask = _splats()
    with pytest.raises(ValueError, match=r"params must have shape \[\*, \*, 8\], got \[1, 4, 7\]"):
        ops.render_cuda(params[..., :7], mask, 8)
    with pytest.raises(ValueError, match=r"mask must have shape \[1, 4\]"):
        ops.render_cuda(params, mask[:, :3], 8)
    with pytest.raises(TypeError, match="mask must be torch.bool"):
        ops.render_cuda(params, mask.float(), 8)
    with pytest.raises(TypeError, match="params must be torch.float32"):
        ops.render_cuda(params.double(), mask, 8)
    with pytest.raises(ValueError, match="size must be an int ≥ 1, got 0"):
        ops.render_cuda(params, mask, 0)
    with pytest.raises(ValueError, match="tile_cap"):
        ops.render_cuda(params, mask, 8, tile_cap=0)
    kw = {"it0": 0, "num_steps": 1, "iters_total": 1, "lr_final": 1.0, "lambda_l1": 0.0, "min_scale": 0.3}
    with pytest.raises(ValueError, match="lr must hold 3 step sizes"):
        ops.fit_steps(params, params, params, mask, mask[:, 0], torch.zeros(1, 8, 8, 3), lr=(0.1,), **kw)
    with pytest.raises(ValueError, match="num_steps must be an int ≥ 0"):
        ops.fit_steps(
            params,
            params,
            params,
            mask,
            mask[:, 0],
            torch.zeros(1, 8, 8, 3),
            lr=(1, 1, 1),
            **{**kw, "num_steps": -1},
        )


@pytest.mark.skipif(
    not cuda_ext.cuda_available(), reason=f"gsv_cuda_ops not built: {cuda_ext.cuda_load_error()}"
)
def test_compiled_ops_refuse_cpu_tensors():
    # the C++ side checks too (TORCH_CHECK), so a direct call cannot reach a kernel with host memory
    mod = _backend.cuda_module()
    params, mask = _splats()
    with pytest.raises(RuntimeError, match="render_fwd: params must be a CUDA tensor"):
        mod.render_fwd(params, mask, 8, 16)
    with pytest.raises(RuntimeError, match="render_bwd: params must be a CUDA tensor"):
        mod.render_bwd(params, mask, torch.zeros(1, 8, 8, 3))
    with pytest.raises(RuntimeError, match="prune_mask: params must be a CUDA tensor"):
        mod.prune_mask(params, mask, 0.1)
    with pytest.raises(RuntimeError, match="fit_steps: params must be a CUDA tensor"):
        mod.fit_steps(
            params, params, params, mask, mask[:, 0], torch.zeros(1, 8, 8, 3), 0, 1, 1, [0.1] * 3, 1.0, 1.0, 0,
            0.0, 0.3, 0.9, 0.999, 1e-8, 16,
        )  # fmt: skip


def test_build_reports_a_missing_toolkit(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))  # a folder without bin/nvcc
    with pytest.raises(build.ToolkitError, match="has no bin/nvcc"):
        build.find_toolkit()


def test_nvcc_version_rule():
    assert build.check_nvcc_version("13.0", "13.0") is None
    for nvcc, torch_cuda, newer in (("13.1", "13.0", "13.1"), ("13.0", "13.2", "13.2")):
        warning = build.check_nvcc_version(nvcc, torch_cuda, "/opt/cuda")
        assert f"nvcc {nvcc} at /opt/cuda differs from torch's CUDA {torch_cuda}" in warning
        assert f"driver must support CUDA {newer}" in warning
    with pytest.raises(
        build.ToolkitError, match=r"nvcc 12.4 at /opt/cuda is CUDA 12, torch was built with CUDA 13.0"
    ):
        build.check_nvcc_version("12.4", "13.0", "/opt/cuda")
    with pytest.raises(build.ToolkitError, match="cannot compare"):
        build.check_nvcc_version("13", "13.0")


def _fake_toolkit(tmp_path, release: str):
    """A toolkit root whose bin/nvcc is a shell script that reports `release` and compiles nothing."""
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.1'\n")
    nvcc.chmod(0o755)
    return tmp_path


@pytest.mark.parametrize("minor_off", [False, True])
def test_build_cuda_applies_the_version_rule(monkeypatch, tmp_path, minor_off):
    # build_cuda with a fake nvcc: a major mismatch stops before compiling, with the reason in the status
    # file; a minor mismatch passes the rule (recorded as a warning) and stops later, at the missing
    # runtime of the fake toolkit, so nothing is compiled either way
    status_file = tmp_path / "cuda_build.json"
    monkeypatch.setattr(build, "CUDA_STATUS", status_file)
    monkeypatch.setattr(build, "BUILD_DIR", tmp_path)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    major, minor = (13, 1) if minor_off else (12, 8)
    monkeypatch.setenv("CUDA_HOME", str(_fake_toolkit(tmp_path / "tk", f"{major}.{minor}")))
    with pytest.raises(build.ToolkitError) as err:
        build.build_cuda()
    status = json.loads(status_file.read_text())
    assert status["expected"] and not status["ok"] and status["nvcc"] == f"{major}.{minor}"
    if minor_off:
        assert "minor version" in status["warning"] and "no libcudart.so" in str(err.value)
    else:
        assert "warning" not in status and "is CUDA 12, torch was built with CUDA 13.0" in status["reason"]
