#!/usr/bin/env python
"""Merge a LoRA adapter folder (scripts/finetune_lora.sh) into its GS-LLaVA base and save a plain folder.

    python scripts/merge_lora.py --adapter checkpoints/llava-gs-lora --output checkpoints/llava-gs-merged

The base is the adapter's `base_model_name_or_path`; the output loads with AutoModelForImageTextToText.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", required=True, help="folder with adapter_config.json")
    ap.add_argument("--output", required=True)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args(argv)

    import torch

    from llava_gs.builder import load_pretrained_model, save_folder

    adapter = Path(args.adapter)
    if not (adapter / "adapter_config.json").is_file():
        print(f"error: {adapter} has no adapter_config.json (not a LoRA adapter folder)", file=sys.stderr)
        return 2
    model, processor = load_pretrained_model(adapter, dtype=getattr(torch, args.dtype), merge_lora=True)
    out = Path(args.output)
    save_folder(out, model, processor)
    print(f"wrote merged model to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
