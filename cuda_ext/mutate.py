"""`python -m cuda_ext.mutate`: mutation testing of the CUDA kernels through their CPU emulation.

Each mutation of the catalogue is a one-line bug of the kind a kernel change brings in (a dropped barrier,
a bound off by one, a term left out of a gradient). It is applied alone to a temporary copy of csrc/, the
emulated kernels are rebuilt from that copy (cuda_ext.build.emu_library), and the emulated kernel tests
run against them in the emulation's checking mode (the extension finds the mutated library first on
LD_LIBRARY_PATH). A mutation is killed when a test fails (or the run crashes or times out), survived
when every test passes. The unmutated sources run first and must pass, or nothing is concluded.

    python -m cuda_ext.mutate                      # all, writes eval/results/kernel_mutations.{md,json}
    python -m cuda_ext.mutate --only tile_cap_off_by_one drop_l22_chain --out /tmp/m
    python -m cuda_ext.mutate --list

Exit status: 0 when every mutation run was killed, 1 when one survived or the unmutated run failed,
2 on bad arguments or a mutation that no longer applies (its line changed: update the catalogue).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from . import build
from .files import atomic_path, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
# The tests that run the kernels on the emulation (each also has a "cuda" twin, skipped without a GPU).
TESTS = (
    "tests/cuda_ext/test_emulation.py",
    "tests/cuda_ext/test_render_cuda.py",
    "tests/cuda_ext/test_fit_cuda.py",
    "tests/cuda_ext/test_nonfinite.py",
    "tests/cuda_ext/test_dispatch.py",
)


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # under csrc/
    old: str  # must occur exactly once in the file
    new: str
    what: str


CATALOGUE = (
    Mutation(
        "forward_barrier_removed",
        "render_fwd.cuh",
        "        s_box[tid] = args.box[g];\n      }\n      __syncthreads();\n",
        "        s_box[tid] = args.box[g];\n      }\n",
        "forward_kernel reads the staged Gaussians before every thread has written its slot",
    ),
    Mutation(
        "forward_stage_barrier_removed",
        "render_fwd.cuh",
        "      eval(n);\n      __syncthreads();  // before the next chunk overwrites shared memory\n    }\n  } else {",
        "      eval(n);\n    }\n  } else {",
        "the next chunk of a long tile list overwrites shared memory other threads still read",
    ),
    Mutation(
        "ballot_count_barrier_removed",
        "render_fwd.cuh",
        "      if (lane == 0) s_warp[warp] = __popc(ballot);\n      __syncthreads();\n",
        "      if (lane == 0) s_warp[warp] = __popc(ballot);\n",
        "the overflow scan sums the warps' hit counts before every warp has written its own",
    ),
    Mutation(
        "ballot_prefix_wrong",
        "render_fwd.cuh",
        "__popc(ballot & ((1u << lane) - 1u))",
        "__popc(ballot & (1u << lane))",
        "the overflow scan's slot of a hit counts the lane itself",
    ),
    Mutation(
        "swapped_dx_dy",
        "render_fwd.cuh",
        "quad(ga, gb.x, pxc - ga.x, pyc - ga.y)",
        "quad(ga, gb.x, pyc - ga.y, pxc - ga.x)",
        "the forward's quadratic form with x and y offsets swapped",
    ),
    Mutation(
        "tile_cap_off_by_one",
        "render_fwd.cuh",
        "if (n < cap) out[n] = static_cast<int>(g);",
        "if (n <= cap) out[n] = static_cast<int>(g);",
        "an overflowing tile writes one entry past its list (into the next tile's, or past the buffer)",
    ),
    Mutation(
        "tile_overhang_unchecked",
        "render_fwd.cuh",
        "if (px >= args.size || py >= args.size) return;",
        "if (false) return;",
        "pixels of tiles that overhang the canvas are written (into other rows, or past the image)",
    ),
    Mutation(
        "setup_bound_off_by_one",
        "render_fwd.cuh",
        "  if (idx >= total) return;\n  if (!alive[idx]) {",
        "  if (idx > total) return;\n  if (!alive[idx]) {",
        "setup_kernel's thread idx == total reads and writes one Gaussian past the buffers",
    ),
    Mutation(
        "box_meets_bound",
        "splat_common.cuh",
        "return bx.x <= x1 && bx.y >= x0 && bx.z <= y1 && bx.w >= y0;",
        "return bx.x <= x1 && bx.y > x0 && bx.z <= y1 && bx.w >= y0;",
        "a box ending on a tile's or patch's first column is taken to miss it",
    ),
    Mutation(
        "warp_shuffle_lane",
        "splat_common.cuh",
        "v += __shfl_xor_sync(kFullMask, v, m);",
        "v += __shfl_xor_sync(kFullMask, v, m ^ 1);",
        "the butterfly sum reads the wrong partner lane",
    ),
    Mutation(
        "pixel_loop_off_by_one",
        "splat_common.cuh",
        "for (int j = g.box.x + (lane & 7); j <= g.box.y; j += 8) {",
        "for (int j = g.box.x + (lane & 7); j < g.box.y; j += 8) {",
        "the gather skips each box's last column",
    ),
    Mutation(
        "colour_gradient_dropped",
        "splat_common.cuh",
        "      s.cg += v1 * w;\n",
        "",
        "the green channel's gradient is never gathered",
    ),
    Mutation(
        "l22_chain_term_dropped",
        "splat_common.cuh",
        "g[4] = s.sa * da_dz + s.sb * db_dz + s.sc * dc_dz;",
        "g[4] = s.sa * da_dz + s.sb * db_dz;",
        "d/dl22 misses the conic's c term",
    ),
    Mutation(
        "l21_chain_term_dropped",
        "splat_common.cuh",
        "g[3] = s.sa * da_dt + s.sb * db_dt;",
        "g[3] = s.sb * db_dt;",
        "d/dl21 misses the conic's a term (zero where l21 = 0: only a fitted state shows it)",
    ),
    Mutation(
        "adam_eps_placement",
        "render_bwd.cuh",
        "p[k] -= (mk / (sqrtf(vk / bc2) + eps)) * (lr_k * step_scale);",
        "p[k] -= (mk / sqrtf(vk / bc2 + eps)) * (lr_k * step_scale);",
        "Adam's epsilon inside the square root",
    ),
    Mutation(
        "adam_bias_correction_dropped",
        "splat_cuda.cu",
        "epi.step_scale = static_cast<float>(sched / (1.0 - std::pow(f.beta1, t)));",
        "epi.step_scale = static_cast<float>(sched);",
        "Adam's first-moment bias correction left out",
    ),
    Mutation(
        "box_buffers_not_swapped",
        "splat_cuda.cu",
        "    std::swap(scratch.box, scratch.next_box);\n",
        "",
        "the fit's next iteration reads the boxes of the previous parameters",
    ),
    Mutation(
        "gather_epilogue_unbounded",
        "render_bwd.cuh",
        "  if (idx < total) epi(idx, idx / N, mine);",
        "  epi(idx, idx / N, mine);",
        "the last warp's lanes past the last Gaussian run the epilogue on rows that do not exist",
    ),
    Mutation(
        "prune_mask_ignores_alive",
        "render_bwd.cuh",
        "keep[idx] = alive[idx] && (luminosity(pb + g * 8) >= tau || g == brightest);",
        "keep[idx] = luminosity(pb + g * 8) >= tau || g == brightest;",
        "pruning keeps dead (padding or already pruned) rows",
    ),
    Mutation(
        "prune_reduction_barrier_removed",
        "render_bwd.cuh",
        "        s_arg[tid] = a;\n      }\n    }\n    __syncthreads();\n",
        "        s_arg[tid] = a;\n      }\n    }\n",
        "the brightest-Gaussian reduction reads partial results of other threads without a barrier",
    ),
)


def apply(csrc: Path, m: Mutation) -> None:
    """Apply `m` to the copy of csrc/ at `csrc`; ValueError when its line is not there exactly once."""
    path = csrc / m.file
    text = path.read_text()
    found = text.count(m.old)
    if found != 1:
        raise ValueError(f"mutation {m.name}: its line occurs {found} times in {m.file} (expected once)")
    path.write_text(text.replace(m.old, m.new))


def _junit(path: Path) -> tuple[int, list[str]]:
    """(tests run, names of the failed ones) from a junit XML report."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return 0, []
    run, failed = 0, []
    for case in root.iter("testcase"):
        if case.find("skipped") is not None:
            continue
        run += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}")
    return run, failed


def run_one(
    m: Mutation | None, work: Path, seed: int, timeout: float, tests: tuple[str, ...] = TESTS
) -> dict:
    """Build the (mutated) kernels in `work` and run the emulated tests on them: a result row."""
    start = time.perf_counter()
    name = m.name if m else "unmutated"
    csrc = work / name / "csrc"
    shutil.copytree(build.CSRC, csrc)
    if m is not None:
        apply(csrc, m)
    source = work / name / "splat_cuda_emu.cpp"
    source.write_text(
        build.emulation_source((csrc / "splat_cuda.cu").read_text(), str(csrc / "splat_cuda.cu"))
    )
    row = {"mutation": name, "file": m.file if m else "", "what": m.what if m else "the sources as they are"}
    try:
        lib = build.emu_library(source, work / name / "lib" / build.KERNELS_LIB, csrc=csrc)
    except RuntimeError as e:
        row.update(status="did not build", detail=str(e).splitlines()[-1][:300], killed_by=[], tests_run=0)
        row["seconds"] = round(time.perf_counter() - start, 1)
        return row
    row.update(_run_tests(lib, work / name / "junit.xml", m is not None, seed, timeout, tests))
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def _run_tests(
    lib: Path, report: Path, mutated: bool, seed: int, timeout: float, tests: tuple[str, ...]
) -> dict:
    """The emulated kernel tests run on the kernels library `lib` (checking mode): status, the tests that
    failed, how many ran, the exit code (and the last line of output when it crashed or timed out)."""
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": f"{lib.parent}{os.pathsep}{os.environ.get('LD_LIBRARY_PATH', '')}",
        "GSV_EMU_CHECK": "1",
        "GSV_EMU_SEED": str(seed),
        "PYTHONPATH": str(ROOT),
    }
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "not slow",
        f"--junitxml={report}",
    ]
    try:
        done = subprocess.run(
            [*cmd, *tests], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        code, tail = done.returncode, (done.stdout + done.stderr)[-2000:]
    except subprocess.TimeoutExpired:
        code, tail = None, f"timed out after {timeout:.0f} s"
    run, failed = _junit(report)
    if code is None:
        status = "killed (timeout)"
    elif code == 0:
        status = "survived" if mutated else "passed"
    elif code == 1 and failed:
        status = "killed" if mutated else "FAILED"
    else:  # a crash of the test process, or pytest's own error
        status = "killed (crash)" if mutated else "FAILED"
    row = {"status": status, "killed_by": failed, "tests_run": run, "exit_code": code}
    if status in ("FAILED", "killed (crash)", "killed (timeout)"):
        row["detail"] = tail.strip().splitlines()[-1][:300] if tail.strip() else ""
    return row


def _cpu_name() -> str:
    # as gs_encoder.report's: cuda_ext imports nothing from the project (docs/format.md's layering)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "cuda_ext", "tests/cuda_ext"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return (out.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty else "")


def write_report(rows: list[dict], out: Path, meta: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    killed = sum(r["status"].startswith("killed") for r in rows[1:])
    lines = [
        "# Kernel mutations",
        "",
        "Regenerate: `python -m cuda_ext.mutate` (docs/cuda_emulation.md, Mutation testing).",
        "",
        f"Measured on {meta['machine']}, {meta['date']}, commit {meta['commit']}; tests "
        f"{', '.join(meta['tests'])} (`-m 'not slow'`) in the emulation's checking mode, seed {meta['seed']}.",
        "",
        f"**{killed} of {len(rows) - 1} mutations killed**; the unmutated sources: {rows[0]['status']} "
        f"({rows[0]['tests_run']} tests, {rows[0]['seconds']} s).",
        "",
        f"![tests that failed per mutation]({out.with_suffix('.png').name})",
        "",
        "| mutation | file | what it breaks | result | tests that failed | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows[1:]:
        names = r["killed_by"]
        shown = ", ".join(f"`{n}`" for n in names[:3]) + (
            f" and {len(names) - 3} more" if len(names) > 3 else ""
        )
        result = r["status"] + (f": {r['detail']}" if r.get("detail") else "")
        lines.append(
            f"| `{r['mutation']}` | {r['file']} | {r['what']} | {result} | "
            f"{len(names)} of {r['tests_run']}{': ' + shown if names else ''} | {r['seconds']} |"
        )
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    atomic_write_text(out.with_suffix(".json"), json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    plot(rows, out.with_suffix(".png"))


def plot(rows: list[dict], path: Path) -> None:
    """Horizontal bars: how many tests each mutation failed (red: survived)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    muts = rows[1:]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(muts) + 1.2))
    counts = [len(r["killed_by"]) for r in muts]
    colours = ["#2e7d32" if r["status"].startswith("killed") else "#c62828" for r in muts]
    ax.barh(range(len(muts)), counts, color=colours)
    ax.set_yticks(range(len(muts)), [r["mutation"] for r in muts], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"tests that failed (of {rows[0]['tests_run']}); red: survived")
    killed = sum(r["status"].startswith("killed") for r in muts)
    ax.set_title(f"Kernel mutations: {killed} of {len(muts)} killed")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _chosen(only: list[str] | None) -> list | None:
    """The mutations to run (all, or those named); None after printing the unknown names."""
    if not only:
        return list(CATALOGUE)
    known = {m.name: m for m in CATALOGUE}
    unknown = [n for n in only if n not in known]
    if unknown:
        print(f"cuda_ext.mutate: unknown mutation(s) {unknown}; --list shows the catalogue", file=sys.stderr)
        return None
    return [known[n] for n in only]


def _catalogue_applies(chosen: list, tmp: Path) -> bool:
    """Whether every mutation still finds its line in the sources (checked before an hour of runs)."""
    for m in chosen:
        probe = tmp / "probe"
        shutil.copytree(build.CSRC, probe, dirs_exist_ok=True)
        try:
            apply(probe, m)
        except ValueError as e:
            print(f"cuda_ext.mutate: {e}; update cuda_ext/mutate.py's catalogue", file=sys.stderr)
            return False
        shutil.rmtree(probe)
    return True


def _run_all(chosen: list, tmp: Path, args) -> list[dict]:
    """The unmutated sources' run, then each mutation's; stops when the unmutated sources already fail."""
    from tqdm import tqdm

    rows = []
    bar = tqdm([None, *chosen], desc="mutations", unit="run")
    for m in bar:
        bar.set_postfix_str(m.name if m else "unmutated")
        rows.append(run_one(m, tmp, args.seed, args.timeout, tuple(args.tests)))
        if m is None and rows[0]["status"] != "passed":
            print(
                f"cuda_ext.mutate: the unmutated sources fail their tests: {rows[0].get('detail')}",
                file=sys.stderr,
            )
            break
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run these mutations only (see --list)")
    ap.add_argument("--list", action="store_true", help="list the catalogue and stop")
    ap.add_argument("--from-json", type=Path, help="rewrite the report (.md, .png) of a run's JSON; no runs")
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "kernel_mutations",
                    help="report path without suffix (.md and .json are written)")  # fmt: skip
    ap.add_argument(
        "--tests",
        nargs="+",
        default=list(TESTS),
        help="pytest paths or node ids to run (default: every emulated kernel test)",
    )
    ap.add_argument("--seed", type=int, default=0, help="the checking mode's seed of block and thread orders")
    ap.add_argument(
        "--timeout", type=float, default=900.0, help="seconds per test run before it counts as killed"
    )
    args = ap.parse_args(argv)
    if args.from_json:
        run = json.loads(args.from_json.read_text())
        write_report(run.pop("rows"), args.out, run)
        return 0
    if args.list:
        for m in CATALOGUE:
            print(f"{m.name:34s} {m.file:18s} {m.what}")
        return 0
    chosen = _chosen(args.only)
    if chosen is None:
        return 2
    with tempfile.TemporaryDirectory(prefix="gsv_mutate_") as tmp:
        if not _catalogue_applies(chosen, Path(tmp)):
            return 2
        rows = _run_all(chosen, Path(tmp), args)
    meta = {
        "machine": f"{_cpu_name()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "commit": _commit(),
        "seed": args.seed,
        "tests": args.tests,
    }
    write_report(rows, args.out, meta)
    survived = [r["mutation"] for r in rows[1:] if not r["status"].startswith("killed")]
    print(f"{len(rows) - 1 - len(survived)} of {len(rows) - 1} killed; report: {args.out.with_suffix('.md')}")
    if survived:
        print(f"survived or not built: {', '.join(survived)}")
    return 0 if rows[0]["status"] == "passed" and not survived and len(rows) == len(chosen) + 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
