"""Rate control: each image gets the Gaussians it needs (beyond the paper, which fixes N; docs/fitting.md,
Rate control). `FitConfig.max_gaussians` turns it on, with one of two targets:

- `target_psnr` P: the fewest Gaussians (≤ max_gaussians) whose fit reaches P dB;
- `target_bytes` B: the most Gaussians whose `.gsq` file (gs_encoder/codec.py, level chosen per image) holds
  in B bytes.

1. **First N, predicted.** The initialiser alone (no iterations) at PROBE_N Gaussians scores q dB on the image;
   a fit of K iterations at N scores about q + GAIN + SLOPE · log2(N / PROBE_N) (GAIN and SLOPE fitted on the
   tuning pictures, `python -m eval.bench.rate --split tuning`), so the first N is the one that model says
   reaches P, times MARGIN (cutting Gaussians later is cheap, adding them is a second fit).
2. **One fit of every image at its own N**, all in one batch (sets of different N are padded and masked).
3. **Growth:** an image below P is fitted again at the N its measured shortfall calls for, and when that
   still falls short, once more at max_gaussians.
4. **Cut to the target:** Gaussians are ordered by their share of the image (|colour|² × area); the count is
   bisected, the remaining colours re-solved by least squares at each probe (the render is linear in
   colours), to the fewest that still reach P; then a short fine-tune (K // FINETUNE_DIV iterations), and one
   more cut when that lifted the PSNR more than TOLERANCE_DB above P.
With `target_bytes` step 4 bisects on the file size instead (the most Gaussians within B bytes).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import torch
from tqdm.auto import tqdm

PROBE_N = 256
# final PSNR ≈ probe PSNR + GAIN + SLOPE · log2(N / PROBE_N): the least-squares fit over the tuning
# pictures' N sweep at 500 iterations (eval/results/rate_tuning.md, "first-N model")
GAIN_DB = 5.64
SLOPE_DB = 3.25
MARGIN = 1.25  # the first N is the predicted one × MARGIN
MIN_N = 16
# the fine-tune after a cut: K // 10 iterations (K // 5 kept no fewer Gaussians on the tuning set)
FINETUNE_DIV = 10
TOLERANCE_DB = 0.3
BYTES_PER_GAUSSIAN = 6.0  # a first guess of .gsq's size per Gaussian, corrected by the measured size
STEP, BRACKET = 1.25, 1.03  # the cut's search: outward steps from its guess, and the bracket it stops at
# conjugate-gradient steps of each probe's colour solve (from the fitted colours; 10 kept as many)
SOLVE_ITERS = 6
GROW_ROUNDS = 2  # refits of an image still short of its target (the last at max_gaussians)


def predicted_n(probe_psnr: float, target: float, max_n: int) -> int:
    """The first N of an image whose initialiser scores `probe_psnr` at PROBE_N (step 1)."""
    doublings = (target - probe_psnr - GAIN_DB) / SLOPE_DB
    n = PROBE_N * 2.0 ** min(doublings, 20.0) * MARGIN
    return int(min(max_n, max(MIN_N, round(n))))


def _initial(images: torch.Tensor, cfg, ns: list[int]) -> list[torch.Tensor]:
    """cfg.init's starting set of every image at its own N (images of equal N in one call)."""
    from .fit import _initial_sets

    sets: list[torch.Tensor | None] = [None] * len(ns)
    for n in sorted(set(ns)):
        idx = [i for i, m in enumerate(ns) if m == n]
        for i, s in zip(idx, _initial_sets(images[idx], replace(cfg, num_gaussians=n), None), strict=True):
            sets[i] = s
    return sets


def _fit(images: torch.Tensor, cfg, ns: list[int] | None, progress: bool, initial=None):
    """A plain fit (no rate control, no early stop) from cfg.init at the given N, or from `initial`."""
    from .fit import fit_images

    plain = replace(cfg, max_gaussians=None, target_psnr=None, target_bytes=None)
    return fit_images(images, plain, progress=progress, initial=initial or _initial(images, cfg, ns))


def _ranked(splats: torch.Tensor) -> torch.Tensor:
    """The set ordered by share of the image, largest first: |colour|² × l11 · l22 (area ∝ det L)."""
    share = splats[:, 5:8].pow(2).sum(1) * (splats[:, 2] * splats[:, 4]).abs()
    return splats[torch.argsort(share, descending=True, stable=True)]


def _smallest(n: int, ok, guess: int, settled=lambda hi: True) -> tuple[int, int]:
    """(lo, hi) for `ok` False below some count and True from it on, with ok(n) True: hi the smallest count
    in [1, n] found with ok, lo < hi the largest found without (0 when none). From the guess it steps
    outwards (STEP×, then each step the square of the last) until the answer is bracketed, then bisects in
    log count down to a bracket of BRACKET× where `settled(hi)` holds (a PSNR close enough to the target:
    where the PSNR falls steeply with the count, a few percent of the count is a dB), or to one count. Each
    ok() is a colour solve and a render, so few are made."""
    if n <= 1:
        return 0, n
    lo, hi = 0, n  # ok(lo) False (0: no Gaussian), ok(hi) True
    c, step = min(n - 1, max(1, guess)), STEP
    if ok(c):
        hi = c
        while hi > 1:
            c = min(hi - 1, max(1, int(hi / step)))
            if not ok(c):
                lo = c
                break
            hi, step = c, step * step  # far from the guess: larger steps
    else:
        lo = c
        while True:
            c = max(lo + 1, math.ceil(lo * step))
            if c >= hi:
                break
            if ok(c):
                hi = c
                break
            lo, step = c, step * step
    while hi - lo > 1 and not (hi <= BRACKET * max(lo, 1) and settled(hi)):
        c = min(hi - 1, max(lo + 1, round(math.sqrt(max(lo, 1) * hi))))
        if ok(c):
            hi = c
        else:
            lo = c
    return lo, hi


def _solved(splats: torch.Tensor, image: torch.Tensor, backend: str) -> torch.Tensor:
    from .init import solve_colours

    return solve_colours(splats[None], image[None], SOLVE_ITERS, backend)[0]


def gsq_bytes(splats: torch.Tensor, image: torch.Tensor) -> int:
    """Bytes of the set's .gsq file at the level the codec chooses with the image."""
    from ..codec import encode_gsq

    return len(encode_gsq(splats, image=image.detach().float().cpu()))


class _Target:
    """One image's target: ok(set) and the count to try first when cutting a set of n."""

    def __init__(self, image: torch.Tensor, cfg):
        self.image, self.cfg, self.backend = image, cfg, cfg.backend

    def psnr(self, splats: torch.Tensor) -> float:
        from .fit import render_psnr

        return render_psnr(splats, self.image, self.backend)

    def ok(self, splats: torch.Tensor, score: float | None = None) -> bool:
        """Whether the set meets the target (`score`: its PSNR when already known)."""
        if self.cfg.target_bytes is not None:
            return gsq_bytes(splats, self.image) <= self.cfg.target_bytes
        return (self.psnr(splats) if score is None else score) >= self.cfg.target_psnr

    def guess(self, splats: torch.Tensor, score: float | None = None) -> int:
        """The count to try first when cutting the set (`score`: its PSNR when already known)."""
        n = splats.shape[0]
        if self.cfg.target_bytes is not None:
            return int(n * self.cfg.target_bytes / max(gsq_bytes(splats, self.image), 1))
        score = self.psnr(splats) if score is None else score
        return int(n * 2.0 ** ((self.cfg.target_psnr - score) / SLOPE_DB))

    def cut(self, splats: torch.Tensor) -> tuple[torch.Tensor, float]:
        """PSNR target: the fewest Gaussians that reach it (colour-solved); the set itself when it misses.
        Bytes target: the most Gaussians within it. Returns the set and its PSNR."""
        ranked = _ranked(splats)
        n = ranked.shape[0]
        solved: dict[int, torch.Tensor] = {}  # count → its colour-solved subset: the search's answer is one

        def subset(c: int) -> torch.Tensor:
            if c not in solved:
                solved[c] = _solved(ranked[:c], self.image, self.backend)
            return solved[c]

        if self.cfg.target_bytes is None:
            scores = {n: self.psnr(splats)}
            if not self.ok(splats, scores[n]):
                return splats, scores[n]

            def reaches(c: int) -> bool:
                scores[c] = self.psnr(subset(c))
                return scores[c] >= self.cfg.target_psnr

            settled = lambda c: scores[c] <= self.cfg.target_psnr + TOLERANCE_DB / 2  # noqa: E731
            _, hi = _smallest(n, reaches, self.guess(splats, scores[n]), settled)
            kept = subset(hi)  # scores[n] is the set as fitted, not colour-solved
            return kept, scores[hi] if hi < n else self.psnr(kept)
        if self.ok(splats):
            return splats, self.psnr(splats)
        # the most within the budget: the largest count seen within it, below the fewest that break it
        within, _ = _smallest(n, lambda c: not self.ok(subset(c)), self.guess(splats) + 1)
        kept = subset(max(1, within))
        return kept, self.psnr(kept)


def fit_to_target(images: torch.Tensor, cfg, progress: bool = False) -> list:
    """Rate-controlled fits of images [B, 3, S, S] (module docstring); one FitResult per image with
    `target_reached` set and `num_initial` the N fitted before the cut."""
    from .fit import FitResult

    start = time.perf_counter()
    images = images.float()
    max_n, b = min(cfg.max_gaussians, images.shape[-1] ** 2), images.shape[0]  # at most a Gaussian a pixel
    targets = [_Target(images[i], cfg) for i in range(b)]
    if cfg.target_bytes is not None:
        ns = [max(1, min(max_n, round(cfg.target_bytes / BYTES_PER_GAUSSIAN * MARGIN)))] * b
    else:
        probes = _initial(images, cfg, [min(PROBE_N, max_n)] * b)
        ns = [predicted_n(t.psnr(s), cfg.target_psnr, max_n) for t, s in zip(targets, probes, strict=True)]
    results = _fit(images, cfg, ns, progress)

    # growth: the images whose N falls short (PSNR below the target; a file well under the budget), at most
    # GROW_ROUNDS times, the last straight to max_gaussians
    for round_ in range(GROW_ROUNDS):
        grow = {}
        for i, (t, r) in enumerate(zip(targets, results, strict=True)):
            if ns[i] >= max_n:
                continue
            if cfg.target_bytes is not None:
                room = cfg.target_bytes / max(gsq_bytes(r.splats, t.image), 1)
                if room > 1.25:
                    grow[i] = min(max_n, round(ns[i] * room))
            elif r.psnr < cfg.target_psnr:
                last = round_ == GROW_ROUNDS - 1
                grow[i] = max_n if last else min(max_n, max(ns[i] + 1, round(t.guess(r.splats) * MARGIN)))
        if not grow:
            break
        idx = sorted(grow)
        for i, r in zip(idx, _fit(images[idx], cfg, [grow[i] for i in idx], progress), strict=True):
            ns[i], results[i] = grow[i], r

    # the cut, a short fine-tune of what is left, and a second cut when the fine-tune overshot
    tune = replace(cfg, iters=max(1, cfg.iters // FINETUNE_DIV))
    out = []
    for t, r, n in tqdm(
        list(zip(targets, results, ns, strict=True)),
        desc="rate control: cut",
        unit="image",
        disable=not progress,
    ):
        kept, score = t.cut(r.splats)
        if kept.shape[0] < r.splats.shape[0]:
            tuned = _fit(t.image[None], tune, None, progress, initial=[kept])[0]
            if t.ok(tuned.splats, tuned.psnr) and (cfg.target_bytes is not None or tuned.psnr >= score):
                kept, score = tuned.splats, tuned.psnr
            if cfg.target_bytes is None and score > cfg.target_psnr + TOLERANCE_DB:
                kept, score = t.cut(kept)
        out.append(
            FitResult(
                splats=kept.detach().cpu().float(),
                psnr=score,
                psnr_unpruned=r.psnr,
                num_initial=n,
                iters=r.iters,
                seconds=0.0,
                history=r.history,
                target_reached=t.ok(kept, score),
            )
        )
    for r in out:
        r.seconds = (time.perf_counter() - start) / max(b, 1)
    return out
