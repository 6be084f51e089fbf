"""How the fitting images of eval/splits.py were made: `python -m eval.images.make SOURCES_DIR`.

Writes eval/images/{tuning,sealed}/<name>.png (224², RGB, lossless) and the sealed set's fingerprints,
gs_encoder/sealed_fingerprints.txt. The committed files are what every benchmark and test reads; this
script records where each came from and can rebuild them. It needs, beside the project's .venv
(Pillow, matplotlib, scikit-learn):

- SOURCES_DIR/mate: the photographs of Debian's mate-backgrounds package (1.26.0-1, GPL-2+, authors in
  its copyright file): `apt-get download mate-backgrounds && dpkg-deb -x mate-backgrounds_*.deb x &&
  mv x/usr/share/backgrounds/mate SOURCES_DIR/mate`;
- chromium on PATH (Debian's `chromium`) for the two screenshots of local pages.

Every image is centre-cropped to a square and resized to 224² (Pillow's Lanczos): the canvas the
benchmarks fit at; greyscale and low-light ones are derived from a photograph after that. The originals'
fingerprints are sealed too, so a training folder holding an original is caught as well.
"""

from __future__ import annotations

import html
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
SIZE = 224


def square(im: Image.Image, size: int = SIZE) -> Image.Image:
    w, h = im.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return im.convert("RGB").crop(box).resize((size, size), Image.Resampling.LANCZOS)


def low_light(im: Image.Image, gain: float, seed: int) -> Image.Image:
    """An underexposed capture: linear light × gain, shot noise and read noise, back to sRGB."""
    a = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0
    lin = np.where(a <= 0.04045, a / 12.92, ((a + 0.055) / 1.055) ** 2.4) * gain
    rng = np.random.default_rng(seed)
    lin = lin + rng.normal(0.0, 1.0, lin.shape) * np.sqrt(lin * 0.002 + 0.0003**2)
    lin = np.clip(lin, 0.0, 1.0)
    srgb = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)
    return Image.fromarray(np.round(srgb * 255).astype(np.uint8))


def _font(bold: bool = False, mono: bool = False, serif: bool = False, size: int = 20):
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    name = "DejaVuSansMono" if mono else ("DejaVuSerif" if serif else "DejaVuSans")
    return ImageFont.truetype(str(ttf / f"{name}{'-Bold' if bold else ''}.ttf"), size)


PROSE = (
    "Splats instead of pixels",
    "An image becomes a few hundred coloured ellipses. Each one has a centre, a shape and a colour, and "
    "the picture is their sum. The encoder reads the ellipses directly, so a device can send the splats "
    "and never the pixels. How many ellipses a picture needs depends on what it shows: a clear sky needs "
    "few, a page of small print needs many. This page is one of the test images.",
)
PROSE_TUNING = (
    "Notes on fitting",
    "Start from a grid that is dense where the image has detail. Move each centre a little at every step, "
    "grow or shrink the ellipse, and correct the colour last. Stop when the error is small enough or the "
    "budget is spent. Dim ellipses can be pruned at the end.",
)


def text_page(title: str, body: str, serif: bool, width: int = 896) -> Image.Image:
    im = Image.new("RGB", (width, width), (250, 249, 246))
    d = ImageDraw.Draw(im)
    d.text((48, 48), title, font=_font(bold=True, serif=serif, size=44), fill=(20, 20, 20))
    font = _font(serif=serif, size=30)
    y, line = 130, ""
    for word in body.split():
        trial = f"{line} {word}".strip()
        if d.textlength(trial, font=font) > width - 96:
            d.text((48, y), line, font=font, fill=(35, 35, 35))
            y, line = y + 44, word
        else:
            line = trial
    d.text((48, y), line, font=font, fill=(35, 35, 35))
    return im


def table_document(width: int = 896) -> Image.Image:
    im = Image.new("RGB", (width, width), "white")
    d = ImageDraw.Draw(im)
    d.text((48, 40), "Fit report", font=_font(bold=True, size=46), fill="black")
    rows = [("image", "N", "iters", "PSNR"), ("garden", "1600", "300", "31.2"), ("page", "3136", "100", "38.9"),
            ("chart", "400", "300", "29.4"), ("storm", "1600", "1000", "33.0"), ("screen", "3136", "300", "35.7")]  # fmt: skip
    font, bold = _font(mono=True, size=30), _font(mono=True, bold=True, size=30)
    for r, row in enumerate(rows):
        y = 150 + r * 70
        if r % 2 == 0:
            d.rectangle((40, y - 12, width - 40, y + 50), fill=(232, 238, 246))
        for c, cell in enumerate(row):
            d.text((60 + c * 200, y), cell, font=bold if r == 0 else font, fill=(10, 10, 60))
    d.line((40, 205, width - 40, 205), fill=(40, 40, 40), width=3)
    d.text((48, 620), "Signed: ____________________", font=_font(serif=True, size=32), fill=(60, 60, 60))
    return im


def _figure_image(fig) -> Image.Image:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=112)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def chart(kind: str) -> Image.Image:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng({"bars": 1, "pie": 2}[kind])
    fig, ax = plt.subplots(figsize=(6, 6))
    if kind == "bars":
        x = np.arange(8)
        ax.bar(x - 0.2, 20 + 10 * rng.random(8), width=0.4, label="fixed N")
        ax.bar(x + 0.2, 15 + 10 * rng.random(8), width=0.4, label="adaptive N")
        ax.plot(x, 25 + 3 * np.sin(x), "k-o", label="target")
        ax.set_xlabel("image")
        ax.set_ylabel("kilobytes")
        ax.set_title("Bytes per image")
        ax.legend()
        ax.grid(alpha=0.3)
    else:
        ax.pie(rng.random(5) + 0.2, labels=["sky", "water", "text", "faces", "other"], autopct="%1.0f%%")
        ax.set_title("Where the Gaussians go")
    im = _figure_image(fig)
    plt.close(fig)
    return im


def diagram() -> Image.Image:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(6, 6))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    ax.axis("off")
    boxes = {"image": (1, 8), "splats": (6, 8), "encoder": (6, 5), "tokens": (1, 5), "LLM": (3.5, 1.5)}
    for name, (x, y) in boxes.items():
        ax.add_patch(FancyBboxPatch((x, y), 3, 1.4, boxstyle="round,pad=0.1", fc="#dde8f5", ec="#234"))
        ax.text(x + 1.5, y + 0.7, name, ha="center", va="center", fontsize=15)
    for a, b in (("image", "splats"), ("splats", "encoder"), ("encoder", "tokens"), ("tokens", "LLM")):
        (x0, y0), (x1, y1) = boxes[a], boxes[b]
        ax.add_patch(FancyArrowPatch((x0 + 1.5, y0 + 0.7), (x1 + 1.5, y1 + 0.7), arrowstyle="-|>",
                                     mutation_scale=20, shrinkA=40, shrinkB=40, lw=2))  # fmt: skip
    im = _figure_image(fig)
    plt.close(fig)
    return im


PAGES = {
    "settings": """<h2>Settings</h2><form><label>Name <input value="splat-cache-01"></label><br><br>
<label>Gaussians <select><option>1600</option></select></label><br><br>
<label><input type="checkbox" checked> Prune dim Gaussians</label><br><br>
<label>Target PSNR <input type="range" value="70"></label><br><br>
<button>Cancel</button> <button style="background:#2a6ed1;color:white">Save</button></form>""",
    "files": "<h2>Shards</h2><table border=1 cellpadding=6 style='border-collapse:collapse'>"
    + "<tr><th>file</th><th>images</th><th>size</th><th>status</th></tr>"
    + "".join(
        f"<tr><td>shard-{i:05d}.tar</td><td>{1000 - 7 * i}</td><td>{41 + i % 5}.{i % 10} MB</td>"
        f"<td style='color:{'green' if i % 4 else 'red'}'>{'done' if i % 4 else 'failed'}</td></tr>"
        for i in range(9)
    )
    + "</table>",
    "login": """<div style="margin:80px auto;width:320px;padding:24px;border:1px solid #ccc;border-radius:8px">
<h2>Sign in</h2><input placeholder="user" style="width:100%"><br><br><input type="password" value="secret"
style="width:100%"><br><br><button style="width:100%;background:#1b8a4b;color:white">Sign in</button>
<p><a href="#">Forgot password?</a></p></div>""",
}


def screenshot(name: str, work: Path) -> Image.Image:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("eval.images.make: chromium is needed for the screenshots (apt-get install chromium)")
    page = work / f"{name}.html"
    page.write_text(f"<html><body style='font-family:DejaVu Sans;font-size:20px;margin:24px'>{PAGES[name]}"
                    f"<!-- {html.escape(name)} --></body></html>")  # fmt: skip
    out = work / f"{name}.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={out}", "--window-size=720,720", page.as_uri()],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    return Image.open(out).convert("RGB")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not (Path(args[0]) / "mate" / "nature").is_dir():
        sys.exit(
            "usage: python -m eval.images.make SOURCES_DIR  (SOURCES_DIR/mate/nature: see the docstring)"
        )
    src = Path(args[0])
    import matplotlib
    from sklearn.datasets import load_sample_image

    mate = src / "mate" / "nature"
    sample = Path(matplotlib.get_data_path()) / "sample_data"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        originals = {  # what each sealed image was made from, before the 224² crop
            "garden": Image.open(mate / "Garden.jpg"),
            "aqua": Image.open(mate / "Aqua.jpg"),
            "ladybird": Image.open(mate / "LadyBird.jpg"),
            "storm": Image.open(mate / "Storm.jpg"),
            "meadow": Image.open(mate / "GreenMeadow.jpg"),
            "raindrops": Image.open(mate / "RainDrops.jpg"),
            "wood": Image.open(mate / "Wood.jpg"),
            "china": Image.fromarray(load_sample_image("china.jpg")),
            "hopper_grey": Image.open(sample / "grace_hopper.jpg"),
            "mri_grey": _mri(sample / "s1045.ima.gz"),
            "flower_dark": Image.fromarray(load_sample_image("flower.jpg")),
            "yellowflower_dark": Image.open(mate / "YellowFlower.jpg"),
            "page": text_page(*PROSE, serif=True),
            "report": table_document(),
            "chart_bars": chart("bars"),
            "diagram": diagram(),
            "ui_settings": screenshot("settings", work),
            "ui_files": screenshot("files", work),
        }
        derive = {
            "hopper_grey": lambda im: im.convert("L").convert("RGB"),
            "flower_dark": lambda im: low_light(im, 0.06, 1),
            "yellowflower_dark": lambda im: low_light(im, 0.04, 2),
        }
        sealed = {k: derive.get(k, lambda im: im)(square(im)) for k, im in originals.items()}
        tuning = {
            "freshflower_dark": low_light(square(Image.open(mate / "FreshFlower.jpg")), 0.05, 3),
            "notes": square(text_page(*PROSE_TUNING, serif=False)),
            "chart_pie": square(chart("pie")),
            "ui_login": square(screenshot("login", work)),
        }
    for folder, images in (("sealed", sealed), ("tuning", tuning)):
        (HERE / folder).mkdir(exist_ok=True)
        for name, im in images.items():
            im.save(HERE / folder / f"{name}.png", optimize=True)
    # the originals are sealed too: a training folder holding one at any size is caught
    from eval.splits import write_sealed_fingerprints

    write_sealed_fingerprints([np.asarray(im.convert("RGB")) for im in originals.values()])
    print(f"wrote {len(sealed)} sealed and {len(tuning)} tuning images under {HERE}")
    return 0


def _mri(path: Path) -> Image.Image:
    """matplotlib's sample MRI slice (256² big-endian uint16), contrast-stretched to 8 bits."""
    import gzip

    a = np.frombuffer(gzip.open(path).read(), dtype=">u2").reshape(256, 256).astype(np.float64)
    a = (a - a.min()) / max(np.percentile(a, 99.5) - a.min(), 1.0)
    return Image.fromarray(np.round(np.clip(a, 0, 1) * 255).astype(np.uint8))


if __name__ == "__main__":
    raise SystemExit(main())
