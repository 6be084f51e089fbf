"""The .gsq codec: its range coder, exact round trips of the codes, the colour solve, levels chosen by the
fit's error, and damaged files."""

import math
import random
from collections import Counter

import numpy as np
import pytest
import torch

from gs_encoder import FitConfig, fit_images, psnr, render
from gs_encoder.codec import (
    DEFAULT_LEVEL,
    Codes,
    _rgb,
    _ycocg,
    choose_level,
    decode_gsq,
    dequantise,
    encode_gsq,
    gsq_info,
    load_gsq,
    pack,
    quantise,
    save_gsq,
    steps,
    unpack,
)
from gs_encoder.entropy import Decoder, Encoder, Model
from gs_encoder.splat_io import SplatFileError, as_stored, payload_bytes


@pytest.fixture(scope="module")
def fitted(photo):
    img = photo("chelsea", size=64)
    (r,) = fit_images(img[None], FitConfig(num_gaussians=400, iters=100))
    return img, r.splats


def _code(values):
    enc, model = Encoder(), Model()
    for v in values:
        enc.sint(model, v)
    return enc.finish()


def test_range_coder_round_trips_every_value_and_costs_about_the_entropy():
    rng = random.Random(0)
    for _ in range(100):
        scale = rng.choice([0.3, 3, 300, 3e6])
        values = [int(rng.gauss(0, scale)) for _ in range(rng.randint(0, 200))] + [2**39, -(2**39) + 1, 0]
        data = _code(values)
        dec, model = Decoder(data), Model()
        assert [dec.sint(model) for _ in values] == values
    values = [int(rng.gauss(0, 20)) for _ in range(20000)]
    counts = Counter(values)
    entropy = -sum(c / len(values) * math.log2(c / len(values)) for c in counts.values())
    bits = 8 * len(_code(values)) / len(values)
    assert entropy <= bits <= 1.03 * entropy  # an adaptive model pays a little to learn the distribution
    with pytest.raises(ValueError, match="more than 40 bits"):
        _code([2**41])


def test_ycocg_r_is_lossless_on_integers():
    rgb = np.random.default_rng(0).integers(-5000, 5000, (1000, 3))
    assert np.array_equal(_rgb(_ycocg(rgb)), rgb)


def test_round_trip_is_exact_on_codes(fitted):
    _, s = fitted
    data = encode_gsq(s)
    codes = quantise(s)
    assert unpack(data) == codes and pack(codes) == data  # the codes survive exactly
    dec = decode_gsq(data)
    assert dec.shape == s.shape and dec.dtype == torch.float32
    torch.testing.assert_close(dequantise(codes), dec, rtol=0, atol=0)
    # reordered (Morton order), not changed: every Gaussian lies within half a step of an input one
    d = torch.cdist(dec[:, :2].double(), s[:, :2].double()).min(1).values
    assert float(d.max()) <= steps(DEFAULT_LEVEL)[0] * 0.71
    assert gsq_info(data) == {
        "num_gaussians": 400,
        "level": DEFAULT_LEVEL,
        "steps": dict(zip(("xy", "shape", "colour"), steps(DEFAULT_LEVEL), strict=True)),
        "bytes": len(data),
    }


def test_levels_trade_bytes_for_quality(fitted):
    img, s = fitted
    p16 = float(psnr(render(as_stored(s), size=64), img))
    sizes, scores = [], []
    for level in (-8, 0, 8):
        data = encode_gsq(s, level)
        sizes.append(len(data))
        scores.append(float(psnr(render(decode_gsq(data), size=64), img)))
    assert sizes[0] > sizes[1] > sizes[2] and scores[0] > scores[2]
    assert sizes[1] * 2 <= payload_bytes(400) and p16 - scores[1] <= 0.5  # the default level


def test_the_colour_solve_and_the_chosen_level(fitted):
    img, s = fitted
    base = float(psnr(render(s, size=64), img))
    coarse = 12
    plain = float(psnr(render(decode_gsq(encode_gsq(s, coarse)), size=64), img))
    solved = float(psnr(render(decode_gsq(encode_gsq(s, coarse, image=img)), size=64), img))
    assert solved > plain + 0.1  # colours solved on the quantised geometry win back part of the loss
    for loss in (0.1, 1.0):
        level, codes = choose_level(s, img, loss)
        assert float(psnr(render(dequantise(codes), size=64), img)) >= base - loss
        assert pack(codes) == encode_gsq(s, image=img, max_loss_db=loss)
        if loss == 0.1:
            fine = level
    assert level > fine  # a larger loss allowed: a coarser level
    with pytest.raises(ValueError, match="max_loss_db"):
        choose_level(s, img, 0.0)


def test_damaged_and_wrong_files(tmp_path, fitted):
    _, s = fitted
    path = save_gsq(tmp_path / "a.gsq", s)
    torch.testing.assert_close(load_gsq(path), decode_gsq(path.read_bytes()))
    raw = path.read_bytes()
    mid = len(raw) // 2
    for bad in (
        raw[:mid],
        raw[:10],
        raw[:mid] + bytes([raw[mid] ^ 0x5A]) + raw[mid + 1 :],
        raw[:5] + b"\x7f" + raw[6:],
    ):
        path.write_bytes(bad)
        with pytest.raises(SplatFileError, match=r"a\.gsq: damaged"):
            load_gsq(path)
    # any single flipped byte: an error naming the file, or (a bit the decoder never needed) the same set
    for pos in range(0, len(raw), 7):
        path.write_bytes(raw[:pos] + bytes([raw[pos] ^ 0x01]) + raw[pos + 1 :])
        try:
            assert torch.equal(load_gsq(path), decode_gsq(raw))
        except SplatFileError as e:
            assert "a.gsq" in str(e)
    path.write_bytes(b"GSQ1" + raw[4:])
    with pytest.raises(SplatFileError, match="not a .gsq"):
        load_gsq(path)
    with pytest.raises(SplatFileError, match="not found"):
        load_gsq(tmp_path / "missing.gsq")
    with pytest.raises(ValueError, match="level 200 is out of range"):
        encode_gsq(s, 200)
    with pytest.raises(ValueError, match="choose a coarser level"):
        encode_gsq(s, -24)


def test_degenerate_sets():
    one = torch.tensor([[0.5, 0.5, 0.1, 0.0, 0.1, 0.2, 0.3, 0.4]])
    torch.testing.assert_close(decode_gsq(encode_gsq(one, -40)), one, rtol=2e-4, atol=2e-4)
    same = one.repeat(5, 1)
    torch.testing.assert_close(decode_gsq(encode_gsq(same, -40)), same, rtol=2e-4, atol=2e-4)
    with pytest.raises(SplatFileError):
        encode_gsq(np.full((3, 8), np.nan, np.float32))
    with pytest.raises(SplatFileError, match="no Gaussians"):
        encode_gsq(np.zeros((0, 8), np.float32))
    assert isinstance(quantise(one), Codes)
