"""What the web demo does, without the page: the model loaded once, an upload turned into splats and the
pictures of them, and answers from the terminal chat's own code (`llava_gs.chat.ChatSession`), so that the
page and `python -m llava_gs.chat --prompt` answer alike for the same picture and settings.

Nothing here imports Gradio; `llava_gs.serve.web` builds the page on top.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from gs_encoder import fit_images
from gs_encoder.codec import encode_gsq, load_gsq
from gs_encoder.image_io import ImageLoadError
from gs_encoder.splat_io import SplatFileError, as_stored, load_splats, splat_npy_bytes

from ..chat import ChatSession

__all__ = ["DemoBackend", "PageError", "Picture", "Views", "default_model"]

SPLAT_SUFFIXES = (".gs.npy", ".gsq")
VIEW_SIZE = 320  # px per picture in the page
MAX_GAUSSIANS = 16384  # the page's slider stops here; a fit of more is a job for `gsv fit`
MAX_ITERS = 5000


class PageError(ValueError):
    """Something the page says to its user (a bad upload, an empty question); never a stack trace."""


def default_model() -> Path | None:
    """The GS-LLaVA that ships with the repository (scripts/demo.sh's), when this is a checkout."""
    path = Path(__file__).resolve().parents[2] / "eval" / "mini" / "demo_llava" / "model"
    return path if (path / "model.safetensors").is_file() else None


@dataclass
class Picture:
    """One user's current picture: the splats the model reads and where they came from."""

    splats: torch.Tensor  # [N, 8] float32, as stored (float16-rounded)
    source: str  # the file name shown in the page
    canvas: torch.Tensor | None = None  # [3, S, S] the photo the splats were fitted to; None for splat files
    fit_seconds: float | None = None
    how: str = ""


@dataclass
class Views:
    """What the page shows of a picture: original | splat render | ellipses | error, and its numbers."""

    original: Image.Image | None
    render: Image.Image
    ellipses: Image.Image
    error: Image.Image | None
    stats: dict = field(default_factory=dict)


class _Chunks:
    """A write-only stream whose text is read back, in pieces, by another thread (the answer streaming)."""

    def __init__(self):
        self.q: queue.Queue[str | None] = queue.Queue()

    def write(self, text: str) -> None:
        if text:
            self.q.put(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.q.put(None)

    def __iter__(self) -> Iterator[str]:
        while (text := self.q.get()) is not None:
            yield text


class DemoBackend:
    """A GS-LLaVA loaded once and shared by every page; one generation runs at a time (`lock`), while fits
    run side by side (each page's splats are its own)."""

    def __init__(self, model_path: str | Path, device: str = "cpu", dtype: torch.dtype | None = None):
        from ..builder import load_pretrained_model

        self.model_path = Path(model_path)
        self.model, self.processor = load_pretrained_model(self.model_path, device=device, dtype=dtype)
        self.image_processor = self.processor.image_processor
        if self.image_processor.tower_input == "rgb":
            raise ValueError(f"{model_path}: an RGB-tower LLaVA reads pixels, not splats; give a GS-LLaVA")
        self.lock = threading.Lock()

    @property
    def canvas(self) -> int:
        return int(self.image_processor.canvas)

    @property
    def default_gaussians(self) -> int:
        cfg = self.image_processor.fit_config()
        return int(cfg.max_gaussians or cfg.num_gaussians)

    @property
    def default_target_psnr(self) -> float | None:
        """The processor's own PSNR target (its N is then the cap, `default_gaussians`), or None."""
        cfg = self.image_processor.fit_config()
        return cfg.target_psnr if cfg.max_gaussians is not None else None

    @property
    def default_iters(self) -> int:
        return int(self.image_processor.fit_config().iters)

    def open(
        self,
        path: str | Path,
        num_gaussians: int | None = None,
        iters: int | None = None,
        target_psnr: float | None = None,
    ) -> Picture:
        """An upload → a Picture: a splat file (.gs.npy, .gsq) is read as it is; any other file is decoded
        as an image and fitted with the model's processor settings, or, when any of `num_gaussians`, `iters`
        and `target_psnr` is given, with those (the rest the processor's): a fixed N, or with `target_psnr`
        rate control, the fewest Gaussians up to `num_gaussians` whose render reaches it (tqdm shows the fit)."""
        path = Path(path)
        name = path.name
        if name.endswith(SPLAT_SUFFIXES):
            try:
                splats = load_gsq(path) if name.endswith(".gsq") else load_splats(path)
            except SplatFileError as e:
                raise PageError(_short(e, path)) from e
            return Picture(as_stored(splats), name, how="splat file")
        n = self.default_gaussians if num_gaussians is None else int(num_gaussians)
        it = self.default_iters if iters is None else int(iters)
        if not 1 <= n <= MAX_GAUSSIANS:
            raise PageError(f"the number of Gaussians must be between 1 and {MAX_GAUSSIANS}, got {n}")
        if not 0 <= it <= MAX_ITERS:
            raise PageError(f"the iterations must be between 0 and {MAX_ITERS}, got {it}")
        overrides: dict = {}
        # with none of the three given, the processor's settings as they are
        if (num_gaussians, iters, target_psnr) != (None, None, None):
            rate = target_psnr is not None  # rate control: N is the cap
            overrides = {
                "num_gaussians": n,
                "iters": it,
                "max_gaussians": n if rate else None,
                "target_psnr": float(target_psnr) if rate else None,
                "target_bytes": None,
            }
        try:
            cfg = self.image_processor.fit_config(**overrides)
        except ValueError as e:  # a target beyond fp16's precision, say
            raise PageError(str(e)) from e
        try:
            canvas = self.image_processor.to_canvas(path)
        except ImageLoadError as e:
            raise PageError(_short(e, path) + " (upload a photo, a .gs.npy or a .gsq file)") from e
        start = time.perf_counter()
        result = fit_images(canvas[None], cfg, progress=True)[0]
        seconds = time.perf_counter() - start
        how = f"fitted, {cfg.iters} iterations"
        if cfg.max_gaussians is not None:
            target = f"{cfg.target_psnr:g} dB" if cfg.target_bytes is None else f"{cfg.target_bytes:,} bytes"
            reached = (
                "reached" if result.target_reached else f"not reached within {cfg.max_gaussians} Gaussians"
            )
            how = f"rate control: target {target} {reached}, {cfg.iters} iterations"
        return Picture(as_stored(result.splats), name, canvas, seconds, how)

    def views(self, picture: Picture) -> Views:
        """The pictures and numbers of a splat set (the render and ellipses at VIEW_SIZE; the error map
        and PSNR at the canvas the splats were fitted on)."""
        from gs_encoder import render
        from gs_encoder.fitting.fit import psnr
        from gs_encoder.viz import draw_ellipses, error_map, fit_to, to_pil

        s = picture.splats
        shown = to_pil(render(s, size=VIEW_SIZE, clamp=True))
        stats = {
            "source": picture.source,
            "gaussians": int(s.shape[0]),
            "how": picture.how,
            "fp16_bytes": len(splat_npy_bytes(s)),
            "gsq_bytes": len(encode_gsq(s)),
        }
        original = error = None
        if picture.canvas is not None:
            rendered = render(s, size=self.canvas, clamp=True)
            stats["psnr_db"] = float(psnr(rendered.clamp(0, 1), picture.canvas))
            stats["fit_seconds"] = picture.fit_seconds
            heat, stats["error_scale"] = error_map(picture.canvas, rendered)
            original, error = fit_to(to_pil(picture.canvas), VIEW_SIZE), fit_to(heat, VIEW_SIZE)
        return Views(original, shown, draw_ellipses(shown, s), error, stats)

    def answer(
        self,
        picture: Picture | None,
        turns: list[dict],
        question: str,
        temperature: float = 0.2,
        top_p: float | None = None,
        max_new_tokens: int = 512,
    ) -> Iterator[tuple[str, list[dict] | None]]:
        """Stream the answer to `question` after `turns` (the dialogue so far, LLaVA's {from, value} form):
        yields (answer so far, None) as text arrives, then (answer, the dialogue with both turns)."""
        question = (question or "").strip()
        if not question:
            raise PageError("type a question first")
        if picture is None:
            raise PageError("upload a picture (or pick an example) first")
        if not 0 <= temperature <= 2:
            raise PageError(f"temperature must be between 0 and 2, got {temperature}")
        out = _Chunks()
        session = ChatSession(
            self.model,
            self.processor,
            None,
            out=out,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
        )
        session.splats, session.turns = picture.splats, list(turns)
        result: dict = {}

        def run() -> None:
            try:
                result["answer"] = session.ask(question)
            except Exception as e:  # reported in the page by the caller, with the server still serving
                result["error"] = e
            finally:
                out.close()

        with self.lock:
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            try:
                text = ""
                for chunk in out:
                    text += chunk
                    yield text.strip(), None
            finally:
                worker.join()
        if "error" in result:
            raise PageError(f"the model failed on this question: {result['error']}") from result["error"]
        yield result["answer"], session.turns


def _short(e: Exception, path: Path) -> str:
    """An error message with the upload's temporary folder left out (the user knows the file by its name)."""
    return str(e).replace(str(path), path.name)
