"""scripts/gpu_check.sh, the prepared GPU check, run here without a GPU: its preflight names everything
missing with the fix, and with a complete python it builds, imports and collects the cuda tests, then
stops with exit status 5 ("no GPU"). scripts/gpu_check_sim.sh does the same with a torch-only python
and the carried wheels."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cuda_ext import build

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def run_check(tmp_path, python, cwd=ROOT, timeout=60, **env):
    """gpu_check.sh with `python` as the GPU machine's python3; returns (exit status, log text)."""
    wheels = tmp_path / "no_wheels"
    wheels.mkdir(exist_ok=True)
    full = {
        **os.environ,
        # as if that python's environment were activated (its bin/ holds pip's ninja in a venv)
        "PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "GSV_PYTHON": str(python),
        "GSV_WHEELS": str(wheels),
        "OUT": str(tmp_path / "out"),
        "MAX_JOBS": "1",
        **env,
    }
    full.pop("PYTHONPATH", None)
    proc = subprocess.run(
        ["bash", str(cwd / "scripts" / "gpu_check.sh")],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _toolkit_or_skip():
    try:
        build.find_toolkit()
    except build.ToolkitError as e:
        pytest.skip(f"no CUDA toolkit here: {e}")


def test_preflight_lists_everything_missing(tmp_path):
    # a python with nothing installed: every essential package is named with the fix, exit status 4
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(tmp_path / "empty")], check=True)
    code, log = run_check(tmp_path, tmp_path / "empty" / "bin" / "python")
    assert code == 4, log
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert "MISSING  torch (No module named 'torch') -> run the check with the python that holds" in log
    for name in ("numpy", "pillow", "tqdm", "pytest"):
        assert f"MISSING  {name} (" in log, name
    assert f"bash scripts/gpu_wheels.sh --python-version {ver}, then copy" in log
    assert "no carried wheels in" in log and "preflight FAILED (rc 4)" in log
    assert "building cuda_ext" not in log


def test_preflight_only_with_the_project_python(tmp_path):
    _toolkit_or_skip()
    code, log = run_check(tmp_path, sys.executable, GSV_PREFLIGHT_ONLY="1")
    assert code == 0, log
    for line in ("ok       torch ", "ok       nvcc ", "ok       numpy ", "ok       pytest ", "preflight ok"):
        assert line in log, line
    assert "GSV_PREFLIGHT_ONLY=1: stopping after the preflight" in log
    assert (tmp_path / "out" / "gpu_check.log").read_text().strip() == log.strip()


@pytest.mark.slow
def test_no_gpu_run_builds_and_collects_then_exits_5(tmp_path):
    # the whole script in a copy of the working tree (as the device tool sends it; the build must not
    # touch this checkout's cuda_ext/_build), GSV_DRY_RUN=1 so that a GPU machine takes the same path
    _toolkit_or_skip()
    if not shutil.which("git"):
        pytest.skip("git is needed to list the working tree")
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    repo = tmp_path / "repo"
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, repo / f)
    code, log = run_check(tmp_path, sys.executable, cwd=repo, timeout=900, GSV_DRY_RUN="1")
    assert code == 5, log
    for line in (
        "GSV_DRY_RUN=1: the device steps are skipped",
        "preflight ok",
        "built gsv_cuda_ops",
        "gsv_cuda_ops: loads | CPU op: loads",
        "build done, imports ok",
        "test collection ok: ",
        "GPU part skipped",
        "benchmark imports ok",
        "no GPU: preflight, wheels, build, imports and test collection ok",
    ):
        assert line in log, line
    assert (tmp_path / "out" / "cuda_build.json").exists()


def _preflight_module():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_preflight
    finally:
        sys.path.pop(0)
    return gpu_preflight


def test_gpu_package_list_is_what_the_check_imports():
    # the carried wheels and the preflight read scripts/gpu_packages.txt; its essential lines must be what
    # a run of the check's tests and benchmark imports (`python scripts/gpu_preflight.py --derive` rewrites them)
    pre = _preflight_module()
    committed = {pip: module for module, pip, kind, _ in pre.read_packages() if kind == "essential"}
    assert pre.derive_essential() == committed
    for must in ("numpy", "pillow", "pytest", "safetensors", "tqdm"):
        assert must in committed, must
    assert not {"torch", "dill", "anyio"} & set(committed)  # torch's own; imported only when present


def test_collecting_the_check_reads_no_weights_and_imports_no_optional_package():
    # a bare GPU machine's python may lack safetensors (or matplotlib) until the wheels are installed:
    # collecting the check's tests must not need them (settings are validated without reading files)
    pre = _preflight_module()
    code = (
        "import sys\n"
        "for m in ('safetensors', 'matplotlib', 'pynvml', 'transformers', 'skimage'): sys.modules[m] = None\n"
        "import pytest\n"
        f"sys.exit(pytest.main(['-q', '--collect-only', '-p', 'no:cacheprovider', *{list(pre.CHECK_TESTS)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_bare_gpu_machine_simulation_exits_5(tmp_path):
    # scripts/gpu_check_sim.sh as it means it: a torch-only python, the carried wheels (downloaded when
    # none are there), no ninja on PATH; it exits 0 when gpu_check.sh ended with 5 and every step before
    # the GPU logged green
    _toolkit_or_skip()
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("the simulation needs the project's .venv (bash scripts/setup_env.sh)")
    env = {**os.environ, "GSV_SIM_DIR": str(tmp_path / "sim"), "MAX_JOBS": "2"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check_sim.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    assert "gpu_check.sh exit status 5" in log and "OK: exit 5 (no GPU)" in log
    check_log = (tmp_path / "sim" / "out" / "gpu_check.log").read_text()
    # found missing on the bare python, then installed from a wheel
    assert "MISSING  safetensors" in check_log
    assert "installing from" in check_log and "preflight ok" in check_log


@pytest.mark.slow
def test_sanitizer_workload_runs_on_the_checked_emulation():
    # the workload gpu_check.sh hands to compute-sanitizer, on the CPU emulation with its own race and
    # bounds checks: it runs to the end (its API calls are current) and finds nothing
    import cuda_ext

    if cuda_ext.emu_load_error() is not None:
        pytest.skip(f"the emulation is not built: {cuda_ext.emu_load_error()}")
    done = subprocess.run(
        [sys.executable, "scripts/gpu_sanitize.py", "--emulate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "sanitizer workload done (short fit: lowest PSNR" in done.stdout
