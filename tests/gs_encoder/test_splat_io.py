"""The .gs.npy format: round trips and every kind of broken file."""

import json

import numpy as np
import pytest
import torch

from gs_encoder.splat_io import SplatFileError, load_splats, payload_bytes, save_splats


def valid(n=10):
    g = torch.Generator().manual_seed(0)
    s = torch.rand(n, 8, generator=g)
    s[:, 2:5] = s[:, 2:5] * 0.05 + 0.001
    s[:, 3] -= 0.02
    return s


def test_round_trip_within_fp16(tmp_path):
    s = valid(50)
    path = save_splats(tmp_path / "a.gs.npy", s, {"psnr": 30.0})
    back, meta = load_splats(path, with_meta=True)
    assert back.dtype == torch.float32 and back.shape == (50, 8)
    torch.testing.assert_close(back, s, rtol=1e-3, atol=1e-4)  # fp16: 11-bit mantissa
    assert meta == {"psnr": 30.0}
    assert np.load(path).dtype == np.float16
    assert path.stat().st_size == payload_bytes(50) + 128  # .npy header is 128 bytes
    assert json.loads((tmp_path / "a.json").read_text())["psnr"] == 30.0
    assert not list(tmp_path.glob(".*.tmp*"))


def test_save_refuses_bad_splats(tmp_path):
    bad = valid()
    bad[3, 6] = float("inf")
    with pytest.raises(SplatFileError, match="NaN/Inf"):
        save_splats(tmp_path / "x.gs.npy", bad)
    with pytest.raises(SplatFileError, match="N = 0"):
        save_splats(tmp_path / "x.gs.npy", torch.zeros(0, 8))
    big = valid()
    big[0, 5] = 1e6
    with pytest.raises(SplatFileError, match="float16"):
        save_splats(tmp_path / "x.gs.npy", big)
    assert not (tmp_path / "x.gs.npy").exists()


@pytest.mark.parametrize(
    "content, match",
    [
        (np.full((4, 8), np.nan, np.float16), "NaN"),
        (np.ones((4, 7), np.float16), r"shape \[N, 8\]"),
        (np.ones((2, 4, 8), np.float16), r"shape \[N, 8\]"),
        (np.ones((4, 8), np.int32), "float16 or float32"),
        (np.zeros((4, 8), np.float16), "l11 must be > 0"),
        (np.ones((0, 8), np.float16), "N = 0"),
    ],
)
def test_bad_arrays(tmp_path, content, match):
    path = tmp_path / "bad.gs.npy"
    np.save(path, content)
    with pytest.raises(SplatFileError, match=match) as e:
        load_splats(path)
    assert str(path) in str(e.value)


def test_truncated_missing_and_pickled(tmp_path):
    path = save_splats(tmp_path / "t.gs.npy", valid(100))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SplatFileError, match="not a readable"):
        load_splats(path)
    with pytest.raises(SplatFileError, match="not found"):
        load_splats(tmp_path / "nope.gs.npy")
    obj = tmp_path / "obj.gs.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SplatFileError, match="not a readable"):
        load_splats(obj)
    (tmp_path / "text.gs.npy").write_text("hello")
    with pytest.raises(SplatFileError):
        load_splats(tmp_path / "text.gs.npy")


@pytest.mark.parametrize(
    "header",
    [
        b"{'descr': '<f2', 'fortran_order': False, 'shape': (3, 8",  # cut short: tokenize.TokenError inside numpy
        b"{'descr': '<f2', 'fortran_order': False, 'shape': (3, 8)) }",  # unbalanced: SyntaxError
        b"not a dict at all",
    ],
)
def test_malformed_npy_header_is_a_one_line_error(tmp_path, header):
    header = header + b" " * (118 - len(header)) + b"\n"
    path = tmp_path / "bad.gs.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 48)
    with pytest.raises(SplatFileError, match=r"bad.gs.npy: not a readable .npy file .*refit the image"):
        load_splats(path)
