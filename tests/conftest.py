"""Test-wide settings: offline hubs, few threads, and shared fixtures (real photographs from scikit-image)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def photo():
    """Return a loader: photo(name, size, mode) → [3, S, S] from scikit-image's photographs (the
    committed copies in eval/bench/photos/, so scikit-image is not needed for those)."""
    from eval.bench.common import sample_photo
    from gs_encoder.image_io import to_canvas

    def load(name="chelsea", size=32, mode="crop"):
        return to_canvas(sample_photo(name) / 255.0, size, mode)

    return load


@pytest.fixture(scope="session")
def photo_path():
    """Path of a real photograph file shipped inside scikit-image."""
    from pathlib import Path

    import skimage

    return lambda name="chelsea.png": Path(skimage.data_dir) / name


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE tokenizer with <image>, trained offline in well under a second."""
    from llava_gs import train_bpe_tokenizer

    from .tiny import TEXT

    return train_bpe_tokenizer(TEXT * 20, vocab_size=300)


@pytest.fixture(scope="session")
def tiny_parts(tmp_path_factory, tiny_tokenizer, photo_path):
    """A tiny Llama, GS encoder, LLaVA-format data and splat cache on disk (tests/tiny.py)."""
    from .tiny import build_tiny_parts

    return build_tiny_parts(tmp_path_factory.mktemp("tiny_llava"), tiny_tokenizer, photo_path)


@pytest.fixture(scope="session")
def tiny_init(tiny_parts):
    """The initial GS-LLaVA folder built from tiny_parts by scripts/build_init_checkpoint.py."""
    from .tiny import build_init

    return build_init(tiny_parts)
