"""`python -m gs_encoder.train --stage 1|2`: the two-stage transfer of a CLIP ViT to splat input.

Stage 1 (RGB→GS distillation): MSE between the L2-normalised CLIP embeddings of the frozen RGB teacher
(open_clip on the image the splats were fitted to, or teacher embeddings stored beside the splats) and
of the GS student; the stem, the resampler and the GS embeddings train. With `--patch-weight W > 0` the
loss adds W × the same MSE between the unit patch tokens of the student at `--patch-layer` (the block
LLaVA reads) and of the teacher at the same positions (its G×G grid resized to K as the GS position
embeddings are); the teacher then runs on every source image (docs/encoder.md).
Stage 2 (CLIP adaptation): open_clip's contrastive `ClipLoss` against the text tower, with the first
ViT blocks and the projection unfrozen (and optionally the symmetric text layers).

Runs on accelerate (multi-GPU with `accelerate launch` or torchrun, bf16, gradient accumulation), with a
cosine schedule after a linear warm-up, checkpoints every `--save-every` steps (written under a
temporary name, then renamed) and automatic resume from the newest one.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import SplatFolder, UpsampledSampler, collate_splats, splat_loader
from .modeling_gs_vision import GSVisionConfig, GSVisionModel, resize_token_grid
from .teacher import ClipTeacher, build_clip, register_model_config

__all__ = ["ContrastiveObjective", "DistillConfig", "DistillObjective", "latest_checkpoint", "main", "train"]

logger = logging.getLogger(__name__)


_HEAD_FIELDS = (
    "num_tokens",
    "resampler_depth",
    "resampler_heads",
    "gs_width",
    "gs_ff_mult",
)  # DistillConfig's


@dataclass
class DistillConfig:
    """Settings of one training stage."""

    stage: int  # 1: distillation, 2: CLIP adaptation
    data: list[str] = field(default_factory=list)  # folders of .gs.npy files and/or splat .tar shards
    # the rate each --data folder is drawn at, one factor per folder (open_clip's
    # --train-data-upsampling-factors): an epoch draws Σ factor × size samples, with replacement
    data_upsampling_factors: list[float] | None = None
    output_dir: str = "runs/gs_encoder"  # checkpoints/ and final/ go here
    clip_model: str = "ViT-B-16"  # open_clip architecture of the teacher and the ViT
    clip_pretrained: str | None = None  # open_clip tag or checkpoint path (None: random, for tests)
    model_config: str | None = None  # an open_clip architecture JSON to register first (e.g. a tiny model)
    encoder: str | None = None  # a saved GS encoder to start from (stage 2: stage 1's final/)
    num_tokens: int = 196  # K resampled tokens
    resampler_depth: int = 2  # Perceiver layers
    # the GS head's shape (docs/encoder.md), GSVisionConfig's defaults
    resampler_heads: int = GSVisionConfig.resampler_heads  # Perceiver attention heads
    gs_width: int = GSVisionConfig.gs_width  # width of the Gaussian tokens and the Perceiver's attention
    gs_ff_mult: int = GSVisionConfig.gs_ff_mult  # the Perceiver's feed-forward width, in head widths
    # stage 1: weight of the patch-token term (0: the CLS embedding only, the paper's stage 1) and the hidden
    # state it matches (LLaVA's vision_feature_layer: -2, the tokens the projector reads)
    patch_weight: float = 0.0
    patch_layer: int = -2
    vit_blocks: int = 2  # ViT (and text) blocks unfrozen in stage 2
    unfreeze_text: bool = False  # stage 2: also train the first text blocks and the text projection
    batch_size: int = 32  # per device
    grad_accum: int = 1  # gradient accumulation steps
    lr: float = 1e-4  # peak learning rate (AdamW)
    weight_decay: float = 0.05
    warmup_steps: int = 100  # linear warm-up, then cosine decay to 0 at max_steps
    max_steps: int = 1000  # optimiser steps
    mixed_precision: str = "no"  # no | bf16 | fp16
    num_workers: int = 2  # data-loader workers
    seed: int = 0
    save_every: int = 500  # steps between checkpoints (0: only the final one)
    log_every: int = 10  # steps between logged losses
    report_to: str = "none"  # none | tensorboard | wandb

    def __post_init__(self):
        if self.stage not in (1, 2):
            raise ValueError(f"--stage must be 1 or 2, got {self.stage}")
        if not self.data:
            raise ValueError("--data: give at least one folder of .gs.npy files or splat .tar shard")
        folders = splat_folders(self.data)
        if self.data_upsampling_factors is not None:
            if not folders:
                raise ValueError(
                    "--data-upsampling-factors weighs folders of .gs.npy files; for tar shards mix the sources "
                    "in the shards themselves (or pass the folders the shards were written from)"
                )
            UpsampledSampler.check(len(self.data), self.data_upsampling_factors)
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"--mixed-precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.report_to not in ("none", "tensorboard", "wandb"):
            raise ValueError(f"--report-to must be none, tensorboard or wandb, got {self.report_to!r}")
        for name in ("batch_size", "grad_accum", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if not (math.isfinite(self.patch_weight) and self.patch_weight >= 0):
            raise ValueError(f"--patch-weight must be a finite number ≥ 0, got {self.patch_weight}")
        if self.patch_weight and self.stage != 1:
            raise ValueError(
                "--patch-weight is a stage-1 term (distillation to the RGB teacher); stage 2 has none"
            )
        if self.patch_weight and not folders:
            raise ValueError(
                "--patch-weight needs the source image of every sample (the teacher's patch tokens are computed "
                "on the fly), and splat tar shards do not carry them: pass folders of .gs.npy files whose "
                "sidecars name their images (`gsv fit` / `gsv fit-shards` on an image folder or LLaVA JSON)"
            )
        if not self.encoder:  # the head is built here: its shape is checked before any data is read
            GSVisionConfig(**{k: getattr(self, k) for k in _HEAD_FIELDS})


def _cosine_with_warmup(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def splat_folders(data) -> list:
    """The entries of --data that are folders of .gs.npy files (no tars); ValueError when they are mixed
    with shards (tars, folders of tars, URLs), which one run cannot read together."""
    folders = [d for d in data if Path(d).is_dir() and not list(Path(d).glob("*.tar"))]
    if folders and len(folders) != len(data):
        shards = [d for d in data if d not in folders]
        raise ValueError(
            f"--data mixes splat folders ({', '.join(map(str, folders))}) with tar shards "
            f"({', '.join(map(str, shards))}); one run reads one kind: pass only the shards (fit the folder's "
            "images into shards with `gsv fit-shards <image folder> -o <dir>`) or only the folders"
        )
    return folders


def _loader(cfg: DistillConfig, images: str):
    folders = splat_folders(cfg.data)
    if folders:
        parts = [SplatFolder(d, images=images) for d in folders]
        ds = torch.utils.data.ConcatDataset(parts)
        sampler = None
        if cfg.data_upsampling_factors is not None:
            sampler = UpsampledSampler([len(p) for p in parts], cfg.data_upsampling_factors, cfg.seed)
        return torch.utils.data.DataLoader(
            ds,
            batch_size=cfg.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            collate_fn=collate_splats,
            num_workers=cfg.num_workers,
            drop_last=len(sampler or ds) >= cfg.batch_size,
        ), len(sampler or ds)
    tars = []
    for d in cfg.data:
        p = Path(d)
        tars += sorted(p.glob("*.tar")) if p.is_dir() else [p]
    return splat_loader(
        tars, cfg.batch_size, num_workers=cfg.num_workers, shuffle=1000, resampled=True, seed=cfg.seed
    ), None


def _build_student(cfg: DistillConfig, clip) -> GSVisionModel:
    if cfg.encoder:
        return GSVisionModel.from_pretrained(cfg.encoder)
    config = GSVisionConfig.from_open_clip(cfg.clip_model, **{k: getattr(cfg, k) for k in _HEAD_FIELDS})
    student = GSVisionModel(config)
    student.visual.load_state_dict(clip.visual.state_dict(), strict=True)
    student.init_from_visual()
    return student


class _TextTower(torch.nn.Module):
    """open_clip's text tower and logit scale, with the stage-2 trainable set."""

    def __init__(self, clip, unfreeze: bool, blocks: int):
        super().__init__()
        self.clip = clip
        clip.requires_grad_(False)
        if unfreeze:
            clip.transformer.resblocks[:blocks].requires_grad_(True)
            clip.text_projection.requires_grad_(True)
        clip.logit_scale.requires_grad_(True)

    def forward(self, ids):
        return F.normalize(self.clip.encode_text(ids), dim=-1), self.clip.logit_scale.exp()


def _unit(embeds: torch.Tensor) -> torch.Tensor:
    return F.normalize(embeds.float(), dim=-1)


def _embed(student, batch, device) -> torch.Tensor:
    """The student's L2-normalised image embeddings of a batch (float32)."""
    splats, mask = batch["splats"].to(device), batch["mask"].to(device)
    return _unit(student(splats, mask).image_embeds)


class DistillObjective:
    """Stage 1: MSE between the unit CLIP embeddings of the student and of the frozen RGB teacher
    (computed on the source images, or stored beside the splats as <key>.t16.npy), plus, with
    `patch_weight`, that weight × the same MSE between the unit patch tokens of the student and of the
    teacher at `patch_layer`, 2 (1 − cos) / width per token (`terms` holds the last batch's two parts)."""

    stage = 1

    def __init__(self, cfg: DistillConfig, clip, acc):
        self.device = acc.device
        self.teacher = ClipTeacher(clip).to(acc.device)
        self.patch_weight, self.patch_layer = cfg.patch_weight, cfg.patch_layer
        if self.patch_weight:
            self.teacher.block_index(self.patch_layer)  # a bad --patch-layer fails before any data is read
        self.modules: list[torch.nn.Module] = []  # nothing to train besides the student
        self.terms: dict[str, float] = {}

    def loss(self, student, batch) -> torch.Tensor:
        out = student(batch["splats"].to(self.device), batch["mask"].to(self.device))
        images = batch["images"]
        if self.patch_weight and images is None:
            raise ValueError(
                "--patch-weight needs the source image of every sample; their sidecars name none that loads"
            )
        target = tokens = None
        if self.patch_weight:
            target, tokens = self.teacher.embed_with_tokens(images.to(self.device), self.patch_layer)
        if batch["teacher"] is not None:  # stored embeddings are the CLS target whenever they are there
            target = _unit(batch["teacher"].to(self.device))
        elif target is None and images is not None:
            target = self.teacher(images.to(self.device))
        elif target is None:
            raise ValueError("stage 1 needs teacher embeddings (<key>.t16.npy) or the source images")
        cls = F.mse_loss(_unit(out.image_embeds), target)
        self.terms = {"cls_loss": cls.item()}
        if tokens is None:
            return cls
        student_tokens = out.hidden_states[self.patch_layer][:, 1:].float()
        tokens = resize_token_grid(tokens, student_tokens.shape[1])
        patch = F.mse_loss(_unit(student_tokens), _unit(tokens))  # the CLS term's form, on every token
        self.terms["patch_loss"] = patch.item()
        return cls + self.patch_weight * patch

    def save(self, acc, final: Path) -> None:
        """Nothing besides the student."""


class ContrastiveObjective:
    """Stage 2: open_clip's ClipLoss between the student's image embeddings and the text tower's."""

    stage = 2

    def __init__(self, cfg: DistillConfig, clip, acc):
        import open_clip
        from open_clip.loss import ClipLoss

        self.device = acc.device
        self.text = _TextTower(clip, cfg.unfreeze_text, cfg.vit_blocks)
        self.modules = [
            self.text
        ]  # trained (logit scale, optionally text layers) and prepared with the student
        self.tokenizer = open_clip.get_tokenizer(cfg.clip_model)
        self.clip_loss = ClipLoss(
            local_loss=True, gather_with_grad=True, rank=acc.process_index, world_size=acc.num_processes
        )

    def loss(self, student, batch) -> torch.Tensor:
        if any(c is None for c in batch["captions"]):
            raise ValueError("stage 2 needs a caption for every sample (<key>.txt)")
        emb = _embed(student, batch, self.device)
        txt, scale = self.text(self.tokenizer(batch["captions"]).to(self.device))
        return self.clip_loss(emb, txt.float(), scale)

    def save(self, acc, final: Path) -> None:
        from safetensors.torch import save_model

        save_model(acc.unwrap_model(self.text).clip, str(final / "clip_text.safetensors"))


def latest_checkpoint(out: Path) -> Path | None:
    """The newest `out/checkpoints/step-<k>/` (hidden `.step-<k>.tmp` folders of an unfinished save are not
    matched); None when there is none. Also what `python -m gs_encoder.train_init` resumes from."""
    ckpts = sorted((out / "checkpoints").glob("step-*[0-9]"), key=lambda p: int(p.name.split("-")[1]))
    return ckpts[-1] if ckpts else None


@dataclass
class _Run:
    """What the loop works with once accelerate has prepared it."""

    acc: object
    student: torch.nn.Module
    objective: DistillObjective | ContrastiveObjective
    params: list
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    loader: object
    size: int | None  # samples of a map-style dataset; None for webdataset shards


def _setup(cfg: DistillConfig, out: Path) -> _Run:
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    if cfg.model_config:
        register_model_config(cfg.model_config)
    acc = Accelerator(
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=cfg.mixed_precision,
        log_with=None if cfg.report_to == "none" else cfg.report_to,
        project_dir=str(out),
    )
    set_seed(cfg.seed)
    clip = build_clip(cfg.clip_model, cfg.clip_pretrained)
    student = _build_student(cfg, clip)
    student.set_stage(cfg.stage, cfg.vit_blocks)
    objective = (DistillObjective if cfg.stage == 1 else ContrastiveObjective)(cfg, clip, acc)
    modules = [student, *objective.modules]
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine_with_warmup(cfg.warmup_steps, cfg.max_steps))
    loader, size = _loader(
        cfg, images="none" if cfg.stage == 2 else "all" if cfg.patch_weight else "no_teacher"
    )
    if size is not None:  # map-style: accelerate shards it across processes
        student, *prepared, opt, sched, loader = acc.prepare(*modules, opt, sched, loader)
    else:  # webdataset splits shards by node itself
        student, *prepared, opt, sched = acc.prepare(*modules, opt, sched)
    if isinstance(objective, ContrastiveObjective):
        (objective.text,) = prepared
    return _Run(acc, student, objective, params, opt, sched, loader, size)


def _resume(run: _Run, out: Path, cfg: DistillConfig) -> tuple[int, int, int]:
    """(step, epoch, batches to skip in that epoch) from the newest checkpoint, or zeros."""
    latest = latest_checkpoint(out)
    if latest is None:
        return 0, 0, 0
    run.acc.load_state(str(latest))
    step = json.loads((latest / "trainer_state.json").read_text())["step"]
    logger.info("resumed from %s (step %d)", latest, step)
    if run.size is None:
        return step, 0, 0
    epoch, skip = divmod(step * cfg.grad_accum, len(run.loader))  # continue inside that epoch
    return step, epoch, skip


def _batches(run: _Run, epoch: int, skip: int):
    """The batches of one epoch (the same order after a resume, with the first `skip` left out)."""
    if hasattr(run.loader, "set_epoch"):
        run.loader.set_epoch(epoch)
    return run.acc.skip_first_batches(run.loader, skip) if skip else run.loader


def _update(run: _Run, batch) -> torch.Tensor:
    """Forward, backward and (at the end of an accumulation) the optimiser step; returns the loss."""
    acc = run.acc
    with acc.accumulate(run.student):
        loss = run.objective.loss(run.student, batch)
        acc.backward(loss)
        if acc.sync_gradients:
            acc.clip_grad_norm_(run.params, 1.0)
        run.opt.step()
        run.sched.step()
        run.opt.zero_grad()
    return loss


def train(cfg: DistillConfig) -> Path:
    """Run one stage; returns the folder of the final encoder (loadable with GSVisionModel.from_pretrained)."""
    out = Path(cfg.output_dir)
    run = _setup(cfg, out)
    acc = run.acc
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "distill_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    if cfg.report_to != "none":
        acc.init_trackers(
            "gs_encoder", config={k: v for k, v in asdict(cfg).items() if not isinstance(v, list)}
        )
    step, epoch, skip = _resume(run, out, cfg)
    bar = tqdm(
        total=cfg.max_steps, initial=step, desc=f"stage {cfg.stage}", disable=not acc.is_local_main_process
    )
    history: dict[str, list[float]] = {"loss": []}
    while step < cfg.max_steps:
        for batch in _batches(run, epoch, skip):
            loss = _update(run, batch)
            if not acc.sync_gradients:
                continue
            step += 1
            value = float(acc.gather(loss.detach()[None]).mean())
            history["loss"].append(value)
            parts = getattr(run.objective, "terms", {}) if cfg.patch_weight else {}  # this process's batch
            for name, v in parts.items():
                history.setdefault(name, []).append(v)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", **{k.split("_")[0]: f"{v:.4f}" for k, v in parts.items()})
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                acc.log({"loss": value, **parts, "lr": run.sched.get_last_lr()[0]}, step=step)
                logger.info(
                    "step %d loss %.5f%s", step, value, "".join(f" {k} {v:.5f}" for k, v in parts.items())
                )
            if cfg.save_every and step % cfg.save_every == 0 and step < cfg.max_steps:
                _save_checkpoint(acc, out, step)
            if step >= cfg.max_steps:
                break
        epoch, skip = epoch + 1, 0
    bar.close()
    return _save_final(run, out, cfg.stage, step, history)


def _save_final(run: _Run, out: Path, stage: int, step: int, history: dict[str, list[float]]) -> Path:
    final = out / "final"
    acc = run.acc
    acc.wait_for_everyone()
    if acc.is_main_process:
        acc.unwrap_model(run.student).save_pretrained(final)
        run.objective.save(acc, final)
        (final / "train_log.json").write_text(json.dumps({"stage": stage, "steps": step, **history}) + "\n")
    acc.end_training()
    return final


def _save_checkpoint(acc, out: Path, step: int) -> None:
    # every rank writes into one folder, so its temporary name is one they all know (not atomic_path's,
    # which is per process); the main process renames it when all have written
    target = out / "checkpoints" / f"step-{step}"
    tmp = out / "checkpoints" / f".step-{step}.tmp"
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    if acc.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step}) + "\n")
        os.replace(tmp, target)
    acc.wait_for_everyone()


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m gs_encoder.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for f in fields(DistillConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "data":
            ap.add_argument(
                flag, nargs="+", required=True, help="folders of .gs.npy files and/or splat .tar shards"
            )
        elif f.name == "data_upsampling_factors":
            ap.add_argument(
                flag,
                nargs="+",
                type=float,
                default=None,
                help="one rate per --data folder (e.g. 1 0.3): an epoch draws Σ rate × size samples",
            )
        elif f.type in ("bool", bool):
            ap.add_argument(flag, action="store_true")
        elif f.name == "stage":
            ap.add_argument(flag, type=int, required=True, choices=(1, 2))
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            ap.add_argument(flag, type=kind, default=f.default)
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:  # bad settings, or data / an encoder folder that is missing or empty: one line naming it
        final = train(DistillConfig(**vars(args)))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {final}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
