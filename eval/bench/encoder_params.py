"""`python -m eval.bench.encoder_params`: trainable parameters of the GS encoder per training stage, as
shares of the whole encoder beside the paper's 9.7% / 13.8% → eval/results/encoder_params.{md,json}.

    python -m eval.bench.encoder_params [--model ViT-B-16] [--num-tokens 196] [--resampler-depth 2]
"""

from __future__ import annotations

import argparse

from eval.bench.common import write_results
from gs_encoder.modeling_gs_vision import stage_shares


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--num-tokens", type=int, default=196)
    ap.add_argument("--resampler-depth", type=int, default=2)
    ap.add_argument("--fourier-bands", type=int, default=16)
    ap.add_argument("--vit-blocks", type=int, default=2)
    args = ap.parse_args(argv)
    shares = stage_shares(
        args.model, args.num_tokens, args.resampler_depth, args.fourier_bands, args.vit_blocks
    )
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
        [("Trainable parameters", shares["headers"], shares["rows"])],
        {"args": vars(args), "counts": shares["counts"]},
        notes,
    )
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
