"""`python -m eval.bench.encoder_params`: trainable parameters of the GS encoder per training stage, as
shares of the whole encoder beside the paper's 9.7% / 13.8% → eval/results/encoder_params.{md,json}.

    python -m eval.bench.encoder_params [--model ViT-B-16] [--num-tokens 196] [--gs-width 128] ...

Beside the asked head it counts the full-width head (Perceiver at the ViT width, feed-forward ×4, 8 heads:
the default before the head was sized to the paper's shares).
"""

from __future__ import annotations

import argparse

from eval.bench.common import write_results
from gs_encoder.modeling_gs_vision import GSVisionConfig, add_head_args, head_overrides, stage_shares


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-16")
    add_head_args(ap)
    ap.add_argument("--vit-blocks", type=int, default=2)
    args = ap.parse_args(argv)
    head = head_overrides(args)
    shares = stage_shares(args.model, args.vit_blocks, **head)
    full_width = dict(
        head, gs_width=GSVisionConfig.from_open_clip(args.model).width, gs_ff_mult=4, resampler_heads=8
    )
    full = stage_shares(args.model, args.vit_blocks, **full_width)
    notes = (
        shares["headline"]
        + ". The paper counts the GS stem (Perceiver included) in its trainable share, so the share of the whole "
        "encoder is the one to compare; the last column is what is trained inside CLIP alone. With the two "
        "text blocks and the text projection we count the paper's 'symmetric text layers'; its exact text set "
        "is not stated."
    )
    md = write_results(
        "encoder_params",
        "GS encoder parameters per training stage",
        [
            ("Trainable parameters", shares["headers"], shares["rows"]),
            ("The full-width head, for comparison", full["headers"], full["rows"]),
        ],
        {"args": vars(args), "counts": shares["counts"], "full_width_counts": full["counts"]},
        notes + " Full-width head: " + full["headline"] + ".",
    )
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
