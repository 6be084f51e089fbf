"""A local stand-in for MM-Vet's GPT judge: an OpenAI-compatible /v1/chat/completions on the loopback address.

    python -m eval.mini_judge --port 18765 &
    OPENAI_API_URL=http://127.0.0.1:18765/v1 OPENAI_API_KEY=local lmms-eval ... --tasks gv_mmvet

lmms-eval's MM-Vet scorer sends its few-shot grading prompt ending with the row
`question | ground truth | prediction |`; this judge reads that last row and applies the rule the prompt
states: with `<AND>` the score is the share of ground-truth parts found in the prediction, with `<OR>` (or
a single answer) it is 1.0 when any part is found, else 0.0 (case-insensitive, whole words). A listed item
of the prediction (split at commas, "and", "or") that holds no ground-truth part counts against it, as a
wrong element would with a human grader: the score is found / (parts + wrong items), so naming every shape
of the world does not answer "What shapes are in the image?". It is a deterministic rule for offline tests
and the mini tasks, not a replacement for GPT-4 grading: numbers from it are not comparable with published
MM-Vet scores.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["grade", "serve"]


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", text.lower()))  # words and decimal numbers


def _found(part: str, prediction: str) -> bool:
    part = _norm(part)
    return bool(part) and re.search(rf"(^| ){re.escape(part)}( |$)", _norm(prediction)) is not None


def grade(prompt: str) -> float:
    """The score of the last `question | truth | prediction |` row of an MM-Vet grading prompt."""
    rows = [line for line in prompt.strip().splitlines() if line.count(" | ") >= 2]
    if not rows:
        raise ValueError("no 'question | ground truth | prediction |' row in the prompt")
    cells = [c.strip() for c in rows[-1].rstrip().rstrip("|").split(" | ")]
    truth, prediction = cells[1], " | ".join(cells[2:])
    every = "<AND>" in truth
    parts = [p for p in truth.split("<AND>" if every else "<OR>") if p.strip()]
    items = [x for x in re.split(r",|;|\band\b|\bor\b", prediction.lower()) if _norm(x)]
    wrong = sum(not any(_found(p, item) for p in parts) for item in items)
    found = sum(_found(p, prediction) for p in parts)
    right = found / len(parts) if every else float(found > 0)
    return round(right * (len(parts) if every else 1) / ((len(parts) if every else 1) + wrong), 1)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self.send_error(404, "only /v1/chat/completions is served")
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            prompt = body["messages"][-1]["content"]
            if isinstance(prompt, list):  # content parts
                prompt = " ".join(p.get("text", "") for p in prompt if isinstance(p, dict))
            score = grade(prompt)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            self.send_error(400, f"cannot grade: {e}")
            return
        reply = {
            "id": "mini-judge",
            "object": "chat.completion",
            "model": body.get("model", "mini-judge"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"{score:.1f}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # quiet
        pass


@contextmanager
def serve(port: int = 0):
    """Run the judge in a thread; yields its base URL (http://127.0.0.1:<port>/v1)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=18765)
    args = ap.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    print(f"mini judge on http://127.0.0.1:{args.port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
