"""Loading odd and broken images onto the canvas."""

import numpy as np
import pytest
import torch
from PIL import Image

from gs_encoder.image_io import CLIP_MEAN, ImageLoadError, load_image, to_canvas


def save(tmp_path, name, arr_or_img, **kw):
    path = tmp_path / name
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    img.save(path, **kw)
    return path


def test_real_photo_shapes_and_range(photo_path):
    for mode in ("pad", "crop", "resize"):
        x = load_image(photo_path("coffee.png"), 64, mode)
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32
        assert 0 <= x.min() and x.max() <= 1
    pad = load_image(photo_path("coffee.png"), 64, "pad")  # 400×600: bands top and bottom
    torch.testing.assert_close(pad[:, 0, 0], torch.tensor(CLIP_MEAN), atol=1e-6, rtol=0)
    crop = load_image(photo_path("coffee.png"), 64, "crop")
    assert (crop[:, 0, :] - torch.tensor(CLIP_MEAN)[:, None]).abs().max() > 0.05


def test_exif_orientation(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=95)
    x = load_image(path, 16, "resize")
    # after a clockwise turn the white half is on top
    assert x[:, :6].mean() > 0.9 and x[:, -6:].mean() < 0.1


def test_grayscale_palette_16bit(tmp_path):
    g = save(tmp_path, "g.png", np.full((8, 8), 128, np.uint8))
    x = load_image(g, 8, "resize")
    torch.testing.assert_close(x, torch.full((3, 8, 8), 128 / 255))
    p = save(tmp_path, "p.png", Image.fromarray(np.full((8, 8, 3), (255, 0, 0), np.uint8)).convert("P"))
    torch.testing.assert_close(load_image(p, 8, "resize")[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    a16 = np.full((8, 8), 65535 // 4, np.uint16)
    path16 = tmp_path / "g16.png"
    Image.fromarray(a16).save(path16)
    assert Image.open(path16).mode.startswith("I")
    torch.testing.assert_close(load_image(path16, 8, "resize"), torch.full((3, 8, 8), (65535 // 4) / 65535))


def test_rgba_composited(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[..., 0] = 255
    arr[:, :4, 3] = 255  # left opaque red, right transparent
    path = save(tmp_path, "a.png", arr)
    white = load_image(path, 8, "resize", background="white")
    torch.testing.assert_close(white[:, 0, 7], torch.ones(3))
    mean = load_image(path, 8, "resize", background="mean")
    torch.testing.assert_close(mean[:, 0, 7], torch.tensor([1.0, 0.0, 0.0]))


def test_one_pixel_image(tmp_path):
    path = save(tmp_path, "one.png", np.array([[[10, 200, 30]]], np.uint8))
    x = load_image(path, 16, "crop")
    torch.testing.assert_close(
        x, torch.tensor([10, 200, 30]).float().div(255).view(3, 1, 1).expand(3, 16, 16)
    )


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "truncated_png", "truncated_jpg", "directory"])
def test_bad_files_name_the_file(tmp_path, photo_path, kind):
    path = tmp_path / f"{kind}.png"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not an image\n")
    elif kind == "truncated_png":
        path.write_bytes(photo_path("chelsea.png").read_bytes()[:5000])
    elif kind == "truncated_jpg":
        path = tmp_path / "t.jpg"
        path.write_bytes(photo_path("rocket.jpg").read_bytes()[:3000])
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(ImageLoadError) as e:
        load_image(path, 32)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_truncated_files_fail_even_when_pil_is_told_to_load_them(tmp_path, photo_path, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as lmms-eval's task code sets it
    path = tmp_path / "t.jpg"
    path.write_bytes(photo_path("rocket.jpg").read_bytes()[:3000])
    with pytest.raises(ImageLoadError, match="cannot decode"):
        load_image(path, 32)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the global setting is left as it was


def test_size_guard(tmp_path):
    path = save(tmp_path, "big.png", np.zeros((300, 400, 3), np.uint8))
    with pytest.raises(ImageLoadError, match="max-pixels"):
        load_image(path, 32, max_pixels=100_000)
    assert load_image(path, 32, max_pixels=120_000).shape == (3, 32, 32)


def test_large_jpeg_is_decoded_reduced(tmp_path):
    arr = (np.random.default_rng(0).random((2000, 3000, 3)) * 255).astype(np.uint8)
    path = save(tmp_path, "large.jpg", arr, quality=80)
    assert load_image(path, 64, "crop").shape == (3, 64, 64)


def test_to_canvas_rejects_unknown_mode():
    with pytest.raises(ValueError, match="resize mode"):
        to_canvas(np.zeros((4, 4, 3)), 8, "stretch")
