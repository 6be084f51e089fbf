"""The web demo served for real: headless Chromium through the page, and four gradio_client clients at once."""

from pathlib import Path

import pytest

from eval.bench import web

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (web.SHIPPED / "model" / "model.safetensors").is_file(), reason="no shipped demo model"
    ),
]


@pytest.fixture(scope="module")
def url():
    pytest.importorskip("gradio")
    with web.serve() as url:
        yield url


@pytest.mark.skipif(
    not (Path(web.CHROMIUM).is_file() and Path(web.CHROMEDRIVER).is_file()),
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)
def test_the_page_in_chromium_answers_as_the_terminal_chat_and_shows_bad_inputs(url, tmp_path):
    pytest.importorskip("selenium")
    image, question = web.browser_question()
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a picture\n")
    shot = tmp_path / "web.png"
    seen = web.browser_session(url, image, question, bad, shot)
    assert "Gaussians" in seen["stats"] and "PSNR" in seen["stats"] and seen["render_shown"]
    assert seen["answer"] and seen["answer"] == web.chat_cli_answer(image, question)
    assert "type a question first" in seen["empty_question"]
    assert "notes.txt" in seen["bad_picture"] and "not an image" in seen["bad_picture"]
    fixed = int(seen["stats"].split(": ")[1].split()[0])
    chosen = int(seen["target_stats"].split(": ")[1].split()[0])
    assert f"rate control: target {web.DEFAULT_TARGET:g} dB" in seen["target_stats"] and 1 <= chosen <= fixed
    from PIL import Image

    assert Image.open(shot).size[0] >= 1000


def test_four_clients_at_once_get_the_answers_they_get_alone(url):
    load = web.load_test(url, web.workload())
    assert len(load["clients"]) == web.CLIENTS
    for c in load["clients"]:
        assert c["lost"] is None, c["lost"]
        assert c["questions"] == web.QUESTIONS and all(c["same_answers"]), c
        assert all(x["answer"] for x in c["alone"])
