"""`python -m cuda_ext.mutate`: its catalogue applies to today's kernel sources, and a smoke run of three
mutations through the emulated tests kills all three (docs/cuda_emulation.md, Mutation testing)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cuda_ext
from cuda_ext import build, mutate

ROOT = Path(__file__).resolve().parents[2]


def test_every_mutation_applies_once_and_changes_the_sources(tmp_path):
    assert len(mutate.CATALOGUE) >= 12
    assert len({m.name for m in mutate.CATALOGUE}) == len(mutate.CATALOGUE)
    for m in mutate.CATALOGUE:
        csrc = tmp_path / m.name
        shutil.copytree(build.CSRC, csrc)
        before = (csrc / m.file).read_text()
        mutate.apply(csrc, m)
        after = (csrc / m.file).read_text()
        assert after != before and len(before) - len(after) == len(m.old) - len(m.new), m.name
    bad = mutate.Mutation("gone", "render_fwd.cuh", "no such line", "", "")
    with pytest.raises(ValueError, match="gone: its line occurs 0 times in render_fwd.cuh"):
        mutate.apply(tmp_path / mutate.CATALOGUE[0].name, bad)


def test_unknown_mutation_is_refused(capsys):
    assert mutate.main(["--only", "no_such_mutation"]) == 2
    assert "unknown mutation(s) ['no_such_mutation']" in capsys.readouterr().err


@pytest.mark.slow
def test_three_mutations_are_killed(tmp_path):
    if cuda_ext.emu_load_error() is not None:
        pytest.skip(f"the emulation is not built: {cuda_ext.emu_load_error()}")
    out = tmp_path / "mutations"
    names = ["tile_cap_off_by_one", "swapped_dx_dy", "colour_gradient_dropped"]
    tests = ["tests/cuda_ext/test_emulation.py", "tests/cuda_ext/test_render_cuda.py"]
    done = subprocess.run(
        [sys.executable, "-m", "cuda_ext.mutate", "--only", *names, "--tests", *tests, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    rows = {r["mutation"]: r for r in report["rows"]}
    assert rows["unmutated"]["status"] == "passed" and rows["unmutated"]["tests_run"] > 20
    for name in names:
        assert rows[name]["status"] == "killed" and rows[name]["killed_by"], rows[name]
    # the off-by-one is seen by the checks (a race on the next tile's list, or past the buffer)
    assert any(
        "bit_for_bit" in t or "tile_lists" in t or "block_edges" in t
        for t in rows["tile_cap_off_by_one"]["killed_by"]
    )
    assert "**3 of 3 mutations killed**" in out.with_suffix(".md").read_text()
