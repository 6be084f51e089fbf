"""Zero-shot evaluation end to end through CLIP_benchmark on the offline mini dataset (tiny random models)."""

import json

import torch

from eval.mini_zeroshot import CLASSES, build
from eval.zeroshot import main, parse_model_spec
from gs_encoder.modeling_gs_vision import GSVisionConfig, GSVisionModel, RGBVisionModel
from gs_encoder.teacher import register_model_config

from ..gs_encoder.test_train import TINY_CLIP


def test_zeroshot_gs_vs_rgb_on_mini_dataset(tmp_path):
    root = build(tmp_path / "mini", per_class=2, size=48)
    cfg = tmp_path / "tiny-zs-clip.json"
    cfg.write_text(json.dumps(TINY_CLIP))
    register_model_config(cfg)
    torch.manual_seed(0)
    vis = {"vision_cfg": TINY_CLIP["vision_cfg"], "embed_dim": 32}
    GSVisionModel(GSVisionConfig(**vis, num_tokens=8, resampler_heads=2)).save_pretrained(tmp_path / "gs")
    RGBVisionModel(GSVisionConfig(**vis, input="rgb")).save_pretrained(tmp_path / "rgb")
    out = tmp_path / "out"
    code = main(
        [
            "--gs",
            str(tmp_path / "gs"),
            "--rgb",
            str(tmp_path / "rgb"),
            "--clip-model",
            "tiny-zs-clip",
            "--model-config",
            str(cfg),
            "--datasets",
            "wds/mini",
            "--dataset-root",
            str(root),
            "--num-gaussians",
            "16",
            "--fit-iters",
            "5",
            "--canvas",
            "32",
            "--batch-size",
            "4",
            "--num-workers",
            "0",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    res = json.loads((out / "zeroshot.json").read_text())["results"]["wds/mini"]
    for label in ("GS", "RGB"):
        assert 0.0 <= res[label]["acc1"] <= 1.0 and "mean_per_class_recall" in res[label]
        assert res[label]["acc1"] * len(CLASSES) * 2 == round(
            res[label]["acc1"] * len(CLASSES) * 2
        )  # k of 12 right
    assert "GS / RGB" in (out / "zeroshot.md").read_text()


def test_model_spec_parsing():
    path, opts = parse_model_spec("runs/x?num_gaussians=400&fit_iters=30")
    assert str(path) == "runs/x" and opts["num_gaussians"] == "400" and opts["canvas"] == "224"
    try:
        parse_model_spec("runs/x?gaussians=4")
    except ValueError as e:
        assert "gaussians" in str(e)
    else:
        raise AssertionError("an unknown option must raise")


def test_datacomp_task_list():
    from pathlib import Path

    from eval.zeroshot import expand_datasets

    names = expand_datasets(["@" + str(Path(__file__).resolve().parents[2] / "eval" / "datacomp_tasks.txt")])
    assert len(names) == 37 and len(set(names)) == 37 and all(n.startswith("wds/") for n in names)
