"""Learned initialisation: a small conv network places, shapes and colours the structured grid's Gaussians.

The network works in units of grid cells, so one set of weights serves any N and any canvas size (the
structured init's range, 1 ≤ N ≤ S²; trained on cells of 3–12 px, e.g. N = 400…5600 at 224²). For N
Gaussians on an S×S canvas the grid has rows × cols cells of side s = S/cols px (init.grid_shape):

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
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .init import COLOUR_ITERS, MAX_GAUSSIANS, grid_shape, solve_colours, structured_init
from .render import render_flat

__all__ = [
    "ARCH",
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

ARCH = "gsv-cellnet-v1"  # name stored in the weights' metadata; a file of another architecture is refused
MIN_N, MAX_N = 1, MAX_GAUSSIANS  # Gaussian counts taken (as the structured init; trained on cells of 3–12 px)
MIN_SCALE_PX = 0.3  # lower bound on l11, l22 in pixels (FitConfig.min_scale_px's default)
DEFAULT_WEIGHTS = Path(__file__).with_name("weights") / "learned_init.safetensors"
REBUILD = "rebuild it with `python -m gs_encoder.train_init --export {path}` (or reinstall the package)"


class LearnedInitError(ValueError):
    """Unusable learned-init weights or inputs; the message names the file or argument and the fix."""


def _features(images: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Per-half-cell statistics [B, 12, 2·rows, 2·cols] of images [B, 3, S, S] (see the module docstring)."""
    size = images.shape[-1]
    cell_px = size / cols
    lum = (images * images.new_tensor([0.2126, 0.7152, 0.0722])[None, :, None, None]).sum(1, keepdim=True)
    pad = F.pad(lum, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (pad[..., 1:-1, 2:] - pad[..., 1:-1, :-2]) * cell_px  # change of luminance over one cell
    gy = 0.5 * (pad[..., 2:, 1:-1] - pad[..., :-2, 1:-1]) * cell_px
    stack = torch.cat([images - 0.5, images * images, gx, gy, gx * gx, gy * gy, gx * gy], dim=1)
    pooled = F.adaptive_avg_pool2d(stack, (2 * rows, 2 * cols))
    # the structure tensor's entries grow with the squared contrast; a signed square root keeps them O(1)
    st = pooled[:, 8:11]
    pooled = torch.cat([pooled[:, :8], st.sign() * st.abs().sqrt()], dim=1)
    scale = torch.full_like(pooled[:, :1], math.log(cell_px / 6.0))
    return torch.cat([pooled, scale], dim=1)


class SplatInitNet(nn.Module):
    """Image [B, 3, S, S] → nine numbers per grid cell [B, 9, rows, cols] (see the module docstring).

    width / cell_width: channels at half-cell / cell resolution; blocks: residual convs at cell
    resolution; reach: largest move of a centre, in cells; passes: 1 + refinement passes, each of which
    renders the current splats and corrects the nine numbers from the per-half-cell residual.
    """

    def __init__(
        self, width: int = 24, cell_width: int = 48, blocks: int = 2, reach: float = 0.5, passes: int = 1
    ):
        super().__init__()
        self.width, self.cell_width, self.blocks, self.reach, self.passes = (
            width,
            cell_width,
            blocks,
            reach,
            passes,
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

    def forward(self, images: torch.Tensor, rows: int, cols: int):
        """First pass: (head output [B, 9, rows, cols], cell features [B, cell_width, rows, cols], input
        statistics [B, 12, 2·rows, 2·cols])."""
        feats = _features(images, rows, cols)
        x = F.gelu(self.down(F.gelu(self.inp(feats))))
        for conv in self.res:
            x = x + F.gelu(conv(x))
        return self.head(x), x, feats

    def _refine(self, feats, trunk, out, residual, rows: int, cols: int) -> torch.Tensor:
        """Correction [B, 9, rows, cols] of the head output from the residual image [B, 3, S, S]."""
        r = 4.0 * residual  # residuals are small; bring them to O(1)
        pooled = F.adaptive_avg_pool2d(torch.cat([r, r * r], dim=1), (2 * rows, 2 * cols))
        x = F.gelu(self.r_down(F.gelu(self.r_inp(torch.cat([feats, pooled], dim=1)))))
        x = F.gelu(self.r_mix(torch.cat([x, trunk, out], dim=1)))
        for conv in self.r_res:
            x = x + F.gelu(conv(x))
        return self.r_head(x)

    def _decode(self, out: torch.Tensor, base: torch.Tensor, rows: int, cols: int, size: int) -> torch.Tensor:
        """Head output [B, 9, rows, cols] → splats [B, N, 8] around the structured init `base` [B, N, 8]."""
        n = base.shape[1]
        out = out.flatten(2).transpose(1, 2)[:, :n]  # [B, N, 9]
        sx, sy = 1.0 / cols, 1.0 / rows
        lo = MIN_SCALE_PX / size
        xy = base[..., 0:2] + self.reach * torch.tanh(out[..., 0:2]) * out.new_tensor([sx, sy])
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
        base = structured_init(images, num_gaussians)
        out, trunk, feats = self(images, rows, cols)
        sets = [self._decode(out, base, rows, cols, size)]
        for _ in range(self.passes - 1):
            with torch.no_grad():
                residual = images - _render_batch(sets[-1].detach(), size, backend)
            out = out + self._refine(feats, trunk, out, residual, rows, cols)
            sets.append(self._decode(out, base, rows, cols, size))
        return sets

    def splats(self, images: torch.Tensor, num_gaussians: int, backend: str = "auto") -> torch.Tensor:
        """Differentiable splats [B, N, 8] of the last pass (no colour solve)."""
        return self.splats_per_pass(images, num_gaussians, backend)[-1]


def _render_batch(splats: torch.Tensor, size: int, backend: str = "auto") -> torch.Tensor:
    """Splats [B, N, 8] (canvas units) → images [B, 3, S, S], differentiable, with the fitting renderer."""
    b, n, _ = splats.shape
    flat = splats.reshape(b * n, 8)
    ids = torch.arange(b, device=splats.device).repeat_interleave(n)
    image, _ = render_flat(
        flat[:, 0:2] * size, flat[:, 2:5] * size, flat[:, 5:8], ids, b, size, backend=backend
    )
    return image.permute(0, 3, 1, 2)


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
        **(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp), metadata=meta
    )
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


def _read_weights(path: Path, fix: str | None = None) -> SplatInitNet:
    """The network of a weights file; errors name it and end with `fix` (default: how to rebuild it)."""
    from safetensors import SafetensorError, safe_open

    fix = fix or REBUILD.format(path=path)
    if not path.is_file():
        raise LearnedInitError(f"{path}: learned-init weights not found; {fix}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise LearnedInitError(f"{path}: not a readable safetensors file ({e}); {fix}") from e
    if meta.get("arch") != ARCH:
        raise LearnedInitError(
            f"{path}: weights of architecture {meta.get('arch')!r}, this code needs {ARCH!r}; {fix}"
        )
    try:
        net = SplatInitNet(
            int(meta["width"]),
            int(meta["cell_width"]),
            int(meta["blocks"]),
            float(meta["reach"]),
            int(meta["passes"]),
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
def _file_id(path: str, mtime_ns: int, size: int) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


def weights_id(path: str | Path | None = None) -> str:
    """Identity of a weights file (default: the shipped one): the first 12 hex digits of its SHA-256.

    Splat sidecars, the splat cache and saved processors record it, so splats fitted from other weights (an
    updated shipped file, your own) are told apart. Raises LearnedInitError when the file is missing."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        _read_weights(path)  # raises "not found"
    st = path.stat()
    return _file_id(str(path.resolve()), st.st_mtime_ns, st.st_size)


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
