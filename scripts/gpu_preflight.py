"""Preflight of scripts/gpu_check.sh: is everything the GPU check needs on this machine?

    python scripts/gpu_preflight.py [--wheels DIR] [--missing-file FILE] [--device-file FILE]

Run with the python that will run the check (the GPU machine's own python3). Standard library only, so
it also runs, and reports, where torch or numpy are missing. One line per requirement, in seconds:
`ok`, `MISSING` (essential: the check cannot run), `WARN`, `NOTE` (optional, or informational), each
with what to do. The requirements are what the check really uses:
- the build (cuda_ext.build): torch's CUDA build, a CUDA toolkit of torch's major version (its nvcc),
  a C++ compiler and ninja (torch's JIT build runs `ninja`);
- the cuda tests (tests/cuda_ext/test_{render,fit}_cuda.py, test_cuda_build.py): pytest, numpy and
  Pillow (gs_encoder.image_io, the committed photos), tqdm (gs_encoder.fitting);
- the GPU benchmark (`python -m eval.bench.fit_speed --part gpu`): the same, plus optionally matplotlib
  (the plot) and nvidia-ml-py (GPU utilisation; nvidia-smi is sampled without it);
- optionally compute-sanitizer (the memcheck step) and a CUDA device (without one the check builds
  and collects the tests, then stops: gpu_check.sh's exit status 5).

--missing-file receives the pip names of the missing packages (one a line) for gpu_check.sh to install
from the carried wheels; --device-file receives 1 when torch sees a CUDA device, else 0.
Exit status: 0 when nothing essential is missing, 4 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (import name, pip name, essential, what needs it)
PACKAGES = (
    ("numpy", "numpy", True, "gs_encoder (image and splat I/O), the tests, the benchmark"),
    ("PIL", "pillow", True, "gs_encoder.image_io and the committed photos (eval/bench/photos)"),
    ("tqdm", "tqdm", True, "gs_encoder.fitting's progress bars"),
    ("pytest", "pytest", True, "the cuda tests"),
    ("matplotlib", "matplotlib", False, "the benchmark's plot (skipped without it)"),
    ("pynvml", "nvidia-ml-py", False, "GPU utilisation in the benchmark (nvidia-smi is sampled without it)"),
)


class Report:
    """Collects and prints the preflight lines."""

    def __init__(self, wheels: Path):
        self.wheels, self.essential, self.pip_missing = wheels, [], []
        ver = f"{sys.version_info.major}.{sys.version_info.minor}"
        self.fetch = (
            f"here (with PyPI): bash scripts/gpu_wheels.sh --python-version {ver}, then carry "
            f'["{wheels.name}"] in the device call'
        )

    def line(self, status: str, text: str) -> None:
        print(f"[preflight] {status:<8} {text}", flush=True)

    def ok(self, text: str) -> None:
        self.line("ok", text)

    def missing(self, what: str, fix: str) -> None:
        self.essential.append(what)
        self.line("MISSING", f"{what} -> {fix}")

    def wheel_fix(self, pip_name: str) -> str:
        if self.has_wheel(pip_name):
            return f"a wheel for it is carried in {self.wheels}/ (gpu_check.sh installs it)"
        plot = " --plot" if pip_name == "matplotlib" else ""
        return f"no wheel for this python in {self.wheels}/: {self.fetch.replace(', then', plot + ', then')}"

    def has_wheel(self, pip_name: str) -> bool:
        """A wheel of that name this python can install: its tag names this CPython, or none (py3, abi3)."""
        cp = f"cp{sys.version_info.major}{sys.version_info.minor}"
        found = self.wheels.glob(f"{pip_name.replace('-', '_')}-*.whl") if self.wheels.is_dir() else []
        return any(
            f"-{cp}-" in w.name or "-py3-" in w.name or ".py3-" in w.name or "-abi3-" in w.name for w in found
        )


def check_python_and_torch(r: Report):
    """Returns the torch module, or None when it cannot be used."""
    r.ok(f"python {platform.python_version()} ({sys.executable})")
    # torch warns at import when numpy is missing; the numpy line below reports that
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    try:
        import torch
    except ImportError as e:
        r.missing(
            f"torch ({e})",
            "run the check with the python that holds torch's CUDA build: GSV_PYTHON=/path/to/python3",
        )
        return None
    if not torch.version.cuda:
        r.missing(
            f"torch {torch.__version__} is a CPU build",
            "the kernels need torch's CUDA build; set GSV_PYTHON to a python that has it",
        )
        return None
    r.ok(f"torch {torch.__version__}, built with CUDA {torch.version.cuda}")
    return torch


def check_device(r: Report, torch) -> bool:
    if torch is None:
        return False
    if os.environ.get("GSV_DRY_RUN") == "1":
        r.line("NOTE", "GSV_DRY_RUN=1: the device steps are skipped (exit status 5 after the build)")
        return False
    if not torch.cuda.is_available():
        smi = "nvidia-smi not found" if not shutil.which("nvidia-smi") else "nvidia-smi is there"
        r.line(
            "NO GPU",
            f"torch.cuda.is_available() is False ({smi}): the check builds, imports and collects the tests, "
            "then stops with exit status 5; on a GPU machine check the driver and CUDA_VISIBLE_DEVICES",
        )
        return False
    p = torch.cuda.get_device_properties(0)
    r.ok(
        f"GPU {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs"
    )
    return True


def check_toolkit(r: Report, torch) -> None:
    if torch is None:
        r.line("NOTE", "CUDA toolkit not checked (needs torch)")
        return
    sys.path.insert(0, str(ROOT))
    from cuda_ext import build

    try:
        home = build.find_toolkit()
        version = build.nvcc_version(home)
        warning = build.check_nvcc_version(version, torch.version.cuda, home)
    except build.ToolkitError as e:
        r.missing(
            f"CUDA toolkit ({e})",
            f"set CUDA_HOME to a CUDA {torch.version.cuda.split('.')[0]}.x toolkit root (bin/nvcc, include/)",
        )
        return
    r.ok(f"nvcc {version} at {home}")
    if warning:
        r.line("WARN", warning)


def check_tools(r: Report) -> None:
    cxx = os.environ.get("CXX", "c++")
    for name, why in ((cxx, "torch's C++ compiles"), ("g++", "nvcc's host compiler")):
        found = shutil.which(name)
        if found:
            out = subprocess.run([found, "--version"], capture_output=True, text=True, check=False).stdout
            r.ok(f"{name}: {(out.splitlines() or ['?'])[0]}")
        else:
            r.missing(f"{name} ({why})", "apt-get install g++ (or set CXX to a C++ compiler)")
    ninja = shutil.which("ninja")
    if ninja:
        out = subprocess.run([ninja, "--version"], capture_output=True, text=True, check=False)
        r.ok(f"ninja {out.stdout.strip()} ({ninja})")
    else:
        r.pip_missing.append("ninja")
        r.missing(
            "ninja (torch's JIT build runs it)", r.wheel_fix("ninja") + " (or apt-get install ninja-build)"
        )
    if shutil.which("compute-sanitizer"):
        r.ok("compute-sanitizer (the memcheck step)")
    else:
        r.line("NOTE", "compute-sanitizer not found: the memcheck step is skipped")


def check_packages(r: Report) -> None:
    for module, pip_name, essential, why in PACKAGES:
        try:
            m = importlib.import_module(module)
        except ImportError as e:
            r.pip_missing.append(pip_name)
            if essential:
                r.missing(f"{pip_name} ({e}; needed by {why})", r.wheel_fix(pip_name))
            else:
                r.line("NOTE", f"{pip_name} not installed (optional: {why}); {r.wheel_fix(pip_name)}")
            continue
        try:
            version = importlib.metadata.version(pip_name)
        except importlib.metadata.PackageNotFoundError:
            version = getattr(m, "__version__", "(version unknown)")
        r.ok(f"{pip_name} {version}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheels", type=Path, default=ROOT / "gpu_wheels", help="the carried wheels' folder")
    ap.add_argument("--missing-file", type=Path, help="write the pip names of missing packages here")
    ap.add_argument("--device-file", type=Path, help="write 1 (a CUDA device is usable) or 0 here")
    args = ap.parse_args(argv)
    r = Report(args.wheels)
    torch = check_python_and_torch(r)
    device = check_device(r, torch)
    check_toolkit(r, torch)
    check_tools(r)
    check_packages(r)
    if args.missing_file:
        args.missing_file.write_text("".join(f"{n}\n" for n in r.pip_missing))
    if args.device_file:
        args.device_file.write_text("1\n" if device else "0\n")
    if r.essential:
        names = "; ".join(w.split(" (")[0] for w in r.essential)
        r.line("NOT OK", f"{len(r.essential)} essential missing: {names}")
        return 4
    r.ok("nothing essential missing")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
