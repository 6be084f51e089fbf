"""Preflight of scripts/gpu_check.sh: is everything the GPU check needs on this machine?

    python scripts/gpu_preflight.py [--wheels DIR] [--missing-file FILE] [--device-file FILE]

Run with the python that will run the check (the GPU machine's own python3). Standard library only, so
it also runs, and reports, where torch or numpy are missing. One line per requirement, in seconds:
`ok`, `MISSING` (essential: the check cannot run), `WARN`, `NOTE` (optional, or informational), each
with what to do. The requirements are what the check really uses:
- the build (cuda_ext.build): torch's CUDA build, a CUDA toolkit of torch's major version (its nvcc),
  a C++ compiler and ninja (torch's JIT build runs `ninja`);
- the packages of scripts/gpu_packages.txt: the essential ones are what the cuda tests and the GPU
  benchmark import beyond torch (derived: `--derive` rewrites them from a run of what the check runs,
  and a test re-derives and compares), the optional ones improve the benchmark;
- optionally compute-sanitizer (the sanitizer step) and a CUDA device (without one the check builds
  and collects the tests, then stops: gpu_check.sh's exit status 5).

    python scripts/gpu_preflight.py --pip-names essential tool   # the wheels to copy (gpu_wheels.sh)
    python scripts/gpu_preflight.py --derive                     # with the project's .venv python

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
PACKAGE_LIST = ROOT / "scripts" / "gpu_packages.txt"
# What the GPU check runs (gpu_check.sh): these test files collected and run, this benchmark module.
CHECK_TESTS = (
    "tests/cuda_ext/test_render_cuda.py",
    "tests/cuda_ext/test_fit_cuda.py",
    "tests/cuda_ext/test_cuda_build.py",
)
CHECK_MODULES = ("eval.bench.fit_speed", "cuda_ext.build")


KINDS = ("essential", "optional", "tool")


def read_packages(path: Path = PACKAGE_LIST) -> list[tuple[str, str, str, str]]:
    """(import name, pip name, kind, what needs it) of every line of scripts/gpu_packages.txt; kind is
    essential, optional or tool (a program the check runs, checked on PATH)."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            parts = line.split(maxsplit=3)
            if len(parts) != 4 or parts[2] not in KINDS:
                raise ValueError(
                    f"{path}:{n}: expected 'pip-name import-name {'|'.join(KINDS)} why', got {line!r}"
                )
            pip_name, module, kind, why = parts
            rows.append((module, pip_name, kind, why))
    return rows


def torch_closure() -> set[str]:
    """Normalised names of torch and every distribution its requirements pull in under this platform's
    markers (extras followed): what a python that holds torch has anyway."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    todo, seen = [("torch", frozenset())], {}
    while todo:
        name, extras = todo.pop()
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:  # an optional requirement this platform never installs
            continue
        key = _norm(dist.metadata["Name"])
        if key in seen and extras <= seen[key]:
            continue
        seen[key] = seen.get(key, frozenset()) | extras
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in seen[key]] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(e) for e in envs):
                todo.append((req.name, frozenset(req.extras)))
    return set(seen)


def _norm(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


# Run in a fresh python: collect the check's tests, import its modules, and do what its tests do at run
# time (a fit from the default learned init, on a committed photo), recording every import statement as
# (importing top-level module, imported top-level module); print them.
_IMPORTS_OF_THE_CHECK = r"""
import builtins, sys
edges, real = set(), builtins.__import__
def record(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and globals:
        edges.add((str(globals.get("__name__", "")).split(".")[0], name.split(".")[0]))
    return real(name, globals, locals, fromlist, level)
builtins.__import__ = record
import contextlib, importlib, io
import pytest
with contextlib.redirect_stdout(io.StringIO()):
    code = pytest.main(["-q", "--collect-only", "-p", "no:cacheprovider", *sys.argv[1].split(",")])
if code != 0:
    sys.exit(f"collecting {sys.argv[1]} failed ({code})")
for m in sys.argv[2].split(","):
    importlib.import_module(m)
import runpy
runpy.run_path("scripts/gpu_sanitize.py", run_name="gpu_sanitize")  # its imports (the sanitizer step's workload)
from eval.bench.common import sample_photo
from gs_encoder import FitConfig, fit_images
from gs_encoder.image_io import to_canvas
fit_images(to_canvas(sample_photo("chelsea") / 255.0, 32, "crop")[None], FitConfig(num_gaussians=64, iters=2))
print("\n".join(f"{a} {b}" for a, b in sorted(edges)))
"""


# imported inside `try: ... except ImportError` by a package the check needs, so picked up from whatever
# else the environment holds (gradio brings defusedxml, which Pillow then reads XMP with)
WHEN_PRESENT = ("defusedxml",)


def derive_essential() -> dict[str, str]:
    """{pip name: import name} of the distributions the GPU check needs beyond torch's closure and the
    standard library: those imported by the project's code (and the check's script), and what they import
    in turn, found by running what the check runs in this python (which must hold them all). A package that
    only torch or a pytest plugin imports when present (dill, anyio) is not needed."""
    import importlib.metadata as md

    out = subprocess.run(
        [sys.executable, "-c", _IMPORTS_OF_THE_CHECK, ",".join(CHECK_TESTS), ",".join(CHECK_MODULES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if out.returncode != 0:
        raise RuntimeError(f"running what the GPU check imports failed:\n{out.stderr[-3000:]}")
    imports: dict[str, set[str]] = {}
    for line in out.stdout.splitlines():
        importer, imported = line.split()
        imports.setdefault(importer, set()).add(imported)
    owners = md.packages_distributions()
    ours = {p.name for p in ROOT.iterdir() if p.is_dir()} | {"__main__"}
    # WHEN_PRESENT: packages a needed one imports only if installed (the check runs without them)
    skip = torch_closure() | {_norm(n) for n in ("pip", "setuptools", *WHEN_PRESENT)}

    def needed(module: str) -> bool:
        dists = owners.get(module, [])
        return module not in sys.stdlib_module_names and bool(dists) and _norm(dists[0]) not in skip

    reached, todo = set(), [m for root in ours for m in imports.get(root, ())]
    while todo:
        module = todo.pop()
        if module in reached or module in ours or not needed(module):
            continue
        reached.add(module)
        todo.extend(imports.get(module, ()))
    found: dict[str, str] = {}
    for module in sorted(reached):
        pip_name = _norm(owners[module][0])
        # the import name that reads like the distribution (PIL for pillow: the public one, not _pytest)
        if pip_name not in found or _norm(module) == pip_name or found[pip_name].startswith("_"):
            found[pip_name] = module
    return dict(sorted(found.items()))


def write_package_list(path: Path = PACKAGE_LIST) -> str:
    """Rewrite the essential lines of the package list from derive_essential(); keep the others."""
    head = [line for line in path.read_text().splitlines() if line.startswith("#")]
    kept = [
        f"{pip} {module} {kind} {why}"
        for module, pip, kind, why in read_packages(path)
        if kind != "essential"
    ]
    rows = [
        f"{pip} {module} essential the GPU check's tests or benchmark"
        for pip, module in derive_essential().items()
    ]
    text = "\n".join(head + rows + kept) + "\n"
    path.write_text(text)
    return text


class Report:
    """Collects and prints the preflight lines."""

    def __init__(self, wheels: Path):
        self.wheels, self.essential, self.pip_missing = wheels, [], []
        ver = f"{sys.version_info.major}.{sys.version_info.minor}"
        self.fetch = (
            f"here (with PyPI): bash scripts/gpu_wheels.sh --python-version {ver}, then copy "
            f"{wheels.name}/ with the working tree"
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
        optional = any(pip == pip_name and kind == "optional" for _, pip, kind, _ in read_packages())
        flag = " --optional" if optional else ""
        return f"no wheel for this python in {self.wheels}/: {self.fetch.replace(', then', flag + ', then')}"

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
    for module, pip_name, kind, why in read_packages():
        if kind == "tool":
            continue
        essential = kind == "essential"
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
    ap.add_argument(
        "--pip-names",
        nargs="+",
        choices=KINDS,
        metavar="KIND",
        help="print the pip names of the list's packages of these kinds (the wheels to copy) and stop",
    )
    ap.add_argument(
        "--derive",
        action="store_true",
        help="rewrite the list's essential lines from what the check imports (run with the project's python)",
    )
    args = ap.parse_args(argv)
    if args.pip_names:
        print(" ".join(pip for _, pip, kind, _ in read_packages() if kind in args.pip_names))
        return 0
    if args.derive:
        print(write_package_list(), end="")
        return 0
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
