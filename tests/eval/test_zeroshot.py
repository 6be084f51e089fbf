"""Zero-shot evaluation end to end through CLIP_benchmark on the offline mini dataset (tiny random models)."""

import json

import pytest
import torch
from safetensors.torch import save_model

from eval.mini_zeroshot import CLASSES, build
from eval.zeroshot import main, parse_model_spec
from gs_encoder.modeling_gs_vision import GSVisionConfig, GSVisionModel, RGBVisionModel
from gs_encoder.teacher import build_clip, register_model_config

from ..gs_encoder.test_train import TINY_CLIP


def test_zeroshot_gs_vs_rgb_on_mini_dataset(tmp_path):
    root = build(tmp_path / "mini", per_class=2, size=48)
    cfg = tmp_path / "tiny-zs-clip.json"
    cfg.write_text(json.dumps(TINY_CLIP))
    register_model_config(cfg)
    torch.manual_seed(0)
    vis = {"vision_cfg": TINY_CLIP["vision_cfg"], "embed_dim": 32}
    GSVisionModel(GSVisionConfig(**vis, num_tokens=8, resampler_heads=2)).save_pretrained(tmp_path / "gs")
    rgb_model = RGBVisionModel(GSVisionConfig(**vis, input="rgb"))
    rgb_model.save_pretrained(tmp_path / "rgb")
    clip = build_clip("tiny-zs-clip")  # one text tower for both runs and for the check below
    for folder in ("gs", "rgb"):
        save_model(clip, str(tmp_path / folder / "clip_text.safetensors"))
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
    # the RGB accuracy recomputed here without CLIP_benchmark: class prototypes = the normalised mean of
    # the normalised template embeddings, each test image to its nearest prototype
    assert res["RGB"]["acc1"] == pytest.approx(direct_rgb_accuracy(root, rgb_model, clip), abs=1e-9)
    assert "GS / RGB" in (out / "zeroshot.md").read_text()


def direct_rgb_accuracy(root, model, clip) -> float:
    import io
    import tarfile

    import open_clip
    import torch.nn.functional as F
    from PIL import Image

    from gs_encoder.image_io import canvas_from_pil
    from gs_encoder.teacher import clip_normalise

    classnames = (root / "classnames.txt").read_text().split("\n")[:-1]
    templates = (root / "zeroshot_classification_templates.txt").read_text().split("\n")[:-1]
    tok = open_clip.get_tokenizer("tiny-zs-clip")
    model.eval()
    clip.eval()
    with torch.no_grad():
        protos = []
        for c in classnames:
            e = F.normalize(clip.encode_text(tok([t.format(c=c) for t in templates])), dim=-1).mean(0)
            protos.append(e / e.norm())
        protos = torch.stack(protos)
        right = total = 0
        with tarfile.open(root / "test" / "0.tar") as tf:
            files = {m.name: tf.extractfile(m).read() for m in tf}
        for name in sorted(n for n in files if n.endswith(".png")):
            img = canvas_from_pil(Image.open(io.BytesIO(files[name])).convert("RGB"), 32, "crop")[None]
            emb = F.normalize(model(clip_normalise(img, 32)).image_embeds, dim=-1)
            right += int((emb @ protos.T).argmax()) == int(files[name[:-4] + ".cls"])
            total += 1
    assert total == len(CLASSES) * 2
    return right / total


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
