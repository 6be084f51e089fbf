"""`python -m cuda_ext.build [cpu|cuda|emu|all]`: compile the extensions ahead of time into cuda_ext/_build/.

- cpu: the C++/OpenMP op (gsv_cpu_ops); needs only a C++ compiler.
- cuda: the CUDA kernels (gsv_cuda_ops, a separate module, so a failed CUDA build never costs the CPU
  op), compiled without a GPU for sm_80 and sm_90 (+PTX) by the nvcc that matches torch's CUDA: the
  pip toolkit `cuda-toolkit[nvcc,cccl]` in the venv (pyproject extra `cuda`), else $CUDA_HOME, else a
  system toolkit. TORCH_CUDA_ARCH_LIST overrides the architectures.
  Every attempt writes cuda_ext/_build/cuda_build.json: whether a toolkit was found (so the CUDA build
  was expected), whether it succeeded, and why not.

- emu: the CPU emulation of the CUDA kernels (gsv_cuda_emu; docs/cuda_emulation.md): the kernel
  sources compiled as C++ against the shim headers of csrc/emu/, with the launches of splat_cuda.cu
  rewritten into calls of the emulator, and cuda_ops.cpp's host code built for CPU tensors. Needs only
  a C++ compiler; it is how the kernels run in CI.

Run by scripts/build_ext.sh. Exit status: 0 when what was asked for built (a CUDA build with no
toolkit at all is reported and skipped, status 0), 1 otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ._backend import BUILD_DIR, CPU_NAME, CUDA_BUILD_DIR, CUDA_NAME, CUDA_STATUS, EMU_BUILD_DIR, EMU_NAME
from .files import atomic_path

CSRC = Path(__file__).resolve().parent / "csrc"
CUDA_SOURCES = ("cuda_ops.cpp", "splat_cuda.cu")
DEFAULT_ARCHS = "8.0;9.0+PTX"  # A100 and H100/H200; the PTX lets newer GPUs JIT the sm_90 code


class ToolkitError(RuntimeError):
    """No usable CUDA toolkit: the CUDA build cannot be attempted."""


def build_cpu(verbose: bool = False) -> Path:
    from torch.utils.cpp_extension import load

    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MAX_JOBS", "2")
    load(
        name=CPU_NAME,
        sources=[str(CSRC / "cpu_render.cpp")],
        extra_cflags=["-O3", "-fopenmp", "-ffp-contract=off"],
        extra_ldflags=["-fopenmp"],
        build_directory=str(BUILD_DIR),
        verbose=verbose,
    )
    return BUILD_DIR


# `name<targs><<<grid, block, smem, stream>>>(` → `::gsv_emu::launch("name", grid, block, smem, stream, name<targs>, `
_LAUNCH = re.compile(r"(\b\w+(?:<[^<>;()]*>)?)<<<(.*?)>>>\(")


def emulation_source(cu_text: str, name: str = "splat_cuda.cu") -> str:
    """The C++ translation unit of the emulation: `cu_text` with every kernel launch rewritten into a
    call of gsv_emu::launch (each launch must sit on one line, and every kernel takes arguments)."""
    count = 0

    def launch(m: re.Match) -> str:
        nonlocal count
        count += 1
        kernel = m.group(1)
        return f'::gsv_emu::launch("{kernel}", {m.group(2)}, {kernel}, '

    out = _LAUNCH.sub(launch, cu_text)
    if "<<<" in out:
        line = out[: out.index("<<<")].count("\n") + 1
        raise RuntimeError(
            f"{name}:{line}: a kernel launch the emulation build cannot rewrite (keep it on one line)"
        )
    if count == 0:
        raise RuntimeError(f"{name}: no kernel launch found to rewrite")
    return f'#line 1 "{CSRC / name}"\n' + out


# the emulated kernels and the emulator, torch-free; gsv_cuda_emu links against it
KERNELS_LIB = "libgsv_emu_kernels.so"


def _cxx() -> str:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or "c++"


def emu_library(source: Path, out: Path, verbose: bool = False, csrc: Path = CSRC) -> Path:
    """Compile an emulation translation unit (a rewritten .cu file) with the emulator's runtime into the
    shared library `out`. The unit is built with the compiler's thread-sanitizer instrumentation, whose
    hooks the runtime implements: the memory checks of the emulation's checking mode (docs/cuda_emulation.md).
    Rebuilt only when the sources under `csrc` (the kernels' headers and the emulator), the unit or the
    flags change."""
    import hashlib

    cxx = _cxx()
    common = ["-std=c++17", "-O2", "-fPIC", "-fopenmp", "-ffp-contract=off", f"-I{csrc / 'emu'}", f"-I{csrc}"]
    clang = "clang" in subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    # function entry/exit hooks would only cost time: the checks need loads and stores
    no_entry_exit = (
        ["-mllvm", "-tsan-instrument-func-entry-exit=0"]
        if clang
        else ["--param=tsan-instrument-func-entry-exit=0"]
    )
    instrument = ["-fsanitize=thread", *no_entry_exit, "-DGSV_CUDA_EMULATION"]
    runtime = csrc / "emu" / "emu_runtime.cpp"
    key = hashlib.sha256()
    for f in sorted(csrc.rglob("*")):
        if f.is_file():
            key.update(f.name.encode() + f.read_bytes())
    key.update(source.read_bytes() + " ".join([cxx, *common, *instrument]).encode())
    stamp = out.with_name(out.name + ".stamp")
    if out.exists() and stamp.exists() and stamp.read_text() == key.hexdigest():
        return out
    with atomic_path(out) as tmp:
        steps = [
            [cxx, *common, *instrument, "-c", str(source), "-o", str(out) + ".kernels.o"],
            [cxx, *common, "-c", str(runtime), "-o", str(out) + ".runtime.o"],
            [cxx, "-shared", "-fopenmp", f"-Wl,-soname,{out.name}", str(out) + ".kernels.o",
             str(out) + ".runtime.o", "-o", str(tmp)],
        ]  # fmt: skip
        for cmd in steps:
            if verbose:
                print(" ".join(cmd), flush=True)
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"compiling the emulation failed: {' '.join(cmd)}\n{done.stderr[-4000:]}")
    stamp.write_text(key.hexdigest())
    return out


def build_emu(verbose: bool = False) -> Path:
    """Compile gsv_cuda_emu into cuda_ext/_build/emu/ (docs/cuda_emulation.md): the kernels and the emulator
    as a torch-free library (kernels/libgsv_emu_kernels.so), cuda_ops.cpp's host code linked against it."""
    from torch.utils.cpp_extension import load

    EMU_BUILD_DIR.mkdir(parents=True, exist_ok=True)
    generated = EMU_BUILD_DIR / "splat_cuda_emu.cpp"
    text = emulation_source((CSRC / "splat_cuda.cu").read_text())
    if not generated.exists() or generated.read_text() != text:
        generated.write_text(text)
    lib = emu_library(generated, EMU_BUILD_DIR / "kernels" / KERNELS_LIB, verbose)
    os.environ.setdefault("MAX_JOBS", "2")
    # csrc/emu first on the include path so <cuda_runtime_api.h> is the shim; the library is found through
    # the run path (LD_LIBRARY_PATH first: python -m cuda_ext.mutate swaps in mutated kernels that way)
    flags = ["-O2", "-ffp-contract=off", "-DGSV_CUDA_EMULATION", f"-I{CSRC / 'emu'}", f"-I{CSRC}"]
    load(
        name=EMU_NAME,
        sources=[str(CSRC / "cuda_ops.cpp")],
        extra_cflags=flags,
        extra_ldflags=[f"-L{lib.parent}", f"-l:{lib.name}", f"-Wl,-rpath,{lib.parent}"],
        build_directory=str(EMU_BUILD_DIR),
        verbose=verbose,
    )
    return EMU_BUILD_DIR


def _pip_toolkit(major: str) -> Path | None:
    """<site-packages>/nvidia/cu<major> of the pip wheels `cuda-toolkit[nvcc]`, if installed."""
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        home = Path(root) / f"cu{major}"
        if (home / "bin" / "nvcc").exists():
            return home
    return None


def find_toolkit() -> Path:
    """The CUDA toolkit root to build with; raises ToolkitError saying what was looked for."""
    import torch

    if not torch.version.cuda:
        raise ToolkitError(
            f"torch {torch.__version__} is a CPU build; the CUDA kernels need torch's CUDA build"
        )
    env = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if env:
        if not (Path(env) / "bin" / "nvcc").exists():
            raise ToolkitError(f"CUDA_HOME={env} has no bin/nvcc (it must be the toolkit root)")
        return Path(env)
    major = torch.version.cuda.split(".")[0]
    pip = _pip_toolkit(major)
    if pip is not None:
        return pip
    nvcc = shutil.which("nvcc")
    for home in ([Path(os.path.realpath(nvcc)).parent.parent] if nvcc else []) + [Path("/usr/local/cuda")]:
        if (home / "bin" / "nvcc").exists() and (home / "include" / "cuda_runtime.h").exists():
            return home
    raise ToolkitError(
        f"no CUDA toolkit found: install the pip toolkit into the venv "
        f"(pip install 'cuda-toolkit[nvcc,cccl]=={torch.version.cuda}.*', the project's `cuda` extra) "
        "or set CUDA_HOME to a toolkit root"
    )


def nvcc_version(home: Path) -> str:
    """'major.minor' of home/bin/nvcc."""
    out = subprocess.run(
        [str(home / "bin" / "nvcc"), "--version"], capture_output=True, text=True, check=False
    )
    found = re.search(r"release (\d+\.\d+)", out.stdout)
    if out.returncode != 0 or not found:
        raise ToolkitError(f"{home}/bin/nvcc --version failed: {(out.stderr or out.stdout).strip()[:200]}")
    return found.group(1)


def check_nvcc_version(nvcc: str, torch_cuda: str, home: Path | str = "nvcc") -> str | None:
    """The rule for building against torch's CUDA: the major versions must agree (CUDA keeps its ABI
    within a major release, and torch's own BuildExtension refuses only a major mismatch); a minor
    mismatch, common on GPU machines whose system toolkit is newer than torch's wheels, is allowed.

    Returns None when the versions agree, a warning string on a minor mismatch; raises ToolkitError
    on a major mismatch or an unreadable version.
    """
    try:
        nv_major, nv_minor = (int(x) for x in nvcc.split(".")[:2])
        t_major, t_minor = (int(x) for x in torch_cuda.split(".")[:2])
    except ValueError:
        raise ToolkitError(
            f"cannot compare nvcc {nvcc!r} at {home} with torch's CUDA {torch_cuda!r}"
        ) from None
    if nv_major != t_major:
        raise ToolkitError(
            f"nvcc {nvcc} at {home} is CUDA {nv_major}, torch was built with CUDA {torch_cuda}; install "
            f"'cuda-toolkit[nvcc,cccl]=={torch_cuda}.*' or point CUDA_HOME at a CUDA {t_major}.x toolkit"
        )
    if nv_minor != t_minor:
        newer = nvcc if nv_minor > t_minor else torch_cuda
        return (
            f"nvcc {nvcc} at {home} differs from torch's CUDA {torch_cuda} in the minor version; building "
            f"anyway (same major version; the GPU driver must support CUDA {newer})"
        )
    return None


def _cudart_link_dir(home: Path) -> list[str]:
    """Linker flags for -lcudart: the pip wheel ships only libcudart.so.<major>, so link through a
    symlink in our build folder (the toolkit itself is left untouched)."""
    if any((home / d / "libcudart.so").exists() for d in ("lib64", "lib")):
        return []
    versioned = sorted((home / "lib").glob("libcudart.so.*")) + sorted(
        (home / "lib64").glob("libcudart.so.*")
    )
    if not versioned:
        raise ToolkitError(f"{home} has no libcudart.so*: the toolkit's runtime is missing")
    link_dir = CUDA_BUILD_DIR / "cudart"
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / "libcudart.so"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(versioned[0])
    return [f"-L{link_dir}"]


def _write_status(status: dict) -> None:
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    CUDA_STATUS.write_text(json.dumps(status, indent=2) + "\n")


def build_cuda(verbose: bool = False) -> Path:
    """Compile gsv_cuda_ops into cuda_ext/_build/cuda/; raises ToolkitError or RuntimeError/OSError."""
    import torch

    start = time.perf_counter()
    status: dict = {"expected": False, "ok": False, "torch_cuda": torch.version.cuda}
    try:
        home = find_toolkit()
        status.update(expected=True, toolkit=str(home))
        version = nvcc_version(home)
        status["nvcc"] = version
        warning = check_nvcc_version(version, torch.version.cuda, home)
        if warning:
            status["warning"] = warning
            print(f"warning: {warning}", file=sys.stderr)
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCHS
        status["archs"] = archs
        ldflags = _cudart_link_dir(home)
        # cpp_extension reads CUDA_HOME once at import (and may have guessed it from an nvcc wrapper
        # on PATH, environment.md §1): set both, and the architectures, which it cannot detect here.
        os.environ["CUDA_HOME"] = str(home)
        import torch.utils.cpp_extension as cpp_ext

        cpp_ext.CUDA_HOME = str(home)
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        os.environ.setdefault("MAX_JOBS", "2")
        CUDA_BUILD_DIR.mkdir(parents=True, exist_ok=True)
        try:
            cpp_ext.load(
                name=CUDA_NAME,
                sources=[str(CSRC / s) for s in CUDA_SOURCES],
                extra_cflags=["-O3"],
                extra_cuda_cflags=["-O3"],
                extra_ldflags=ldflags,
                build_directory=str(CUDA_BUILD_DIR),
                verbose=verbose,
            )
        except (RuntimeError, OSError, ImportError):
            for stale in CUDA_BUILD_DIR.glob(f"{CUDA_NAME}*.so"):  # never load an old build by mistake
                stale.unlink()
            raise
    except (ToolkitError, RuntimeError, OSError, ImportError) as e:
        status["reason"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else e!r}"
        status["seconds"] = round(time.perf_counter() - start, 1)
        _write_status(status)
        raise
    status.update(ok=True, seconds=round(time.perf_counter() - start, 1))
    _write_status(status)
    return CUDA_BUILD_DIR


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    verbose = "-v" in args
    targets = [a for a in args if a != "-v"] or ["all"]
    if any(t not in ("cpu", "cuda", "emu", "all") for t in targets):
        print(f"usage: python -m cuda_ext.build [cpu|cuda|emu|all] [-v], got {targets}", file=sys.stderr)
        return 2
    code = 0
    for target, build, name, what in (
        ("cpu", build_cpu, CPU_NAME, "the CPU op"),
        ("emu", build_emu, EMU_NAME, "the CPU emulation of the CUDA kernels"),
    ):
        if {target, "all"} & set(targets):
            try:
                print(f"built {name} in {build(verbose=verbose)}")
            except (RuntimeError, OSError) as e:
                print(f"error: building {what} failed: {e}", file=sys.stderr)
                code = 1
    if {"cuda", "all"} & set(targets):
        try:
            out = build_cuda(verbose=verbose)
            print(f"built {CUDA_NAME} in {out}")
        except ToolkitError as e:
            if json.loads(CUDA_STATUS.read_text()).get("expected"):
                print(f"error: building the CUDA kernels failed: {e}", file=sys.stderr)
                code = 1
            else:
                print(f"note: CUDA kernels not built: {e}", file=sys.stderr)
        except (RuntimeError, OSError, ImportError) as e:
            print(f"error: building the CUDA kernels failed: {e}", file=sys.stderr)
            code = 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
