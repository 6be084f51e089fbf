"""The web demo in a real browser and under load: python -m eval.bench.web

Starts `python -m llava_gs.serve.web` with the shipped demo model on 127.0.0.1 (greedy answers), then

1. drives headless Chromium (Debian's chromium + chromium-driver, through selenium): uploads a mini-world
   scene, waits for the render, asks a question, reads the answer and checks it equals what
   `python -m llava_gs.chat --prompt` answers for the same image and settings, then tries two bad inputs
   (a text file as the picture, an empty question) and reads their messages in the page; a screenshot of
   the answered page is saved; last, the picture again with rate control (the page's default target PSNR);
2. load: CLIENTS gradio_client clients at once, each with its own picture and QUESTIONS questions in one
   dialogue; every answer must equal the one that client gets alone (no crosstalk) and none may be lost.
   Latency per question, alone and under load, with median and 90th percentile.

Writes eval/results/web.{md,json} and eval/results/web.png (the screenshot). tests/eval/test_web.py runs the
same functions with assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from llava_gs.serve.web import DEFAULT_TARGET, TARGET

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "eval" / "mini" / "demo_llava"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CLIENTS, QUESTIONS = 4, 5
MAX_NEW_TOKENS = 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(model: Path = SHIPPED / "model", port: int | None = None, timeout: float = 180) -> Iterator[str]:
    """Run the web demo (greedy, short answers) until the block ends; yields its URL."""
    port = port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "llava_gs.serve.web",
        "--model",
        str(model),
        "--port",
        str(port),
        "--temperature",
        "0",
        "--max-new-tokens",
        str(MAX_NEW_TOKENS),
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the web demo exited with {proc.returncode}:\n{''.join(log)[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the web demo did not answer on {url} within {timeout:.0f} s:\n{''.join(log)[-3000:]}"
                )
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def chat_cli_answer(image: Path, question: str, model: Path = SHIPPED / "model") -> str:
    """What `python -m llava_gs.chat --prompt` answers (greedy, as the page is served here)."""
    cmd = [
        sys.executable,
        "-m",
        "llava_gs.chat",
        "--model",
        str(model),
        "--image",
        str(image),
        "--no-cache",
        "--temperature",
        "0",
        "--max-new-tokens",
        str(MAX_NEW_TOKENS),
        "--prompt",
        question,
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("ASSISTANT: ")]
    if len(lines) != 1:
        raise RuntimeError(f"expected one answer from the chat, got:\n{res.stdout[-2000:]}")
    return lines[0].removeprefix("ASSISTANT: ").strip()


def _text(message) -> str:
    """A Chatbot message's text, whatever content form the installed Gradio returns."""
    content = message["content"] if isinstance(message, dict) else message
    if isinstance(content, list):
        return "".join(_text(c) if not isinstance(c, dict) else c.get("text", "") for c in content)
    return str(content)


def dialogue(url: str, image: Path, questions: list[str]) -> list[dict]:
    """One client: open the picture, then ask the questions in one dialogue; each answer and its seconds."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    _, _, _, _, stats, _, _, status = client.predict(handle_file(str(image)), api_name="/open")
    if not status.startswith("ready"):
        raise RuntimeError(f"{image.name}: the page said {status!r}")
    out = []
    for q in questions:
        start = time.perf_counter()
        chat, _, status = client.predict(q, api_name="/ask")
        seconds = time.perf_counter() - start
        if not status.startswith("answered"):
            raise RuntimeError(f"{image.name}, {q!r}: the page said {status!r}")
        out.append({"question": q, "answer": _text(chat[-1]).strip(), "seconds": seconds})
    return out


def workload() -> list[tuple[Path, list[str]]]:
    """CLIENTS pictures (the shipped scenes, then photographs) with QUESTIONS questions each."""
    scenes = json.loads((SHIPPED / "scenes" / "questions.json").read_text())
    by_image: dict[str, list[str]] = {}
    for q in scenes:
        by_image.setdefault(q["image"], []).append(q["question"])
    work = [(SHIPPED / "scenes" / name, qs[:QUESTIONS]) for name, qs in sorted(by_image.items())]
    photos = ROOT / "eval" / "bench" / "photos"
    generic = [
        "What shapes are in the image?",
        "How many shapes are there?",
        "Is there a red circle in the image?\nAnswer the question using a single word or phrase.",
        "What colour is the largest shape?",
        "Describe the picture.",
    ]
    for name in ("chelsea", "coffee"):
        work.append((photos / f"{name}.png", generic[:QUESTIONS]))
    return work[:CLIENTS]


def browser_question() -> tuple[Path, str]:
    """The first picture of the workload and its first one-line question (Enter sends a typed line)."""
    image = workload()[0][0]
    scenes = json.loads((SHIPPED / "scenes" / "questions.json").read_text())
    return image, next(
        q["question"] for q in scenes if q["image"] == image.name and "\n" not in q["question"]
    )


def load_test(url: str, work: list[tuple[Path, list[str]]]) -> dict:
    """Each client alone, then all at once: the answers must agree; none may be lost."""
    alone = [dialogue(url, image, qs) for image, qs in work]
    together: list[list[dict] | Exception | None] = [None] * len(work)

    def run(i: int) -> None:
        try:
            together[i] = dialogue(url, *work[i])
        except Exception as e:  # counted as lost, reported by name
            together[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    clients = []
    for (image, qs), a, b in zip(work, alone, together, strict=True):
        lost = str(b) if isinstance(b, Exception) else None
        same = None if lost else [x["answer"] == y["answer"] for x, y in zip(a, b, strict=True)]
        clients.append(
            {
                "picture": image.name,
                "questions": len(qs),
                "alone": a,
                "together": None if lost else b,
                "lost": lost,
                "same_answers": same,
            }
        )
    return {"clients": clients, "wall_seconds_together": wall}


def browser_session(url: str, image: Path, question: str, bad_upload: Path, screenshot: Path | None) -> dict:
    """Headless Chromium through the page: upload, render, ask, read; then two bad inputs."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1500"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    wait = WebDriverWait(driver, 180)

    def status_has(text: str):
        return wait.until(ec.text_to_be_present_in_element((By.ID, "status"), text))

    def upload(path: Path) -> None:
        for clear in driver.find_elements(By.CSS_SELECTOR, "#upload button[aria-label='Clear']"):
            clear.click()  # the box holds the last upload: empty it first
        box = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
        box.send_keys(str(path))
        # the page lists the upload as its stem and suffix on two lines
        wait.until(ec.text_to_be_present_in_element((By.ID, "upload"), path.name.split(".")[0]))
        driver.find_element(By.ID, "fit").click()

    def ask(text: str) -> None:
        box = driver.find_element(By.CSS_SELECTOR, "#question textarea")
        box.clear()
        if text:
            box.send_keys(text)
        driver.find_element(By.ID, "send").click()

    try:
        driver.get(url)
        upload(image)
        status_has("ready")
        stats = " ".join(driver.find_element(By.ID, "stats").text.split())
        rendered = driver.find_element(By.CSS_SELECTOR, "#view-render img").get_attribute("src")
        ask(question)
        status_has("answered")
        bots = driver.find_elements(By.CSS_SELECTOR, "#chat [data-testid='bot']")
        answer = bots[-1].text.strip() if bots else ""
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(screenshot))
        ask("")
        status_has("type a question first")
        empty_question = driver.find_element(By.ID, "status").text
        upload(bad_upload)
        status_has("not an image")
        bad_picture = driver.find_element(By.ID, "status").text
        # rate control: the same picture, N chosen by the page's default target PSNR (the N slider is the cap)
        driver.find_element(By.XPATH, f"//*[@id='mode']//label[contains(., '{TARGET}')]").click()
        upload(image)
        status_has("ready")
        targeted = " ".join(driver.find_element(By.ID, "stats").text.split())
        return {
            "stats": stats,
            "render_shown": bool(rendered),
            "answer": answer,
            "empty_question": empty_question,
            "bad_picture": bad_picture,
            "target_stats": targeted,
        }
    finally:
        driver.quit()


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def report(browser: dict, cli_answer: str, load: dict, image: Path, question: str) -> tuple[list[str], dict]:
    from gs_encoder.report import machine_info, markdown_table

    info = machine_info()
    rows = []
    for c in load["clients"]:
        alone = [x["seconds"] for x in c["alone"]]
        together = [x["seconds"] for x in c["together"]] if c["together"] else []
        rows.append(
            [
                c["picture"],
                c["questions"],
                "lost: " + c["lost"] if c["lost"] else f"{sum(c['same_answers'])} of {c['questions']}",
                f"{statistics.median(alone):.2f}",
                f"{statistics.median(together):.2f}" if together else "–",
                f"{_percentile(together, 0.9):.2f}" if together else "–",
            ]
        )
    every_alone = [x["seconds"] for c in load["clients"] for x in c["alone"]]
    every_together = [x["seconds"] for c in load["clients"] if c["together"] for x in c["together"]]
    lines = [
        "# The web demo in a browser and under load",
        "",
        f"`python -m eval.bench.web`, measured {info['date']} on {info['cpu']}, torch {info['torch']}, "
        f"commit {info['git']}; the shipped demo model on CPU, greedy answers of at most {MAX_NEW_TOKENS} tokens.",
        "",
        "## Headless Chromium",
        "",
        markdown_table(
            ["step", "what the page showed"],
            [
                [f"upload {image.name}, Fit / load", browser["stats"]],
                [f"ask {question.splitlines()[0]!r}", browser["answer"]],
                ["the same with `python -m llava_gs.chat --prompt`", cli_answer],
                ["answers equal", "yes" if browser["answer"] == cli_answer else "no"],
                ["an empty question", browser["empty_question"]],
                ["a text file as the picture", browser["bad_picture"]],
                [f"the picture again, N: {TARGET} ({DEFAULT_TARGET:g} dB)", browser["target_stats"]],
            ],
        ),
        "",
        "![the page after the answer](web.png)",
        "",
        f"## {len(load['clients'])} clients at once (gradio_client), seconds per question",
        "",
        "Each client opens its picture and asks its questions in one dialogue, first alone, then all at once "
        "(answers run one at a time on the shared model, so latency under load includes the queue).",
        "",
        markdown_table(
            [
                "picture",
                "questions",
                "answers equal to alone",
                "median alone",
                "median together",
                "p90 together",
            ],
            rows,
        ),
        "",
        f"All questions: median {statistics.median(every_alone):.2f} s alone, "
        + (
            f"{statistics.median(every_together):.2f} s together"
            if every_together
            else "none answered together"
        )
        + f"; the {len(load['clients'])} dialogues together took {load['wall_seconds_together']:.1f} s.",
        "",
    ]
    data = {"machine": info, "browser": browser, "chat_cli_answer": cli_answer, "load": load}
    return lines, data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--results", default=str(ROOT / "eval" / "results" / "web"), help="path without extension"
    )
    args = ap.parse_args(argv)
    if not (SHIPPED / "model" / "model.safetensors").is_file():
        print(f"web: no shipped demo model in {SHIPPED}; run bash scripts/demo.sh first", file=sys.stderr)
        return 2
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not Path(tool).is_file():
            print(f"web: {tool} is missing; apt-get install chromium chromium-driver", file=sys.stderr)
            return 2
    res = Path(args.results)
    image, question = browser_question()
    res.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "notes.txt"
        bad.write_text("this is not a picture\n")
        cli = chat_cli_answer(image, question)
        with serve() as url:
            browser = browser_session(url, image, question, bad, res.with_suffix(".png"))
            load = load_test(url, workload())
    lines, data = report(browser, cli, load, image, question)
    res.with_suffix(".md").write_text("\n".join(lines))
    res.with_suffix(".json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    print("\n".join(lines))
    ok = browser["answer"] == cli and all(
        c["lost"] is None and all(c["same_answers"]) for c in load["clients"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
