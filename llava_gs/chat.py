"""Chat with GS-LLaVA from a terminal, with a photo (fitted to splats on the fly) or a splat file.

    python -m llava_gs.chat --model checkpoints/llava-gs-vicuna-7b-v1.5 --image photo.jpg
    python -m llava_gs.chat --model ... --splats photo.gs.npy --prompt "What is in the picture?"
    echo "Describe it." | python -m llava_gs.chat --model ... --image photo.jpg

Answers stream token by token and the dialogue is kept (vicuna_v1, the training template). Commands:
`/image FILE` or `/splats FILE` switch the picture (a new dialogue starts, as LLaVA-1.5 has one image per
dialogue), `/render OUT.png` saves what the model sees (the splats rendered), `/reset` forgets the
dialogue, `/help`, `/quit`. A photo is fitted once with a progress bar and cached by content
(`--cache`, default ~/.cache/gaussianvision/splats). A bad path or unreadable file prints a message and
the chat goes on. With `--prompt` (repeatable) or a non-terminal stdin it runs as a script.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from gs_encoder.fitting.fit import FitConfig
from gs_encoder.image_io import ImageLoadError
from gs_encoder.splat_io import SplatFileError, load_splats

from .conversation import IMAGE_TOKEN
from .processing_llava_gs import FIT_OPTIONS

__all__ = ["ChatSession", "main"]

HELP = "commands: /image FILE, /splats FILE, /render OUT.png, /reset, /help, /quit"


class ChatSession:
    """One dialogue with a loaded model: the current splat set and the turns so far."""

    def __init__(self, model, processor, cache, out=None, temperature=0.2, top_p=None, max_new_tokens=512):
        self.model, self.processor, self.cache = model, processor, cache
        self.out = out if out is not None else sys.stdout  # looked up now: a redirected stdout is honoured
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.splats: torch.Tensor | None = None
        self.source: str | None = None
        self.turns: list[dict] = []

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def reset(self) -> None:
        self.turns = []

    def set_image(self, path: str) -> None:
        fitted = self.cache.misses
        splats = self.cache.get([path], progress=True)[0]
        how = "fitted" if self.cache.misses > fitted else "from the splat cache"
        self._switch(splats, path, how)

    def set_splats(self, path: str) -> None:
        self._switch(load_splats(path), path, "splat file")

    def _switch(self, splats: torch.Tensor, source: str, how: str) -> None:
        self.splats, self.source = splats, source
        self.reset()
        self.say(f"[{source}: {splats.shape[0]} Gaussians, {how}; new conversation]")

    def render(self, path: str) -> None:
        from gs_encoder import render
        from gs_encoder.viz import to_pil

        if self.splats is None:
            raise ValueError("no image yet: load one with /image FILE or /splats FILE")
        size = self.processor.image_processor.canvas
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        to_pil(render(self.splats, size=size, clamp=True)).save(out)
        self.say(f"[rendered {self.splats.shape[0]} Gaussians at {size}×{size} to {out}]")

    def ask(self, text: str) -> str:
        """Send a user message, stream the answer to `out`, keep both in the dialogue."""

        first = not self.turns
        value = f"{IMAGE_TOKEN}\n{text}" if first and self.splats is not None else text
        turns = [*self.turns, {"from": "human", "value": value}]
        splats = [self.splats] if self.splats is not None else None  # its `<image>` is in the first turn
        device = next(self.model.parameters()).device
        inputs = self.processor.prompt(turns, splats=splats).to(device)
        tokenizer = self.processor.tokenizer
        streamer = _Streamer(tokenizer, self.out)
        sample = self.temperature > 0
        gen = self.model.generate(
            **inputs,
            max_new_tokens=self.max_new_tokens,
            do_sample=sample,
            temperature=self.temperature if sample else None,
            top_p=self.top_p if sample else None,
            streamer=streamer,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        answer = tokenizer.decode(gen[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        self.turns = [*turns, {"from": "gpt", "value": answer}]
        return answer

    def handle(self, line: str) -> bool:
        """One input line (a message or a command); False when the session should end."""
        line = line.strip()
        if not line:
            return True
        cmd, _, arg = line.partition(" ")
        arg = arg.strip()
        try:
            if cmd in ("/quit", "/exit"):
                return False
            if cmd == "/help":
                self.say(HELP)
            elif cmd == "/reset":
                self.reset()
                self.say("[conversation cleared]")
            elif cmd in ("/image", "/splats", "/render"):
                if not arg:
                    self.say(f"error: {cmd} needs a file name ({HELP})")
                else:
                    {"/image": self.set_image, "/splats": self.set_splats, "/render": self.render}[cmd](arg)
            elif cmd.startswith("/"):
                self.say(f"error: unknown command {cmd} ({HELP})")
            else:
                self.out.write("ASSISTANT: ")
                self.out.flush()
                self.ask(line)
        except (
            ImageLoadError,
            SplatFileError,
            FileNotFoundError,
            IsADirectoryError,
            ValueError,
            OSError,
        ) as e:
            self.say(f"error: {e}")
        return True


class _Streamer:
    """Prints decoded text as tokens arrive (transformers' TextStreamer logic, writing to any stream)."""

    def __init__(self, tokenizer, out):
        from transformers import TextStreamer

        self._inner = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._inner.on_finalized_text = self._emit
        self.out = out

    def _emit(self, text: str, stream_end: bool = False) -> None:
        self.out.write(text + ("\n" if stream_end else ""))
        self.out.flush()

    def put(self, value):
        self._inner.put(value)

    def end(self):
        self._inner.end()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m llava_gs.chat",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--model", required=True, help="GS-LLaVA folder (or a LoRA adapter folder over one)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--image", help="a photo; fitted to splats on the fly (cached)")
    src.add_argument("--splats", help="a .gs.npy splat file")
    ap.add_argument("--prompt", action="append", help="ask this and exit (repeat for several turns)")
    for option, name in FIT_OPTIONS.items():  # how photos are fitted: the model's processor unless given
        ap.add_argument(
            "--" + option.replace("_", "-"), **FitConfig.argument(name, "the model's processor's")
        )
    ap.add_argument("--temperature", type=float, default=0.2, help="0 = greedy")
    ap.add_argument("--top-p", type=float, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="default: bf16 on CUDA, fp32 on CPU"
    )
    ap.add_argument("--cache", help="splat cache folder (default ~/.cache/gaussianvision/splats)")
    ap.add_argument("--no-cache", action="store_true", help="keep fitted splats in memory only")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .builder import load_pretrained_model
    from .splat_cache import SplatCache, default_cache_dir

    try:
        model, processor = load_pretrained_model(
            args.model,
            device=args.device,
            dtype=getattr(torch, args.dtype) if args.dtype else None,
            **{option: getattr(args, option) for option in FIT_OPTIONS},
        )
    except (OSError, ValueError) as e:
        print(f"error: cannot load the model from {args.model}: {e}", file=sys.stderr)
        return 2
    folder = None if args.no_cache else (args.cache or default_cache_dir())
    session = ChatSession(
        model,
        processor,
        SplatCache(processor.image_processor, folder),
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
    )
    # the picture named on the command line must load: never answer (or chat) without it
    try:
        if args.image:
            session.set_image(args.image)
        elif args.splats:
            session.set_splats(args.splats)
    except (ImageLoadError, SplatFileError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.prompt:
        for p in args.prompt:
            session.say(f"USER: {p}")
            session.handle(p)
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        session.say(HELP)
    while True:
        try:
            line = input("USER: " if interactive else "")
        except EOFError:
            break
        except KeyboardInterrupt:
            session.say("")
            break
        if not session.handle(line):
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
