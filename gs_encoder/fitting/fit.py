"""Fitting splat sets to images (docs/format.md, Fitting): `FitConfig`, `fit_images`, `fit_sets`, `prune`.

One loop fits on every backend. The images of a batch are fitted together in the padded layout of
docs/format.md, Layout (params [B, Nmax, 8] plus an alive mask [B, Nmax]; padding and pruned Gaussians
are dead rows, so shapes never change and pruning is a new mask), and a batch gives exactly the
per-image results: the loss is a sum of per-image terms and Adam is element-wise. Parameters live in
pixel units of the fitting canvas during the fit (learning rates then mean the same at any S) and are
returned in the canvas units of docs/format.md, Layout.

The loop (`fit_sets`) owns the schedule: it runs the iterations in stretches between the PSNR checks
(every cfg.check_every: early stop, history, progress bar) and the pruning iteration, and reads values
back to the host only there. A `FitOps` of fit_ops.py does the work of each stretch: `torch_ops` (the
pure-torch twins, rendering with the windowed pair list or the compiled CPU op) or `cuda_ops` (cuda_ext's
fused kernels on the GPU, or their CPU emulation); `fit_images` picks one from cfg.backend.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..splat_io import as_stored, sidecar_path, validate_splats
from .backend import BACKENDS, KERNEL_BACKENDS, resolve_backend
from .fit_ops import FitOps, cuda_ops, luminance, prune_mask_torch, torch_ops
from .init import adaptive_init, density_init, random_init, structured_init
from .render import render

__all__ = [
    "INITS",
    "LEARNED_WARMUP",
    "WARMUP_INITS",
    "FitConfig",
    "FitResult",
    "fit_images",
    "fit_sets",
    "fit_sidecar",
    "fitted_with",
    "optimiser_record",
    "record_fields",
    "luminance",
    "prune",
    "psnr",
    "render_psnr",
]

logger = logging.getLogger(__name__)

_STEP_SIZES = ("lr_xy", "lr_chol", "lr_rgb")
# fp16 rounding of a splat file's values alone keeps its render below about this PSNR (docs/fitting.md)
FP16_PSNR_LIMIT = 60.0
INITS = ("structured", "random", "adaptive", "density", "learned")
# Warm-up iterations of FitConfig.lr_warmup = None after the close starts (learned, density): Adam's first
# steps are full-size whatever the gradient (m̂ / √v̂ = ±1) and would throw the start away (docs/fitting.md).
LEARNED_WARMUP = 10
WARMUP_INITS = ("learned", "density")  # the inits that FitConfig.lr_warmup = None warms up after


def _opt(help: str, flag: str | None = None, **argparse_kwargs) -> dict:
    """A FitConfig field's metadata: its help text and, unless flag is "", its `gsv` flag (--<name>)."""
    return {"help": help, "flag": flag, "argparse": argparse_kwargs}


@dataclass
class FitConfig:
    """Settings of one fitting job: the one place each setting, its default and its help text are written
    (`gsv`'s fit flags are made from these fields by `add_arguments`; docs/fitting.md says why each default)."""

    num_gaussians: int = field(default=3136, metadata=_opt("N per image before pruning"))
    iters: int = field(default=3000, metadata=_opt("Adam iterations of the main fit"))
    init: str = field(
        default="learned",
        metadata=_opt(
            "initialisation: the learned network on the density grid, the density grid alone (warped towards "
            "detail), the uniform grid, structure-tensor shapes on it, or random",
            choices=INITS,
        ),
    )
    init_weights: str | None = field(
        default=None, metadata=_opt("safetensors weights of --init learned (default: the shipped file)")
    )
    lambda_l1: float = field(
        default=0.0, metadata=_opt("L1 weight on colours (drives dim Gaussians to 0 for pruning)")
    )
    tau: float | None = field(default=None, metadata=_opt("prune Gaussians with luminosity below this"))
    prune_at: int | None = field(
        default=None, metadata=_opt("prune at this main-fit iteration instead of after the fit (needs --tau)")
    )
    finetune_iters: int = field(default=0, metadata=_opt("Adam iterations after pruning (own schedule)"))
    coarse_iters: int = field(
        default=0, metadata=_opt("coarse-to-fine: iterations on the canvas shrunk --coarse-factor× first")
    )
    coarse_factor: int = field(default=2, metadata=_opt("canvas shrink of --coarse-iters"))
    # the step sizes share one flag, --lr XY CHOL RGB (add_arguments)
    lr_xy: float = field(default=0.4, metadata=_opt("Adam step size of centres, pixels", flag=""))
    lr_chol: float = field(
        default=0.16, metadata=_opt("Adam step size of the Cholesky factors, pixels", flag="")
    )
    lr_rgb: float = field(default=0.014, metadata=_opt("Adam step size of colours", flag=""))
    lr_final: float = field(
        default=0.05, metadata=_opt("fraction of the step sizes left at the last iteration")
    )
    lr_decay: float = field(
        default=0.3,
        metadata=_opt(
            "the step sizes decay (cosine) over this last fraction of the iterations (1: the whole fit)"
        ),
    )
    betas: tuple[float, float] = field(
        default=(0.9, 0.98), metadata=_opt("Adam's moment decay rates", nargs=2, metavar=("B1", "B2"))
    )
    lr_warmup: int | None = field(
        default=None,
        metadata=_opt(
            f"ramp the step sizes up over these first iterations (default: {LEARNED_WARMUP} after --init "
            f"{' / '.join(WARMUP_INITS)}, 0 after the others)"
        ),
    )
    target_psnr: float | None = field(
        default=None,
        metadata=_opt(
            "PSNR (dB) to reach: with --max-gaussians, the fewest Gaussians that reach it (rate control); "
            "alone, stop an image's fit early once it does"
        ),
    )
    max_gaussians: int | None = field(
        default=None,
        metadata=_opt(
            "rate control: choose N per image, at most this many, for --target-psnr or --target-bytes "
            "(--num-gaussians is then not used; docs/fitting.md, Rate control)"
        ),
    )
    target_bytes: int | None = field(
        default=None,
        metadata=_opt("rate control: the most Gaussians whose .gsq file holds in this many bytes"),
    )
    check_every: int = field(
        default=50, metadata=_opt("iterations between PSNR checks (early stop, progress)", flag="")
    )
    min_scale_px: float = field(
        default=0.3,
        metadata=_opt("lower bound on l11 and l22, pixels (narrower falls between pixels)", flag=""),
    )
    plan_margin: float = field(default=0.0, metadata=_opt("extra render-window radius, pixels", flag=""))
    seed: int = field(default=0, metadata=_opt("seed of the random init"))
    backend: str = field(
        default="auto",
        metadata=_opt(
            "auto (CUDA kernels / compiled CPU op when built, else torch) | torch | cpp | cuda", flag=""
        ),
    )

    @classmethod
    def argument(cls, name: str, default_note: str | None = None) -> dict:
        """argparse keywords of field `name`'s flag: its type (or choices), nargs and help with its default
        (or `default_note`, e.g. "the model's processor's", when the flag falls back to something else).
        The flag's own default is None: not given."""
        f = next(f for f in fields(cls) if f.name == name)
        kwargs = dict(f.metadata["argparse"])
        kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(str(f.type))
        if "nargs" in kwargs:
            kind = float
        if kind is not None and "choices" not in kwargs:
            kwargs["type"] = kind
        value = f.default
        shown = " ".join(f"{x:g}" for x in value) if isinstance(value, tuple) else value
        shown = f"{shown:g}" if isinstance(shown, float) else shown
        note = default_note or (None if value is None or name == "lr_warmup" else shown)
        return {
            **kwargs,
            "default": None,
            "help": f.metadata["help"] + (f" (default {note})" if note else ""),
        }

    @classmethod
    def add_arguments(cls, parser) -> None:
        """Add a command-line flag for every field that has one (--num-gaussians, ...; --lr XY CHOL RGB for
        the step sizes). Each defaults to None (not given): `from_args` then keeps the field's default."""
        for f in fields(cls):
            if f.metadata["flag"] != "":
                parser.add_argument(
                    f.metadata["flag"] or "--" + f.name.replace("_", "-"), dest=f.name, **cls.argument(f.name)
                )
        steps = "{:g} {:g} {:g}".format(*(f.default for f in fields(cls) if f.name in _STEP_SIZES))
        parser.add_argument(
            "--lr",
            type=float,
            nargs=3,
            default=None,
            metavar=("XY", "CHOL", "RGB"),
            help=f"Adam's step sizes of centres and Cholesky factors (pixels) and colours (default {steps})",
        )

    @classmethod
    def from_args(cls, args, **overrides) -> FitConfig:
        """The FitConfig of parsed `add_arguments` flags: each flag given replaces its field's default."""
        given = {
            f.name: getattr(args, f.name)
            for f in fields(cls)
            if f.metadata["flag"] != "" and hasattr(args, f.name)
        }
        if getattr(args, "lr", None) is not None:
            given.update(zip(_STEP_SIZES, args.lr, strict=True))
        return cls(**{k: v for k, v in given.items() if v is not None}, **overrides)

    def load_init(self) -> None:
        """Read the learned init's weights now, so that a job fails on an unusable file before any work."""
        if self.init == "learned":
            from .learned_init import load_learned_init

            load_learned_init(self.init_weights)

    @property
    def warmup_iters(self) -> int:
        """lr_warmup with None resolved by the init."""
        if self.lr_warmup is not None:
            return self.lr_warmup
        return LEARNED_WARMUP if self.init in WARMUP_INITS else 0

    @classmethod
    def defaults(cls) -> dict:
        """{setting: default} of every field (what a command line or processor shows or falls back to)."""
        return {f.name: f.default for f in fields(cls)}

    def __post_init__(self):
        if not isinstance(self.num_gaussians, int) or self.num_gaussians < 1:
            raise ValueError(f"num_gaussians must be a positive int, got {self.num_gaussians!r}")
        for name in ("iters", "finetune_iters", "coarse_iters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name} must be an int ≥ 0, got {value!r}")
        if (
            isinstance(self.coarse_factor, bool)
            or not isinstance(self.coarse_factor, int)
            or self.coarse_factor < 2
        ):
            raise ValueError(f"coarse_factor must be an int ≥ 2, got {self.coarse_factor!r}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; valid: {', '.join(INITS)}")
        if self.init == "learned":
            from .learned_init import check_request, check_weights_path

            check_request(self.num_gaussians, None)
            # a missing file is an error now; reading it (safetensors) waits for a fit or `load_init`
            check_weights_path(self.init_weights)
        if self.lambda_l1 < 0:
            raise ValueError(f"lambda_l1 must be ≥ 0, got {self.lambda_l1}")
        if self.tau is not None and self.tau < 0:
            raise ValueError(f"tau must be ≥ 0 or None, got {self.tau}")
        if self.prune_at is not None:
            if isinstance(self.prune_at, bool) or not isinstance(self.prune_at, int) or self.prune_at < 0:
                raise ValueError(f"prune_at must be an int ≥ 0 or None, got {self.prune_at!r}")
            if self.tau is None:
                raise ValueError("prune_at needs tau (the luminosity threshold to prune with)")
        for name in ("lr_xy", "lr_chol", "lr_rgb", "min_scale_px"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("lr_final", "lr_decay"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.lr_warmup is not None and (
            isinstance(self.lr_warmup, bool) or not isinstance(self.lr_warmup, int) or self.lr_warmup < 0
        ):
            raise ValueError(f"lr_warmup must be an int ≥ 0 or None, got {self.lr_warmup!r}")
        betas = tuple(self.betas) if isinstance(self.betas, (tuple, list)) else ()
        if len(betas) != 2 or not all(isinstance(b, numbers.Real) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.check_every < 1:
            raise ValueError(f"check_every must be ≥ 1, got {self.check_every}")
        self._check_rate_control()

    def _check_rate_control(self) -> None:
        if self.target_psnr is not None and not 0 < self.target_psnr <= FP16_PSNR_LIMIT:
            raise ValueError(
                f"target_psnr must be in (0, {FP16_PSNR_LIMIT:g}] dB, got {self.target_psnr}: splat files keep "
                f"values in fp16, whose rounding alone keeps a render below about {FP16_PSNR_LIMIT:g} dB"
            )
        for name in ("max_gaussians", "target_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an int ≥ 1 or None, got {value!r}")
        if self.max_gaussians is None:
            if self.target_bytes is not None:
                raise ValueError("target_bytes needs max_gaussians (rate control chooses N up to it)")
            return
        if (self.target_psnr is None) == (self.target_bytes is None):
            raise ValueError("max_gaussians (rate control) needs one target: target_psnr or target_bytes")
        if self.tau is not None or self.coarse_iters:
            raise ValueError("rate control (max_gaussians) does not combine with tau pruning or coarse_iters")
        if self.init == "learned":
            from .learned_init import check_request

            check_request(self.max_gaussians, None)


@dataclass
class FitResult:
    """One fitted image."""

    splats: torch.Tensor  # [N, 8] float32, canvas units, l11 > 0, l22 > 0
    psnr: float  # dB, of the clamped render of the returned splats
    psnr_unpruned: float  # dB before pruning (equal to psnr without pruning)
    num_initial: int  # N before pruning
    iters: int  # main-fit iterations actually run (early stop may cut them)
    seconds: float  # wall time of the batch this image was in, divided by the batch size
    history: list[tuple[int, float]] = field(default_factory=list)  # (iteration, PSNR) at each check
    target_reached: bool | None = None  # rate control: whether the image reached its target (None: no target)

    @property
    def num_gaussians(self) -> int:
        return int(self.splats.shape[0])


def psnr(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of the [0, 1]-clamped image against the target, over all but the first dim if batched."""
    dims = tuple(range(1, image.dim())) if image.dim() == 4 else tuple(range(image.dim()))
    mse = (image.clamp(0, 1) - target).pow(2).mean(dims)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


def render_psnr(splats: torch.Tensor, image: torch.Tensor, backend: str = "auto") -> float:
    """PSNR in dB of one set's render [N, 8] against its image [3, S, S] (clamped, as FitResult.psnr)."""
    return float(psnr(render(splats, size=image.shape[-1], backend=backend), image))


def prune(splats: torch.Tensor, tau: float) -> torch.Tensor:
    """Drop Gaussians whose luminosity is below tau; the brightest one always stays. [N, 8] → [M, 8]."""
    alive = torch.ones(1, splats.shape[0], dtype=torch.bool, device=splats.device)
    return splats[prune_mask_torch(splats[None], alive, tau)[0]]


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must have shape [B, 3, S, S], got {list(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point in [0, 1], got {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or Inf")


def _initial_sets(images: torch.Tensor, cfg: FitConfig, initial) -> list[torch.Tensor]:
    """The starting splat sets, one [N_b, 8] per image in canvas units: `initial` or cfg.init's."""
    if initial is not None:
        if len(initial) != images.shape[0]:
            raise ValueError(
                f"initial must hold one splat set per image ({images.shape[0]}), got {len(initial)}"
            )
        for k, s in enumerate(initial):
            validate_splats(s, f"initial[{k}]")
        return [s.to(images.device, torch.float32) for s in initial]
    if cfg.init == "structured":
        return list(structured_init(images, cfg.num_gaussians))
    if cfg.init == "adaptive":
        return list(adaptive_init(images, cfg.num_gaussians, backend=cfg.backend))
    if cfg.init == "density":
        return list(density_init(images, cfg.num_gaussians, backend=cfg.backend))
    if cfg.init == "learned":
        from .learned_init import learned_init

        return list(learned_init(images, cfg.num_gaussians, cfg.init_weights, backend=cfg.backend))
    gen = torch.Generator(device=images.device).manual_seed(cfg.seed)
    return list(random_init(images, cfg.num_gaussians, gen))


def fit_images(
    images: torch.Tensor,
    cfg: FitConfig | None = None,
    progress: bool = False,
    initial: list[torch.Tensor] | None = None,
) -> list[FitResult]:
    """Fit one splat set per image.

    Args:
        images: [B, 3, S, S] in [0, 1] (see `gs_encoder.image_io.load_image`); the device decides where
            the fit runs.
        cfg: FitConfig (defaults if None).
        progress: show a tqdm bar over iterations.
        initial: optional starting splat sets, one [N_b, 8] per image (N_b may differ), instead of
            cfg.init; for refining or fine-tuning after pruning.
    Returns:
        One FitResult per image, in order.
    Raises:
        ValueError / TypeError on bad images or settings; ImportError when cfg.backend names a compiled
        backend that is not built.

    With cfg.coarse_iters > 0 the initial sets are first fitted to the images shrunk cfg.coarse_factor×
    (canvas units do not depend on the canvas size), then the main fit starts from there.

    The backend (resolve_backend) picks the ops of the loop: "cuda" and "cuda-emu" run cuda_ext's fused
    kernels (`cuda_ops`), "cpp" and "torch" the pure-torch twins (`torch_ops`); the results agree up to
    float32 summation order. "auto" on CUDA tensors without the kernels falls back to "torch" with one
    warning.
    """
    cfg = cfg or FitConfig()
    _check_images(images)
    if cfg.max_gaussians is not None and initial is None:
        from .rate_control import fit_to_target

        return fit_to_target(images, cfg, progress)
    backend = resolve_backend(cfg.backend, images.device)
    start = time.perf_counter()
    images = images.float()
    targets = images.permute(0, 2, 3, 1).contiguous()  # [B, S, S, 3]
    sets = _initial_sets(images, cfg, initial)

    def new_ops() -> FitOps:  # one per canvas: the torch ops keep a render plan of their canvas
        if backend in KERNEL_BACKENDS:
            return cuda_ops(emulate=backend == "cuda-emu")
        return torch_ops(backend, cfg.plan_margin)

    if cfg.coarse_iters > 0:
        sets = _coarse_fit(sets, images, cfg, new_ops(), progress)
    return fit_sets(sets, targets, cfg, new_ops(), progress, start)


def _coarse_fit(
    sets, images: torch.Tensor, cfg: FitConfig, ops: FitOps, progress: bool
) -> list[torch.Tensor]:
    """The coarse stage of coarse-to-fine: cfg.coarse_iters iterations against the images area-averaged to
    S // cfg.coarse_factor. Returns the sets in canvas units on the images' device."""
    size = images.shape[-1] // cfg.coarse_factor
    if size < 1:
        raise ValueError(
            f"coarse_factor {cfg.coarse_factor} leaves no pixel of the {images.shape[-1]}² canvas"
        )
    small = torch.nn.functional.interpolate(images, size=(size, size), mode="area")
    coarse = replace(cfg, iters=cfg.coarse_iters, coarse_iters=0, tau=None, prune_at=None, target_psnr=None)
    targets = small.permute(0, 2, 3, 1).contiguous()
    results = fit_sets(sets, targets, coarse, ops, progress, desc=f"coarse fit ({size}²)")
    return [r.splats.to(images.device) for r in results]


def fit_sets(
    sets: list[torch.Tensor],  # one [N_b, 8] initial splat set per image, canvas units, on the device
    targets: torch.Tensor,  # [B, S, S, 3] float32
    cfg: FitConfig,
    ops: FitOps,
    progress: bool = False,
    start: float | None = None,  # perf_counter at the start of the job (FitResult.seconds); None: now
    desc: str = "fit",  # label of the progress bar
) -> list[FitResult]:
    """The fitting loop behind fit_images, on the backend of `ops`: main fit, pruning (at cfg.prune_at
    or after the fit), fine-tune, results. cfg.backend is not read here; `ops` decides.

    Returns:
        One FitResult per image, in order.
    """
    start = time.perf_counter() if start is None else start
    size = targets.shape[1]
    counts = [s.shape[0] for s in sets]
    params = torch.nn.utils.rnn.pad_sequence([s.float() for s in sets], batch_first=True).contiguous()
    params[..., 0:5] *= size  # pixel units
    alive = (
        torch.arange(params.shape[1], device=params.device)[None, :]
        < torch.tensor(counts, device=params.device)[:, None]
    )
    prune_at = cfg.prune_at if cfg.tau is not None else None
    alive, iters_run, history, score_full = _optimise(
        params, alive, targets, cfg.iters, cfg, ops, progress, desc, prune_at
    )
    pruned = score_full is not None
    if not pruned:
        score_full = _psnr(ops, params, alive, targets)
    score = score_full
    if cfg.tau is not None:
        if not pruned:
            alive = ops.prune_mask(params, alive, cfg.tau)
        if cfg.finetune_iters > 0:
            ft = FitConfig(**{**cfg.__dict__, "target_psnr": None})  # fresh Adam state, own schedule
            alive, *_ = _optimise(params, alive, targets, cfg.finetune_iters, ft, ops, progress, "finetune")
        score = _psnr(ops, params, alive, targets)
    rows = [params[b][alive[b]] for b in range(params.shape[0])]
    return _results(rows, size, score, score_full, counts, iters_run, history, start)


def _optimise(params, alive, targets, iters, cfg: FitConfig, ops: FitOps, progress, desc, prune_at=None):
    """Adam on params [B, Nmax, 8] (pixel units, in place) against targets [B, S, S, 3].

    Early stop is per image: once an image reaches cfg.target_psnr at a check, its Gaussians stop
    moving. With `prune_at`, the Gaussians under cfg.tau are dropped before that iteration (Adam state
    kept). Returns (alive, iters_run [B], history, PSNR [B] just before pruning or None).
    """
    num_images = params.shape[0]
    exp_avg, exp_avg_sq = torch.zeros_like(params), torch.zeros_like(params)
    active = torch.ones(num_images, dtype=torch.bool, device=params.device)
    iters_run = [0] * num_images
    history: list[list[tuple[int, float]]] = [[] for _ in range(num_images)]
    score_unpruned = None
    step_args = {
        "iters_total": iters,
        "lr": (cfg.lr_xy, cfg.lr_chol, cfg.lr_rgb),
        "lr_final": cfg.lr_final,
        "lr_decay": cfg.lr_decay,
        "lr_warmup": cfg.warmup_iters,
        "betas": cfg.betas,
        "lambda_l1": cfg.lambda_l1,
        "min_scale": cfg.min_scale_px,
    }
    starts, checks = _stops(iters, cfg.check_every, prune_at)
    bar = tqdm(total=iters, desc=desc, disable=not progress, leave=False, unit="it")
    for k, it in enumerate(starts):
        if it == prune_at:
            score_unpruned = _psnr(ops, params, alive, targets)
            alive = ops.prune_mask(params, alive, cfg.tau)
        if it in checks:
            score = _psnr(ops, params, alive, targets).cpu()
            was_active = active.cpu()
            for b in range(num_images):
                if was_active[b]:
                    history[b].append((it, float(score[b])))
            if cfg.target_psnr is not None:
                active &= (score < cfg.target_psnr).to(active.device)
            bar.set_postfix(psnr=f"{float(score.mean()):.2f}")
            if not bool(active.any()):
                break
        end = starts[k + 1] if k + 1 < len(starts) else iters
        now_active = active.cpu()
        for b in range(num_images):
            iters_run[b] += (end - it) * int(now_active[b])
        ops.fit_steps(
            params, exp_avg, exp_avg_sq, alive, active, targets, it0=it, num_steps=end - it, **step_args
        )
        bar.update(end - it)
    bar.close()
    return alive, iters_run, history, score_unpruned


def _stops(iters: int, check_every: int, prune_at: int | None) -> tuple[list[int], set[int]]:
    """Where the stretches of fit_steps start (the checks and the prune iteration), and the checks:
    every check_every-th iteration from 0 and the last one."""
    checks = set(range(0, iters, check_every)) | ({iters - 1} if iters > 0 else set())
    starts = checks | ({prune_at} if prune_at is not None and prune_at < iters else set())
    return sorted(starts), checks


def _psnr(ops: FitOps, params, alive, targets) -> torch.Tensor:
    """PSNR [B] of the alive Gaussians, rendered by the loop's backend."""
    with torch.no_grad():
        return psnr(ops.render(params, alive, targets.shape[1]), targets)


def _canonical(params: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel-unit parameters → canvas units with l11 > 0, l22 > 0 (Σ = LLᵀ is unchanged by the flips)."""
    out = params.detach().clone()
    flip1 = out[:, 2] < 0  # negating column 1 of L, (l11, l21), keeps Σ
    out[flip1, 2:4] = -out[flip1, 2:4]
    out[:, 4] = out[:, 4].abs()
    out[:, 0:5] /= size
    return out.float()


def _results(rows, size, score, score_full, counts, iters_run, history, start) -> list[FitResult]:
    """One FitResult per image from its pixel-unit rows [N_b, 8] and the per-image figures."""
    seconds = (time.perf_counter() - start) / len(rows)
    return [
        FitResult(
            splats=_canonical(r, size).cpu(),
            psnr=float(score[b]),
            psnr_unpruned=float(score_full[b]),
            num_initial=counts[b],
            iters=iters_run[b],
            seconds=seconds,
            history=history[b],
        )
        for b, r in enumerate(rows)
    ]


def fit_sidecar(result: FitResult, target: torch.Tensor, cfg: FitConfig, resize: str, source: str) -> dict:
    """The `<name>.json` fields of one fitted image (docs/format.md).

    `psnr` is that of the stored fp16 splats against `target` [3, S, S] (`psnr_fp32` before rounding),
    rendered on the target's device.
    """
    from .learned_init import weights_id

    size = target.shape[-1]
    with torch.no_grad():
        splats = as_stored(result.splats).to(target.device)
        stored = float(psnr(render(splats, size=size, backend=cfg.backend), target))
    return {
        "source": source,
        "canvas": size,
        "resize": resize,
        "num_gaussians_initial": result.num_initial,
        "num_gaussians": result.num_gaussians,
        "psnr": round(stored, 4),
        "psnr_fp32": round(result.psnr, 4),
        "psnr_unpruned": round(result.psnr_unpruned, 4),
        "fit_iters": result.iters,
        "finetune_iters": cfg.finetune_iters if cfg.tau is not None else 0,
        "coarse_iters": cfg.coarse_iters,
        "coarse_factor": cfg.coarse_factor if cfg.coarse_iters else None,
        "init": cfg.init,
        **(
            {"init_weights": cfg.init_weights, "init_weights_id": weights_id(cfg.init_weights)}
            if cfg.init == "learned"
            else {}
        ),
        **optimiser_record(cfg),
        **(
            {
                "max_gaussians": cfg.max_gaussians,
                "target_psnr": cfg.target_psnr,
                "target_bytes": cfg.target_bytes,
                "target_reached": result.target_reached,
            }
            if cfg.max_gaussians is not None
            else {}
        ),
        "lambda_l1": cfg.lambda_l1,
        "tau": cfg.tau,
        "prune_at": cfg.prune_at if cfg.tau is not None else None,
        "backend": resolve_backend(cfg.backend, target.device),
        "device": str(target.device),
        "seconds": round(result.seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def optimiser_record(cfg: FitConfig) -> dict:
    """The optimiser of a fit as sidecars record it (docs/format.md); processors save it with a `fit_` prefix."""
    return {
        "lr": [cfg.lr_xy, cfg.lr_chol, cfg.lr_rgb],
        "lr_final": cfg.lr_final,
        "lr_decay": cfg.lr_decay,
        "lr_warmup": cfg.warmup_iters,
        "betas": list(cfg.betas),
    }


def record_fields(record: dict) -> dict:
    """The FitConfig fields of an optimiser_record (what of it is present): its inverse."""
    out = {k: record[k] for k in ("lr_final", "lr_decay", "lr_warmup") if k in record}
    if "betas" in record:
        out["betas"] = tuple(float(b) for b in record["betas"])
    if "lr" in record:
        out.update(zip(_STEP_SIZES, (float(x) for x in record["lr"]), strict=True))
    return out


# settings of fitting that fitted_with reads back from sidecars
_RECORDED = (
    "num_gaussians_initial",
    "canvas",
    "resize",
    "init",
    "init_weights_id",
    "init_weights",
    *optimiser_record(FitConfig(init="structured")),
)


def fitted_with(folder: str | os.PathLike, limit: int = 32) -> tuple[dict, int]:
    """How the splats of a folder (`gsv fit` / `gsv fit-shards` output) were fitted, from their sidecars.

    Reads up to `limit` sidecars (`<name>.json` beside `<name>.gs.npy`, docs/format.md). Returns (settings,
    files read): each of num_gaussians_initial, canvas, resize, init, init_weights_id (with init_weights,
    the file as it was given; absent when the shipped weights were used) and the optimiser_record settings
    that all of them agree on (a setting some sidecar lacks is left out), so a consumer that fits more images
    can fit them like these."""
    seen: dict[str, set] = {k: set() for k in _RECORDED}
    read = 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if not name.endswith(".gs.npy") or read >= limit:
                continue
            try:
                meta = json.loads(sidecar_path(Path(root) / name).read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(meta, dict):
                continue
            read += 1
            for k in _RECORDED:
                v = meta.get(k)
                seen[k].add(tuple(v) if isinstance(v, list) else v)
        if read >= limit:
            break
    agreed = {k: next(iter(v)) for k, v in seen.items() if len(v) == 1 and None not in v}
    for k in ("betas", "lr"):
        if k in agreed:
            agreed[k] = tuple(float(b) for b in agreed[k])
    return agreed, read
