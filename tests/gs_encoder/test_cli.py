"""`gsv` end to end: fit, render, info, and every bad input giving one error line and a non-zero exit."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gs_encoder.cli import build_parser, main

FAST = ["--num-gaussians", "64", "--iters", "30", "--size", "32", "-q"]


def test_every_subcommand_has_help():
    parser = build_parser()
    for cmd in ("fit", "fit-shards", "render", "info", "convert", "encoder-params"):
        with pytest.raises(SystemExit) as e:
            parser.parse_args([cmd, "--help"])
        assert e.value.code == 0


def test_console_script_runs():
    exe = __import__("shutil").which("gsv") or None
    cmd = [exe] if exe else [sys.executable, "-m", "gs_encoder.cli"]
    out = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "fit" in out.stdout


def test_fit_render_info(tmp_path, photo_path, capsys):
    out = tmp_path / "out"
    assert (
        main(["fit", str(photo_path("chelsea.png")), str(photo_path("rocket.jpg")), "-o", str(out), *FAST])
        == 0
    )
    table = capsys.readouterr().out
    assert "chelsea" in table and "PSNR" in table
    meta = json.loads((out / "chelsea.json").read_text())
    assert meta["canvas"] == 32 and meta["num_gaussians"] == 64 and meta["psnr"] > 15
    import cuda_ext

    assert meta["backend"] == ("cpp" if cuda_ext.available() else "torch")  # the renderer that really ran
    assert np.load(out / "rocket.gs.npy").shape == (64, 8)

    png = tmp_path / "cmp.png"
    assert (
        main(
            [
                "render",
                str(out / "chelsea.gs.npy"),
                "-o",
                str(png),
                "--size",
                "96",
                "--compare",
                str(photo_path("chelsea.png")),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert f"{meta['psnr']:.2f}" in printed  # the comparison recomputes the same PSNR from the file
    w, h = Image.open(png).size
    assert w == 3 * 96 and h > 96

    ell = tmp_path / "ell.png"
    assert main(["render", str(out / "chelsea.gs.npy"), "-o", str(ell), "--size", "64", "--ellipses"]) == 0
    assert Image.open(ell).size == (64, 64)
    assert main(["info", str(out / "chelsea.gs.npy")]) == 0
    assert "Gaussians      64" in capsys.readouterr().out

    # rerun skips finished outputs
    assert main(["fit", str(photo_path("chelsea.png")), "-o", str(out), *FAST]) == 0
    assert "skip" in capsys.readouterr().out


def test_multi_image_fit_survives_bad_inputs(tmp_path, photo_path, capsys):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(photo_path("rocket.jpg").read_bytes()[:2000])
    missing = tmp_path / "missing.png"
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.array([[[1, 2, 3]]], np.uint8)).save(tiny)
    out = tmp_path / "out"
    inputs = [empty, text, photo_path("coffee.png"), trunc, missing, tiny]
    code = main(["fit", *map(str, inputs), "-o", str(out), *FAST])
    err = capsys.readouterr().err
    assert code == 1
    for bad in (empty, text, trunc, missing):
        assert sum(str(bad) in line for line in err.splitlines()) == 1
    assert (out / "coffee.gs.npy").exists() and (out / "tiny.gs.npy").exists()
    assert "Traceback" not in err


@pytest.mark.parametrize("n", ["0", "-5", "100000000"])
def test_bad_gaussian_counts(tmp_path, photo_path, capsys, n):
    code = main(
        ["fit", str(photo_path("coffee.png")), "-o", str(tmp_path), "--num-gaussians", n, "--size", "32"]
    )
    assert code == 2 and "num_gaussians" in capsys.readouterr().err.replace("-", "_")


def test_huge_image_refused_with_flag_named(tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((400, 500, 3), np.uint8)).save(big)
    assert main(["fit", str(big), "-o", str(tmp_path), *FAST, "--max-pixels", "100000"]) == 1
    assert "--max-pixels" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["nan", "shape", "dtype", "truncated", "missing"])
def test_bad_splat_files(tmp_path, capsys, kind):
    path = tmp_path / f"{kind}.gs.npy"
    if kind == "nan":
        a = np.ones((4, 8), np.float16)
        a[1, 0] = np.nan
        np.save(path, a)
    elif kind == "shape":
        np.save(path, np.ones((4, 6), np.float16))
    elif kind == "dtype":
        np.save(path, np.ones((4, 8), np.int64))
    elif kind == "truncated":
        np.save(path, np.ones((400, 8), np.float16))
        path.write_bytes(path.read_bytes()[:1000])
    for argv in (["render", str(path), "-o", str(tmp_path / "x.png")], ["info", str(path)]):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0] and err[0].startswith("error:")


def test_cuda_device_without_gpu(tmp_path, photo_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["fit", str(photo_path("coffee.png")), "-o", str(tmp_path), *FAST, "--device", "cuda"]) == 2
    assert "--device cpu" in capsys.readouterr().err


def test_convert_to_gsq_and_back(tmp_path, photo_path, capsys):
    out = tmp_path / "out"
    assert main(["fit", str(photo_path("coffee.png")), "-o", str(out), *FAST]) == 0
    gsq = tmp_path / "coffee.gsq"
    assert main(["convert", str(out / "coffee.gs.npy"), "-o", str(gsq)]) == 0
    assert gsq.stat().st_size * 1.5 < (out / "coffee.gs.npy").stat().st_size
    capsys.readouterr()
    assert main(["info", str(gsq)]) == 0
    info = capsys.readouterr().out
    assert "Gaussians      64" in info and "level 0 (steps:" in info
    # with the picture: colours solved on the quantised geometry, the level chosen within --max-loss
    fine, coarse = tmp_path / "fine.gsq", tmp_path / "coarse.gsq"
    photo = str(photo_path("coffee.png"))
    assert (
        main(["convert", str(out / "coffee.gs.npy"), "-o", str(fine), "--image", photo, "--max-loss", "0.05"])
        == 0
    )
    assert (
        main(["convert", str(out / "coffee.gs.npy"), "-o", str(coarse), "--image", photo, "--max-loss", "2"])
        == 0
    )
    assert coarse.stat().st_size < fine.stat().st_size
    assert (
        main(["convert", str(out / "coffee.gs.npy"), "-o", str(fine), "--image", str(tmp_path / "no.png")])
        == 1
    )
    assert "no.png" in capsys.readouterr().err
    assert main(["render", str(gsq), "-o", str(tmp_path / "q.png"), "--size", "32"]) == 0
    back = tmp_path / "back.gs.npy"
    assert main(["convert", str(gsq), "-o", str(back)]) == 0
    assert np.load(back).shape == (64, 8)
    assert main(["convert", str(gsq), "-o", str(tmp_path / "x.png")]) == 2
    (tmp_path / "bad.gsq").write_bytes(b"GSQ1 broken")
    assert main(["convert", str(tmp_path / "bad.gsq"), "-o", str(tmp_path / "y.gs.npy")]) == 1
    assert "bad.gsq" in capsys.readouterr().err


def test_info_without_files_reports_environment(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "cpp (compiled CPU op)" in out


def test_fit_with_l1_pruning_and_early_stop(tmp_path, photo_path, capsys):
    out = tmp_path / "out"
    argv = [
        "fit",
        str(photo_path("coffee.png")),
        "-o",
        str(out),
        "--num-gaussians",
        "100",
        "--iters",
        "60",
        "--size",
        "32",
        "--lambda-l1",
        "0.05",
        "--tau",
        "0.05",
        "--finetune-iters",
        "10",
        "--coarse-iters",
        "20",
        "-q",
    ]
    assert main(argv) == 0
    meta = json.loads((out / "coffee.json").read_text())
    assert meta["coarse_iters"] == 20 and meta["coarse_factor"] == 2 and meta["fit_iters"] == 60
    assert meta["num_gaussians_initial"] == 100 and 1 <= meta["num_gaussians"] < 100
    assert np.load(out / "coffee.gs.npy").shape == (meta["num_gaussians"], 8)
    assert meta["finetune_iters"] == 10 and meta["tau"] == 0.05
    capsys.readouterr()
    argv = [
        "fit",
        str(photo_path("coffee.png")),
        "-o",
        str(tmp_path / "es"),
        "--num-gaussians",
        "64",
        "--iters",
        "500",
        "--size",
        "16",
        "--target-psnr",
        "20",
        "-q",
    ]
    assert main(argv) == 0
    es = json.loads((tmp_path / "es" / "coffee.json").read_text())
    assert es["fit_iters"] < 500 and es["psnr"] >= 19.9
    # the optimiser's settings are recorded: the defaults, or the flags given
    assert es["lr"] == [0.4, 0.16, 0.014] and es["betas"] == [0.9, 0.98]
    assert (es["lr_final"], es["lr_decay"], es["lr_warmup"]) == (0.05, 0.3, 10)  # learned init: warm-up
    opt = ["--lr-final", "0.1", "--lr-decay", "1", "--betas", "0.8", "0.999", "--iters", "20"]
    assert main([*argv[:-3], *opt, "--lr-warmup", "3", "-o", str(tmp_path / "opt"), "-q"]) == 0
    meta = json.loads((tmp_path / "opt" / "coffee.json").read_text())
    assert (meta["lr_final"], meta["lr_decay"], meta["betas"]) == (0.1, 1.0, [0.8, 0.999])
    assert meta["lr_warmup"] == 3 and meta["lr"] == [0.4, 0.16, 0.014]
    assert main([*argv[:-3], "--lr", "0.1", "0.04", "0.02", "-o", str(tmp_path / "lr"), "-q"]) == 0
    assert json.loads((tmp_path / "lr" / "coffee.json").read_text())["lr"] == [0.1, 0.04, 0.02]
    assert main([*argv[:-3], "--init", "structured", "-o", str(tmp_path / "st"), "-q"]) == 0
    assert json.loads((tmp_path / "st" / "coffee.json").read_text())["lr_warmup"] == 0
    assert main([*argv[:-3], "--betas", "0.9", "1.0", "-o", str(tmp_path / "bad"), "-q"]) == 2
    assert "betas must be two numbers in [0, 1)" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["gs", "rgb"])
def test_encoder_from_clip_writes_a_loadable_folder(tmp_path, kind, capsys):
    import open_clip
    import torch

    from gs_encoder.modeling_gs_vision import GSVisionModel

    from .test_train import TINY_CLIP

    cfg = tmp_path / "tiny-cli-clip.json"
    cfg.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg)
    clip = open_clip.create_model("tiny-cli-clip")
    ckpt = tmp_path / "clip.pt"
    torch.save({"state_dict": clip.state_dict()}, ckpt)
    out = tmp_path / kind
    args = [
        "encoder-from-clip",
        "--clip-model",
        "tiny-cli-clip",
        "--clip-pretrained",
        str(ckpt),
        "--model-config",
        str(cfg),
        "--input",
        kind,
        "--num-tokens",
        "8",
        "-o",
        str(out),
    ]
    assert main(args) == 0
    enc = GSVisionModel.from_pretrained(out)  # config.json decides GS or RGB
    assert enc.config.input == kind
    for name, p in clip.visual.state_dict().items():  # the vision tower is the checkpoint's
        assert torch.equal(enc.visual.state_dict()[name], p), name
    assert main(["encoder-from-clip", "--clip-model", "no-such-model", "-o", str(tmp_path / "x")]) == 2
    assert "unknown open_clip model" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["fit", "fit-shards"])
def test_fit_flags_are_made_from_fitconfig_fields(command):
    """One source per setting: every FitConfig field with a flag is a flag of `gsv fit` and `gsv fit-shards`,
    and with no flag given the parsed config equals FitConfig() field by field; a flag given sets its field;
    the help shows FitConfig's default."""
    from dataclasses import fields

    from gs_encoder.cli import _fit_config, build_parser
    from gs_encoder.fitting.fit import FitConfig

    parser = build_parser()
    args = parser.parse_args([command, "x", "-o", "out"])
    parsed, default = _fit_config(args), FitConfig()
    for f in fields(FitConfig):
        assert getattr(parsed, f.name) == getattr(default, f.name), f.name
    flagged = [f for f in fields(FitConfig) if f.metadata["flag"] != ""]
    assert {"num_gaussians", "iters", "init", "lr_final", "betas", "lr_warmup", "tau"} <= {
        f.name for f in flagged
    }
    given = parser.parse_args(
        [command, "x", "-o", "out", "--iters", "7", "--betas", "0.8", "0.9", "--lr", "1", "2", "3"]
    )
    cfg = _fit_config(given)
    assert (cfg.iters, cfg.betas, cfg.lr_xy, cfg.lr_chol, cfg.lr_rgb) == (7, (0.8, 0.9), 1.0, 2.0, 3.0)
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices[command].format_help()
    assert f"(default {default.iters})" in text and f"(default {default.lr_decay:g})" in text
