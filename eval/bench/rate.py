"""Rate–distortion: `.gsq` splat files against JPEG, WebP and AVIF at equal PSNR, per picture.

`python -m eval.bench.rate` fits every picture of a split (eval/splits.py; the sealed test set by default,
`--split tuning` for the exploration every choice of the codec is made on) with the learned init at each
N of NS, encodes each fit with the codec's own choice of level (`choose_level`, colours solved on the
quantised geometry), and sweeps Pillow's quality for JPEG, WebP and (when Pillow has it) AVIF. Every codec
gets its own curve per picture: PSNR against bytes, made monotone (a point with more bytes and a lower PSNR
than another is dropped), and the bytes at 30, 33 and 36 dB are interpolated on it (log bytes, linear in
dB; never extrapolated: a picture whose curve does not reach a PSNR has no ratio there, and is counted).
Bytes ratios are per picture; the tables give the median and the spread over pictures. PSNR is against
the picture on the 224² canvas as 8-bit RGB, the same reference for every codec.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from PIL import Image, features
from tqdm import tqdm

from eval import splits
from gs_encoder import FitConfig, fit_images
from gs_encoder.codec import BASE_EXPONENTS, MAX_LOSS_DB, choose_level, decode_gsq, pack

PSNRS = (30.0, 33.0, 36.0)
NS = (50, 100, 200, 400, 800, 1600, 3136)
ITERS = 500
QUALITIES = tuple(range(5, 101, 5))
TARGETS = {"webp": 1.0, "jpeg": 0.7}  # median .gsq bytes / codec bytes at equal PSNR, at each of PSNRS
STRETCH_WEBP = 0.8
MAX_N = 3136
CONTROL_PSNRS = (27.0, 30.0, 33.0, 36.0, 39.0)  # rate control's targets (they span PSNRS after quantisation)
CONTROL_AT, REACH = 33.0, 0.9  # rate control is judged at 33 dB against the fixed N reaching it on 90%
CONTROL_N_RATIO, CONTROL_WALL_RATIO, CONTROL_TOLERANCE = 0.6, 1.5, 0.3
CHOICE_NS = (200, 800, 3136)  # the N at which the tuning run compares the codec's choices


def psnr_u8(a: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - ref.astype(np.float64)) ** 2)) / 255.0**2
    return float("inf") if mse == 0 else -10.0 * np.log10(mse)


def pillow_codecs() -> list[str]:
    return ["JPEG", "WEBP"] + (["AVIF"] if features.check("avif") else [])


def pillow_curve(ref: np.ndarray, fmt: str, qualities=QUALITIES) -> dict:
    """Bytes, PSNR and encode/decode seconds of one picture at each quality."""
    pts = []
    for q in qualities:
        buf = io.BytesIO()
        t = time.perf_counter()
        Image.fromarray(ref).save(buf, fmt, quality=q)
        enc = time.perf_counter() - t
        t = time.perf_counter()
        with Image.open(io.BytesIO(buf.getvalue())) as im:
            out = np.asarray(im.convert("RGB"))
        dec = time.perf_counter() - t
        pts.append({"quality": q, "bytes": buf.tell(), "psnr": psnr_u8(out, ref), "enc_s": enc, "dec_s": dec})
    return {"points": pts}


def _u8(img: torch.Tensor) -> np.ndarray:
    return (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def gsq_curves(
    images: torch.Tensor,
    ns=NS,
    iters: int = ITERS,
    max_loss_db: float = MAX_LOSS_DB,
    keep: dict | None = None,
) -> list[dict]:
    """Per picture: one point per N (the fit, its file at the chosen level, the rendered PSNR and times).
    `keep`: a dict that receives the fitted sets, {N: [splats per picture]}."""
    from gs_encoder.fitting.render import render

    curves = [{"points": []} for _ in range(len(images))]
    for n in tqdm(ns, desc=".gsq: fits and files", unit="N"):
        t = time.perf_counter()
        results = fit_images(images, FitConfig(num_gaussians=n, iters=iters))
        fit_s = (time.perf_counter() - t) / len(images)
        if keep is not None:
            keep[n] = [r.splats for r in results]
        for i, r in enumerate(results):
            ref = _u8(images[i])
            t = time.perf_counter()
            level, codes = choose_level(r.splats, images[i], max_loss_db)
            data = pack(codes)
            enc = time.perf_counter() - t
            t = time.perf_counter()
            dec_splats = decode_gsq(data)
            dec = time.perf_counter() - t
            size = images.shape[-1]
            out = _u8(render(dec_splats[None], size=size, clamp=True)[0])
            fp = _u8(render(r.splats[None], size=size, clamp=True)[0])
            curves[i]["points"].append(
                {
                    "n": n,
                    "level": level,
                    "bytes": len(data),
                    "psnr": psnr_u8(out, ref),
                    "psnr_fp32": psnr_u8(fp, ref),
                    "fit_s": fit_s,
                    "enc_s": enc,
                    "dec_s": dec,
                }  # fmt: skip
            )
    return curves


def envelope(points: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, psnr) of the curve's monotone envelope: by bytes, each point better than every smaller one."""
    pts = sorted(points, key=lambda p: (p["bytes"], -p["psnr"]))
    b, q = [], []
    for p in pts:
        if not q or p["psnr"] > q[-1]:
            b.append(p["bytes"])
            q.append(p["psnr"])
    return np.array(b, float), np.array(q, float)


def bytes_at(points: list[dict], psnr: float) -> float | None:
    """Bytes at `psnr` on the curve's envelope (log bytes linear in dB). Below the curve's first point: that
    point's bytes (the codec reaches `psnr` with no more); above its last point: None (not reached)."""
    b, q = envelope(points)
    if len(q) == 0 or psnr > q[-1]:
        return None
    if psnr <= q[0]:
        return float(b[0])
    return float(np.exp(np.interp(psnr, q, np.log(b))))


def ratio(gsq: float | None, other: float | None) -> float | None:
    """.gsq bytes / the other codec's at one PSNR: inf when only the other reaches it, 0 when only .gsq does,
    None when neither does (left out of the median, and counted)."""
    if gsq is None and other is None:
        return None
    if gsq is None:
        return float("inf")
    return 0.0 if other is None else gsq / other


def run(split: str = "sealed", ns=NS, iters: int = ITERS, max_loss_db: float = MAX_LOSS_DB) -> dict:
    """Every codec's curve on every picture of `split`; on the tuning split also the codec's choices."""
    names, images = splits.images(split)
    images = torch.from_numpy(np.stack([_u8(im) for im in images]).astype(np.float32) / 255.0).permute(
        0, 3, 1, 2
    )
    kinds = {p.name: p.kind for p in splits.pictures(split)}
    fits: dict = {}
    codecs = {"gsq": gsq_curves(images, ns, iters, max_loss_db, keep=fits)}
    control = rate_control_runs(images, iters, max_loss_db)
    codecs["gsq_rc"] = [{"points": [t["pictures"][i] for t in control.values()]} for i in range(len(names))]
    for fmt in pillow_codecs():
        codecs[fmt.lower()] = [pillow_curve(_u8(im), fmt) for im in tqdm(images, desc=fmt, unit="picture")]
    out = {
        "split": split,
        "pictures": names,
        "kinds": [kinds[n] for n in names],
        "ns": list(ns),
        "iters": iters,
        "max_loss_db": max_loss_db,
        "codecs": codecs,
        "rate_control": control,
        "fixed_reference": fixed_reference(images, codecs["gsq"], iters),
    }
    if split == "tuning":
        out["choices"] = codec_choices(images, fits, max_loss_db)
        out["predictor"] = predictor_fit(images, codecs["gsq"])
    return out


def rate_control_runs(images: torch.Tensor, iters: int, max_loss_db: float) -> dict:
    """`FitConfig(max_gaussians=MAX_N, target_psnr=P)` on all pictures in one batch for each P of
    CONTROL_PSNRS: wall time, and per picture the N chosen, the PSNR, whether it reached P, and its .gsq."""
    from gs_encoder.fitting.rate_control import GAIN_DB, SLOPE_DB
    from gs_encoder.fitting.render import render

    runs = {}
    for target in tqdm(CONTROL_PSNRS, desc=".gsq: rate control", unit="target"):
        t, cpu = time.perf_counter(), time.process_time()
        results = fit_images(images, FitConfig(max_gaussians=MAX_N, target_psnr=target, iters=iters))
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        pics = []
        for i, r in enumerate(results):
            level, codes = choose_level(r.splats, images[i], max_loss_db)
            data = pack(codes)
            out = _u8(render(decode_gsq(data)[None], size=images.shape[-1], clamp=True)[0])
            pics.append({"target": target, "n": r.num_gaussians, "n_fitted": r.num_initial, "psnr_fp32": r.psnr,
                         "reached": r.target_reached, "level": level, "bytes": len(data),
                         "psnr": psnr_u8(out, _u8(images[i]))})  # fmt: skip
        runs[f"{target:g}"] = {
            "wall_s": wall,
            "cpu_s": cpu,
            "pictures": pics,
            "model": {"gain_db": GAIN_DB, "slope_db": SLOPE_DB},
        }
    return runs


def needed_n(points: list[dict], psnr: float) -> float:
    """N at which a picture's fp32 fits reach `psnr` on its N sweep (log N linear in dB between the swept
    N; inf when no swept N reaches it): derived, not fitted."""
    pts = sorted(points, key=lambda p: p["n"])
    ns = np.array([p["n"] for p in pts], float)
    q = np.maximum.accumulate(np.array([p["psnr_fp32"] for p in pts]))
    if psnr > q[-1]:
        return float("inf")
    if psnr <= q[0]:
        return float(ns[0])
    k = int(np.argmax(q >= psnr))
    frac = (psnr - q[k - 1]) / max(q[k] - q[k - 1], 1e-9)
    return float(np.exp(np.log(ns[k - 1]) + frac * (np.log(ns[k]) - np.log(ns[k - 1]))))


def fixed_reference(images: torch.Tensor, sweep: list[dict], iters: int, target: float = CONTROL_AT) -> dict:
    """The fixed N that reaches `target` on REACH of the pictures (the REACH quantile of each picture's
    needed N on its sweep: derived), then measured: every picture fitted at that N, its wall time and how
    many reach `target`."""
    need = [needed_n(c["points"], target) for c in sweep]
    n90 = float(np.quantile(np.array(need), REACH, method="higher"))
    out = {"target": target, "needed_n": need, "n_reach": n90}
    if not np.isfinite(n90):
        return out
    n = int(min(MAX_N, round(n90)))
    t, cpu = time.perf_counter(), time.process_time()
    results = fit_images(images, FitConfig(num_gaussians=n, iters=iters))
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    out |= {"n": n, "wall_s": wall, "cpu_s": cpu, "psnr_fp32": [r.psnr for r in results]}
    return out


def predictor_fit(images: torch.Tensor, sweep: list[dict]) -> dict:
    """Least squares of (fitted PSNR − the initialiser's PSNR at PROBE_N) = GAIN + SLOPE · log2(N / PROBE_N)
    over the tuning pictures' N sweep: rate control's first-N model (gs_encoder/fitting/rate_control.py)."""
    from gs_encoder.fitting.fit import render_psnr
    from gs_encoder.fitting.rate_control import PROBE_N, _initial

    probes = _initial(images, FitConfig(), [PROBE_N] * len(images))
    probe = [render_psnr(s, images[i]) for i, s in enumerate(probes)]
    rows = [
        (np.log2(p["n"] / PROBE_N), p["psnr_fp32"] - probe[i])
        for i, c in enumerate(sweep)
        for p in c["points"]
    ]
    x, y = np.array(rows).T
    slope, gain = np.polyfit(x, y, 1)
    resid = y - (gain + slope * x)
    return {"probe_n": PROBE_N, "probe_psnr": probe, "gain_db": float(gain), "slope_db": float(slope),
            "residual_sd_db": float(resid.std())}  # fmt: skip


# the codec's choices, each compared with the default on the tuning pictures: (label, choose_level keywords)
CHOICES = (
    ("centre steps ×2", {"base": (BASE_EXPONENTS[0] + 4, *BASE_EXPONENTS[1:])}),
    ("centre steps ×½", {"base": (BASE_EXPONENTS[0] - 4, *BASE_EXPONENTS[1:])}),
    ("shape steps ×2", {"base": (BASE_EXPONENTS[0], BASE_EXPONENTS[1] + 4, BASE_EXPONENTS[2])}),
    ("shape steps ×½", {"base": (BASE_EXPONENTS[0], BASE_EXPONENTS[1] - 4, BASE_EXPONENTS[2])}),
    ("colour steps ×2", {"base": (*BASE_EXPONENTS[:2], BASE_EXPONENTS[2] + 4)}),
    ("colour steps ×½", {"base": (*BASE_EXPONENTS[:2], BASE_EXPONENTS[2] - 4)}),
    ("max loss 0.1 dB", {"max_loss_db": 0.1}),
    ("max loss 0.5 dB", {"max_loss_db": 0.5}),
    ("max loss 1 dB", {"max_loss_db": 1.0}),
    ("max loss 2 dB", {"max_loss_db": 2.0}),
    ("no colour solve", {"solve": False}),
)


def _lzma_planes(codes) -> int:
    """Bytes of the same codes as the previous .gsq stored them: one byte plane per 8 bits of each column
    (centres delta-coded along the Morton order), raw LZMA2 at its strongest preset."""
    import lzma

    q = codes.q.copy()
    q[:, :2] = np.diff(q[:, :2], axis=0, prepend=q[:1, :2] * 0)
    planes = []
    for col in (q - q.min(0)).T:
        width = max(1, (int(col.max()).bit_length() + 7) // 8)
        planes += [((col >> (8 * k)) & 0xFF).astype(np.uint8).tobytes() for k in reversed(range(width))]
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
    return len(lzma.compress(b"".join(planes), format=lzma.FORMAT_RAW, filters=filters))


def _coded_columns(columns: np.ndarray) -> int:
    """Range-coded bytes of integer columns, as .gsq codes them (gs_encoder.codec.code_columns)."""
    from gs_encoder.codec import code_columns
    from gs_encoder.entropy import Encoder

    enc = Encoder()
    code_columns(enc, columns)
    return len(enc.finish())


def codec_choices(images: torch.Tensor, fits: dict, max_loss_db: float) -> dict:
    """For the default and each of CHOICES: per picture, the .gsq curve over N; and, on the default's own
    codes, the bytes of the entropy-coding alternatives (LZMA over byte planes; colours without YCoCg-R)."""
    from gs_encoder.codec import _ycocg, dequantise
    from gs_encoder.fitting.fit import render_psnr

    variants = {"default": {}, **dict(CHOICES)}
    curves = {v: [{"points": []} for _ in range(len(images))] for v in variants}
    coding = {"range coder": 0, "LZMA over byte planes": 0, "colours: YCoCg-R": 0, "colours: RGB": 0}
    jobs = [(label, n) for label in variants for n in fits if n in CHOICE_NS]
    for label, n in tqdm(jobs, desc="codec choices (tuning)", unit="variant×N"):
        kw = {"max_loss_db": max_loss_db, **variants[label]}
        for i, splats in enumerate(fits[n]):
            _, codes = choose_level(splats, images[i], **kw)
            data = pack(codes)
            curves[label][i]["points"].append(
                {"n": n, "bytes": len(data), "psnr": render_psnr(dequantise(codes), images[i])}
            )
            if label == "default":
                coding["range coder"] += len(data)
                coding["LZMA over byte planes"] += _lzma_planes(codes)
                coding["colours: YCoCg-R"] += _coded_columns(_ycocg(codes.q[:, 5:]))
                coding["colours: RGB"] += _coded_columns(codes.q[:, 5:])
    return {"curves": curves, "coding_bytes": coding}


def ratios(data: dict, other: str, psnr: float, mine: str = "gsq_rc") -> list[float | None]:
    return [
        ratio(bytes_at(g["points"], psnr), bytes_at(o["points"], psnr))
        for g, o in zip(data["codecs"][mine], data["codecs"][other], strict=True)
    ]


def _stats(values: list[float | None]) -> tuple[float | None, str, int]:
    v = np.array([x for x in values if x is not None])
    if not len(v):
        return None, "", 0
    return float(np.median(v)), f"{np.min(v):.2f}–{np.max(v):.2f}", len(v)


def report(data: dict, out_dir=None, machine: dict | None = None):
    """eval/results/rate.{md,json,png} (or rate_tuning.* for the tuning split)."""
    from .common import RESULTS, write_results

    name = "rate" if data["split"] == "sealed" else f"rate_{data['split']}"
    out_dir = out_dir or RESULTS
    others = [c for c in data["codecs"] if not c.startswith("gsq")]
    mine = ("gsq_rc", "gsq")
    per_pic = []
    for i, pic in enumerate(data["pictures"]):
        row = [pic, data["kinds"][i]]
        for p in PSNRS:
            cells = [bytes_at(data["codecs"][c][i]["points"], p) for c in [*mine, *others]]
            row.append(" / ".join("—" if x is None else f"{x:,.0f}" for x in cells))
        per_pic.append(row)
    summary, targets = [], control_targets(data)
    for m in mine:
        for other in others:
            for p in PSNRS:
                med, spread, count = _stats(ratios(data, other, p, m))
                summary.append([LABELS[m], other.upper(), p, None if med is None else round(med, 2), spread,
                                f"{count} of {len(data['pictures'])}"])  # fmt: skip
    for other in others:
        for p in PSNRS:
            med, _, _ = _stats(ratios(data, other, p))
            if other in TARGETS:
                limit = TARGETS[other]
                met = "not testable (no picture reaches it on both curves)" if med is None else (
                    "met" if med <= limit else "failed")  # fmt: skip
                targets.append([f".gsq (rate control) / {other.upper()} at {p:g} dB, median ≤ {limit}",
                                med and round(med, 2), met])  # fmt: skip
                if other == "webp":
                    stretch = met if med is None else "met" if med <= STRETCH_WEBP else "failed"
                    targets.append([f"stretch: .gsq (rate control) / WEBP at {p:g} dB, median ≤ {STRETCH_WEBP}",
                                    med and round(med, 2), stretch])  # fmt: skip
    points = [p for c in data["codecs"]["gsq"] for p in c["points"]]
    by_n = []
    for n in data["ns"]:
        at = [p for p in points if p["n"] == n]
        by_n.append([n, f"{np.median([p['bytes'] for p in at]):,.0f}", round(float(np.median([p["psnr_fp32"] for p in at])), 2),
                     round(float(np.median([p["psnr"] for p in at])), 2), float(np.median([p["level"] for p in at])),
                     round(float(np.median([p["fit_s"] for p in at])), 2), round(float(np.median([p["enc_s"] for p in at])), 3),
                     round(float(np.median([p["dec_s"] for p in at])), 3)])  # fmt: skip
    times = []
    for other in others:
        pts = [p for c in data["codecs"][other] for p in c["points"]]
        times.append([other.upper(), round(float(np.median([p["enc_s"] for p in pts])) * 1e3, 2),
                      round(float(np.median([p["dec_s"] for p in pts])) * 1e3, 2)])  # fmt: skip
    times.append([".gsq (level choice + pack; decode)", round(float(np.median([p["enc_s"] for p in points])) * 1e3, 1),
                  round(float(np.median([p["dec_s"] for p in points])) * 1e3, 1)])  # fmt: skip
    notes = (
        f"Split: **{data['split']}** of eval/splits.py ({len(data['pictures'])} pictures at 224²"
        + ("; used for no choice" if data["split"] == "sealed" else "; every codec choice is made here")
        + f"). `.gsq`: the learned init fitted with {data['iters']} iterations at each N of {data['ns']}, each "
        f"fit written at the level `choose_level` picks (within {data['max_loss_db']} dB of the fit, colours "
        "solved on the quantised geometry); `.gsq, rate control`: `FitConfig(max_gaussians="
        f"{MAX_N}, target_psnr=P)` for P in {list(CONTROL_PSNRS)}, each fit written the same way. The codec "
        "targets are judged on rate control (what a user gets); the N sweep is shown beside it (its best N "
        "per picture is known only after fitting them all). Pillow sweeps quality "
        f"{QUALITIES[0]}–{QUALITIES[-1]} for {', '.join(o.upper() for o in others)}. Bytes at equal PSNR are "
        "interpolated on each codec's own curve per picture (never extrapolated: a PSNR below a curve's first "
        "point takes that point's bytes, one above its last is not reached). Ratios are per picture: ∞ where "
        "only the other codec reaches the PSNR, 0 where only .gsq does; the median is over the pictures where "
        "at least one does (counted). "
        "Regenerate: `python -m eval.bench.rate"
        + ("" if data["split"] == "sealed" else f" --split {data['split']}")
        + "`."
    )
    sections = [
        ("Targets", ["target", "value", "verdict"], targets),
        (
            "Bytes ratio at equal PSNR: .gsq / codec, per picture",
            [".gsq", "codec", "PSNR dB", "median", "range", "pictures"],
            summary,
        ),  # fmt: skip
        *control_sections(data),
        (
            "Bytes at equal PSNR per picture: " + " / ".join([*(LABELS[m] for m in mine), *others]),
            ["picture", "kind", *[f"{p:g} dB" for p in PSNRS]],
            per_pic,
        ),  # fmt: skip
        (
            ".gsq per N (medians over pictures)",
            ["N", "bytes", "PSNR fp32 dB", "PSNR .gsq dB", "level", "fit s", "encode s", "decode s"],
            by_n,
        ),  # fmt: skip
        ("Encode and decode time per picture (median, ms)", ["codec", "encode ms", "decode ms"], times),
    ]
    if "choices" in data:
        sections += choice_sections(data["choices"])
    if "predictor" in data:
        pr = data["predictor"]
        sections.append(
            (
                "Rate control's first-N model, fitted here: fitted PSNR − init PSNR at N = "
                f"{pr['probe_n']} ≈ GAIN + SLOPE · log2(N / {pr['probe_n']})",
                ["GAIN dB", "SLOPE dB per doubling", "residual s.d. dB"],
                [[round(pr["gain_db"], 2), round(pr["slope_db"], 2), round(pr["residual_sd_db"], 2)]],
            )
        )
    md = write_results(name, "Rate–distortion: .gsq against JPEG, WebP, AVIF", sections, data, notes,
                       out_dir, machine)  # fmt: skip
    plot(data, out_dir / f"{name}.png")
    return md


LABELS = {"gsq_rc": ".gsq, rate control", "gsq": ".gsq, N sweep (best N per picture, chosen after the fact)"}


def control_targets(data: dict) -> list[list]:
    """Rate control's targets at CONTROL_AT dB, each measured in this run."""
    run = data["rate_control"][f"{CONTROL_AT:g}"]
    ref = data["fixed_reference"]
    pics = run["pictures"]
    mean_n = float(np.mean([p["n"] for p in pics]))
    rows = []
    if "n" in ref:
        limit = CONTROL_N_RATIO * ref["n"]
        rows.append([f"rate control at {CONTROL_AT:g} dB: mean N ≤ {CONTROL_N_RATIO} × the fixed N reaching it on "
                     f"{REACH:.0%} ({ref['n']}, derived from the sweep)", f"{mean_n:.0f}",
                     "met" if mean_n <= limit else "failed"])  # fmt: skip
        ratio_wall = run["wall_s"] / ref["wall_s"]
        # the CPU time beside it: steadier than wall time on a shared machine, judged on wall time all the same
        cpu = f" (CPU time {run['cpu_s'] / ref['cpu_s']:.2f}×)" if "cpu_s" in ref else ""
        rows.append([f"rate control's wall time ≤ {CONTROL_WALL_RATIO} × a fixed N = {ref['n']} fit of the same "
                     "iterations (both measured here)", f"{ratio_wall:.2f}×{cpu}",
                     "met" if ratio_wall <= CONTROL_WALL_RATIO else "failed"])  # fmt: skip
    else:
        rows.append([f"rate control vs the fixed N reaching {CONTROL_AT:g} dB on {REACH:.0%}", "—",
                     f"not testable: no swept N reaches {CONTROL_AT:g} dB on {REACH:.0%} of the pictures"])  # fmt: skip
    within = sum(abs(p["psnr_fp32"] - CONTROL_AT) <= CONTROL_TOLERANCE for p in pics)
    capped = sum(p["n"] >= MAX_N and p["psnr_fp32"] < CONTROL_AT for p in pics)
    rows.append([f"every picture within {CONTROL_TOLERANCE} dB of {CONTROL_AT:g} dB or at N = {MAX_N}",
                 f"{within} within, {capped} at the cap, {len(pics) - within - capped} neither",
                 "met" if within + capped == len(pics) else "failed"])  # fmt: skip
    return rows


def control_sections(data: dict) -> list:
    """Per target: N chosen (mean, median), PSNR, reached, wall time; per picture at CONTROL_AT."""
    rows = []
    for key, run in data["rate_control"].items():
        pics = run["pictures"]
        ns = [p["n"] for p in pics]
        rows.append([key, f"{np.mean(ns):.0f} ({np.median(ns):.0f})", f"{np.median([p['psnr_fp32'] for p in pics]):.2f}",
                     f"{sum(bool(p['reached']) for p in pics)} of {len(pics)}", f"{np.median([p['bytes'] for p in pics]):,.0f}",
                     f"{np.median([p['psnr'] for p in pics]):.2f}", f"{run['wall_s']:.1f}"])  # fmt: skip
    ref = data["fixed_reference"]
    run = data["rate_control"][f"{CONTROL_AT:g}"]
    per = []
    for i, pic in enumerate(data["pictures"]):
        p = run["pictures"][i]
        need = ref["needed_n"][i]
        fixed = ref.get("psnr_fp32")
        per.append([pic, data["kinds"][i], "—" if not np.isfinite(need) else f"{need:.0f}", p["n"], p["n_fitted"],
                    f"{p['psnr_fp32']:.2f}", "yes" if p["reached"] else "no",
                    "—" if fixed is None else f"{fixed[i]:.2f}"])  # fmt: skip
    fixed_label = f"fixed N = {ref['n']} PSNR" if "n" in ref else "fixed N PSNR"
    model = next(iter(data["rate_control"].values()))["model"]
    return [
        (
            f"Rate control (max_gaussians = {MAX_N}; first-N model: GAIN {model['gain_db']:.2f} dB, SLOPE "
            f"{model['slope_db']:.2f} dB per doubling): per target, over the pictures",
            [
                "target dB",
                "N mean (median)",
                "PSNR fp32 median",
                "reached",
                ".gsq bytes median",
                ".gsq PSNR median",
                "wall s (all pictures)",
            ],
            rows,
        ),  # fmt: skip
        (
            f"Rate control at {CONTROL_AT:g} dB per picture (needed N: interpolated on the picture's N sweep, derived)",
            [
                "picture",
                "kind",
                "needed N",
                "N chosen",
                "N fitted before the cut",
                "PSNR fp32",
                "reached",
                fixed_label,
            ],
            per,
        ),  # fmt: skip
    ]


def choice_sections(choices: dict) -> list:
    """The tuning run's tables of the codec's choices: each variant's bytes at equal PSNR against the
    default's (per picture, then the median), and the entropy coders on the same codes."""
    base = choices["curves"]["default"]
    rows = []
    for label, curves in choices["curves"].items():
        if label == "default":
            continue
        cells = []
        for p in PSNRS:
            r = [
                ratio(bytes_at(v["points"], p), bytes_at(d["points"], p))
                for v, d in zip(curves, base, strict=True)
            ]
            med, spread, count = _stats(r)
            cells.append("—" if med is None else f"{med:.3f} ({spread}; {count})")
        rows.append([label, *cells])
    coding = choices["coding_bytes"]
    ref = coding["range coder"]
    coder_rows = [[k, f"{v:,}", f"{v / ref:.3f}"] for k, v in coding.items() if not k.startswith("colours")]
    colour_rows = [
        [k, f"{v:,}", f"{v / coding['colours: YCoCg-R']:.3f}"]
        for k, v in coding.items()
        if k.startswith("colours")
    ]
    return [
        (
            f"Codec choices on the tuning pictures (N = {', '.join(map(str, CHOICE_NS))}): a variant's bytes / the "
            "default's at equal PSNR, median (range; pictures)",
            ["variant", *[f"{p:g} dB" for p in PSNRS]],
            rows,
        ),  # fmt: skip
        (
            "Entropy coding of the default's codes (all tuning pictures and N)",
            ["coder", "bytes", "vs range coder"],
            coder_rows,
        ),  # fmt: skip
        ("Colour columns, range-coded", ["colour transform", "bytes", "vs YCoCg-R"], colour_rows),
    ]


def plot(data: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(data["pictures"])
    cols = 6
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.6 * rows), squeeze=False)
    colours = {
        "gsq_rc": "tab:red",
        "gsq": "tab:orange",
        "jpeg": "tab:blue",
        "webp": "tab:green",
        "avif": "tab:purple",
    }
    names = {"gsq_rc": ".gsq rate control", "gsq": ".gsq N sweep"}
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        for codec, curves in data["codecs"].items():
            b, q = envelope(curves[i]["points"])
            ax.plot(b, q, "-o", ms=2, lw=1, color=colours.get(codec), label=names.get(codec, codec.upper()))
        ax.set_xscale("log")
        ax.set_title(f"{data['pictures'][i]} ({data['kinds'][i]})", fontsize=8)
        ax.set_ylim(22, 48)
        for p in PSNRS:
            ax.axhline(p, color="0.85", lw=0.5, zorder=0)
        ax.tick_params(labelsize=6)
    axes.flat[0].legend(fontsize=6)
    fig.supxlabel("bytes per picture (224², log)")
    fig.supylabel("PSNR dB")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", choices=("sealed", "tuning"), default="sealed")
    ap.add_argument("--ns", type=int, nargs="+", default=list(NS))
    ap.add_argument("--iters", type=int, default=ITERS)
    ap.add_argument("--max-loss", type=float, default=MAX_LOSS_DB)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(report(run(args.split, tuple(args.ns), args.iters, args.max_loss)))


if __name__ == "__main__":
    main()
