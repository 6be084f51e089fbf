"""An untrained stand-in for Vicuna: a BPE tokenizer trained on the world's texts and a randomly initialised
Llama, saved as a normal transformers checkpoint (what scripts/build_init_checkpoint.py takes).

    python -m eval.mini.make_lm --data data/mini --out runs/mini/lm [--hidden 128 --layers 3 --heads 4]

The miniature's default LM is the pretrained one (eval/mini/lm, built by eval.mini.pretrain_lm); this random
one is the ablation `LM_INIT=random bash scripts/mini_repro.sh`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def template_text(template: str = "vicuna_v1") -> str:
    """The chat template's fixed words (system prompt and role names), for training a tokenizer."""
    from llava_gs.conversation import get_template

    return get_template(template).system + " USER: ASSISTANT:"


def world_texts(data: Path):
    yield template_text()
    for name in ("train_pretrain.json", "train_finetune.json"):
        for rec in json.loads((data / name).read_text()):
            for turn in rec["conversations"]:
                yield turn["value"].replace("<image>", "")


def new_llama(tok, hidden: int = 128, layers: int = 3, heads: int = 4, seed: int = 0):
    """A randomly initialised Llama sized for the miniature, its vocabulary and special ids from `tok`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder written by python -m eval.mini.data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from llava_gs import train_bpe_tokenizer

    tok = train_bpe_tokenizer(world_texts(Path(args.data)), vocab_size=args.vocab)
    model = new_llama(tok, args.hidden, args.layers, args.heads, args.seed)
    out = Path(args.out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    print(
        f"wrote {out}: Llama {args.layers}×{args.hidden}, {n / 1e6:.2f} M parameters, vocabulary {len(tok)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
