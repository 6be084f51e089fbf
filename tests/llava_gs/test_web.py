"""The web demo's backend (llava_gs.serve.session) with the shipped demo model: pictures, answers equal to the
terminal chat's, and every bad input answered as a message for the page."""

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "eval" / "mini" / "demo_llava"
pytestmark = pytest.mark.skipif(
    not (SHIPPED / "model" / "model.safetensors").is_file(), reason="no shipped demo model"
)


@pytest.fixture(scope="module")
def backend():
    from llava_gs.serve.session import DemoBackend

    return DemoBackend(SHIPPED / "model")


@pytest.fixture(scope="module")
def scene():
    qs = json.loads((SHIPPED / "scenes" / "questions.json").read_text())
    return SHIPPED / "scenes" / qs[0]["image"], [q["question"] for q in qs if q["image"] == qs[0]["image"]]


def test_a_photo_becomes_splats_pictures_and_numbers(backend, scene):
    picture = backend.open(scene[0])
    assert picture.splats.shape == (backend.default_gaussians, 8)  # the model's own settings by default
    assert torch.equal(picture.splats, picture.splats.half().float())  # as a splat file stores them
    views = backend.views(picture)
    assert all(v.size == (320, 320) for v in (views.original, views.render, views.ellipses, views.error))
    s = views.stats
    assert s["gaussians"] == backend.default_gaussians and s["psnr_db"] > 20 and s["fit_seconds"] > 0
    assert s["fp16_bytes"] > backend.default_gaussians * 16 > s["gsq_bytes"] > 0
    fewer = backend.open(scene[0], num_gaussians=16, iters=5)
    assert fewer.splats.shape == (16, 8) and backend.views(fewer).stats["psnr_db"] < s["psnr_db"]


def test_a_target_psnr_chooses_the_fewest_gaussians_up_to_the_cap(backend, scene):
    fixed = backend.views(backend.open(scene[0])).stats
    target = fixed["psnr_db"] - 3  # the model's own fit clears it with room to spare: fewer Gaussians do
    picture = backend.open(scene[0], num_gaussians=fixed["gaussians"], target_psnr=target)
    s = backend.views(picture).stats
    assert s["gaussians"] < fixed["gaussians"] and s["psnr_db"] > target - 0.3
    assert picture.how.startswith(f"rate control: target {target:g} dB reached")
    short = backend.open(scene[0], num_gaussians=8, iters=10, target_psnr=50)
    assert short.splats.shape[0] <= 8 and "not reached within 8 Gaussians" in short.how


def test_splat_files_are_read_as_they_are(backend, scene, tmp_path):
    from gs_encoder.codec import save_gsq
    from gs_encoder.splat_io import save_splats

    picture = backend.open(scene[0])
    npy = save_splats(tmp_path / "scene.gs.npy", picture.splats)
    gsq = save_gsq(tmp_path / "scene.gsq", picture.splats)
    again = backend.open(npy)
    assert torch.equal(again.splats, picture.splats) and again.canvas is None
    views = backend.views(again)
    assert views.original is None and views.error is None and "psnr_db" not in views.stats
    assert backend.open(gsq).splats.shape == picture.splats.shape


def _answer(backend, picture, turns, question):
    chunks = list(backend.answer(picture, turns, question, temperature=0, max_new_tokens=32))
    assert all(done is None for _, done in chunks[:-1])
    return chunks[-1]


def test_answers_equal_the_terminal_chat_s_turn_after_turn(backend, scene, capsys):
    from llava_gs.chat import main as chat

    picture = backend.open(scene[0])
    first, turns = _answer(backend, picture, [], scene[1][0])
    second, turns = _answer(backend, picture, turns, scene[1][1])
    assert [t["from"] for t in turns] == ["human", "gpt", "human", "gpt"] and turns[3]["value"] == second
    capsys.readouterr()
    args = ["--model", str(SHIPPED / "model"), "--image", str(scene[0]), "--no-cache", "--temperature", "0"]
    assert chat([*args, "--max-new-tokens", "32", "--prompt", scene[1][0], "--prompt", scene[1][1]]) == 0
    said = [
        ln.removeprefix("ASSISTANT: ").strip()
        for ln in capsys.readouterr().out.splitlines()
        if ln.startswith("ASSISTANT: ")
    ]
    assert said == [first, second]


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width × height pixels (its data is a few bytes): a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def _bad_uploads(tmp_path: Path, scene: Path) -> dict[str, tuple[Path, str]]:
    from PIL import Image

    buf = io.BytesIO()
    Image.open(scene).convert("RGB").save(buf, format="JPEG")
    files = {
        "text": ("notes.txt", b"not a picture", "not an image"),
        "truncated JPEG": ("cut.jpg", buf.getvalue()[: len(buf.getvalue()) // 2], "cannot decode"),
        "20000² image": ("huge.png", _png_header(20000, 20000), "exceeds the limit"),
        "truncated .gsq": ("cut.gsq", b"GSQ", ".gsq"),
    }
    nan = np.full((4, 8), np.nan, dtype=np.float16)
    npy = io.BytesIO()
    np.save(npy, nan)
    files["NaN .gs.npy"] = ("nan.gs.npy", npy.getvalue(), "NaN")
    out = {}
    for what, (name, data, message) in files.items():
        (tmp_path / name).write_bytes(data)
        out[what] = (tmp_path / name, message)
    return out


def test_bad_uploads_are_messages_for_the_page_naming_the_file(backend, scene, tmp_path):
    from llava_gs.serve.session import PageError

    for what, (path, message) in _bad_uploads(tmp_path, scene[0]).items():
        with pytest.raises(PageError) as e:
            backend.open(path)
        text = str(e.value)
        assert message in text and path.name in text, (what, text)
        assert str(tmp_path) not in text, (what, text)  # the upload's temporary folder is not the user's


@pytest.mark.parametrize(
    ("n", "iters", "target", "message"),
    [
        (0, 10, None, "number of Gaussians"),
        (10**6, 10, None, "number of Gaussians"),
        (16, -1, None, "iterations"),
        (16, 10, 70.0, "beyond|fp16"),  # past what fp16 splat values can render
        (16, 10, 0.0, "target_psnr"),
    ],
)
def test_fit_settings_out_of_range_are_refused(backend, scene, n, iters, target, message):
    from llava_gs.serve.session import PageError

    with pytest.raises(PageError, match=message):
        backend.open(scene[0], num_gaussians=n, iters=iters, target_psnr=target)


def test_an_empty_question_or_no_picture_is_a_message_and_the_model_keeps_answering(backend, scene):
    from llava_gs.serve.session import PageError

    picture = backend.open(scene[0])
    with pytest.raises(PageError, match="type a question"):
        list(backend.answer(picture, [], "   "))
    with pytest.raises(PageError, match="upload a picture"):
        list(backend.answer(None, [], "What is it?"))
    answer, turns = _answer(backend, picture, [], scene[1][0])
    assert answer and len(turns) == 2 and not backend.lock.locked()
