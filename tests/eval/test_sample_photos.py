"""The committed photographs (eval/bench/photos/) are scikit-image's, bit for bit, so the tests and the
benchmarks give the same numbers with or without scikit-image installed."""

import numpy as np
import pytest

from eval.bench.common import PHOTO_DIR, PHOTOS, photos, sample_photo


def test_committed_copies_equal_scikit_image():
    skimage_data = pytest.importorskip("skimage.data")
    for name in PHOTOS:
        ours, theirs = sample_photo(name), getattr(skimage_data, name)()
        assert ours.dtype == theirs.dtype == np.uint8, name
        assert ours.shape == theirs.shape, name
        assert np.array_equal(ours, theirs), f"{PHOTO_DIR / name}.png differs from skimage.data.{name}()"


def test_committed_copies_are_small_and_complete():
    sizes = {name: (PHOTO_DIR / f"{name}.png").stat().st_size for name in PHOTOS}
    assert sum(sizes.values()) < 2_000_000, sizes
    assert photos(32).shape == (len(PHOTOS), 3, 32, 32)


def test_unknown_photo_is_named():
    with pytest.raises(ValueError, match="'no_such_photo'"):
        sample_photo("no_such_photo")
