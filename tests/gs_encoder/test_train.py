"""Both training stages on a tiny open_clip model and real photographs, from the command line, with resume."""

import json

import pytest

from gs_encoder.cli import main as gsv
from gs_encoder.modeling_gs_vision import GSVisionModel
from gs_encoder.train import main as train

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
PHOTOS = [
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "color.png",
]


@pytest.fixture(scope="module")
def splat_folder(tmp_path_factory, photo_path):
    root = tmp_path_factory.mktemp("enc")
    cfg = root / "tiny-gs-clip.json"
    cfg.write_text(json.dumps(TINY_CLIP))
    data = root / "splats"
    photos = [str(photo_path(p)) for p in PHOTOS]
    assert (
        gsv(["fit", *photos, "-o", str(data), "--num-gaussians", "64", "--iters", "40", "--size", "32", "-q"])
        == 0
    )
    for p in PHOTOS:
        stem = p.split(".")[0]
        (data / f"{stem}.txt").write_text(f"a photo of {stem.replace('_', ' ')}")
    return root, cfg, data


def common(root, cfg, data, out, *extra):
    return [
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--clip-model",
        "tiny-gs-clip",
        "--model-config",
        str(cfg),
        "--num-tokens",
        "8",
        "--num-workers",
        "0",
        "--warmup-steps",
        "2",
        "--log-every",
        "5",
        *extra,
    ]


def test_stage1_distillation_reduces_the_loss(splat_folder):
    root, cfg, data = splat_folder
    out = root / "s1"
    assert (
        train(
            [
                "--stage",
                "1",
                *common(root, cfg, data, out, "--batch-size", "8", "--max-steps", "40", "--lr", "2e-3"),
            ]
        )
        == 0
    )
    log = json.loads((out / "final" / "train_log.json").read_text())
    first, last = sum(log["loss"][:5]) / 5, sum(log["loss"][-5:]) / 5
    assert last < 0.5 * first, (first, last)
    enc = GSVisionModel.from_pretrained(out / "final")
    assert enc.config.num_tokens == 8


def test_stage2_with_text_tower_and_resume(splat_folder):
    root, cfg, data = splat_folder
    s1 = root / "s1_short"
    assert train(["--stage", "1", *common(root, cfg, data, s1, "--batch-size", "4", "--max-steps", "3")]) == 0
    out = root / "s2"
    args = common(
        root,
        cfg,
        data,
        out,
        "--batch-size",
        "4",
        "--encoder",
        str(s1 / "final"),
        "--unfreeze-text",
        "--save-every",
        "3",
    )
    assert train(["--stage", "2", *args, "--max-steps", "4"]) == 0
    assert (out / "checkpoints" / "step-3" / "trainer_state.json").exists()
    assert (out / "final" / "clip_text.safetensors").exists()
    # a longer run resumes from step 3 and does only the missing steps
    assert train(["--stage", "2", *args, "--max-steps", "6"]) == 0
    log = json.loads((out / "final" / "train_log.json").read_text())
    assert log["steps"] == 6 and len(log["loss"]) == 3


def test_bad_flags(splat_folder, tmp_path, capsys):
    root, cfg, data = splat_folder
    assert train(["--stage", "1", *common(root, cfg, data, tmp_path, "--mixed-precision", "fp8")]) == 2
    # an empty data folder and an impossible head shape: one line naming the problem, no traceback
    assert train(["--stage", "1", *common(root, cfg, tmp_path, tmp_path / "o")]) == 2
    assert f"{tmp_path}: no .gs.npy files" in capsys.readouterr().err
    assert train(["--stage", "1", *common(root, cfg, data, tmp_path / "o", "--gs-width", "31")]) == 2
    assert "gs_width (31) must be a positive multiple of resampler_heads" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_folders_and_shards_together_are_an_error(splat_folder, tmp_path, capsys):
    # one run reads either folders of .gs.npy or tar shards: a mix used to drop the folders silently
    root, cfg, data = splat_folder
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "000000.tar").write_bytes(b"")
    args = common(root, cfg, data, tmp_path / "o")
    i = args.index("--data")
    args[i + 1 : i + 2] = [str(data), str(shards)]
    assert train(["--stage", "1", *args]) == 2
    err = capsys.readouterr().err
    assert (
        f"--data mixes splat folders ({data}) with tar shards ({shards})" in err and "gsv fit-shards" in err
    )


def test_stage1_from_shards_with_stored_teacher_embeddings(splat_folder, tmp_path):
    import io
    import tarfile

    import numpy as np

    from .test_shards import make_shards

    root, cfg, _ = splat_folder
    make_shards(tmp_path / "in", 2, 3)
    argv = [
        "fit-shards",
        str(tmp_path / "in"),
        "-o",
        str(tmp_path / "gs"),
        "--num-gaussians",
        "16",
        "--iters",
        "10",
        "--size",
        "32",
        "-q",
        "--teacher",
        "tiny-gs-clip",
        "--teacher-config",
        str(cfg),
    ]
    assert gsv(argv) == 0
    with tarfile.open(tmp_path / "gs" / "00000000.tar") as tf:
        t16 = np.load(io.BytesIO(tf.extractfile("000000000000.t16.npy").read()))
    assert (
        t16.dtype == np.float16
        and t16.shape == (32,)
        and abs(float(np.linalg.norm(t16.astype(np.float32))) - 1) < 1e-2
    )
    out = tmp_path / "s1"
    assert (
        train(
            [
                "--stage",
                "1",
                *common(root, cfg, tmp_path / "gs", out, "--batch-size", "3", "--max-steps", "4"),
            ]
        )
        == 0
    )
    assert json.loads((out / "final" / "train_log.json").read_text())["steps"] == 4


def test_stage1_draws_the_folders_at_their_upsampling_factors(splat_folder, tmp_path, capsys):
    # two folders (8 photos each), the second drawn at half rate: an epoch is 12 samples, 3 batches of 4
    root, cfg, data = splat_folder
    args = common(root, cfg, data, tmp_path / "o", "--batch-size", "4", "--max-steps", "4")
    i = args.index("--data")
    args[i + 1 : i + 2] = [str(data), str(data), "--data-upsampling-factors", "1", "0.5"]
    assert train(["--stage", "1", *args]) == 0
    saved = json.loads((tmp_path / "o" / "distill_config.json").read_text())
    assert saved["data_upsampling_factors"] == [1.0, 0.5]
    from gs_encoder.train import DistillConfig, _loader

    loader, size = _loader(DistillConfig(**saved), images="none")
    assert size == 12 and len(loader) == 3
    # one factor per folder: one line naming the problem
    args[i + 4 : i + 6] = ["2"]
    assert train(["--stage", "1", *args]) == 2
    assert "1 upsampling factors for 2 data sources" in capsys.readouterr().err
    # shards carry no per-source sizes to weigh: refused, naming what to do instead
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "000000.tar").write_bytes(b"")
    args[i + 1 : i + 5] = [str(shards), "--data-upsampling-factors", "1"]
    assert train(["--stage", "1", *args]) == 2
    assert "for tar shards mix the sources in the shards themselves" in capsys.readouterr().err


def _token_cosine(encoder_dir, data, photo_path, layer=-2):
    """Mean cosine of a stage-1 encoder's patch tokens with its frozen teacher's, on the fitted photos."""
    import torch
    import torch.nn.functional as F

    from gs_encoder.data import pad_splat_sets
    from gs_encoder.image_io import load_image
    from gs_encoder.modeling_gs_vision import resize_token_grid
    from gs_encoder.splat_io import load_splats
    from gs_encoder.teacher import ClipTeacher

    enc = GSVisionModel.from_pretrained(encoder_dir).eval()
    splats, mask = pad_splat_sets([load_splats(data / f"{p.split('.')[0]}.gs.npy") for p in PHOTOS])
    images = torch.stack([load_image(photo_path(p), 32, "pad") for p in PHOTOS])
    with torch.no_grad():
        student = enc(splats, mask).hidden_states[layer][:, 1:]
    _, teacher = ClipTeacher(enc).embed_with_tokens(images, layer)  # stage 1 leaves the ViT as the teacher's
    return F.cosine_similarity(student, resize_token_grid(teacher, student.shape[1]), dim=-1).mean().item()


def test_stage1_patch_distillation_aligns_the_tokens_llava_reads(splat_folder, tmp_path, photo_path):
    # the same run with and without the patch term: only the patch term brings the student's block -2
    # tokens (K = 8 against the teacher's 4×4 grid, resized) towards the teacher's; the CLS term still falls.
    # The term is the CLS term's MSE of unit vectors on every token, 2 (1 − cos) / 64 at the tiny width 64,
    # so weight 32 counts a unit of token cosine as much as a unit of CLS cosine
    root, cfg, data = splat_folder
    cosines = {}
    for weight in ("0", "32"):
        out = tmp_path / f"w{weight}"
        extra = ("--batch-size", "8", "--max-steps", "30", "--lr", "2e-3", "--patch-weight", weight)
        assert train(["--stage", "1", *common(root, cfg, data, out, *extra)]) == 0
        cosines[weight] = _token_cosine(out / "final", data, photo_path)
    log = json.loads((out / "final" / "train_log.json").read_text())
    assert len(log["patch_loss"]) == len(log["cls_loss"]) == len(log["loss"]) == 30
    assert sum(log["patch_loss"][-5:]) < 0.7 * sum(log["patch_loss"][:5]), log["patch_loss"]
    assert sum(log["cls_loss"][-5:]) < 0.7 * sum(log["cls_loss"][:5]), log["cls_loss"]
    assert abs(log["loss"][-1] - log["cls_loss"][-1] - 32 * log["patch_loss"][-1]) < 1e-5
    # the final patch loss is what the encoder's tokens show (the last batch is all 8 photos)
    assert 2 * (1 - cosines["32"]) / 64 == pytest.approx(log["patch_loss"][-1], rel=0.1), cosines
    assert cosines["32"] > cosines["0"] + 0.3, cosines  # measured 0.72 against 0.11


def test_patch_distillation_settings_are_checked(splat_folder, tmp_path, capsys):
    root, cfg, data = splat_folder
    args = common(root, cfg, data, tmp_path / "o", "--batch-size", "4", "--max-steps", "1")
    assert train(["--stage", "1", *args, "--patch-weight", "-1"]) == 2
    assert "--patch-weight must be a finite number ≥ 0, got -1.0" in capsys.readouterr().err
    assert train(["--stage", "2", *args, "--patch-weight", "1"]) == 2
    assert "--patch-weight is a stage-1 term" in capsys.readouterr().err
    assert train(["--stage", "1", *args, "--patch-weight", "1", "--patch-layer", "0"]) == 2
    assert (
        "layer 0: the teacher's hidden states with patch tokens from a block are 1…2"
        in capsys.readouterr().err
    )
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "000000.tar").write_bytes(b"")
    i = args.index("--data")
    args[i + 1] = str(shards)
    assert train(["--stage", "1", *args, "--patch-weight", "1"]) == 2
    assert "splat tar shards do not carry them" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_patch_distillation_skips_a_sample_whose_image_is_gone(splat_folder, tmp_path):
    # a dataset job: the sample whose source image cannot be loaded is left out with a warning, the rest
    # (which also carry stored teacher embeddings: the image is loaded anyway) train
    import shutil

    import numpy as np

    from gs_encoder.data import SplatFolder, collate_splats
    from gs_encoder.splat_io import npy_bytes

    _, _, data = splat_folder
    copy = tmp_path / "splats"
    shutil.copytree(data, copy)
    side = copy / "coffee.json"
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "source": str(tmp_path / "gone.png")}))
    (copy / "chelsea.t16.npy").write_bytes(npy_bytes(np.ones(32, dtype=np.float16)))
    ds = SplatFolder(copy, images="all")
    with pytest.warns(UserWarning, match="gone.png"):
        samples = [ds[i] for i in range(len(ds))]
    batch = collate_splats(samples)
    assert batch["images"].shape == (7, 3, 32, 32) and "coffee.gs.npy" not in batch["keys"]
    assert (
        SplatFolder(copy, images="no_teacher")[ds.files.index(copy / "chelsea.gs.npy")].get("image") is None
    )
    with pytest.raises(ValueError, match="images must be one of none, no_teacher, all"):
        SplatFolder(copy, images=True)
