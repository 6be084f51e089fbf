"""The speed benchmark runs without matplotlib: its plots are skipped with a note."""

import sys

from eval.bench import fit_speed


def test_plots_are_optional(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    data = {"fit": {"400/16": {"images_per_s": 1.0}}, "size": 64, "iters": 30, "device": "x"}
    fit_speed.plot_gpu(data, tmp_path / "gpu.png")
    fit_speed.plot(
        {"iterations": {"64/1/init": 1.0}, "size": 48, "threads": 1}, [64], [1], tmp_path / "cpu.png"
    )
    assert capsys.readouterr().out.count("matplotlib is not installed; plot skipped") == 2
    assert not list(tmp_path.iterdir())
