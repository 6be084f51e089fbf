"""Learned initialisation: a small conv network places, shapes and colours a grid's Gaussians.

The network works in units of grid cells, so one set of weights serves any N and any canvas size (the
structured init's range, 1 ≤ N ≤ S²; trained on cells of 3–12 px, e.g. N = 400…5600 at 224²). For N
Gaussians on an S×S canvas the grid has rows × cols cells of side s = S/cols px (init.grid_shape). Below,
for the structured grid; with `base = "density"` (the shipped weights) the same rows × cols cells are those
of the density init (init.density_grid: smaller where the image has detail), the statistics are exact
means over each half of its cells, and moves, sizes and gradients are in units of each cell's own width
and height, the colours relative to the density init's starting ones:

1. Per-half-cell statistics of the image (mean colour, mean squared colour, luminance gradient and its
   structure tensor, both in units of one cell) on a 2·rows × 2·cols grid, plus log(s) as a constant
   channel (how much detail one Gaussian has to cover).
2. A conv at half-cell resolution, a stride-2 conv down to the cell grid and residual convs there.
3. A 1×1 head with nine numbers per cell, decoded relative to the structured init (init.structured_init):
   the centre moves by at most `reach` cells, l11 and l22 are the structured σ = s/2 times a factor in
   [e^{−2}, e^{2}] (never below MIN_SCALE_PX), |l21| < s, and the colour is the structured colour times a
   gain in [e^{−2}, e^{2}] plus a residual in (−0.5, 0.5).
   The head starts at zero, so an untrained network gives exactly the structured init.
   With `passes` > 1, each further pass renders the current splats and a second small network (shared by
   the passes) corrects the nine numbers from the per-half-cell residual (mean and mean square).
4. Optionally (`colour_iters`, default COLOUR_ITERS) the colours are then solved for in least squares:
   the render is linear in the colours, so a few conjugate-gradient steps on the normal equations (one
   render and one colour gradient each, per image) give the best colours for the predicted geometry.

The Gaussians come out in the layout of docs/format.md: [B, N, 8] rows (x, y, l11, l21, l22, r, g, b) in
canvas units, centres inside the canvas, l11, l22 ≥ MIN_SCALE_PX / S. Weights are a safetensors file whose
metadata names the architecture; `gs_encoder/fitting/weights/learned_init.safetensors` ships with the
package and is rebuilt by `python -m gs_encoder.train_init` (see there).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cuda_ext.files import atomic_path

from .init import (
    COLOUR_ITERS,
    MAX_GAUSSIANS,
    DensityGrid,
    _luminance_gradient,
    _render_batch,
    density_grid,
    density_start,
    grid_shape,
    solve_colours,
    structured_init,
)

__all__ = [
    "ARCH",
    "BASES",
    "COLOUR_ITERS",
    "DEFAULT_WEIGHTS",
    "MAX_N",
    "MIN_N",
    "LearnedInitError",
    "SplatInitNet",
    "learned_init",
    "load_learned_init",
    "save_learned_init",
    "weights_id",
]

# format version stored in the weights' metadata, with the grid the network works on ("base"); a file of
# another version is refused, naming the version it has
ARCH = "gsv-cellnet-v2"
MIN_N, MAX_N = 1, MAX_GAUSSIANS  # Gaussian counts taken (as the structured init; trained on cells of 3–12 px)
BASES = ("structured", "density")  # the grid the network's nine numbers are decoded around
MIN_SCALE_PX = 0.3  # lower bound on l11, l22 in pixels (FitConfig.min_scale_px's default)
DEFAULT_WEIGHTS = Path(__file__).with_name("weights") / "learned_init.safetensors"
# what to do about an unusable weights file: the shipped one is rebuilt, one of the user's is theirs to fix
REBUILD = "rebuild it with `python -m gs_encoder.train_init --export {path}` (or reinstall the package)"
OWN_FILE = "give a weights file written by `python -m gs_encoder.train_init` (or no weights file, for the shipped ones)"


class LearnedInitError(ValueError):
    """Unusable learned-init weights or inputs; the message names the file or argument and the fix."""


def _features(images: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Per-half-cell statistics [B, 12, 2·rows, 2·cols] of images [B, 3, S, S] (see the module docstring)."""
    size = images.shape[-1]
    cell_px = size / cols
    gx, gy = _luminance_gradient(images)
    gx, gy = gx * cell_px, gy * cell_px  # change of luminance over one cell
    stack = torch.cat([images - 0.5, images * images, gx, gy, gx * gx, gy * gy, gx * gy], dim=1)
    pooled = F.adaptive_avg_pool2d(stack, (2 * rows, 2 * cols))
    # the structure tensor's entries grow with the squared contrast; a signed square root keeps them O(1)
    st = pooled[:, 8:11]
    pooled = torch.cat([pooled[:, :8], st.sign() * st.abs().sqrt()], dim=1)
    scale = torch.full_like(pooled[:, :1], math.log(cell_px / 6.0))
    return torch.cat([pooled, scale], dim=1)


def _half_cell_edges(grid: DensityGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges of the half cells of a density grid: rows [B, 2·rows + 1] and, per half row, columns
    [B, 2·rows, 2·cols + 1] (each cell split in two at its middle both ways), canvas units."""

    def split(edges: torch.Tensor) -> torch.Tensor:  # [..., K + 1] → [..., 2K + 1]
        mid = 0.5 * (edges[..., 1:] + edges[..., :-1])
        both = torch.stack([edges[..., :-1], mid], -1).flatten(-2)
        return torch.cat([both, edges[..., -1:]], -1)

    return split(grid.y_edges), split(grid.x_edges).repeat_interleave(2, dim=1)


def _rect_means(stack: torch.Tensor, y_edges: torch.Tensor, x_edges: torch.Tensor) -> torch.Tensor:
    """Exact means of stack [B, C, S, S] (piecewise constant per pixel) over the rectangles between
    consecutive y_edges [B, H + 1] and, per row of rectangles, consecutive x_edges [B, H, W + 1] (canvas
    units): [B, C, H, W]. Fractional pixels count in part (a summed-area table, interpolated bilinearly, in
    float64)."""
    size, w1 = stack.shape[-1], x_edges.shape[-1]
    sat = F.pad(stack.double().cumsum(-1).cumsum(-2), (1, 0, 1, 0))  # [B, C, S + 1, S + 1]

    def corners(y: torch.Tensor) -> torch.Tensor:  # SAT at (y [B, H], x_edges) → [B, C, H, W + 1]
        where = torch.stack([x_edges, y[..., None].expand(-1, -1, w1)], -1)  # (x, y) in canvas units
        return F.grid_sample(sat, where.double() * 2.0 - 1.0, mode="bilinear", align_corners=True)

    top, bottom = corners(y_edges[:, :-1]), corners(y_edges[:, 1:])
    sums = (bottom[..., 1:] - bottom[..., :-1]) - (top[..., 1:] - top[..., :-1])
    area = (y_edges[:, 1:] - y_edges[:, :-1])[:, :, None] * (x_edges[..., 1:] - x_edges[..., :-1])
    return (sums / (area.double() * size * size).clamp_min(1e-12)[:, None]).to(stack.dtype)


def _warped_features(images: torch.Tensor, grid: DensityGrid) -> torch.Tensor:
    """The statistics of `_features` [B, 12, 2·rows, 2·cols] on the half cells of a density grid: exact
    means over each half cell, gradients in units of its own cell's width and height."""
    size = images.shape[-1]
    gx, gy = _luminance_gradient(images)
    stack = torch.cat([images - 0.5, images * images, gx, gy, gx * gx, gy * gy, gx * gy], dim=1)
    pooled = _rect_means(stack, *_half_cell_edges(grid))
    sx = ((grid.x_edges[..., 1:] - grid.x_edges[..., :-1]) * size).repeat_interleave(2, 1)  # [B, 2R, C]
    sx = sx.repeat_interleave(2, 2)[:, None]  # cell widths in px per half cell [B, 1, 2R, 2C]
    sy = ((grid.y_edges[:, 1:] - grid.y_edges[:, :-1]) * size).repeat_interleave(2, 1)[:, None, :, None]
    sy = sy.expand_as(sx)
    grads = pooled[:, 6:11] * torch.cat([sx, sy, sx * sx, sy * sy, sx * sy], 1)
    st = grads[:, 2:5]
    scale = torch.log((sx * sy).sqrt().clamp_min(1e-3) / 6.0)
    return torch.cat([pooled[:, :6], grads[:, :2], st.sign() * st.abs().sqrt(), scale], dim=1)


class _Cells(NamedTuple):
    """Where the network works for one request: the base splats [B, N, 8] its numbers are decoded around,
    cell widths / heights (canvas units; floats for the structured grid, [B, N] for a density grid), the
    input statistics [B, 12, 2·rows, 2·cols] and the pooling of an image onto the half cells."""

    base: torch.Tensor
    sx: float | torch.Tensor
    sy: float | torch.Tensor
    feats: torch.Tensor
    pool: Callable[[torch.Tensor], torch.Tensor]


class SplatInitNet(nn.Module):
    """Image [B, 3, S, S] → nine numbers per grid cell [B, 9, rows, cols] (see the module docstring).

    width / cell_width: channels at half-cell / cell resolution; blocks: residual convs at cell
    resolution; reach: largest move of a centre, in cells; passes: 1 + refinement passes, each of which
    renders the current splats and corrects the nine numbers from the per-half-cell residual; base: the
    grid of cells the network works on, the structured one or the density init's (init.density_grid),
    whose cells are smaller where the image has detail (statistics, moves and sizes then in units of each
    cell's own width and height, colours around the density init's starting colours).
    """

    def __init__(
        self,
        width: int = 24,
        cell_width: int = 48,
        blocks: int = 2,
        reach: float = 0.5,
        passes: int = 1,
        base: str = "structured",
    ):
        super().__init__()
        if base not in BASES:
            raise LearnedInitError(f"base must be one of {', '.join(BASES)}, got {base!r}")
        self.width, self.cell_width, self.blocks, self.reach, self.passes, self.base = (
            width,
            cell_width,
            blocks,
            reach,
            passes,
            base,
        )
        self.inp = nn.Conv2d(12, width, 3, padding=1)
        self.down = nn.Conv2d(width, cell_width, 3, stride=2, padding=1)
        self.res = nn.ModuleList(nn.Conv2d(cell_width, cell_width, 3, padding=1) for _ in range(blocks))
        self.head = nn.Conv2d(cell_width, 9, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        if passes > 1:  # one refinement network shared by every pass after the first
            self.r_inp = nn.Conv2d(12 + 6, width, 3, padding=1)
            self.r_down = nn.Conv2d(width, cell_width, 3, stride=2, padding=1)
            self.r_mix = nn.Conv2d(2 * cell_width + 9, cell_width, 1)
            self.r_res = nn.ModuleList(nn.Conv2d(cell_width, cell_width, 3, padding=1) for _ in range(2))
            self.r_head = nn.Conv2d(cell_width, 9, 1)
            nn.init.zeros_(self.r_head.weight)
            nn.init.zeros_(self.r_head.bias)

    def forward(self, images: torch.Tensor, rows: int, cols: int, feats: torch.Tensor | None = None):
        """First pass: (head output [B, 9, rows, cols], cell features [B, cell_width, rows, cols], input
        statistics [B, 12, 2·rows, 2·cols]); `feats`: the statistics when already computed (default: those
        of the structured grid's half cells)."""
        feats = _features(images, rows, cols) if feats is None else feats
        x = F.gelu(self.down(F.gelu(self.inp(feats))))
        for conv in self.res:
            x = x + F.gelu(conv(x))
        return self.head(x), x, feats

    def _refine(self, feats, trunk, out, residual, pool) -> torch.Tensor:
        """Correction [B, 9, rows, cols] of the head output from the residual image [B, 3, S, S]."""
        r = 4.0 * residual  # residuals are small; bring them to O(1)
        pooled = pool(torch.cat([r, r * r], dim=1))
        x = F.gelu(self.r_down(F.gelu(self.r_inp(torch.cat([feats, pooled], dim=1)))))
        x = F.gelu(self.r_mix(torch.cat([x, trunk, out], dim=1)))
        for conv in self.r_res:
            x = x + F.gelu(conv(x))
        return self.r_head(x)

    def _decode(self, out: torch.Tensor, cells: _Cells, size: int) -> torch.Tensor:
        """Head output [B, 9, rows, cols] → splats [B, N, 8] around the base splats of `cells`."""
        base, sx, sy = cells.base, cells.sx, cells.sy
        n = base.shape[1]
        out = out.flatten(2).transpose(1, 2)[:, :n]  # [B, N, 9]
        lo = MIN_SCALE_PX / size
        step = out.new_tensor([sx, sy]) if isinstance(sx, float) else torch.stack([sx, sy], -1)
        xy = base[..., 0:2] + self.reach * torch.tanh(out[..., 0:2]) * step
        l11 = (0.5 * sx * torch.exp(2.0 * torch.tanh(out[..., 2] / 2.0))).clamp_min(lo)
        l21 = 0.5 * sy * 2.0 * torch.tanh(out[..., 3] / 2.0)
        l22 = (0.5 * sy * torch.exp(2.0 * torch.tanh(out[..., 4] / 2.0))).clamp_min(lo)
        gain = torch.exp(2.0 * torch.tanh(out[..., 5:6] / 2.0))
        rgb = base[..., 5:8] * gain + 0.5 * torch.tanh(out[..., 6:9])
        return torch.cat([xy.clamp(0.0, 1.0), l11[..., None], l21[..., None], l22[..., None], rgb], dim=-1)

    def splats_per_pass(
        self, images: torch.Tensor, num_gaussians: int, backend: str = "auto"
    ) -> list[torch.Tensor]:
        """Differentiable splats [B, N, 8] after each pass (no colour solve); the last one is the result."""
        rows, cols = grid_shape(num_gaussians)
        size = images.shape[-1]
        cells = self.cells(images, num_gaussians, backend)
        out, trunk, feats = self(images, rows, cols, cells.feats)
        sets = [self._decode(out, cells, size)]
        for _ in range(self.passes - 1):
            with torch.no_grad():
                residual = images - _render_batch(sets[-1].detach(), size, backend)
            out = out + self._refine(feats, trunk, out, residual, cells.pool)
            sets.append(self._decode(out, cells, size))
        return sets

    @torch.no_grad()
    def cells(self, images: torch.Tensor, num_gaussians: int, backend: str = "auto") -> _Cells:
        """The grid of cells for N Gaussians on images [B, 3, S, S] (the network's `base`)."""
        rows, cols = grid_shape(num_gaussians)
        if self.base == "structured":
            return _Cells(
                structured_init(images, num_gaussians),
                1.0 / cols,
                1.0 / rows,
                _features(images, rows, cols),
                lambda x: F.adaptive_avg_pool2d(x, (2 * rows, 2 * cols)),
            )
        grid = density_grid(images, num_gaussians)
        b, n = images.shape[0], num_gaussians
        sx = (grid.x_edges[..., 1:] - grid.x_edges[..., :-1]).reshape(b, -1)[:, :n]
        sy = (
            (grid.y_edges[:, 1:] - grid.y_edges[:, :-1])[..., None].expand(-1, -1, cols).reshape(b, -1)[:, :n]
        )
        edges = _half_cell_edges(grid)
        return _Cells(
            density_start(images, num_gaussians, grid, backend),
            sx,
            sy,
            _warped_features(images, grid),
            lambda x: _rect_means(x, *edges),
        )

    def splats(self, images: torch.Tensor, num_gaussians: int, backend: str = "auto") -> torch.Tensor:
        """Differentiable splats [B, N, 8] of the last pass (no colour solve)."""
        return self.splats_per_pass(images, num_gaussians, backend)[-1]


def save_learned_init(path: str | Path, net: SplatInitNet, extra: dict[str, str] | None = None) -> Path:
    """Write the network's weights as safetensors (under a temporary name, then renamed)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "arch": ARCH,
        "width": str(net.width),
        "cell_width": str(net.cell_width),
        "blocks": str(net.blocks),
        "reach": repr(net.reach),
        "passes": str(net.passes),
        "base": net.base,
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        save_file(state, str(tmp), metadata=meta)
        tmp.chmod(0o644)
    return path


def check_weights_path(path: str | Path | None, fix: str | None = None) -> str:
    """Raise LearnedInitError when the weights file (None: the shipped one) does not exist; reads nothing, so
    settings can be validated without safetensors. Returns the fix its other errors end with."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if fix is None:
        shipped = path.resolve() == DEFAULT_WEIGHTS.resolve()
        fix = REBUILD.format(path=path) if shipped else OWN_FILE
    if not path.is_file():
        raise LearnedInitError(f"{path}: learned-init weights not found; {fix}")
    return fix


def _read_weights(path: Path, fix: str | None = None) -> SplatInitNet:
    """The network of a weights file; errors name it and end with `fix` (default: how to rebuild it)."""
    from safetensors import SafetensorError, safe_open

    fix = check_weights_path(path, fix)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise LearnedInitError(f"{path}: not a readable safetensors file ({e}); {fix}") from e
    if meta.get("arch") != ARCH:
        raise LearnedInitError(
            f"{path}: weights of format {meta.get('arch')!r}, this code reads {ARCH!r}; {fix}"
        )
    try:
        net = SplatInitNet(
            int(meta["width"]),
            int(meta["cell_width"]),
            int(meta["blocks"]),
            float(meta["reach"]),
            int(meta["passes"]),
            meta["base"],
        )
    except (KeyError, ValueError) as e:
        raise LearnedInitError(f"{path}: metadata lacks or garbles {e} of {ARCH}; {fix}") from e
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tensors[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        what = "; ".join(
            f"{label} {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise LearnedInitError(f"{path}: weights do not fit {ARCH} ({what}); {fix}")
    net.load_state_dict(tensors, strict=True)
    return net.eval()


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file, cached per path, modification time and size (weights files are hashed often)."""
    path = Path(path)
    st = path.stat()
    return _file_sha256(str(path.resolve()), st.st_mtime_ns, st.st_size)


def weights_id(path: str | Path | None = None) -> str:
    """Identity of a weights file (default: the shipped one): the first 12 hex digits of its SHA-256.

    Splat sidecars, the splat cache and saved processors record it, so splats fitted from other weights (an
    updated shipped file, your own) are told apart. Raises LearnedInitError when the file is missing."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        _read_weights(path)  # raises "not found"
    return file_sha256(path)[:12]


@functools.lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int, device: str) -> SplatInitNet:
    return _read_weights(Path(path)).to(device)


def load_learned_init(path: str | Path | None = None, device: str | torch.device = "cpu") -> SplatInitNet:
    """The network from a safetensors file (default: the shipped DEFAULT_WEIGHTS), in eval mode on `device`.

    Cached per file, modification time and device. Raises LearnedInitError naming the file when it is
    missing, unreadable, or holds another architecture; there is no fallback to another init.
    """
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        _read_weights(path)  # raises "not found"
    return _cached(str(path.resolve()), path.stat().st_mtime_ns, str(torch.device(device)))


def check_request(num_gaussians: int, size: int | None) -> None:
    """Raise LearnedInitError when the network cannot take N Gaussians on an S×S canvas (S None: any)."""
    if isinstance(num_gaussians, bool) or not isinstance(num_gaussians, int):
        raise LearnedInitError(f"num_gaussians must be an int, got {type(num_gaussians).__name__}")
    if not MIN_N <= num_gaussians <= MAX_N:
        raise LearnedInitError(
            f"num_gaussians must be in [{MIN_N}, {MAX_N}], got {num_gaussians}; pick a budget in that range"
        )
    if size is not None and num_gaussians > size * size:
        raise LearnedInitError(
            f"num_gaussians={num_gaussians} exceeds the {size}×{size} canvas's pixel count (at most one "
            "Gaussian per pixel); use a larger canvas (--size) or fewer Gaussians"
        )


@torch.no_grad()
def learned_init(
    images: torch.Tensor,
    num_gaussians: int,
    weights: str | Path | None = None,
    colour_iters: int = COLOUR_ITERS,
    backend: str = "auto",
) -> torch.Tensor:
    """Initial splats [B, N, 8] for images [B, 3, S, S] in [0, 1] from the learned network.

    Deterministic and batched (each image's result does not depend on the others); runs where the
    images are (CPU or CUDA, plain torch for the network). `weights`: a safetensors file (default: the
    shipped one). `colour_iters`: conjugate-gradient steps of the least-squares colour solve (0: the
    network's colours).
    """
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise LearnedInitError(f"images must have shape [B, 3, S, S], got {list(images.shape)}")
    check_request(num_gaussians, images.shape[-1])
    if colour_iters < 0:
        raise LearnedInitError(f"colour_iters must be ≥ 0, got {colour_iters}")
    images = images.float()
    net = load_learned_init(weights, images.device)
    splats = net.splats(images, num_gaussians, backend)
    if colour_iters:
        splats = solve_colours(splats, images, colour_iters, backend)
    return splats.contiguous()
