"""How RGB-like are the tokens a GS-LLaVA reads? Mean cosine of each GS encoder's patch tokens with the RGB
tower's at the same positions, on the miniature's test scenes.

Stage 1 distils the CLS embedding only, so the 24-class zero-shot (a CLS task) can look fine while the patch
tokens LLaVA's projector reads (block `--layer`, CLS dropped, as llava_gs does) drift from the teacher's.
For K < G² tokens the RGB grid is resized as the GS encoder's position embeddings are (area average for the
half budget). Also printed: the same cosine with each image's mean token removed from both (the part that
tells positions apart; a shared direction alone scores 0 there) and the mean cosine between the tokens of
one image (token diversity; 1 = collapse).

`--probe` adds what the tokens know about the objects: a linear (ridge) probe on the same hidden state,
its tokens pooled (mean and max over the tokens, so that the RGB grid and the GS tokens, which place
information differently, are read alike), trained on `--probe-train` train scenes to tell which
(colour, shape) pairs a scene holds, scored as the mean ROC AUC over the pairs on every test scene (the RGB
tower's score beside it). Unlike the 24-class zero-shot (a CLS task), it follows the GS-LLaVA falls of the
reading runs: docs/encoder.md.

    python -m eval.mini.token_agreement --out outputs/mini_repro [--seed-dir seed1] [--count 120] [--stage 1]
        [--probe [--probe-train 1000]]
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
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


MIN_PROBE_TRAIN = 10  # a fifth of them (≥ 2 scenes) picks the ridge weight


def _auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC of `scores` for the binary `labels` (ties count half); NaN without both classes."""
    pos, neg = scores[labels > 0.5], scores[labels <= 0.5]
    if not len(pos) or not len(neg):
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean()).item()


def pool_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """[B, K, D] → [B, 2D]: the mean and the max over the tokens."""
    return torch.cat([tokens.mean(1), tokens.amax(1)], 1)


def probe_auc(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    lams: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0),
    val_fraction: float = 0.2,
) -> float:
    """Mean ROC AUC over the label columns present in both classes on the test rows, of a ridge probe from
    features [B, ...] (flattened, standardised on the train rows) to binary labels [B, L] (targets ±1).
    The ridge weight is picked among `lams` on the last `val_fraction` of the train rows, then the probe is
    refitted on all of them."""

    def fit_score(xa, ya, xb, lam):
        mu, sd = xa.mean(0), xa.std(0) + 1e-6
        xa, xb = (xa - mu) / sd, (xb - mu) / sd
        xa = torch.cat([xa, torch.ones(len(xa), 1, dtype=xa.dtype)], 1)  # bias column
        xb = torch.cat([xb, torch.ones(len(xb), 1, dtype=xb.dtype)], 1)
        # dual form: fewer scenes than features
        alpha = torch.linalg.solve(xa @ xa.T + lam * torch.eye(len(xa), dtype=xa.dtype), 2 * ya - 1)
        return xb @ (xa.T @ alpha)

    def mean_auc(scores, y):
        aucs = torch.tensor([_auc(scores[:, j], y[:, j]) for j in range(y.shape[1])])
        return aucs[~aucs.isnan()].mean().item()

    x, xt = train_x.flatten(1).double(), test_x.flatten(1).double()
    y, yt = train_y.double(), test_y.double()
    cut = len(x) - max(1, int(len(x) * val_fraction))
    lam = max(lams, key=lambda v: mean_auc(fit_score(x[:cut], y[:cut], x[cut:], v), y[cut:]))
    return mean_auc(fit_score(x, y, xt, lam), yt)


def _scenes(out: Path, split: str, count: int | None = None) -> list[dict]:
    """The first `count` (default all) scenes eval.mini.data wrote for `split`."""
    path = out / "data" / f"{split}_scenes.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the probe reads the scenes eval.mini.data wrote there")
    return [json.loads(line) for line in path.read_text().splitlines()[:count]]


def presence_labels(scenes: list[dict], pairs: list[tuple[str, str]]) -> torch.Tensor:
    """[B, len(pairs)]: 1 where the scene holds an object of that (colour, shape)."""
    return torch.tensor(
        [[float(any((o["colour"], o["shape"]) == p for o in s["objects"])) for p in pairs] for s in scenes]
    )


def _diversity(tokens: torch.Tensor) -> float:
    """Mean cosine between the tokens of one image, over images [B, K, D]."""
    t = F.normalize(tokens, dim=-1)
    return (t @ t.mT).mean().item()


def _rgb_tokens(rgb: RGBVisionModel, paths: list[Path], layer: int, batch: int = 128) -> torch.Tensor:
    size = rgb.config.vision_cfg["image_size"]
    parts = []
    for i in range(0, len(paths), batch):
        pixels = clip_normalise(torch.stack([load_image(p, size) for p in paths[i : i + batch]]), size)
        parts.append(rgb(pixels).hidden_states[layer][:, 1:])
    return torch.cat(parts)


def _gs_tokens(gs: GSVisionModel, paths: list[Path], layer: int, batch: int = 128) -> torch.Tensor:
    parts = []
    for i in range(0, len(paths), batch):
        splats, mask = pad_splat_sets([load_splats(p) for p in paths[i : i + batch]])
        parts.append(gs(splats, mask).hidden_states[layer][:, 1:])
    return torch.cat(parts)


@torch.no_grad()
def agreement(
    out: Path, run: Path, count: int = 120, layer: int = -2, stage: int = 2, probe_train: int = 0
) -> dict[str, dict[str, float]]:
    """{encoder: {"cosine", "cosine_centred", "diversity_gs", "diversity_rgb"}} for every GS encoder of `run`
    (OUT or OUT/seed<s>) after training stage `stage`; with `probe_train` > 0 also "probe_auc" (the object
    probe trained on that many train scenes, scored on every test scene), and {"rgb": {"probe_auc"}}."""
    images = sorted((out / "data" / "images" / "test").glob("*.png"))[:count]
    if not images:
        raise FileNotFoundError(f"{out}/data/images/test holds no .png scenes: is {out} a mini_repro.sh OUT?")
    encoders = sorted((run / "encoders").glob(f"gs-*/stage{stage}/final"))
    if not encoders:
        raise FileNotFoundError(f"{run}/encoders holds no gs-*/stage{stage}/final encoder")
    rgb = RGBVisionModel.from_pretrained(out / "encoders" / "rgb").eval()
    r_all = _rgb_tokens(rgb, images, layer)
    probe = {}
    if probe_train > 0:
        train, test = _scenes(out, "train", probe_train), _scenes(out, "test")
        pairs = sorted({(o["colour"], o["shape"]) for s in train for o in s["objects"]})
        probe = {
            split: (scenes, presence_labels(scenes, pairs))
            for split, scenes in (("train", train), ("test", test))
        }

        def probe_score(encode, root: Path, suffix: str) -> float:
            """The probe on `encode(paths)` tokens of root/<split>/<scene seed><suffix>."""
            (tr, ytr), (te, yte) = probe["train"], probe["test"]

            def tokens(split, scenes):
                return pool_tokens(encode([root / split / f"{s['seed']}{suffix}" for s in scenes]))

            return probe_auc(tokens("train", tr), ytr, tokens("test", te), yte)

    result = {}
    for enc in encoders:
        name = enc.parent.parent.name
        n = name.split("-")[1]  # gs-n<N>-k<K>
        gs = GSVisionModel.from_pretrained(enc).eval()
        g = _gs_tokens(gs, [out / "splats" / n / "test" / f"{img.stem}.gs.npy" for img in images], layer)
        r = resize_token_grid(r_all, g.shape[1])
        result[name] = {
            "cosine": F.cosine_similarity(g, r, dim=-1).mean().item(),
            "cosine_centred": F.cosine_similarity(_centred(g), _centred(r), dim=-1).mean().item(),
            "diversity_gs": _diversity(g),
            "diversity_rgb": _diversity(r),
        }
        if probe:
            result[name]["probe_auc"] = probe_score(
                partial(_gs_tokens, gs, layer=layer), out / "splats" / n, ".gs.npy"
            )
    if probe:
        result["rgb"] = {
            "probe_auc": probe_score(partial(_rgb_tokens, rgb, layer=layer), out / "data" / "images", ".png")
        }
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the OUT folder of scripts/mini_repro.sh")
    ap.add_argument("--seed-dir", default="", help="a seed's subfolder of OUT (seed1, ...); default seed 0")
    ap.add_argument("--count", type=int, default=120, help="test scenes to use")
    ap.add_argument("--layer", type=int, default=-2, help="hidden state LLaVA reads (vision_feature_layer)")
    ap.add_argument("--stage", type=int, default=2, choices=(1, 2), help="the encoders after this stage")
    ap.add_argument(
        "--probe", action="store_true", help="add the object probe (ridge on pooled tokens; mean ROC AUC)"
    )
    ap.add_argument(
        "--probe-train",
        type=int,
        default=1000,
        help=f"train scenes the probe learns from (≥ {MIN_PROBE_TRAIN})",
    )
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args(argv)
    if args.probe and args.probe_train < MIN_PROBE_TRAIN:
        ap.error(
            f"--probe-train {args.probe_train}: the probe picks its ridge weight on a fifth of its train scenes "
            f"and needs at least {MIN_PROBE_TRAIN}"
        )
    out = Path(args.out)
    try:
        res = agreement(
            out,
            out / args.seed_dir,
            args.count,
            args.layer,
            args.stage,
            args.probe_train if args.probe else 0,
        )
    except (FileNotFoundError, ImageLoadError, SplatFileError) as e:
        print(f"token_agreement: {e}", file=sys.stderr)
        return 2
    probe = " object probe AUC |" if args.probe else ""
    print(
        "| encoder | cosine with RGB tokens | same, image's mean token removed | token diversity GS | "
        f"token diversity RGB |{probe}"
    )
    print("|---|---|---|---|---|" + ("---|" if args.probe else ""))
    for name, r in res.items():
        if name == "rgb":
            print(f"| RGB tower | | | | | {r['probe_auc']:.3f} |")
            continue
        print(
            f"| {name} | {r['cosine']:.3f} | {r['cosine_centred']:.3f} | {r['diversity_gs']:.3f} | "
            f"{r['diversity_rgb']:.3f} |" + (f" {r['probe_auc']:.3f} |" if args.probe else "")
        )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
