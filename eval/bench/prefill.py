"""LLM prefill cost with 576 (LLaVA-1.5, CLIP-L/336), 196 and 98 visual tokens on the same language model.

    python -m eval.bench.prefill [--layers 8 --hidden 1024] [--model PATH] [--batch 4] [--quick]

The prompt is what GS-LLaVA feeds Vicuna for one image and a short question: BOS + the vicuna_v1 system
text (~40 tokens) + K visual tokens + a ~20-token question, so only K changes. Each configuration runs
in its own process: median prefill time (one forward over the prompt that fills the KV cache, logits of
the last position only, as `generate` does), peak memory (`torch.cuda.max_memory_allocated` on a GPU,
the rise of peak RSS on CPU) and the KV-cache size read from the returned cache. The default model is a
randomly initialised Llama scaled down from Vicuna-7B (cost does not depend on the weights); `--model`
measures a real checkpoint (e.g. lmsys/vicuna-7b-v1.5 on a GPU). Writes eval/results/prefill.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from .common import RESULTS, write_results

TOKENS = (576, 196, 98)
TEXT_TOKENS = 60  # BOS + system prompt + "USER: … ASSISTANT:" around the image


def _model(args):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    dtype = getattr(torch, args.dtype)
    if args.model:
        return AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    cfg = LlamaConfig(
        vocab_size=32064,
        hidden_size=args.hidden,
        intermediate_size=int(args.hidden * 11008 / 4096),  # Vicuna-7B's ratio
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 128,
        num_key_value_heads=args.hidden // 128,
        max_position_embeddings=2048,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(dtype)


def _one(k: int, args) -> dict:
    model = _model(args).to(args.device).eval()
    length = TEXT_TOKENS + k
    ids = torch.randint(100, 32000, (args.batch, length), device=args.device)
    with torch.no_grad():
        if args.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)  # warm-up; sets the peak
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        kv = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
        times = []
        for _ in range(args.reps):
            if args.device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(input_ids=ids, use_cache=True, logits_to_keep=1)
            if args.device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if args.device == "cuda"
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    )
    return {
        "prompt_tokens": length,
        "prefill_s": sorted(times)[len(times) // 2],
        "peak_mib": peak,
        "kv_cache_mib": kv / 2**20,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def _plot(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [int(k) for k in results]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    axes[0].bar([str(k) for k in ks], [results[str(k)]["prefill_s"] * 1e3 for k in ks], color="#4c72b0")
    axes[0].set(xlabel="visual tokens", ylabel="prefill (ms)", title="prefill time")
    axes[1].bar([str(k) for k in ks], [results[str(k)]["kv_cache_mib"] for k in ks], color="#dd8452")
    axes[1].set(xlabel="visual tokens", ylabel="MiB", title="KV cache")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a causal-LM checkpoint instead of the random scaled-down Llama")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float32")
    ap.add_argument("--quick", action="store_true", help="tiny model, one repetition (a smoke run)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.layers, args.hidden, args.batch, args.reps = 2, 256, 1, 1
    if args.one is not None:
        print(json.dumps(_one(args.one, args)))
        return
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--quick"]
    if args.quick:
        passthrough += ["--layers", "2", "--hidden", "256", "--batch", "1", "--reps", "1"]
    results = {}
    for k in TOKENS:
        cmd = [sys.executable, "-m", "eval.bench.prefill", *passthrough, "--one", str(k)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            raise SystemExit(f"prefill run with K={k} failed:\n{run.stderr[-3000:]}")
        results[str(k)] = json.loads(run.stdout.strip().splitlines()[-1])
        print(k, results[str(k)], flush=True)
    ref = results[str(TOKENS[0])]
    rows = []
    for k in TOKENS:
        r = results[str(k)]
        rows.append(
            [
                {576: "LLaVA-1.5 (CLIP-L/336)", 196: "GS-LLaVA, K = 196", 98: "GS-LLaVA, K = 98"}[k],
                k,
                r["prompt_tokens"],
                r["prefill_s"] * 1e3,
                f"{ref['prefill_s'] / r['prefill_s']:.2f}×",
                r["kv_cache_mib"],
                f"{ref['kv_cache_mib'] / r['kv_cache_mib']:.2f}×",
                r["peak_mib"],
            ]
        )
    mem = "peak CUDA memory (MiB)" if args.device == "cuda" else "peak RSS rise (MiB)"
    model_desc = args.model or (
        f"random Llama, {args.layers} layers, width {args.hidden}, vocab 32064 ({ref['params_m']:.0f} M parameters)"
    )
    notes = (
        f"Model: {model_desc}; {args.dtype} on {args.device}; batch {args.batch}; median of {args.reps} prefills "
        f"after a warm-up. Prompt = {TEXT_TOKENS} text tokens + K visual tokens. Speed-ups and KV-cache ratios are "
        "against 576 tokens, measured side by side in one run; on CPU only the ratios carry over to other machines."
    )
    name = "prefill_quick" if args.quick else "prefill"
    from pathlib import Path

    out = Path(args.out)
    md = write_results(
        name,
        "LLM prefill with 576 / 196 / 98 visual tokens",
        [
            (
                "Prefill",
                [
                    "visual input",
                    "K",
                    "prompt tokens",
                    "prefill (ms)",
                    "speed-up",
                    "KV cache (MiB)",
                    "KV smaller",
                    mem,
                ],
                rows,
            )
        ],
        {
            "device": args.device,
            "dtype": args.dtype,
            "batch": args.batch,
            "model": model_desc,
            "results": results,
        },
        notes,
        out_dir=out,
    )
    _plot(results, out / f"{name}.png")
    print(md.read_text())


if __name__ == "__main__":
    main()
