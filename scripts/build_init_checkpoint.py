#!/usr/bin/env python
"""Assemble the initial GS-LLaVA folder from a Llama/Vicuna checkpoint and a trained GS encoder.

    python scripts/build_init_checkpoint.py --lm lmsys/vicuna-7b-v1.5 --encoder checkpoints/gs-encoder \\
        --output checkpoints/llava-gs-init [--projector mlp2x_gelu] [--select-layer -2] [--dtype bfloat16] \\
        [--seed 0]

The folder holds config.json (model_type "llava_gs"), model.safetensors (LLM + encoder + a fresh
projector), the tokenizer with `<image>` added (embeddings padded to a multiple of 64, as llava-hf),
the processor (on-the-fly fitting settings) and generation_config.json. Every training stage then starts
with `from_pretrained` on it, which is DeepSpeed-ZeRO-3-safe. Written under a temporary name and renamed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--lm", required=True, help="Llama-architecture checkpoint folder or hub id (Vicuna-7B v1.5)"
    )
    ap.add_argument("--encoder", required=True, help="GS encoder folder (config.json + model.safetensors)")
    ap.add_argument("--output", required=True, help="folder to write")
    ap.add_argument("--projector", default="mlp2x_gelu", help="linear | identity | mlp<N>x_gelu")
    ap.add_argument("--select-layer", type=int, default=-2, help="tower hidden state fed to the projector")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    from gs_encoder import FitConfig
    from llava_gs.processing_llava_gs import FIT_OPTIONS

    for option in ("num_gaussians", "fit_iters"):  # the processor's fitting of photos on the fly
        ap.add_argument("--" + option.replace("_", "-"), **FitConfig.argument(FIT_OPTIONS[option]))
    ap.add_argument("--seed", type=int, default=0, help="seed of the fresh projector's initialisation")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from llava_gs.builder import build_from_parts, save_folder
    from llava_gs.processing_llava_gs import processor_for

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        print(f"error: {out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)  # the projector is the only freshly initialised part
    try:
        model, tokenizer = build_from_parts(
            args.lm,
            args.encoder,
            projector_type=args.projector,
            vision_feature_layer=args.select_layer,
            dtype=getattr(torch, args.dtype),
        )
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    processor = processor_for(model.config, tokenizer)
    processor.image_processor.update(num_gaussians=args.num_gaussians, iters=args.fit_iters)
    save_folder(out, model, tokenizer, processor)
    n = sum(p.numel() for p in model.parameters())
    print(
        f"wrote {out}: {n / 1e6:.1f} M parameters, K = {model.config.image_seq_length} visual tokens, "
        f"<image> = {model.config.image_token_id}, vocab {model.config.text_config.vocab_size}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
