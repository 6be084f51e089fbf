"""The chat CLI driven through stdin with a tiny random GS-LLaVA."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_chat_streams_switches_survives_bad_paths_and_renders(tiny_init, tiny_parts, photo_path, tmp_path):
    png = tmp_path / "seen.png"
    script = "\n".join(
        [
            "What is in the picture?",
            "/image /no/such/photo.jpg",
            "/splats " + str(tmp_path),  # a folder, not a splat file
            f"/render {png}",
            f"/splats {tiny_parts / 'splats' / 'coffee.gs.npy'}",
            "And now?",
            f"/image {photo_path('chelsea.png')}",  # the same photo again: a cache hit, no refit
            "/frobnicate",
            "/quit",
            "never read",
        ]
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable,
        "-m",
        "llava_gs.chat",
        "--model",
        str(tiny_init),
        "--image",
        str(photo_path("chelsea.png")),
        "--max-new-tokens",
        "6",
        "--temperature",
        "0",
        "--cache",
        str(tmp_path / "cache"),
    ]
    res = subprocess.run(cmd, input=script, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert out.count("ASSISTANT: ") == 2  # two answers streamed, each after its prefix
    assert "chelsea.png: 36 Gaussians, fitted; new conversation" in out
    assert "error: /no/such/photo.jpg: file not found" in out
    assert f"error: {tmp_path}: is a directory" in out
    assert "coffee.gs.npy: 36 Gaussians, splat file; new conversation" in out
    assert "error: unknown command /frobnicate" in out
    assert png.is_file() and png.stat().st_size > 0
    from PIL import Image

    assert Image.open(png).size == (32, 32)  # the tiny tower's canvas
    cached = list((tmp_path / "cache").rglob("*.gs.npy"))
    assert len(cached) == 1  # chelsea fitted once, found in the cache the second time
    assert "chelsea.png: 36 Gaussians, from the splat cache; new conversation" in out


def test_chat_prompt_mode_keeps_the_dialogue(tiny_init, tiny_parts):
    import io

    from llava_gs.builder import load_pretrained_model
    from llava_gs.chat import ChatSession
    from llava_gs.splat_cache import SplatCache

    model, processor = load_pretrained_model(tiny_init)
    buf = io.StringIO()
    chat = ChatSession(
        model, processor, SplatCache(processor.image_processor), out=buf, temperature=0, max_new_tokens=4
    )
    chat.set_splats(str(tiny_parts / "splats" / "chelsea.gs.npy"))
    mark = len(buf.getvalue())
    first = chat.ask("What is it?")
    chat.ask("Are you sure?")
    assert [t["from"] for t in chat.turns] == ["human", "gpt", "human", "gpt"]
    assert chat.turns[0]["value"].startswith("<image>\n") and "<image>" not in chat.turns[2]["value"]
    assert chat.turns[1]["value"] == first
    second = chat.turns[3]["value"]
    assert first and second  # the tiny model (seeded) does answer within 4 tokens
    # what was streamed is exactly the two answers, in order
    assert buf.getvalue()[mark:].split() == (first + " " + second).split()


def test_a_picture_that_does_not_load_stops_chat_before_any_answer(tiny_init, tmp_path, capsys):
    from llava_gs.chat import main

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    argv = ["--model", str(tiny_init), "--no-cache", "--temperature", "0", "--max-new-tokens", "2"]
    assert main([*argv, "--image", str(bad), "--prompt", "What is it?"]) == 2
    out, err = capsys.readouterr()
    assert "broken.png" in err and "ASSISTANT" not in out  # no question was answered without the image
    assert main([*argv, "--splats", str(tmp_path / "missing.gs.npy"), "--prompt", "What is it?"]) == 2
    assert "missing.gs.npy: file not found" in capsys.readouterr().err


def test_a_model_folder_without_its_processor_is_an_error(tiny_init, tmp_path):
    import shutil

    from llava_gs.builder import load_pretrained_model

    folder = tmp_path / "model"
    shutil.copytree(tiny_init, folder)
    (folder / "processor_config.json").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"model: no processor_config.json .* training and scripts/build_init"
    ):
        load_pretrained_model(folder)
    (folder / "processor_config.json").write_text("{ not json")
    with pytest.raises(ValueError, match=r"model: the processor does not load"):
        load_pretrained_model(folder)


def test_chat_fits_photos_from_the_given_init_weights(tiny_init, photo_path, tmp_path, capsys):
    import shutil

    from gs_encoder.fitting.learned_init import DEFAULT_WEIGHTS
    from llava_gs.chat import main

    argv = ["--model", str(tiny_init), "--no-cache", "--temperature", "0", "--max-new-tokens", "2"]
    ask = ["--image", str(photo_path("chelsea.png")), "--prompt", "What is it?", "--fit-init", "learned"]
    assert main([*argv, *ask, "--fit-init-weights", str(tmp_path / "none.safetensors")]) == 2
    assert "none.safetensors: learned-init weights not found" in capsys.readouterr().err
    shutil.copyfile(DEFAULT_WEIGHTS, tmp_path / "mine.safetensors")
    assert main([*argv, *ask, "--fit-init-weights", str(tmp_path / "mine.safetensors")]) == 0
    assert "ASSISTANT" in capsys.readouterr().out
