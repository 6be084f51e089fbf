"""The .gsq codec: exact round trip of its quantised values, size and quality bounds, damaged files."""

import numpy as np
import pytest
import torch

from gs_encoder import FitConfig, fit_images, psnr, render
from gs_encoder.codec import decode_gsq, dequantise, encode_gsq, load_gsq, pack, quantise, save_gsq, unpack
from gs_encoder.splat_io import SplatFileError, as_stored, payload_bytes


@pytest.fixture(scope="module")
def fitted(photo):
    img = photo("chelsea", size=64)
    (r,) = fit_images(img[None], FitConfig(num_gaussians=400, iters=100))
    return img, r.splats


def test_round_trip_is_exact_on_quantised_values(fitted):
    _, s = fitted
    data = encode_gsq(s)
    dec = decode_gsq(data)
    assert dec.shape == s.shape and dec.dtype == torch.float32
    q, ranges, bits = quantise(s)
    q2, ranges2, bits2 = unpack(data)
    assert (
        np.array_equal(q, q2) and np.array_equal(ranges, ranges2) and bits == bits2
    )  # the codes survive exactly
    assert pack(q2, ranges2, bits2) == data
    torch.testing.assert_close(dequantise(q2, ranges2, bits2), dec, rtol=0, atol=0)
    # the set is reordered (Morton order), not changed: every Gaussian is close to one of the input
    d = torch.cdist(dec[:, :2], s[:, :2]).min(1).values
    assert d.max() < 2 / 2**11 * 1.5


def test_size_and_quality_bound(fitted):
    img, s = fitted
    data = encode_gsq(s)
    assert len(data) * 2 <= payload_bytes(s.shape[0])  # ≥ 2× smaller than the fp16 payload
    p16 = float(psnr(render(as_stored(s), size=64), img))
    pq = float(psnr(render(decode_gsq(data), size=64), img))
    assert p16 - pq <= 0.5
    assert len(encode_gsq(s, 8, 5, 5)) < len(data) < len(encode_gsq(s, 14, 10, 10))


def test_files_and_damage(tmp_path, fitted):
    _, s = fitted
    path = save_gsq(tmp_path / "a.gsq", s)
    torch.testing.assert_close(load_gsq(path), decode_gsq(path.read_bytes()))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SplatFileError, match="damaged"):
        load_gsq(path)
    path.write_bytes(b"GSQ0" + raw[4:])
    with pytest.raises(SplatFileError, match="not a .gsq"):
        load_gsq(path)
    with pytest.raises(SplatFileError, match="not found"):
        load_gsq(tmp_path / "missing.gsq")
    with pytest.raises(ValueError, match="xy_bits"):
        encode_gsq(s, xy_bits=0)


def test_degenerate_sets():
    one = torch.tensor([[0.5, 0.5, 0.1, 0.0, 0.1, 0.2, 0.3, 0.4]])
    torch.testing.assert_close(decode_gsq(encode_gsq(one)), one, rtol=1e-6, atol=1e-6)
    same = one.repeat(5, 1)
    torch.testing.assert_close(decode_gsq(encode_gsq(same)), same, rtol=1e-6, atol=1e-6)
    with pytest.raises(SplatFileError):
        encode_gsq(np.full((3, 8), np.nan, np.float32))


def test_default_bits_follow_density():
    from gs_encoder.codec import default_bits, unpack

    assert default_bits(400) == (11, 7, 7) and default_bits(3136) == (12, 8, 8)
    dense = torch.rand(2000, 8)
    dense[:, 2:5] = 0.01 + 0.01 * dense[:, 2:5]
    assert unpack(encode_gsq(dense))[2][:3] == [12, 12, 8]
