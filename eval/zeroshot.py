"""Zero-shot classification of GS and RGB encoders through CLIP_benchmark, side by side.

    python -m eval.zeroshot --gs runs/s2/final --rgb runs/rgb_twin --clip-model ViT-B-16 \\
        --clip-pretrained laion2b_s34b_b88k --datasets wds/imagenet1k wds/cifar10 ... \\
        --dataset-root 'data/wds_{dataset_cleaned}' --num-gaussians 3136 --fit-iters 1000 -o results/zeroshot

CLIP_benchmark has no plug-in hook, so this module registers a model type `gs_clip` in its tables and
then runs its own CLI per (model, dataset). The `--model` string CLIP_benchmark passes is an encoder
folder (written by `save_pretrained`) with the splat settings as a query string, e.g.
`runs/s2/final?num_gaussians=3136&fit_iters=1000&canvas=224&resize=crop`; its `--pretrained` names the
open_clip text tower as `ARCH` or `ARCH:TAG_OR_PATH` (a stage-2 `clip_text.safetensors` beside the
encoder replaces it). Images are fitted to splats inside `encode_image`, batched. Without `--rgb`,
the RGB column is open_clip's own image tower (`--model_type open_clip`).

Output: one CLIP_benchmark JSON per run, plus `zeroshot.json` and `zeroshot.md` with GS vs RGB accuracy
and GS/RGB relative accuracy (the paper's measure).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from urllib.parse import parse_qsl

import torch
import torch.nn.functional as F
from torch import nn

from gs_encoder import FitConfig, fit_images
from gs_encoder.data import collate_splats
from gs_encoder.image_io import canvas_from_pil
from gs_encoder.modeling_gs_vision import GSVisionModel
from gs_encoder.report import markdown_table
from gs_encoder.teacher import build_clip, clip_normalise, register_model_config

MODEL_TYPE = "gs_clip"


class ZeroShotModel(nn.Module):
    """The CLIP interface CLIP_benchmark calls: encode_image(canvas images) and encode_text(ids)."""

    def __init__(self, encoder: nn.Module, clip: nn.Module, fit: FitConfig):
        super().__init__()
        self.encoder, self.clip, self.fit = encoder, clip, fit

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        if isinstance(self.encoder, GSVisionModel):
            # fitting is an optimisation: gradients on, autocast off, whatever the caller set
            with torch.enable_grad(), torch.autocast(images.device.type, enabled=False):
                results = fit_images(images.float(), self.fit)
            batch = collate_splats(
                [{"splats": r.splats, "caption": None, "teacher": None, "key": None} for r in results]
            )
            emb = self.encoder(
                batch["splats"].to(images.device), batch["mask"].to(images.device)
            ).image_embeds
        else:
            size = self.encoder.config.vision_cfg["image_size"]
            emb = self.encoder(clip_normalise(images, int(size))).image_embeds
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_text(self, ids: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.clip.encode_text(ids, normalize=normalize)


def parse_model_spec(spec: str) -> tuple[Path, dict]:
    """'folder?num_gaussians=400&fit_iters=300' → (folder, settings) with defaults filled in."""
    path, _, query = spec.partition("?")
    opts = {
        "num_gaussians": "3136",
        "fit_iters": "1000",
        "canvas": "224",
        "resize": "crop",
        "model_config": "",
    }
    extra = dict(parse_qsl(query))
    unknown = set(extra) - set(opts)
    if unknown:
        raise ValueError(f"unknown model option(s) {sorted(unknown)}; valid: {sorted(opts)}")
    opts.update(extra)
    return Path(path), opts


def load_gs_clip(model_name: str, pretrained: str, cache_dir=None, device="cpu"):
    """CLIP_benchmark loader: returns (model, transform, tokenizer)."""
    import open_clip

    folder, opts = parse_model_spec(model_name)
    if opts["model_config"]:
        register_model_config(opts["model_config"])
    arch, _, weights = pretrained.partition(":")
    clip = build_clip(arch, weights or None)
    text_state = folder / "clip_text.safetensors"
    if text_state.exists():  # the stage-2 text tower (and logit scale)
        from safetensors.torch import load_model

        load_model(clip, str(text_state), strict=True)
    encoder = GSVisionModel.from_pretrained(folder)
    fit = FitConfig(num_gaussians=int(opts["num_gaussians"]), iters=int(opts["fit_iters"]))
    canvas, resize = int(opts["canvas"]), opts["resize"]

    def transform(im):
        return canvas_from_pil(im, canvas, resize)

    model = ZeroShotModel(encoder, clip, fit).to(device).eval()
    return model, transform, open_clip.get_tokenizer(arch)


def _accuracy(output, target, topk=(1,)):
    """CLIP_benchmark's accuracy, without its float(ndarray) call that numpy ≥ 2.4 rejects."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


def register() -> None:
    """Add `gs_clip` to CLIP_benchmark's model tables (idempotent) and patch its accuracy helper."""
    import clip_benchmark.metrics.zeroshot_classification as zsc
    import clip_benchmark.models as cbm

    cbm.TYPE2FUNC[MODEL_TYPE] = load_gs_clip
    if MODEL_TYPE not in cbm.MODEL_TYPES:
        cbm.MODEL_TYPES.append(MODEL_TYPE)  # the list argparse uses for --model_type choices
    zsc.accuracy = _accuracy


def run_clip_benchmark(argv: list[str]) -> None:
    """Run CLIP_benchmark's CLI with `argv` (its parser reads sys.argv)."""
    from clip_benchmark import cli

    register()
    saved = sys.argv
    sys.argv = ["clip_benchmark", *argv]
    try:
        cli.main()
    finally:
        sys.argv = saved


def expand_datasets(items: list[str]) -> list[str]:
    """Dataset names, where `@FILE` stands for the names listed in FILE (one per line, # comments)."""
    out = []
    for item in items:
        if item.startswith("@"):
            lines = Path(item[1:]).read_text().splitlines()
            out += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        else:
            out.append(item)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m eval.zeroshot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--gs", required=True, help="GS encoder folder (save_pretrained), e.g. a stage-2 final/")
    ap.add_argument("--rgb", help="RGB twin folder; default: open_clip's own image tower")
    ap.add_argument("--clip-model", default="ViT-B-16", help="open_clip architecture (text tower)")
    ap.add_argument("--clip-pretrained", default="", help="open_clip tag or checkpoint path (empty: random)")
    ap.add_argument(
        "--model-config", default="", help="open_clip architecture JSON to register (tiny models)"
    )
    ap.add_argument(
        "--datasets", nargs="+", required=True, help="CLIP_benchmark dataset names, e.g. wds/imagenet1k"
    )
    ap.add_argument("--dataset-root", required=True, help="root, may contain {dataset} / {dataset_cleaned}")
    ap.add_argument("--num-gaussians", type=int, default=3136)
    ap.add_argument("--fit-iters", type=int, default=1000)
    ap.add_argument("--canvas", type=int, default=224)
    ap.add_argument("--resize", default="crop", choices=("pad", "crop", "resize"))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("-o", "--output-dir", required=True)
    args = ap.parse_args(argv)
    args.datasets = expand_datasets(args.datasets)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.model_config:
        register_model_config(args.model_config)
    pretrained = args.clip_model + (f":{args.clip_pretrained}" if args.clip_pretrained else "")
    query = f"num_gaussians={args.num_gaussians}&fit_iters={args.fit_iters}&canvas={args.canvas}&resize={args.resize}"
    if args.model_config:
        query += f"&model_config={args.model_config}"
    models = {"GS": ("gs_clip", f"{args.gs}?{query}", pretrained)}
    models["RGB"] = (
        ("gs_clip", f"{args.rgb}?{query}", pretrained)
        if args.rgb
        else ("open_clip", args.clip_model, args.clip_pretrained or "")
    )
    rows, summary = [], {}
    common = [
        "--dataset_root",
        args.dataset_root,
        "--batch_size",
        str(args.batch_size),
        "--num_workers",
        str(args.num_workers),
        "--quiet",
    ]
    if not torch.cuda.is_available():
        common.append("--no_amp")
    for dataset in args.datasets:
        summary[dataset] = {}
        for label, (mtype, model, pre) in models.items():
            result = out / f"{dataset.replace('/', '_')}_{label}.json"
            run_clip_benchmark(
                [
                    "eval",
                    "--model_type",
                    mtype,
                    "--model",
                    model,
                    "--pretrained",
                    pre,
                    "--dataset",
                    dataset,
                    "--output",
                    str(result),
                    *common,
                ]
            )
            summary[dataset][label] = json.loads(result.read_text())["metrics"]
        gs, rgb = summary[dataset]["GS"].get("acc1"), summary[dataset]["RGB"].get("acc1")
        rel = gs / rgb if gs is not None and rgb else None
        rows.append([dataset, rgb, gs, "" if rel is None else f"{100 * rel:.1f}%"])
    (out / "zeroshot.json").write_text(json.dumps({"args": vars(args), "results": summary}, indent=2) + "\n")
    md = [
        "# Zero-shot classification: GS vs RGB",
        "",
        f"GS: `{args.gs}` with {args.num_gaussians} Gaussians fitted for {args.fit_iters} iterations on a {args.canvas}² canvas ({args.resize}); "
        f"RGB: `{args.rgb or args.clip_model}`; text tower `{pretrained}`.",
        "",
        markdown_table(["dataset", "RGB acc1", "GS acc1", "GS / RGB"], rows),
        "",
    ]
    (out / "zeroshot.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
