"""Writing files and folders so that a crash at any moment never leaves half of one: the project's one
tmp-then-rename helper (in the lowest package, so that every layer uses the same one; stdlib only)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike, folder: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary sibling of `path` to write (with `folder`, an empty directory to fill); when
    the block ends without an error it is renamed over `path` (an existing folder is replaced), else removed.
    The temporary name keeps `path`'s suffix, so writers that infer a format from it (PIL) still can."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    _remove(tmp)
    if folder:
        tmp.mkdir()
    try:
        yield tmp
        if folder and path.is_dir():  # a folder cannot be renamed over a full one: move the old one aside
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            _remove(old)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary sibling renamed over it."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` through a temporary sibling renamed over it."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
