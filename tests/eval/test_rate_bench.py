"""eval.bench.rate's rules: bytes at equal PSNR on a codec's own curve (never extrapolated), the per-picture
ratio's inf/0 cases, the N a picture needs on its sweep, and rate control's verdicts."""

import math

import pytest

from eval.bench import rate


def _curve(*pts):
    return [{"bytes": b, "psnr": q} for b, q in pts]


def test_bytes_at_interpolates_log_bytes_on_the_envelope_and_never_extrapolates():
    # (300, 29) is worse than a smaller file: the envelope drops it
    curve = _curve((100, 25.0), (400, 35.0), (300, 29.0), (200, 30.0))
    assert rate.bytes_at(curve, 30.0) == pytest.approx(200)
    assert rate.bytes_at(curve, 32.5) == pytest.approx(
        math.sqrt(200 * 400)
    )  # halfway in dB, geometric in bytes
    assert rate.bytes_at(curve, 20.0) == 100  # below the first point: that point's bytes
    assert rate.bytes_at(curve, 35.01) is None  # above the last: not reached
    assert rate.bytes_at([], 30.0) is None


def test_ratio_marks_who_reaches_the_psnr():
    assert rate.ratio(50.0, 100.0) == 0.5
    assert rate.ratio(None, 100.0) == math.inf
    assert rate.ratio(50.0, None) == 0.0
    assert rate.ratio(None, None) is None


def test_needed_n_is_log_linear_between_swept_n():
    points = [{"n": n, "psnr_fp32": q} for n, q in ((100, 30.0), (400, 34.0), (1600, 33.0))]
    assert rate.needed_n(points, 32.0) == pytest.approx(200)  # halfway in dB between 100 and 400
    assert rate.needed_n(points, 29.0) == 100
    assert rate.needed_n(points, 34.5) == math.inf  # the sweep's best PSNR so far never gets there


def _data(wall_rc, n_rc, psnrs, wall_fixed=10.0, n_fixed=1000):
    pics = [{"n": n, "psnr_fp32": q} for n, q in zip(n_rc, psnrs, strict=True)]
    return {
        "rate_control": {f"{rate.CONTROL_AT:g}": {"wall_s": wall_rc, "cpu_s": wall_rc, "pictures": pics}},
        "fixed_reference": {"n": n_fixed, "wall_s": wall_fixed, "cpu_s": wall_fixed},
    }


def test_rate_control_verdicts():
    at = rate.CONTROL_AT
    good = rate.control_targets(_data(14.0, [500, 600], [at + 0.1, at - 0.2]))
    assert [r[2] for r in good] == ["met", "met", "met"]
    assert good[1][1] == "1.40× (CPU time 1.40×)"
    bad = rate.control_targets(_data(16.0, [700, rate.MAX_N], [at + 0.5, at - 1.0]))
    assert [r[2] for r in bad] == ["failed", "failed", "failed"]  # 650 > 600; 1.6×; one overshoots by 0.5 dB
    assert bad[2][1] == "0 within, 1 at the cap, 1 neither"
