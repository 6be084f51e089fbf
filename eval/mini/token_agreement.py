"""How RGB-like are the tokens a GS-LLaVA reads? Mean cosine of each GS encoder's patch tokens with the RGB
tower's at the same positions, on the miniature's test scenes.

Stage 1 distils the CLS embedding only, so the 24-class zero-shot (a CLS task) can look fine while the patch
tokens LLaVA's projector reads (block `--layer`, CLS dropped, as llava_gs does) drift from the teacher's.
For K < G² tokens the RGB grid is resized as the GS encoder's position embeddings are (area average for the
half budget). Also printed: the same cosine with each image's mean token removed from both (the part that
tells positions apart; a shared direction alone scores 0 there) and the mean cosine between the tokens of
one image (token diversity; 1 = collapse).

    python -m eval.mini.token_agreement --out outputs/mini_repro [--seed-dir seed1] [--count 120] [--stage 1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from gs_encoder.data import pad_splat_sets
from gs_encoder.image_io import ImageLoadError, load_image
from gs_encoder.modeling_gs_vision import GSVisionModel, RGBVisionModel, resize_token_grid
from gs_encoder.splat_io import SplatFileError, load_splats
from gs_encoder.teacher import clip_normalise


def _centred(tokens: torch.Tensor) -> torch.Tensor:
    """Tokens [B, K, D] less each image's mean token: what tells one position from another."""
    return tokens - tokens.mean(1, keepdim=True)


def _diversity(tokens: torch.Tensor) -> float:
    """Mean cosine between the tokens of one image, over images [B, K, D]."""
    t = F.normalize(tokens, dim=-1)
    return (t @ t.mT).mean().item()


@torch.no_grad()
def agreement(
    out: Path, run: Path, count: int = 120, layer: int = -2, stage: int = 2
) -> dict[str, dict[str, float]]:
    """{encoder: {"cosine", "diversity_gs", "diversity_rgb"}} for every GS encoder of `run` (OUT or OUT/seed<s>)
    after training stage `stage`."""
    images = sorted((out / "data" / "images" / "test").glob("*.png"))[:count]
    if not images:
        raise FileNotFoundError(f"{out}/data/images/test holds no .png scenes: is {out} a mini_repro.sh OUT?")
    rgb = RGBVisionModel.from_pretrained(out / "encoders" / "rgb").eval()
    size = rgb.config.vision_cfg["image_size"]
    pixels = clip_normalise(torch.stack([load_image(p, size) for p in images]), size)
    r_all = rgb(pixels).hidden_states[layer][:, 1:]
    result = {}
    encoders = sorted((run / "encoders").glob(f"gs-*/stage{stage}/final"))
    if not encoders:
        raise FileNotFoundError(f"{run}/encoders holds no gs-*/stage{stage}/final encoder")
    for enc in encoders:
        name = enc.parent.parent.name
        n = name.split("-")[1]  # gs-n<N>-k<K>
        sets = [load_splats(out / "splats" / n / "test" / f"{img.stem}.gs.npy") for img in images]
        splats, mask = pad_splat_sets(sets)
        g = GSVisionModel.from_pretrained(enc).eval()(splats, mask).hidden_states[layer][:, 1:]
        r = resize_token_grid(r_all, g.shape[1])
        result[name] = {
            "cosine": F.cosine_similarity(g, r, dim=-1).mean().item(),
            "cosine_centred": F.cosine_similarity(_centred(g), _centred(r), dim=-1).mean().item(),
            "diversity_gs": _diversity(g),
            "diversity_rgb": _diversity(r),
        }
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the OUT folder of scripts/mini_repro.sh")
    ap.add_argument("--seed-dir", default="", help="a seed's subfolder of OUT (seed1, ...); default seed 0")
    ap.add_argument("--count", type=int, default=120, help="test scenes to use")
    ap.add_argument("--layer", type=int, default=-2, help="hidden state LLaVA reads (vision_feature_layer)")
    ap.add_argument("--stage", type=int, default=2, choices=(1, 2), help="the encoders after this stage")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args(argv)
    out = Path(args.out)
    try:
        res = agreement(out, out / args.seed_dir, args.count, args.layer, args.stage)
    except (FileNotFoundError, ImageLoadError, SplatFileError) as e:
        print(f"token_agreement: {e}", file=sys.stderr)
        return 2
    print(
        "| encoder | cosine with RGB tokens | same, image's mean token removed | token diversity GS | token diversity RGB |"
    )
    print("|---|---|---|---|---|")
    for name, r in res.items():
        print(
            f"| {name} | {r['cosine']:.3f} | {r['cosine_centred']:.3f} | {r['diversity_gs']:.3f} | "
            f"{r['diversity_rgb']:.3f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
