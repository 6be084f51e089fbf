"""eval/splits.py: the fitting splits are disjoint by content (not by name), the sealed set is of mixed
real content with a source for every picture, and train_init leaves sealed pictures out."""

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from eval import splits
from gs_encoder import init_images
from gs_encoder.image_io import fingerprint, same_picture


def _train_fingerprints() -> dict[str, str]:
    """train_init's photographs as it sees them (bool and float pictures scaled to [0, 1])."""
    import skimage.data

    out = {}
    for n in init_images.TRAIN_PHOTOS:
        rgb = init_images._to_rgb_tensor(getattr(skimage.data, n)()).permute(1, 2, 0).numpy()
        out[f"skimage.{n}"] = fingerprint(np.round(rgb * 255).astype(np.uint8))
    return out


def test_sealed_tuning_and_training_images_are_disjoint_by_content():
    groups = {
        "train": _train_fingerprints(),
        "tuning": {p.name: fingerprint(p.load()) for p in splits.TUNING},
        "sealed": {p.name: fingerprint(p.load()) for p in splits.SEALED},
    }
    for (ga, a), (gb, b) in itertools.combinations(groups.items(), 2):
        for (na, fa), (nb, fb) in itertools.product(a.items(), b.items()):
            assert not same_picture(fa, fb), f"{ga}:{na} and {gb}:{nb} are one picture"
    for name, fps in groups.items():  # no picture twice within a split either
        for (na, fa), (nb, fb) in itertools.combinations(fps.items(), 2):
            assert not same_picture(fa, fb), f"{name}: {na} and {nb} are one picture"


def test_fingerprints_see_content_not_names():
    import skimage.data

    chelsea = np.asarray(skimage.data.chelsea())
    assert same_picture(fingerprint(chelsea), fingerprint(np.asarray(skimage.data.cat())))  # two names
    buf = io.BytesIO()
    Image.fromarray(chelsea).resize((151, 100)).save(buf, "JPEG", quality=60)  # smaller, re-encoded
    assert same_picture(fingerprint(chelsea), fingerprint(np.asarray(Image.open(buf))))
    assert not same_picture(fingerprint(chelsea), fingerprint(np.asarray(skimage.data.coffee())))
    with pytest.raises(ValueError, match="cells"):
        same_picture("00", fingerprint(chelsea))


def test_sealed_set_is_mixed_real_content_with_sources():
    assert len(splits.SEALED) >= 16
    kinds = {p.kind for p in splits.SEALED}
    assert kinds == set(splits.KINDS), set(splits.KINDS) - kinds
    assert sum(p.kind == "photo" for p in splits.SEALED) >= 6
    for p in splits.TUNING + splits.SEALED:
        assert p.kind in splits.KINDS and p.source and p.file.is_file(), p.name
    names, batch = splits.images("sealed", 64)
    assert names == [p.name for p in splits.SEALED] and batch.shape == (len(names), 3, 64, 64)
    assert all(p.load().shape == (224, 224, 3) for p in splits.SEALED)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        splits.pictures("test")


def test_sealed_fingerprint_file_is_current():
    written = init_images.sealed_fingerprints()
    for p in splits.SEALED:
        assert fingerprint(p.load()) in written, p.name


def test_train_init_leaves_sealed_pictures_out(tmp_path, capsys):
    import skimage.data

    folder = tmp_path / "mine"
    folder.mkdir()
    sealed = splits.SEALED[0].load()
    Image.fromarray(sealed).save(folder / "a_copy.png")
    Image.fromarray(sealed).resize((448, 448)).save(folder / "b_bigger.jpg", quality=90)
    Image.fromarray(np.asarray(skimage.data.coffee())).save(folder / "c_coffee.png")
    photos = init_images.load_photos([str(folder)])
    assert len(photos) == 1
    err = capsys.readouterr().err
    assert (
        "left out 2 image(s) of the sealed test set" in err and "a_copy.png" in err and "b_bigger.jpg" in err
    )
    (folder / "c_coffee.png").unlink()
    with pytest.raises(FileNotFoundError, match="once the sealed test pictures are left out"):
        init_images.load_photos([str(folder)])
