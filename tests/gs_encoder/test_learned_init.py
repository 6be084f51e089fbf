"""The learned splat initialiser: output contract, determinism, weights files, training and resume."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from gs_encoder import FitConfig, fit_images, structured_init
from gs_encoder.fitting.learned_init import (
    ARCH,
    DEFAULT_WEIGHTS,
    MIN_SCALE_PX,
    LearnedInitError,
    SplatInitNet,
    learned_init,
    load_learned_init,
    save_learned_init,
)
from gs_encoder.image_io import to_canvas


def _photo(name: str, size: int) -> torch.Tensor:
    import skimage.data

    return to_canvas(getattr(skimage.data, name)() / 255.0, size, "crop")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.stack([_photo("chelsea", 48), _photo("coffee", 48), _photo("astronaut", 48)])


def test_shipped_weights_are_safetensors_of_this_architecture():
    from safetensors import safe_open

    with safe_open(str(DEFAULT_WEIGHTS), framework="pt") as f:
        assert f.metadata()["arch"] == ARCH
    assert DEFAULT_WEIGHTS.stat().st_size <= 10 * 2**20


def test_weights_load_without_torch_load(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load must not be used for the learned-init weights")

    monkeypatch.setattr(torch, "load", refuse)
    path = tmp_path / "w.safetensors"
    path.write_bytes(DEFAULT_WEIGHTS.read_bytes())
    net = load_learned_init(path)
    ref = load_learned_init()
    for (k, a), (_, b) in zip(net.state_dict().items(), ref.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("n, size", [(1, 8), (5, 4), (16, 16), (37, 32), (100, 48), (400, 64), (1000, 40)])
def test_output_contract(n, size, images):
    imgs = torch.nn.functional.interpolate(images, size=(size, size), mode="area")
    s = learned_init(imgs, n)
    assert s.shape == (3, n, 8) and s.dtype == torch.float32
    assert torch.isfinite(s).all()
    assert (s[..., 0:2] >= 0).all() and (s[..., 0:2] <= 1).all()
    assert (s[..., 2] >= MIN_SCALE_PX / size - 1e-7).all() and (s[..., 4] >= MIN_SCALE_PX / size - 1e-7).all()


def test_batch_equals_one_by_one_and_deterministic(images):
    batch = learned_init(images, 144)
    again = learned_init(images, 144)
    assert torch.equal(batch, again)
    for k in range(images.shape[0]):
        torch.testing.assert_close(learned_init(images[k : k + 1], 144)[0], batch[k], atol=1e-5, rtol=1e-5)


def test_untrained_network_is_the_structured_init(images):
    net = SplatInitNet(width=8, cell_width=8, blocks=1, passes=2).eval()
    with torch.no_grad():
        s = net.splats(images, 100)
    torch.testing.assert_close(s, structured_init(images, 100), atol=1e-6, rtol=1e-6)


def test_learned_init_beats_structured_after_50_iterations():
    """chelsea is a benchmark photo: never in the training data."""
    img = _photo("chelsea", 64)[None]
    cfg = dict(num_gaussians=256, iters=50)
    structured = fit_images(img, FitConfig(**cfg, init="structured"))[0].psnr
    learned = fit_images(img, FitConfig(**cfg, init="learned"))[0].psnr
    assert learned > structured + 0.3, (learned, structured)


def test_learned_init_starts_better_than_structured(images):
    from gs_encoder import psnr, render

    n = 144
    with torch.no_grad():
        s = structured_init(images, n)
        le = learned_init(images, n)
        ps = [float(psnr(render(x, size=48), im)) for x, im in zip(s, images, strict=True)]
        pl = [float(psnr(render(x, size=48), im)) for x, im in zip(le, images, strict=True)]
    assert sum(pl) / 3 > sum(ps) / 3 + 1.0, (pl, ps)


@pytest.mark.parametrize("n", [0, -3, 1_000_001])
def test_unsupported_count(n, images):
    with pytest.raises(LearnedInitError, match="num_gaussians"):
        learned_init(images, n)
    with pytest.raises(ValueError):
        FitConfig(num_gaussians=n, init="learned")


def test_unsupported_canvas(images):
    with pytest.raises(LearnedInitError, match="exceeds the 8×8 canvas"):
        learned_init(images[:, :, :8, :8], 65)
    with pytest.raises(LearnedInitError, match="shape"):
        learned_init(images[:, :, :20, :24], 16)


def _one_line(e: pytest.ExceptionInfo, path) -> str:
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "python -m gs_encoder.train_init" in msg
    return msg


def test_missing_weights(tmp_path, images):
    path = tmp_path / "none.safetensors"
    with pytest.raises(LearnedInitError) as e:
        learned_init(images, 64, weights=path)
    assert "not found" in _one_line(e, path)
    assert "--export" not in str(e.value)  # a file of the user's is not rebuilt over: they give another
    with pytest.raises(LearnedInitError):
        FitConfig(num_gaussians=64, init="learned", init_weights=str(path))


def test_corrupt_weights(tmp_path, images):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(DEFAULT_WEIGHTS.read_bytes()[:200])
    with pytest.raises(LearnedInitError) as e:
        learned_init(images, 64, weights=path)
    assert "safetensors" in _one_line(e, path)


def test_weights_of_another_architecture(tmp_path, images):
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(other), metadata={"arch": "resnet18"})
    with pytest.raises(LearnedInitError) as e:
        learned_init(images, 64, weights=other)
    assert "resnet18" in _one_line(e, other)
    older = tmp_path / "older.safetensors"  # an earlier format of ours is refused the same way, by name
    save_file({"w": torch.zeros(3)}, str(older), metadata={"arch": "gsv-cellnet-v1"})
    with pytest.raises(LearnedInitError) as e:
        learned_init(images, 64, weights=older)
    assert f"format 'gsv-cellnet-v1', this code reads '{ARCH}'" in _one_line(e, older)
    broken = tmp_path / "broken.safetensors"
    save_learned_init(broken, SplatInitNet(width=8, cell_width=8, blocks=1))
    from safetensors.torch import load_file

    tensors = load_file(str(broken))
    tensors.pop("head.bias")
    meta = {"arch": ARCH, "width": "8", "cell_width": "8", "blocks": "1", "reach": "0.5", "passes": "1"}
    meta["base"] = "structured"
    save_file(tensors, str(broken), metadata=meta)
    with pytest.raises(LearnedInitError) as e:
        learned_init(images, 64, weights=broken)
    assert "do not fit" in _one_line(e, broken)


def test_cli_reports_bad_weights(tmp_path, capsys):
    from gs_encoder.cli import main

    missing = tmp_path / "missing.safetensors"
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 10, 10)).save(img)
    rc = main(
        ["fit", str(img), "-o", str(tmp_path / "out"), "--init", "learned", "--init-weights", str(missing)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(missing) in err[0] and err[0].startswith("error: ")


def test_cli_fit_learned(tmp_path):
    from gs_encoder.cli import main

    img = tmp_path / "cat.png"
    from PIL import Image

    Image.fromarray((_photo("chelsea", 48).permute(1, 2, 0).numpy() * 255).astype("uint8")).save(img)
    out = tmp_path / "out"
    args = ["fit", str(img), "-o", str(out), "--size", "48", "--num-gaussians", "100", "--iters", "5"]
    assert main([*args, "--init", "learned", "-q"]) == 0
    meta = json.loads((out / "cat.json").read_text())
    assert meta["init"] == "learned" and meta["num_gaussians"] == 100


def test_train_three_steps_then_resume(tmp_path):
    from gs_encoder.train_init import TrainInitConfig, train_init

    out = tmp_path / "run"
    small = dict(batch_size=2, canvas=[32], width=8, cell_width=8, blocks=1, passes=2, log_every=1)
    cfg = TrainInitConfig(
        out_dir=str(out), steps=3, save_every=2, export=str(tmp_path / "w.safetensors"), **small
    )
    final = train_init(cfg, progress=False)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-3"]  # step 2's folder was dropped
    state = json.loads((out / "checkpoints" / "step-3" / "state.json").read_text())
    assert state["step"] == 3 and [e["step"] for e in state["log"]] == [1, 2, 3]
    assert not list(out.rglob("*.tmp*"))
    net = load_learned_init(final)
    assert net.passes == 2 and load_learned_init(tmp_path / "w.safetensors").width == 8
    assert (tmp_path / "w_log.json").is_file()
    learned_init(torch.rand(1, 3, 32, 32), 64, weights=final)
    before = (out / "checkpoints" / "step-3" / "checkpoint.safetensors").read_bytes()
    # a crash while writing the next checkpoint leaves a hidden partial folder: the resume ignores it
    (out / "checkpoints" / ".step-4.tmp").mkdir()
    (out / "checkpoints" / ".step-4.tmp" / "checkpoint.safetensors").write_bytes(b"half a file")
    cfg5 = TrainInitConfig(out_dir=str(out), steps=5, save_every=2, **small)
    train_init(cfg5, progress=False)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-5"]
    state = json.loads((out / "checkpoints" / "step-5" / "state.json").read_text())
    assert state["step"] == 5 and [e["step"] for e in state["log"]] == [1, 2, 3, 4, 5]
    assert (out / "checkpoints" / "step-5" / "checkpoint.safetensors").read_bytes() != before


def test_train_from_weights_fine_tunes_them(tmp_path):
    """--from-weights: a new run starts from the file's network (not from scratch); other settings or a bad
    file are an error naming it."""
    from safetensors.torch import load_file

    from gs_encoder.train_init import TrainInitConfig, train_init

    small = dict(batch_size=2, canvas=[32], width=8, cell_width=8, blocks=1, passes=2, log_every=1)
    source = train_init(
        TrainInitConfig(out_dir=str(tmp_path / "a"), steps=3, lr=1e-2, **small), progress=False
    )
    tuned = TrainInitConfig(out_dir=str(tmp_path / "b"), steps=1, lr=1e-7, from_weights=str(source), **small)
    fresh = TrainInitConfig(out_dir=str(tmp_path / "c"), steps=1, lr=1e-7, **small)
    w0, w1 = load_file(str(source)), load_file(str(train_init(tuned, progress=False)))
    w2 = load_file(str(train_init(fresh, progress=False)))
    assert float(w0["head.weight"].abs().max()) > 1e-3  # trained: the head has left its zero start
    assert all(torch.allclose(w1[k], w0[k], atol=1e-5) for k in w0)  # one tiny step from the source
    assert not torch.allclose(w2["head.weight"], w0["head.weight"], atol=1e-5)
    # the tuned run's log keeps the source run's (its config and curve), so shipped weights tell their history
    log = json.loads((tmp_path / "b" / "train_log.json").read_text())
    assert log["started_from"]["weights"] == str(source)
    assert [e["step"] for e in log["started_from"]["log"]["log"]] == [1, 2, 3]
    assert log["started_from"]["log"]["config"]["lr"] == 1e-2 and log["machine"]["torch_threads"] >= 1
    assert "started_from" not in json.loads((tmp_path / "c" / "train_log.json").read_text())
    wide = TrainInitConfig(
        out_dir=str(tmp_path / "d"), steps=1, from_weights=str(source), **{**small, "width": 16}
    )
    with pytest.raises(ValueError, match=r"--from-weights .*does not fit this run's settings.*--width 8"):
        train_init(wide, progress=False)
    missing = TrainInitConfig(
        out_dir=str(tmp_path / "e"), steps=1, from_weights=str(tmp_path / "no"), **small
    )
    with pytest.raises(ValueError, match=r"--from-weights .*no: no such file; give a weights file"):
        train_init(missing, progress=False)
    assert not (tmp_path / "e").exists()  # a failed start leaves no empty run folder behind
    (tmp_path / "bad.safetensors").write_bytes(b"not weights")
    corrupt = TrainInitConfig(
        out_dir=str(tmp_path / "f"), steps=1, from_weights=str(tmp_path / "bad.safetensors"), **small
    )
    with pytest.raises(
        ValueError, match=r"--from-weights: .*bad.safetensors: not a readable .*give a weights"
    ):
        train_init(corrupt, progress=False)


def test_train_refuses_a_checkpoint_of_an_older_layout(tmp_path):
    """A folder holding a checkpoint outside checkpoints/step-<k>/ is neither resumed nor overwritten: the
    error names the folder and the fix."""
    from gs_encoder.train_init import TrainInitConfig, train_init

    out = tmp_path / "run"
    small = dict(batch_size=2, canvas=[32], width=8, cell_width=8, blocks=1, passes=1, log_every=1)
    train_init(TrainInitConfig(out_dir=str(out), steps=2, save_every=2, **small), progress=False)
    for f in (out / "checkpoints" / "step-2").iterdir():
        f.rename(out / f.name)
    shutil.rmtree(out / "checkpoints")
    kept = (out / "checkpoint.safetensors").read_bytes()
    with pytest.raises(ValueError, match=f"{out}: a checkpoint in an older layout.*checkpoints/step-<k>/"):
        train_init(TrainInitConfig(out_dir=str(out), steps=3, save_every=2, **small), progress=False)
    assert (out / "checkpoint.safetensors").read_bytes() == kept


def test_train_resume_from_a_bad_checkpoint_is_a_one_line_error(tmp_path, capsys):
    """Another architecture or a corrupt file: the CLI names the checkpoint folder and what to do."""
    from gs_encoder.train_init import main as train_init_main

    out = tmp_path / "run"
    args = [
        "--out-dir",
        str(out),
        "--batch-size",
        "2",
        "--canvas",
        "32",
        "--cell-width",
        "8",
        "--blocks",
        "1",
    ]
    args += ["--passes", "1", "-q"]
    assert train_init_main([*args, "--steps", "2", "--width", "8"]) == 0
    capsys.readouterr()
    assert train_init_main([*args, "--steps", "3", "--width", "16"]) == 2
    err = capsys.readouterr().err
    assert f"error: {out / 'checkpoints' / 'step-2'}: cannot resume" in err and "RuntimeError" in err
    assert "Traceback" not in err
    (out / "checkpoints" / "step-2" / "checkpoint.safetensors").write_bytes(b"not a safetensors file")
    assert train_init_main([*args, "--steps", "3", "--width", "8"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "SafetensorError" in err and "remove the folder" in err


def test_train_if_missing_does_nothing(tmp_path):
    from gs_encoder.train_init import TrainInitConfig, train_init

    cfg = TrainInitConfig(out_dir=str(tmp_path / "run"), export=str(DEFAULT_WEIGHTS), if_missing=True)
    assert train_init(cfg, progress=False) == DEFAULT_WEIGHTS
    assert not (tmp_path / "run").exists()


def test_adaptive_init_follows_edges():
    from gs_encoder import adaptive_init

    img = torch.zeros(1, 3, 32, 32)
    img[..., 16:] = 1.0  # a vertical edge: Gaussians next to it stretch along y
    s = adaptive_init(img, 64)
    ref = structured_init(img, 64)
    assert (
        s.shape == ref.shape and torch.isfinite(s).all() and (s[..., 2] > 0).all() and (s[..., 4] > 0).all()
    )
    area = s[..., 2] * s[..., 4]  # √det Σ = l11·l22: the structured area is kept
    torch.testing.assert_close(area, ref[..., 2] * ref[..., 4], rtol=1e-4, atol=1e-9)
    sxx = s[..., 2] ** 2
    syy = s[..., 3] ** 2 + s[..., 4] ** 2
    at_edge = (s[0, :, 0] - 0.5).abs() < 0.1
    assert at_edge.any() and (syy[0, at_edge] > 4 * sxx[0, at_edge]).all()
    flat = (s[0, :, 0] - 0.5).abs() > 0.2
    torch.testing.assert_close(sxx[0, flat], syy[0, flat], rtol=1e-3, atol=1e-9)


def test_fit_config_adaptive_runs():
    img = _photo("coffee", 32)[None]
    (res,) = fit_images(img, FitConfig(num_gaussians=64, iters=5, init="adaptive"))
    assert res.splats.shape == (64, 8) and res.psnr > 15


def test_processor_fits_with_the_learned_init():
    pytest.importorskip("transformers")
    from llava_gs.processing_llava_gs import GaussianProcessor
    from llava_gs.splat_cache import SplatCache

    fit = {"num_gaussians": 64, "iters": 3}
    proc = GaussianProcessor(fit={**fit, "init": "learned"}, canvas=32)
    assert proc.fit_config().init == "learned"
    out = proc(images=[_photo("coffee", 40)])
    assert out["gaussians"].shape == (1, 64, 8)
    structured = GaussianProcessor(fit={**fit, "init": "structured"}, canvas=32)
    other = GaussianProcessor(fit={**fit, "init": "structured", "betas": [0.9, 0.9]}, canvas=32)
    steps = GaussianProcessor(fit={**fit, "init": "structured", "lr_xy": 0.2}, canvas=32)
    # every setting is part of the cache key
    assert len({SplatCache(p)._settings() for p in (proc, structured, other, steps)}) == 4
    with pytest.raises(ValueError, match="unknown init 'learnt'"):
        GaussianProcessor(fit={"init": "learnt"})
    with pytest.raises(ValueError, match="betas must be two numbers"):
        GaussianProcessor(fit={"betas": [0.9]})


def test_weights_identity_follows_the_splats(tmp_path, caplog):
    """Which learned-init weights a fit started from is recorded (sidecar), keyed (splat cache) and pinned (a
    saved processor warns when the file it fitted from now holds other weights)."""
    pytest.importorskip("transformers")
    import logging

    from gs_encoder.cli import main
    from gs_encoder.fitting.learned_init import DEFAULT_WEIGHTS, SplatInitNet, weights_id
    from llava_gs.processing_llava_gs import GaussianProcessor
    from llava_gs.splat_cache import SplatCache

    mine = tmp_path / "mine.safetensors"
    shutil.copyfile(DEFAULT_WEIGHTS, mine)
    assert weights_id(mine) == weights_id() and len(weights_id()) == 12
    img = tmp_path / "coffee.png"
    from PIL import Image

    Image.fromarray((_photo("coffee", 48).permute(1, 2, 0).numpy() * 255).astype("uint8")).save(img)
    args = ["fit", str(img), "--size", "32", "--num-gaussians", "64", "--iters", "2", "-q"]
    assert main([*args, "-o", str(tmp_path / "a"), "--init-weights", str(mine)]) == 0
    meta = json.loads((tmp_path / "a" / "coffee.json").read_text())
    assert (meta["init_weights"], meta["init_weights_id"]) == (str(mine), weights_id())
    assert main([*args, "-o", str(tmp_path / "b"), "--init", "structured"]) == 0
    assert "init_weights_id" not in json.loads((tmp_path / "b" / "coffee.json").read_text())

    proc = GaussianProcessor(fit={"num_gaussians": 64, "iters": 2, "init_weights": str(mine)}, canvas=32)
    key = SplatCache(proc)._settings()
    assert (
        json.loads(key)["weights"] == weights_id() and proc.to_dict()["fit_init_weights_id"] == weights_id()
    )
    saved = proc.to_dict()
    from gs_encoder.fitting.learned_init import save_learned_init

    save_learned_init(mine, SplatInitNet(8, 8, 1, 1.0, 2))  # the file is replaced by other weights
    assert weights_id(mine) != weights_id()
    with caplog.at_level(logging.WARNING, logger="llava_gs.processing_llava_gs"):
        again = GaussianProcessor.from_dict(saved)
    assert f"from learned-init weights {weights_id()}, but {mine} now holds {weights_id(mine)}" in caplog.text
    assert SplatCache(again)._settings() != key  # its old cache entries are not served as new ones
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llava_gs.processing_llava_gs"):
        GaussianProcessor.from_dict(
            {**saved, "fit": {**saved["fit"], "init_weights": None}}
        )  # the shipped file
    assert "now holds" not in caplog.text
    assert "fit_init_weights_id" not in GaussianProcessor(fit={"init": "structured"}).to_dict()


def test_training_logs_chain_the_weights_by_hash(tmp_path):
    """Each stage's log holds the SHA-256 of the weights it wrote and of those it started from, and
    --export writes the file whose hash is in the log: check_provenance walks the chain."""
    from gs_encoder.train_init import TrainInitConfig, check_provenance, file_sha256, log_path, train_init

    small = dict(batch_size=2, canvas=[32], width=8, cell_width=8, blocks=1, passes=1, log_every=1)
    first = train_init(TrainInitConfig(out_dir=str(tmp_path / "a"), steps=2, **small), progress=False)
    shipped = tmp_path / "ship" / "learned_init.safetensors"
    tuned = TrainInitConfig(
        out_dir=str(tmp_path / "b"), steps=1, from_weights=str(first), export=str(shipped), **small
    )
    train_init(tuned, progress=False)
    chain = check_provenance(shipped)
    assert chain == [file_sha256(shipped), file_sha256(first)]
    log = json.loads(log_path(shipped).read_text())
    assert log["exported_to"] == str(shipped) and log["started_from"]["sha256"] == file_sha256(first)
    # a file changed after its log was written, or a broken link in the chain, is named
    shipped.write_bytes(shipped.read_bytes() + b" ")
    with pytest.raises(ValueError, match="is not the one its log wrote"):
        check_provenance(shipped)
    (tmp_path / "ship" / "learned_init.safetensors").write_bytes(first.read_bytes())
    bad = dict(log, weights_sha256=file_sha256(first))
    bad["started_from"] = dict(log["started_from"], sha256="0" * 64)
    log_path(shipped).write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="stage 1 started from weights 000000000000"):
        check_provenance(shipped)
