"""Train the learned splat initialiser (gs_encoder/fitting/learned_init.py) through the project's renderer.

    python -m gs_encoder.train_init --out-dir runs/init0        # the shipped weights: these defaults,
    python -m gs_encoder.train_init --out-dir runs/init1 --steps 8000 --lr 3e-4 --passes 3 \\
        --from-weights runs/init0/learned_init.safetensors            # this fine-tuning,
    python -m gs_encoder.train_init --out-dir runs/init --steps 10000 --lr 5e-4 --passes 3 --base density \\
        --from-weights runs/init1/learned_init.safetensors \\
        --export gs_encoder/fitting/weights/learned_init.safetensors   # then this one on the density grid
    gsv train-init --images my_photos/ --out-dir runs/mine --device cuda --batch-size 64 --canvas 224
    gsv train-init --images my_photos/ --out-dir runs/tuned --from-weights \\
        gs_encoder/fitting/weights/learned_init.safetensors --lr 3e-4   # fine-tune the shipped weights

Each step draws one canvas size S and one Gaussian budget N (grid cells of 3–12 px), a batch of images,
predicts their splats and minimises the mean squared error of the render against the image (the render
loss; gradients flow through the renderer into the network). Images:

- photographs: random crops (¼ to all of the short side), flips, quarter turns and colour jitter
  (brightness, contrast, saturation, channel order) of scikit-image's bundled pictures (TRAIN_PHOTOS:
  none of the tuning photographs of eval/splits.py), or of the images in `--images` folders instead,
  less any picture of the sealed test set (by content; a warning names them);
- procedural images (share `--procedural`): gradients, polygons with hard edges, textures (sums of
  oriented waves with noise) and text.
Both come from gs_encoder/init_images.py; the log's provenance (weights by SHA-256) is checked by
gs_encoder/init_provenance.py.

Scenes of eval/mini/world.py are not used: gs_encoder may not import eval/ (docs/format.md's package
layout); render them to a folder and pass it with `--images` to train on them.

Checkpoints (`--save-every`) go to `<out-dir>/checkpoints/step-<k>/` (checkpoint.safetensors,
optimizer.safetensors, state.json), written as a hidden temporary folder and renamed in one step, then the
older ones removed, so a crash at any moment leaves one whole checkpoint; a rerun with the same folder
resumes from the newest (the data of step k depend only on the seed and k, so a resumed run sees the same
images).
The final weights are `<out-dir>/learned_init.safetensors` with `train_log.json`; `--export PATH` also
copies them (and the log, as PATH with `_log.json`) to PATH, e.g. the shipped weights file. With
`--if-missing` nothing runs when PATH exists (the shipped weights are used like a downloaded checkpoint).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cuda_ext.files import atomic_path, atomic_write_text

from .fitting.learned_init import file_sha256
from .init_images import TRAIN_PHOTOS, load_photos, sample_batch
from .init_provenance import check_provenance, log_path, source_log

__all__ = ["TrainInitConfig", "add_args", "check_provenance", "log_path", "main", "train_init"]


@dataclass
class TrainInitConfig:
    """Settings of one training run of the learned initialiser."""

    out_dir: str = "runs/learned_init"  # checkpoints, final weights and log
    steps: int = 4000  # optimiser steps
    batch_size: int = 12  # images per step
    canvas: list[int] = field(default_factory=lambda: [64, 96, 128])  # canvas sides S drawn per step
    cell_px: tuple[float, float] = (3.0, 12.0)  # range of grid-cell sides in px (sets N for each S)
    lr: float = 1e-3  # AdamW step size (warm-up, then cosine to 5%)
    weight_decay: float = 1e-4
    procedural: float = 0.4  # share of procedural images in a batch
    images: list[str] = field(default_factory=list)  # folders of images replacing scikit-image's photos
    width: int = 32  # network width at half-cell resolution
    cell_width: int = 64  # network width at cell resolution
    blocks: int = 3  # residual convs at cell resolution
    reach: float = 1.0  # largest move of a centre from its grid cell, in cells
    passes: int = 2  # network passes (later ones correct the splats from the render's residual)
    base: str = "structured"  # the grid the network refines: structured or density (learned_init.BASES)
    save_every: int = 250  # steps between checkpoints
    log_every: int = 250  # steps between log entries
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  # torch CPU threads (0: leave torch's default)
    export: str | None = None  # also copy the final weights here
    from_weights: str | None = None  # a new run starts from these weights (fine-tuning), not from scratch
    if_missing: bool = False  # do nothing when `export` exists

    def __post_init__(self):
        from .fitting.learned_init import BASES

        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"--steps and --batch-size must be ≥ 1, got {self.steps}, {self.batch_size}")
        if self.base not in BASES:
            raise ValueError(f"--base must be one of {', '.join(BASES)}, got {self.base!r}")
        if not self.canvas or min(self.canvas) < 16:
            raise ValueError(f"--canvas sides must be ≥ 16, got {self.canvas}")
        lo, hi = self.cell_px
        if not 1.0 <= lo <= hi:
            raise ValueError(f"--cell-px must be two sizes 1 ≤ lo ≤ hi, got {self.cell_px}")
        if not 0.0 <= self.procedural <= 1.0:
            raise ValueError(f"--procedural must be in [0, 1], got {self.procedural}")
        if self.save_every < 1 or self.log_every < 1:
            raise ValueError("--save-every and --log-every must be ≥ 1")
        if self.if_missing and not self.export:
            raise ValueError("--if-missing needs --export (the weights file whose presence is checked)")


# --- data -------------------------------------------------------------------------------------------


# --- training ----------------------------------------------------------------------------------------


def _render_loss(net, images: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(render loss, per-image PSNR of the last pass): the mean squared error of the last pass's render,
    plus half that of each earlier pass when the network refines."""
    from .fitting.learned_init import _render_batch

    sets = net.splats_per_pass(images, n)
    size = images.shape[-1]
    loss = images.new_zeros(())
    for k, splats in enumerate(sets):
        out = _render_batch(splats, size)
        mse = (out - images).pow(2).mean(dim=(1, 2, 3))
        loss = loss + mse.mean() * (1.0 if k == len(sets) - 1 else 0.5)
    with torch.no_grad():
        psnr = 10 * torch.log10(1.0 / (out.clamp(0, 1) - images).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-12))
    return loss, psnr


def _lr_at(step: int, cfg: TrainInitConfig) -> float:
    warm = min(100, cfg.steps // 10 + 1)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    frac = (step - warm) / max(cfg.steps - warm, 1)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def _atomic_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _save_optimizer(path: Path, opt: torch.optim.Optimizer) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def _load_optimizer(path: Path, opt: torch.optim.Optimizer) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def _validation_set(cfg: TrainInitConfig, photos: list[torch.Tensor]) -> list[tuple[torch.Tensor, int]]:
    """Four fixed batches from a seed range no training step uses."""
    val = TrainInitConfig(**{**asdict(cfg), "seed": cfg.seed + 7919, "batch_size": 8})
    return [sample_batch(10_000_000 + k, val, photos) for k in range(4)]


@torch.no_grad()
def _validate(net, batches, device) -> dict:
    from .fitting.fit import psnr
    from .fitting.init import structured_init
    from .fitting.render import render

    learned, structured = [], []
    for images, n in batches:
        images = images.to(device)
        _, p = _render_loss(net, images, n)
        learned += p.tolist()
        s = structured_init(images, n)
        structured += [
            float(psnr(render(x, size=images.shape[-1]), img)) for x, img in zip(s, images, strict=True)
        ]
    return {"val_psnr_learned": float(np.mean(learned)), "val_psnr_structured": float(np.mean(structured))}


def train_init(cfg: TrainInitConfig, progress: bool = True) -> Path:
    """Run (or resume) the training described by cfg; returns the final weights file."""
    from tqdm.auto import tqdm

    from .fitting.learned_init import SplatInitNet

    if cfg.if_missing and Path(cfg.export).is_file():
        print(f"{cfg.export} exists; nothing to do (--if-missing)")
        return Path(cfg.export)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    out = Path(cfg.out_dir)
    torch.manual_seed(cfg.seed)
    net = SplatInitNet(cfg.width, cfg.cell_width, cfg.blocks, cfg.reach, cfg.passes, cfg.base).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, log = _resume(out, net, opt)
    if start == 0 and cfg.from_weights:  # before any folder is made: a bad file leaves nothing behind
        _start_from(Path(cfg.from_weights), net)
    out.mkdir(parents=True, exist_ok=True)
    photos = load_photos(cfg.images)
    val = _validation_set(cfg, photos)
    t0 = time.perf_counter() - (log[-1]["seconds"] if log else 0.0)
    bar = tqdm(
        range(start, cfg.steps), initial=start, total=cfg.steps, desc="train-init", disable=not progress
    )
    net.train()
    recent: list[float] = []
    for step in bar:
        images, n = sample_batch(step, cfg, photos)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        loss, p = _render_loss(net, images.to(device), n)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        recent.append(float(p.mean()))
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            net.eval()
            entry = {
                "step": done,
                "train_psnr": float(np.mean(recent)),
                **_validate(net, val, device),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            net.train()
            log.append(entry)
            recent = []
            bar.set_postfix(
                val=f"{entry['val_psnr_learned']:.2f}", structured=f"{entry['val_psnr_structured']:.2f}"
            )
        if done % cfg.save_every == 0 or done == cfg.steps:
            _save_checkpoint(out, done, net, opt, {"step": done, "log": log, "config": asdict(cfg)})
    bar.close()
    return _finish(cfg, out, net, log)


def _save_checkpoint(out: Path, step: int, net, opt, state: dict) -> Path:
    """Write checkpoints/step-<step>/ whole (a temporary folder renamed in one step), then drop older ones."""
    from .fitting.learned_init import save_learned_init

    root = out / "checkpoints"
    target = root / f"step-{step}"
    for stale in root.glob(".step-*"):  # the partial folder of a run killed while saving
        shutil.rmtree(stale)
    with atomic_path(target, folder=True) as tmp:
        save_learned_init(tmp / "checkpoint.safetensors", net)
        _save_optimizer(tmp / "optimizer.safetensors", opt)
        _atomic_json(tmp / "state.json", state)
    for old in root.glob("step-*"):
        if old != target:
            shutil.rmtree(old)
    return target


def _resume(out: Path, net, opt) -> tuple[int, list]:
    """(step, log) of the run in `out`, with the network and optimiser restored; (0, []) for a new run.

    Reads the newest checkpoints/step-<k>/ (unfinished hidden .tmp folders are ignored)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .train import latest_checkpoint

    src = latest_checkpoint(out)
    if src is None:
        if (out / "state.json").is_file():
            raise ValueError(
                f"{out}: a checkpoint in an older layout (state.json directly in the folder); move its three "
                "files into checkpoints/step-<k>/ to resume, or pick another --out-dir to start afresh"
            )
        return 0, []
    try:
        state = json.loads((src / "state.json").read_text())
        net.load_state_dict(load_file(str(src / "checkpoint.safetensors")))
        _load_optimizer(src / "optimizer.safetensors", opt)
        step, log = int(state["step"]), state["log"]
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
        raise ValueError(
            f"{src}: cannot resume from this checkpoint ({type(e).__name__}: {str(e).splitlines()[0]}); "
            "rerun with the settings it was trained with, or remove the folder (or pick another --out-dir) "
            "to start afresh"
        ) from e
    print(f"resuming {out} at step {step} ({src})")
    return step, log


def _start_from(path: Path, net) -> None:
    """Load the weights of `path` into `net` (built from the run's settings) for a fine-tuning run; raises
    ValueError naming the file when they are unreadable or of other settings."""
    from .fitting.learned_init import DEFAULT_WEIGHTS, LearnedInitError, _read_weights

    fix = f"give a weights file of this network, e.g. the shipped {DEFAULT_WEIGHTS}"
    if not path.is_file():
        raise ValueError(f"--from-weights {path}: no such file; {fix}")
    try:
        source = _read_weights(path, fix)
    except LearnedInitError as e:
        raise ValueError(f"--from-weights: {e}") from e
    try:
        net.load_state_dict(source.state_dict())
    except RuntimeError as e:
        settings = ", ".join(
            f"--{k.replace('_', '-')} {getattr(source, k)}" for k in ("width", "cell_width", "blocks")
        )
        raise ValueError(
            f"--from-weights {path}: its network does not fit this run's settings; pass the settings it was "
            f"trained with ({settings}, and --passes > 1 when it has a refinement network) "
            f"({str(e).splitlines()[0]})"
        ) from e
    print(f"starting from {path}")


def _finish(cfg: TrainInitConfig, out: Path, net, log: list) -> Path:
    """Save the final weights and the training log (and copy both to cfg.export); returns the weights.
    The log holds the weights' SHA-256 and, for a fine-tuning run, the SHA-256 and log of the weights it
    started from, so a shipped file's whole history is machine-written and checkable (check_provenance)."""
    from .fitting.learned_init import save_learned_init
    from .report import machine_info

    net.eval()
    final = save_learned_init(out / "learned_init.safetensors", net, {"steps": str(cfg.steps)})
    train_log = {
        "config": asdict(cfg),
        "photos": list(TRAIN_PHOTOS) if not cfg.images else cfg.images,
        "log": log,
        "machine": machine_info(),
        "weights_sha256": file_sha256(final),
    }
    if cfg.from_weights:  # fine-tuned: keep the history of the weights it started from
        source = Path(cfg.from_weights)
        train_log["started_from"] = {
            "weights": cfg.from_weights,
            "sha256": file_sha256(source),
            **source_log(source),
        }
    _atomic_json(out / "train_log.json", train_log)
    if cfg.export:
        dest = Path(cfg.export)
        with atomic_path(dest) as tmp:
            shutil.copyfile(final, tmp)
            tmp.chmod(0o644)
        _atomic_json(log_path(dest), {**train_log, "exported_to": str(dest)})
        print(f"exported {dest}")
    print(f"wrote {final} and {out / 'train_log.json'}")
    return final


def add_args(p: argparse.ArgumentParser) -> None:
    from .fitting.learned_init import BASES

    d = TrainInitConfig()
    p.add_argument(
        "--out-dir", default=d.out_dir, help="checkpoints, final weights and log (resumed if present)"
    )
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--canvas", type=int, nargs="+", default=d.canvas, help="canvas sides drawn per step")
    p.add_argument("--cell-px", type=float, nargs=2, default=d.cell_px, help="range of grid-cell sides (px)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--procedural", type=float, default=d.procedural, help="share of procedural images")
    p.add_argument(
        "--images",
        nargs="+",
        default=[],
        help="folders of your own images (replace the photos; pictures of the sealed test set are left out)",
    )
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--cell-width", type=int, default=d.cell_width)
    p.add_argument("--blocks", type=int, default=d.blocks, help="residual convs at cell resolution")
    p.add_argument("--reach", type=float, default=d.reach, help="largest centre move, in cells")
    p.add_argument("--passes", type=int, default=d.passes, help="network passes (>1: residual refinement)")
    p.add_argument(
        "--base",
        choices=BASES,
        default=d.base,
        help="the grid the network refines (density: the density init's, cells smaller where the image has "
        "detail; --from-weights may come from either)",
    )
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="cpu or cuda")
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0: default)")
    p.add_argument("--export", default=None, help="also copy the final weights to this file")
    p.add_argument(
        "--from-weights",
        default=None,
        help="start a new run from these weights, e.g. the shipped ones, to fine-tune them (a run that "
        "resumes from its own checkpoint ignores it)",
    )
    p.add_argument("--if-missing", action="store_true", help="do nothing when --export exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def config_from_args(args) -> TrainInitConfig:
    names = TrainInitConfig.__dataclass_fields__
    return TrainInitConfig(**{k: v for k, v in vars(args).items() if k in names})


def run(args) -> int:
    """Body of `python -m gs_encoder.train_init` and `gsv train-init`."""
    try:
        cfg = config_from_args(args)
        train_init(cfg, progress=not args.quiet and sys.stderr.isatty())
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
