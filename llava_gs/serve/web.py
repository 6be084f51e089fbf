"""GS-LLaVA in the browser: see an image become splats, then ask about it.

    python -m llava_gs.serve.web                        the shipped demo model on http://127.0.0.1:7860
    python -m llava_gs.serve.web --model checkpoints/llava-gs-vicuna-7b-v1.5 --device cuda --port 8000

Upload a photo (fitted to splats with the model's settings, or the N and iterations chosen in the page, or
the fewest Gaussians up to N reaching a target PSNR: rate control), a `.gs.npy` or a `.gsq` file, or pick
an example; the page shows original | splat render | ellipses | error, with PSNR, bytes (fp16 and .gsq)
and fit time; then chat with the model about it, streaming and
multi-turn, in the model's own conversation template (a new picture starts a new dialogue, as LLaVA-1.5
has one image per dialogue). The model is loaded once; fits run side by side (`--fit-workers`), answers
one at a time. Bad uploads and questions are answered in the page, and the server goes on serving.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from .session import MAX_GAUSSIANS, MAX_ITERS, DemoBackend, PageError, Picture, default_model

FIXED, TARGET = "fixed N", "fewest Gaussians reaching a target PSNR"
# dB the page's slider spans; `gsv fit --target-psnr` takes any up to fp16's limit
TARGET_RANGE = (20.0, 50.0)
DEFAULT_TARGET = 30.0

__all__ = ["build_app", "examples", "main"]


def examples() -> list[str]:
    """The example uploads: the shipped model's mini-world scenes and the photographs scikit-image ships."""
    found = []
    model = default_model()
    if model is not None:
        found += sorted(str(p) for p in (model.parent / "scenes").glob("*.png"))
    try:
        import skimage

        data = Path(skimage.data_dir)
        found += [
            str(data / n) for n in ("chelsea.png", "astronaut.png", "coffee.png") if (data / n).is_file()
        ]
    except ImportError:
        pass
    return found


def _history(turns: list[dict], pending: tuple[str, str] | None = None) -> list[dict]:
    """LLaVA's dialogue ({from, value}, `<image>` in the first turn) → the Chatbot's messages."""
    from ..conversation import IMAGE_TOKEN

    msgs = [
        {
            "role": "user" if t["from"] == "human" else "assistant",
            "content": t["value"].replace(IMAGE_TOKEN + "\n", "").replace(IMAGE_TOKEN, ""),
        }
        for t in turns
    ]
    if pending is not None:
        msgs += [{"role": "user", "content": pending[0]}, {"role": "assistant", "content": pending[1]}]
    return msgs


def _shown(path: Path) -> str:
    """A path as the page shows it: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _stats_markdown(stats: dict) -> str:
    parts = [f"**{stats['source']}**: {stats['gaussians']} Gaussians ({stats['how']})"]
    if "psnr_db" in stats:
        parts.append(f"PSNR {stats['psnr_db']:.2f} dB")
    parts.append(f"{stats['fp16_bytes']:,} bytes as fp16 `.gs.npy`, {stats['gsq_bytes']:,} as `.gsq`")
    if stats.get("fit_seconds") is not None:
        parts.append(f"fitted in {stats['fit_seconds']:.1f} s")
    return " · ".join(parts)


def build_app(
    backend: DemoBackend, fit_workers: int = 2, max_new_tokens: int = 512, temperature: float = 0.2
):
    """The page (a gradio.Blocks) around one loaded model; its API: /open (a picture), /ask, /clear."""
    import gradio as gr

    def open_picture(upload, n, iters, mode, target, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (Gradio's idiom)
        keep = [gr.update()] * 6
        if upload is None:
            return *keep, gr.update(), gr.update(), gr.update(), "⚠ upload a picture or pick an example first"
        try:
            picture = backend.open(upload, int(n), int(iters), float(target) if mode == TARGET else None)
            views = backend.views(picture)
        except PageError as e:
            return *keep, gr.update(), gr.update(), gr.update(), f"⚠ {e}"
        return (
            views.original,
            views.render,
            views.ellipses,
            views.error,
            _stats_markdown(views.stats),
            gr.update(value=""),
            picture,
            [],
            [],
            f"ready: {views.stats['gaussians']} Gaussians; ask a question below",
        )

    def ask(question, picture: Picture | None, turns, temperature, max_tokens):
        start = time.perf_counter()
        question = question or ""
        try:
            for text, done in backend.answer(
                picture, turns, question, float(temperature), None, int(max_tokens)
            ):
                if done is None:
                    yield _history(turns, (question.strip(), text)), turns, gr.update(), "answering …"
                else:
                    secs = time.perf_counter() - start
                    yield _history(done), done, "", f"answered in {secs:.1f} s"
        except PageError as e:
            yield _history(turns), turns, gr.update(), f"⚠ {e}"

    def clear():
        return [], [], "dialogue cleared; the picture stays"

    with gr.Blocks(title="GS-LLaVA") as app:
        gr.Markdown(
            "# GS-LLaVA: an image as coloured Gaussians, and a model that reads them\n"
            f"Model: `{_shown(backend.model_path)}` (canvas {backend.canvas}², {backend.default_gaussians} Gaussians, "
            f"{backend.default_iters} iterations by default)."
        )
        picture = gr.State(None)
        turns = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="a photo, a .gs.npy or a .gsq file", type="filepath", elem_id="upload")
                own_target = backend.default_target_psnr
                mode = gr.Radio(
                    [FIXED, TARGET], value=FIXED if own_target is None else TARGET, label="N", elem_id="mode"
                )
                n = gr.Slider(
                    1,
                    MAX_GAUSSIANS,
                    value=backend.default_gaussians,
                    step=1,
                    label="Gaussians (N, or the cap)",
                )
                psnr = gr.Slider(
                    *TARGET_RANGE,
                    value=own_target or DEFAULT_TARGET,
                    step=0.5,
                    label="target PSNR (dB)",
                    elem_id="target",
                    visible=own_target is not None,
                )
                mode.change(lambda m: gr.update(visible=m == TARGET), mode, psnr, api_name=False)
                iters = gr.Slider(0, MAX_ITERS, value=backend.default_iters, step=1, label="fit iterations")
                go = gr.Button("Fit / load", variant="primary", elem_id="fit")
                found = examples()
                if found:
                    gr.Examples([[p] for p in found], inputs=[upload], label="examples")
            with gr.Column(scale=3):
                with gr.Row():
                    views = [
                        gr.Image(label=label, type="pil", interactive=False, elem_id=f"view-{key}")
                        for key, label in (
                            ("original", "original (canvas)"),
                            ("render", "splat render"),
                            ("ellipses", "ellipses (1σ)"),
                            ("error", "|error|"),
                        )
                    ]
                stats = gr.Markdown(elem_id="stats")
        status = gr.Markdown("upload a picture or pick an example, then press Fit / load", elem_id="status")
        chat = gr.Chatbot(label="GS-LLaVA", elem_id="chat", height=360)
        with gr.Row():
            question = gr.Textbox(
                placeholder="Ask about the picture", show_label=False, scale=5, elem_id="question"
            )
            send = gr.Button("Send", scale=1, elem_id="send")
            reset = gr.Button("Clear dialogue", scale=1)
        with gr.Accordion("generation", open=False):
            temp = gr.Slider(0, 2, value=temperature, step=0.05, label="temperature (0 = greedy)")
            max_tokens = gr.Slider(1, 2048, value=max_new_tokens, step=1, label="max new tokens")

        go.click(
            open_picture,
            [upload, n, iters, mode, psnr],
            [*views, stats, question, picture, turns, chat, status],
            concurrency_limit=fit_workers,
            concurrency_id="fit",
            api_name="open",
        )
        gr.on(
            [send.click, question.submit],
            ask,
            [question, picture, turns, temp, max_tokens],
            [chat, turns, question, status],
            concurrency_limit=1,
            concurrency_id="chat",
            api_name="ask",
        )
        reset.click(clear, None, [chat, turns, status], api_name="clear")
    return app


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m llava_gs.serve.web",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    shipped = default_model()
    ap.add_argument(
        "--model",
        default=str(shipped) if shipped else None,
        help=f"a GS-LLaVA folder (default: the shipped demo model{f', {shipped}' if shipped else ''})",
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="default: bf16 on CUDA, fp32 on CPU"
    )
    ap.add_argument("--host", default="127.0.0.1", help="0.0.0.0 serves other machines too")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument(
        "--share", action="store_true", help="also open a public gradio.live link (off by default)"
    )
    ap.add_argument("--fit-workers", type=int, default=2, help="fits run side by side")
    ap.add_argument("--max-new-tokens", type=int, default=512, help="the page's default")
    ap.add_argument("--temperature", type=float, default=0.2, help="the page's default (0 = greedy)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home unless the user asks
    if args.model is None:
        print(
            "error: no --model given and no shipped demo model in this checkout (eval/mini/demo_llava)",
            file=sys.stderr,
        )
        return 2
    if args.fit_workers < 1:
        print(f"error: --fit-workers must be at least 1, got {args.fit_workers}", file=sys.stderr)
        return 2
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("error: the web demo needs Gradio: pip install -e '.[web]'", file=sys.stderr)
        return 2
    try:
        backend = DemoBackend(
            args.model, device=args.device, dtype=getattr(torch, args.dtype) if args.dtype else None
        )
    except (OSError, ValueError) as e:
        print(f"error: cannot load the model from {args.model}: {e}", file=sys.stderr)
        return 2
    app = build_app(backend, args.fit_workers, args.max_new_tokens, args.temperature)
    allowed = sorted({str(Path(p).parent) for p in examples()})
    app.queue(max_size=64).launch(
        server_name=args.host, server_port=args.port, share=args.share, allowed_paths=allowed
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
