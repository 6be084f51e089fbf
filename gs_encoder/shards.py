"""Dataset-scale fitting: image shards (or folders) in, splat shards out, resumable and multi-worker.

Work is split into units; each unit becomes one output tar:
- an input tar in the img2dataset / DataComp webdataset layout (`<key>.jpg|png|…`, `<key>.txt`,
  `<key>.json`, …) → a tar of the same name with, per sample, `<key>.gs.npy` (float16 [N, 8]),
  `<key>.json` (the input json's fields plus the fit's: canvas, resize, N, PSNR, iterations, source = the
  key) and every other field passed through unchanged; the image itself is dropped;
- a folder of images → tars of `shard_size` images each (`images-000000.tar`, …), keys = relative paths,
  source = the image file's path.

Resumability: a unit is written to a hidden temporary name and renamed when complete, together with
`<name>.errors.jsonl` (undecodable samples: key and reason) and `<name>.stats.json`, written before the
rename. A finished unit is its tar; a rerun skips those and redoes the rest, so killing the job at any
moment and rerunning yields every sample exactly once. Workers (torchrun ranks, `RANK`/`WORLD_SIZE`)
take units `rank, rank + world, …`: disjoint, and each worker needs no communication.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cuda_ext.files import atomic_path, atomic_write_bytes

from .fitting.fit import FitConfig, fit_images, fit_sidecar
from .image_io import DEFAULT_MAX_PIXELS, RESIZE_MODES, ImageLoadError, decode_image
from .splat_io import npy_bytes, sidecar_path, splat_npy_bytes

__all__ = ["IMAGE_EXTS", "ShardJobConfig", "Unit", "plan_units", "read_samples", "run_shard_job", "tar_add"]

logger = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")


@dataclass
class ShardJobConfig:
    """Settings of a `gsv fit-shards` job."""

    fit: FitConfig = field(default_factory=FitConfig)  # the per-image fit
    size: int = 224  # canvas side S
    resize: str = "pad"  # pad | crop | resize
    background: str = "white"  # under transparent pixels
    max_pixels: int = DEFAULT_MAX_PIXELS  # refuse larger images (recorded as errors)
    batch_size: int = 16  # images fitted together
    shard_size: int = 1000  # images per output tar when the input is a folder
    device: str = "cpu"  # cpu | cuda (cuda:LOCAL_RANK under torchrun)
    teacher: str | None = (
        None  # "ARCH[:TAG_OR_PATH]": store the open_clip teacher's embedding as <key>.t16.npy
    )
    teacher_config: str | None = None  # an open_clip architecture JSON to register for the teacher

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.batch_size < 1 or self.shard_size < 1 or self.size < 1:
            raise ValueError("batch_size, shard_size and size must be ≥ 1")


@dataclass
class Unit:
    """One piece of work: an output tar, or (LLaVA input) a chunk of the splat-cache folder."""

    name: str  # output file name (e.g. 00000012.tar) or chunk name (llava-000003)
    tar: Path | None = None  # an input tar, or
    files: list[Path] | None = None  # image files, keyed by their path relative to `root`, or
    root: Path | None = None
    images: list[tuple[str, Path]] | None = None  # (key, image path) of a LLaVA chunk → cache files

    @property
    def to_cache(self) -> bool:
        return self.images is not None


def _split_key(member_name: str) -> tuple[str, str]:
    """webdataset's rule: the key is the path up to the first dot of the basename."""
    head, base = os.path.split(member_name)
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext


def _llava_units(json_path: Path, image_folder: Path | None, shard_size: int) -> list[Unit]:
    """Chunks of the distinct raster images a LLaVA-1.5 JSON file names (keys: the path without suffix)."""
    if image_folder is None:
        raise ValueError(
            f"{json_path}: LLaVA JSON input needs --image-folder (the folder its 'image' paths are relative to)"
        )
    try:
        records = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{json_path}: not valid JSON ({e})") from e
    if not isinstance(records, list):
        raise ValueError(f"{json_path}: expected a list of LLaVA records, got {type(records).__name__}")
    names = set()
    for r in records:
        img = r.get("image") if isinstance(r, dict) else None
        for name in [img] if isinstance(img, str) else (img or []):
            if not str(name).endswith(".gs.npy"):  # already splats: nothing to fit
                names.add(str(name))
    images = [(str(Path(n).with_suffix("")), image_folder / n) for n in sorted(names)]
    return [
        Unit(f"{json_path.stem}-{k // shard_size:06d}", images=images[k : k + shard_size])
        for k in range(0, len(images), shard_size)
    ]


def plan_units(
    inputs: list[str | os.PathLike], shard_size: int = 1000, image_folder: str | os.PathLike | None = None
) -> list[Unit]:
    """Units of work for the given tars, folders or LLaVA JSON files (sorted: every worker sees one list)."""
    units: list[Unit] = []
    for item in inputs:
        p = Path(item)
        if p.is_file() and p.suffix == ".json":
            units += _llava_units(p, Path(image_folder) if image_folder else None, shard_size)
        elif p.is_file() and p.suffix == ".tar":
            units.append(Unit(p.name, tar=p))
        elif p.is_dir():
            tars = sorted(p.glob("*.tar"))
            if tars:
                units += [Unit(t.name, tar=t) for t in tars]
                continue
            images = sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower().lstrip(".") in IMAGE_EXTS
            )
            if not images:
                raise FileNotFoundError(f"{p}: no .tar shards and no images inside")
            for k in range(0, len(images), shard_size):
                units.append(
                    Unit(f"{p.name}-{k // shard_size:06d}.tar", files=images[k : k + shard_size], root=p)
                )
        else:
            raise FileNotFoundError(f"{p}: not a .tar file, a LLaVA .json file or a folder")
    names = [u.name for u in units]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"two inputs would write the same output shard(s) {dup}; give them distinct names")
    return units


def read_samples(unit: Unit) -> Iterator[tuple[str, dict[str, bytes], str]]:
    """(key, {ext: bytes}, source) for each sample of a unit, in order; a missing LLaVA image yields {} (an
    error). `source` is the image file's path when the unit reads files (the sidecar's `source`, which stage-1
    patch distillation loads the image from), else the sample's key in its tar."""
    if unit.images is not None:
        for key, path in unit.images:
            fields = {path.suffix.lower().lstrip(".") or "img": path.read_bytes()} if path.is_file() else {}
            caption = path.with_suffix(".txt")
            if fields and caption.is_file():
                fields["txt"] = caption.read_bytes()
            yield key, fields, str(path)
        return
    if unit.files is not None:
        for f in unit.files:
            rel = f.relative_to(unit.root).with_suffix("")
            key = str(rel).replace(".", "_")  # a dot would split the key when read back
            fields = {f.suffix.lower().lstrip("."): f.read_bytes()}
            caption = f.with_suffix(".txt")
            if caption.exists():
                fields["txt"] = caption.read_bytes()
            yield key, fields, str(f)
        return
    try:
        with tarfile.open(unit.tar) as tf:
            key, fields = None, {}
            for member in tf:
                if not member.isfile():
                    continue
                k, ext = _split_key(member.name)
                if key is not None and k != key:
                    yield key, fields, key
                    fields = {}
                key = k
                fields[ext] = tf.extractfile(member).read()
            if key is not None:
                yield key, fields, key
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ImageLoadError(f"{unit.tar}: unreadable tar shard ({e})") from e


def count_samples(unit: Unit) -> int:
    """Samples in a unit (tar headers only are read), for the progress bar's ETA; 0 if unreadable."""
    if unit.images is not None:
        return len(unit.images)
    if unit.files is not None:
        return len(unit.files)
    try:
        with tarfile.open(unit.tar) as tf:
            return len({_split_key(m.name)[0] for m in tf.getmembers() if m.isfile()})
    except (tarfile.TarError, EOFError, OSError):
        return 0


def tar_add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add one webdataset member (`<key>.<ext>`) to an open tar, with a fixed mtime (reproducible tars)."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible archives
    tf.addfile(info, io.BytesIO(data))


def _sample_meta(name: str, fields: dict[str, bytes]) -> dict:
    """The sample's own .json (an empty dict without one); ImageLoadError when it cannot be read, so the
    sample is recorded as failed rather than written with its metadata silently dropped."""
    if "json" not in fields:
        return {}
    try:
        meta = json.loads(fields["json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ImageLoadError(f"{name}.json: not valid JSON ({e}); fix or remove that field") from e
    if not isinstance(meta, dict):
        raise ImageLoadError(f"{name}.json: holds a {type(meta).__name__}, not a JSON object")
    return meta


def _fit_batch(batch, cfg: ShardJobConfig, device, teacher=None) -> list[tuple[str, dict, dict[str, bytes]]]:
    images = torch.stack([img for _, img, _, _, _ in batch]).to(device)
    results = fit_images(images, cfg.fit)
    if teacher is not None:  # the teacher sees the same canvas image the splats were fitted to
        embeds = teacher(images).cpu().numpy().astype(np.float16)
        for (_, _, fields, _, _), e in zip(batch, embeds, strict=True):
            fields["t16.npy"] = npy_bytes(e)
    out = []
    for (key, img, fields, meta, source), r in zip(batch, results, strict=True):
        meta.update(fit_sidecar(r, img, cfg.fit, cfg.resize, source))
        fields["gs.npy"] = splat_npy_bytes(r.splats, f"{key}.gs.npy")
        out.append((key, meta, fields))
    return out


class _TarSink:
    """Samples into a hidden temporary tar, renamed to the unit's name on commit."""

    def __init__(self, out_dir: Path, unit: Unit):
        self._write = atomic_path(out_dir / unit.name)  # the unit is finished exactly when its tar appears
        self.tmp = self._write.__enter__()
        self.tf = tarfile.open(self.tmp, "w")

    def has(self, key: str) -> bool:
        return False

    def add(self, key: str, meta: dict, fields: dict[str, bytes]) -> None:
        tar_add(self.tf, f"{key}.gs.npy", fields["gs.npy"])
        tar_add(self.tf, f"{key}.json", (json.dumps(meta, sort_keys=True) + "\n").encode())
        for ext, data in fields.items():
            if ext not in ("gs.npy", "json") and ext not in IMAGE_EXTS:
                tar_add(self.tf, f"{key}.{ext}", data)

    def close(self) -> None:
        self.tf.close()

    def commit(self) -> None:
        self._write.__exit__(None, None, None)


class _CacheSink:
    """Samples into `<out>/<key>.gs.npy` + `<key>.json` (LLaVA splat cache), each file atomic."""

    def __init__(self, out_dir: Path, unit: Unit):
        self.out = out_dir

    def has(self, key: str) -> bool:
        return (self.out / f"{key}.gs.npy").exists()

    def add(self, key: str, meta: dict, fields: dict[str, bytes]) -> None:
        path = self.out / f"{key}.gs.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        # sidecar first: a present .gs.npy always has its sidecar
        atomic_write_bytes(sidecar_path(path), (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
        if "t16.npy" in fields:
            atomic_write_bytes(self.out / f"{key}.t16.npy", fields["t16.npy"])
        if "txt" in fields:  # a caption beside the image travels with its splats (SplatFolder reads it)
            atomic_write_bytes(self.out / f"{key}.txt", fields["txt"])
        atomic_write_bytes(path, fields["gs.npy"])

    def close(self) -> None:
        pass

    def commit(self) -> None:
        pass  # the unit's stats file, written last, marks it done


def _done_marker(out_dir: Path, unit: Unit) -> Path:
    return out_dir / (f"{unit.name}.stats.json" if unit.to_cache else unit.name)


def _image_of(unit: Unit, key: str, fields: dict[str, bytes]) -> str:
    """The field holding the image, or raise ImageLoadError saying why there is none."""
    if unit.to_cache:
        if not fields:
            raise ImageLoadError(f"{dict(unit.images)[key]}: file not found")
        return next(iter(fields))
    ext = next((e for e in IMAGE_EXTS if e in fields), None)
    if ext is None:
        raise ImageLoadError(
            f"{unit.name}:{key}: sample has no image field (looked for {', '.join(IMAGE_EXTS)})"
        )
    return ext


def _process_unit(unit: Unit, out_dir: Path, cfg: ShardJobConfig, device, bar, teacher=None) -> dict:
    start = time.perf_counter()
    errors: list[dict] = []
    written, skipped, psnrs, nbytes = 0, 0, [], 0
    sink = _CacheSink(out_dir, unit) if unit.to_cache else _TarSink(out_dir, unit)
    pending: list = []

    def flush():
        nonlocal written, nbytes
        for key, meta, fields in _fit_batch(pending, cfg, device, teacher):
            sink.add(key, meta, fields)
            written += 1
            psnrs.append(meta["psnr"])
            nbytes += meta["num_gaussians"] * 16
        bar.update(len(pending))
        pending.clear()

    try:
        for key, fields, source in read_samples(unit):
            if sink.has(key):  # written by an earlier, interrupted run
                skipped += 1
                bar.update(1)
                continue
            try:
                meta = _sample_meta(f"{unit.name}:{key}", fields)
                ext = _image_of(unit, key, fields)
                name = f"{unit.name}:{key}.{ext}"
                img = decode_image(fields[ext], name, cfg.size, cfg.resize, cfg.background, cfg.max_pixels)
            except ImageLoadError as e:
                errors.append({"key": key, "reason": str(e)})
                logger.warning("skipped %s", e)
                bar.update(1)
                continue
            pending.append((key, img, fields, meta, source))
            if len(pending) >= cfg.batch_size:
                flush()
    except ImageLoadError as e:  # the shard itself is damaged (truncated tar): keep what was read
        errors.append({"key": None, "reason": str(e)})
        logger.warning("%s; keeping the samples read before the damage", e)
    if pending:
        flush()
    sink.close()
    stats = {
        "shard": unit.name,
        "images": written + skipped,
        "failures": len(errors),
        "mean_psnr": float(np.mean(psnrs)) if psnrs else None,
        "payload_bytes": nbytes,
        "seconds": round(time.perf_counter() - start, 3),
    }
    errors_blob = "".join(json.dumps(e) + "\n" for e in errors).encode()
    atomic_write_bytes(out_dir / f"{unit.name}.errors.jsonl", errors_blob)
    atomic_write_bytes(out_dir / f"{unit.name}.stats.json", (json.dumps(stats, indent=2) + "\n").encode())
    sink.commit()  # last: a tar unit is done when its tar appears, a cache unit when its stats file does
    return stats


def summarize(out_dir: Path, units: list[Unit]) -> dict:
    """Aggregate the stats files of the finished units (all workers') into one summary."""
    done = [
        json.loads((out_dir / f"{u.name}.stats.json").read_text())
        for u in units
        if _done_marker(out_dir, u).exists()
    ]
    images = sum(s["images"] for s in done)
    failures = sum(s["failures"] for s in done)
    psnr_sum = sum(s["mean_psnr"] * s["images"] for s in done if s["mean_psnr"] is not None)
    return {
        "shards_total": len(units),
        "shards_done": len(done),
        "images": images,
        "failures": failures,
        "failure_rate": failures / (images + failures) if images + failures else 0.0,
        "mean_psnr": psnr_sum / images if images else None,
        "payload_bytes": sum(s["payload_bytes"] for s in done),
        "seconds": round(sum(s["seconds"] for s in done), 3),
    }


def _teacher(cfg: ShardJobConfig, device: torch.device):
    """The open_clip teacher of cfg.teacher ("ARCH[:TAG_OR_PATH]") whose embeddings go beside the splats."""
    from .teacher import ClipTeacher, build_clip, register_model_config

    if cfg.teacher_config:
        register_model_config(cfg.teacher_config)
    arch, _, weights = cfg.teacher.partition(":")
    return ClipTeacher(build_clip(arch, weights or None)).to(device)


def run_shard_job(
    inputs: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    cfg: ShardJobConfig,
    rank: int | None = None,
    world: int | None = None,
    progress: bool = True,
    image_folder: str | os.PathLike | None = None,
) -> dict:
    """Fit every image of `inputs` into splat shards under `out_dir` (this worker's share).

    Args:
        inputs: tar shards, folders of tars, folders of images, or LLaVA JSON files (then the output is a
            splat cache mirroring the image paths: `<out_dir>/<image path without suffix>.gs.npy`).
        image_folder: the folder LLaVA 'image' paths are relative to.
        rank, world: this worker and the number of workers (default: RANK / WORLD_SIZE, else 0 / 1).
    Returns:
        The job summary (also written to out_dir/summary.json): shards done, images, failures,
        mean PSNR, payload bytes, fitting seconds.
    """
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world = int(os.environ.get("WORLD_SIZE", 1)) if world is None else world
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    device = torch.device(cfg.device)
    if cfg.device == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    units = plan_units(inputs, cfg.shard_size, image_folder)
    mine = units[rank::world]
    for stale in out.glob(".*.tmp*"):  # left by a killed run (atomic_path's names); its unit is redone below
        if any(stale.name.startswith(f".{u.name}.") for u in mine):
            stale.unlink(missing_ok=True)
    todo = [u for u in mine if not _done_marker(out, u).exists()]
    logger.info(
        "rank %d/%d: %d of %d shards to do (%d already finished)",
        rank,
        world,
        len(todo),
        len(mine),
        len(mine) - len(todo),
    )
    teacher = _teacher(cfg, device) if cfg.teacher and todo else None
    total = sum(count_samples(u) for u in todo) if progress else None
    with tqdm(
        total=total, desc=f"fit-shards[{rank}]", unit="img", disable=not progress, dynamic_ncols=True
    ) as bar:
        for u in todo:
            bar.set_postfix(shard=u.name)
            _process_unit(u, out, cfg, device, bar, teacher)
    summary = summarize(out, units)
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary
