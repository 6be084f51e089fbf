"""`gsv`: the command line of the project (fit, render, info).

Each subcommand parses its flags into the library's dataclass, calls one library function and says
where the output went. Bad inputs print one line `error: <file>: <problem>` and give a non-zero exit;
a multi-image fit still fits and writes every other image.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

__all__ = ["build_parser", "main"]

logger = logging.getLogger("gsv")


def _error(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def _device(name: str):
    """torch.device for --device, or None (after printing the error) when it is not available."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        _error("--device cuda: no CUDA device is visible; use --device cpu")
        return None
    return torch.device(name)


def _unique_names(paths: list[Path]) -> list[str]:
    """Output stems: the file stem, with -1, -2, … added where two inputs share one."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = p.stem
        k = seen.get(stem, 0)
        seen[stem] = k + 1
        out.append(stem if k == 0 else f"{stem}-{k}")
    return out


def cmd_fit(args) -> int:
    from tqdm.auto import tqdm

    try:
        cfg = _fit_config(args)
    except ValueError as e:
        _error(str(e))
        return 2
    device = _device(args.device)
    if device is None:
        return 2
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in args.images]
    todo: list[tuple[Path, str]] = []
    for p, name in zip(paths, _unique_names(paths), strict=True):
        if not args.overwrite and (out_dir / f"{name}.gs.npy").exists():
            print(f"skip {p}: {out_dir / name}.gs.npy exists (use --overwrite to refit)")
            continue
        todo.append((p, name))
    batches = [todo[i : i + args.batch_size] for i in range(0, len(todo), args.batch_size)]
    progress = not args.quiet and sys.stderr.isatty()
    failures: list[tuple[str, str]] = []
    rows = []
    for batch in tqdm(batches, desc="batches", unit="batch", disable=not progress or len(batches) < 2):
        rows += _fit_batch(args, cfg, device, batch, out_dir, failures, progress)
    _print_fit_summary(args, rows, out_dir)
    if failures:
        print(f"{len(failures)} image(s) failed; see the errors above", file=sys.stderr)
        return 1
    return 0


def _fit_batch(args, cfg, device, batch, out_dir: Path, failures: list, progress: bool) -> list[list]:
    """Load, fit and write one batch of (path, name); an image that does not load is recorded in `failures`
    and the others go on. Returns the summary rows of the written files."""
    import torch

    from .fitting.fit import fit_images, fit_sidecar
    from .image_io import ImageLoadError, load_image
    from .splat_io import payload_bytes, save_splats

    loaded, kept = [], []
    for p, name in batch:
        try:
            loaded.append(load_image(p, args.size, args.resize, args.background, args.max_pixels))
            kept.append((p, name))
        except ImageLoadError as e:
            _error(str(e))
            failures.append((str(p), str(e)))
    if not loaded:
        return []
    images = torch.stack(loaded).to(device)
    rows = []
    for (p, name), r, target in zip(kept, fit_images(images, cfg, progress=progress), images, strict=True):
        meta = fit_sidecar(r, target, cfg, args.resize, str(p))
        out = save_splats(out_dir / f"{name}.gs.npy", r.splats, meta)
        nbytes = payload_bytes(r.num_gaussians)
        ratio = f"{args.size * args.size * 3 / nbytes:.2f}×"
        rows.append([name, r.num_initial, r.num_gaussians, meta["psnr"], nbytes, ratio, r.seconds])
        logger.info("wrote %s", out)
    return rows


def _print_fit_summary(args, rows: list[list], out_dir: Path) -> None:
    from .report import text_table
    from .splat_io import RAW_RGB_BYTES

    if not rows:
        return
    headers = ["image", "N init", "N", "PSNR dB", "bytes", f"vs raw {args.size}²", "seconds"]
    print(text_table(headers, rows))
    if args.size != 224:
        print(
            f"(raw 224² RGB is {RAW_RGB_BYTES:,} bytes; the ratio above is against the {args.size}² canvas)"
        )
    print(f"wrote {len(rows)} splat file(s) to {out_dir}")


def _load_any(path: str):
    """(splats, meta) from a .gs.npy (with its sidecar) or a .gsq file; raises SplatFileError."""
    from .splat_io import load_splats

    if str(path).endswith(".gsq"):
        from .codec import load_gsq

        return load_gsq(path), None
    return load_splats(path, with_meta=True)


def cmd_convert(args) -> int:
    from .codec import save_gsq
    from .image_io import ImageLoadError, load_image
    from .splat_io import SplatFileError, save_splats

    try:
        splats, meta = _load_any(args.source)
        if args.output.endswith(".gsq"):
            image = None
            if args.image:
                meta = meta or {}
                image = load_image(
                    args.image, int(meta.get("canvas", args.canvas)), meta.get("resize", args.resize)
                )
            out = save_gsq(args.output, splats, level=args.level, image=image, max_loss_db=args.max_loss)
        elif args.output.endswith(".gs.npy"):
            out = save_splats(args.output, splats, meta)
        else:
            _error(f"{args.output}: output must end in .gsq or .gs.npy")
            return 2
    except (SplatFileError, ImageLoadError) as e:
        _error(str(e))
        return 1
    except ValueError as e:
        _error(str(e))
        return 2
    print(f"wrote {out} ({Path(out).stat().st_size:,} bytes, from {Path(args.source).stat().st_size:,})")
    return 0


def cmd_render(args) -> int:
    import torch

    from .fitting.fit import psnr
    from .fitting.render import render
    from .image_io import ImageLoadError, load_image
    from .splat_io import SplatFileError
    from .viz import compare_panel, draw_ellipses, to_pil

    if args.size < 1:
        _error(f"--size must be ≥ 1, got {args.size}")
        return 2
    try:
        splats, meta = _load_any(args.splats)
    except SplatFileError as e:
        _error(str(e))
        return 1
    meta = meta or {}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        if args.compare:
            canvas = int(meta.get("canvas", args.canvas))
            mode = meta.get("resize", args.resize)
            try:
                original = load_image(args.compare, canvas, mode)
            except ImageLoadError as e:
                _error(str(e))
                return 1
            rendered = render(splats, size=canvas, clamp=True)
            score = float(psnr(rendered, original))
            caption = f"PSNR {score:.2f} dB · {splats.shape[0]} Gaussians · {canvas}x{canvas} canvas ({mode})"
            pil = compare_panel(original, rendered, args.size, caption)
            print(f"PSNR {score:.2f} dB")
        else:
            pil = to_pil(render(splats, size=args.size, clamp=True))
            if args.ellipses:
                pil = draw_ellipses(pil, splats)
    pil.save(out)
    print(f"wrote {out}")
    return 0


def _env_info() -> None:
    import torch

    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name(0)}")
    import cuda_ext

    err, cuda_err = cuda_ext.load_error(), cuda_ext.cuda_load_error()
    print(
        "render backends: torch (pure-torch, CPU/GPU); cpp (compiled CPU op): "
        + ("available" if err is None else f"not available: {err}")
        + "; cuda (CUDA kernels, render and fused fit): "
        + ("available" if cuda_err is None else f"not available: {cuda_err}")
    )


def cmd_info(args) -> int:
    from .fitting.fit import luminance
    from .splat_io import SplatFileError, payload_bytes

    if not args.splats:
        _env_info()
        return 0
    status = 0
    for path in args.splats:
        try:
            s, meta = _load_any(path)
        except SplatFileError as e:
            _error(str(e))
            status = 1
            continue
        n = s.shape[0]
        sig = s[:, [2, 4]]
        print(f"{path}")
        print(f"  Gaussians      {n}")
        print(f"  x range        [{s[:, 0].min():.4f}, {s[:, 0].max():.4f}]")
        print(f"  y range        [{s[:, 1].min():.4f}, {s[:, 1].max():.4f}]")
        print(f"  l11/l22 range  [{sig.min():.5f}, {sig.max():.5f}] (canvas units)")
        print(f"  colour range   [{s[:, 5:].min():.4f}, {s[:, 5:].max():.4f}]")
        print(f"  luminosity     mean {luminance(s[:, 5:]).mean():.4f}")
        print(f"  payload        {payload_bytes(n):,} bytes (fp16), file {Path(path).stat().st_size:,} bytes")
        if str(path).endswith(".gsq"):
            from .codec import gsq_info

            g = gsq_info(Path(path).read_bytes(), str(path))
            steps = ", ".join(f"{k} {v:.3g}" for k, v in g["steps"].items())
            print(f"  .gsq           level {g['level']} (steps: {steps})")
        if meta:
            keys = ("canvas", "resize", "num_gaussians_initial", "psnr", "fit_iters", "source")
            print("  sidecar        " + ", ".join(f"{k}={meta[k]}" for k in keys if k in meta))
    return status


def _add_fit_args(p: argparse.ArgumentParser, batch_size: int) -> None:
    """The fit flags (FitConfig's, made from its fields) and those of loading images and running the job."""
    from .fitting.fit import FitConfig
    from .image_io import DEFAULT_MAX_PIXELS, RESIZE_MODES

    FitConfig.add_arguments(p)
    p.add_argument("--size", type=int, default=224, help="canvas side S in pixels (default 224)")
    p.add_argument(
        "--resize", choices=RESIZE_MODES, default="pad", help="how the image meets the square canvas"
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--batch-size", type=int, default=batch_size, help="images fitted together")
    p.add_argument(
        "--background", choices=("white", "mean"), default="white", help="under transparent pixels"
    )
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _fit_config(args):
    """FitConfig from the shared fit flags; raises ValueError naming the bad flag."""
    from .fitting.fit import FitConfig

    if getattr(args, "max_gaussians", None) is not None and getattr(args, "num_gaussians", None) is not None:
        raise ValueError(
            "--num-gaussians and --max-gaussians: give one (with --max-gaussians, rate control picks each "
            "image's N up to it)"
        )
    cfg = FitConfig.from_args(args)
    flag, n = (
        ("--max-gaussians", cfg.max_gaussians)
        if cfg.max_gaussians
        else ("--num-gaussians", cfg.num_gaussians)
    )
    if n > args.size * args.size:
        raise ValueError(f"{flag} {n} exceeds the {args.size}×{args.size} canvas's pixel count")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    cfg.load_init()
    return cfg


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1], got {text}")
    return value


def cmd_fit_shards(args) -> int:
    from .shards import ShardJobConfig, run_shard_job

    try:
        cfg = ShardJobConfig(
            fit=_fit_config(args),
            size=args.size,
            resize=args.resize,
            background=args.background,
            max_pixels=args.max_pixels,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            device=args.device,
            teacher=args.teacher,
            teacher_config=args.teacher_config,
        )
    except ValueError as e:
        _error(str(e))
        return 2
    if _device(args.device) is None:
        return 2
    try:
        summary = run_shard_job(
            args.inputs,
            args.output,
            cfg,
            progress=not args.quiet and sys.stderr.isatty(),
            image_folder=args.image_folder,
        )
    except (FileNotFoundError, ValueError) as e:
        _error(str(e))
        return 2
    print(json.dumps(summary, indent=2))
    print(f"wrote splat shards and summary.json to {args.output}")
    # a dataset job that did its work succeeds: bad samples are counted and listed, not fatal
    # (img2dataset's convention), unless there are more of them than the user allows
    failed, rate = summary["failures"], summary["failure_rate"]
    if failed and not summary["images"]:
        _error(f"{args.output}: no image was fitted, {failed} failed (see {args.output}/*.errors.jsonl)")
        return 1
    if rate > args.max_failure_rate:
        _error(
            f"{args.output}: {failed} samples failed ({rate:.1%}), more than --max-failure-rate "
            f"{args.max_failure_rate:.1%}; their keys and reasons are in {args.output}/*.errors.jsonl"
        )
        return 1
    if failed:
        print(
            f"{failed} sample(s) skipped ({rate:.2%}); listed in {args.output}/*.errors.jsonl",
            file=sys.stderr,
        )
    return 0


def cmd_train_init(args) -> int:
    from .train_init import run

    return run(args)


def cmd_encoder_from_clip(args) -> int:
    """The RGB twin for RGB-LLaVA, or a fresh GS encoder initialised from a CLIP's vision tower."""
    from .modeling_gs_vision import GSVisionModel, RGBVisionModel, head_overrides
    from .teacher import register_model_config

    try:
        if args.model_config:
            register_model_config(args.model_config)
        if args.input == "rgb":
            model = RGBVisionModel.from_open_clip(args.clip_model, pretrained=args.clip_pretrained or None)
        else:
            model = GSVisionModel.from_open_clip(
                args.clip_model, pretrained=args.clip_pretrained or None, **head_overrides(args)
            )
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _error(str(e))
        return 2
    model.save_pretrained(args.output)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.input} encoder ({n / 1e6:.2f} M parameters) to {args.output}")
    return 0


def cmd_encoder_params(args) -> int:
    from .modeling_gs_vision import head_overrides, stage_shares
    from .report import text_table

    try:
        shares = stage_shares(args.model, args.vit_blocks, **head_overrides(args))
    except ValueError as e:
        _error(str(e))
        return 2
    print(shares["headline"])
    print(text_table(shares["headers"], shares["rows"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gsv", description="GaussianVision: images as 2D Gaussian splats")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_fit_commands(sub)
    _add_file_commands(sub)
    _add_encoder_commands(sub)
    return parser


def _add_fit_commands(sub) -> None:
    """fit, fit-shards."""
    fit = sub.add_parser("fit", help="fit splat sets to images")
    fit.add_argument("images", nargs="+", help="image files (any format PIL reads)")
    fit.add_argument("-o", "--output", required=True, help="output folder for <name>.gs.npy + <name>.json")
    _add_fit_args(fit, batch_size=8)
    fit.add_argument("--overwrite", action="store_true", help="refit images whose output exists")
    fit.set_defaults(func=cmd_fit)

    shards = sub.add_parser(
        "fit-shards",
        help="fit image shards, folders or LLaVA data into splat shards / a splat cache (resumable)",
    )
    shards.add_argument(
        "inputs",
        nargs="+",
        help="webdataset .tar shards, folders of them, folders of images, or LLaVA .json files",
    )
    shards.add_argument("-o", "--output", required=True, help="output folder: one .tar per input tar")
    _add_fit_args(shards, batch_size=16)
    shards.add_argument("--shard-size", type=int, default=1000, help="images per output tar (or cache chunk)")
    shards.add_argument(
        "--image-folder", help="with a LLaVA .json input: the folder its image paths are relative to"
    )
    shards.add_argument(
        "--teacher", help="ARCH[:TAG_OR_PATH]: also store the open_clip teacher embedding (<key>.t16.npy)"
    )
    shards.add_argument(
        "--teacher-config", help="open_clip architecture JSON for --teacher (custom or tiny models)"
    )
    shards.add_argument(
        "--max-failure-rate",
        type=_fraction,
        default=0.05,
        help="exit non-zero when more than this fraction of the samples failed (default 0.05); "
        "fewer failures are skipped, counted in summary.json and listed in <shard>.errors.jsonl",
    )
    shards.set_defaults(func=cmd_fit_shards)


def _add_file_commands(sub) -> None:
    """render, convert, info."""
    from .codec import DEFAULT_LEVEL, MAX_LOSS_DB
    from .image_io import RESIZE_MODES

    ren = sub.add_parser("render", help="render a splat file to PNG")
    ren.add_argument("splats", help="a .gs.npy or .gsq file")
    ren.add_argument("-o", "--output", required=True, help="output PNG")
    ren.add_argument("--size", type=int, default=512, help="output side (per panel with --compare)")
    ren.add_argument("--ellipses", action="store_true", help="outline each Gaussian's 1σ ellipse")
    ren.add_argument("--compare", metavar="IMAGE", help="original | render | error, with PSNR")
    ren.add_argument(
        "--canvas", type=int, default=224, help="canvas of the comparison when there is no sidecar"
    )
    ren.add_argument(
        "--resize", choices=RESIZE_MODES, default="pad", help="resize of the comparison without sidecar"
    )
    ren.set_defaults(func=cmd_render)

    conv = sub.add_parser("convert", help="convert between .gs.npy (fp16) and .gsq (quantised) splat files")
    conv.add_argument("source", help="a .gs.npy or .gsq file")
    conv.add_argument("-o", "--output", required=True, help="target path ending in .gsq or .gs.npy")
    conv.add_argument(
        "--image",
        default=None,
        help="the picture the splats were fitted to: the .gsq encoder then solves the colours on the quantised "
        "geometry and, without --level, picks the coarsest level within --max-loss dB (docs/codec.md)",
    )
    conv.add_argument(
        "--level",
        type=int,
        default=None,
        help=".gsq step level in quarter octaves (higher: smaller, coarser; default: chosen with --image, "
        f"else {DEFAULT_LEVEL})",
    )
    conv.add_argument(
        "--max-loss",
        type=float,
        default=MAX_LOSS_DB,
        help=f"with --image and no --level: PSNR the .gsq may lose against the splats (default {MAX_LOSS_DB} dB)",
    )
    conv.add_argument(
        "--canvas", type=int, default=224, help="--image's canvas when the splats have no sidecar"
    )
    conv.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default="pad",
        help="--image's resize when the splats have no sidecar",
    )
    conv.set_defaults(func=cmd_convert)

    info = sub.add_parser("info", help="describe splat files (no files: the environment)")
    info.add_argument("splats", nargs="*", help=".gs.npy or .gsq files")
    info.set_defaults(func=cmd_info)


def _add_encoder_commands(sub) -> None:
    """encoder-params, encoder-from-clip, train-init."""
    from .modeling_gs_vision import add_head_args

    ep = sub.add_parser(
        "encoder-params", help="total / trainable parameters of the GS encoder per training stage"
    )
    ep.add_argument("--model", default="ViT-B-16", help="open_clip architecture")
    add_head_args(ep)
    ep.add_argument("--vit-blocks", type=int, default=2, help="ViT (and text) blocks unfrozen in stage 2")
    ep.set_defaults(func=cmd_encoder_params)

    ex = sub.add_parser(
        "encoder-from-clip",
        help="write an encoder folder (GS, or the RGB twin) around an open_clip model's vision tower",
    )
    ex.add_argument("--clip-model", default="ViT-B-16", help="open_clip architecture")
    ex.add_argument("--clip-pretrained", default="", help="open_clip tag or checkpoint path (empty: random)")
    ex.add_argument("--model-config", help="an open_clip architecture JSON to register first")
    ex.add_argument("--input", choices=("gs", "rgb"), default="gs", help="GS encoder or RGB twin")
    add_head_args(ex)
    ex.add_argument("-o", "--output", required=True, help="folder to write (config.json + model.safetensors)")
    ex.set_defaults(func=cmd_encoder_from_clip)

    ti = sub.add_parser(
        "train-init", help="train the learned splat initialiser (same as python -m gs_encoder.train_init)"
    )
    from .train_init import add_args as add_train_init_args

    add_train_init_args(ti)
    ti.set_defaults(func=cmd_train_init)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
