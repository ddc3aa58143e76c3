"""Files written whole or not at all: a temporary name beside the file, then ``os.replace``.

A reader (a report rebuilt from a run directory, another run restoring a memo) sees
the old file or the new one, never half of either; an interrupted write leaves its
temporary file (``.<name>.<pid>.tmp<suffix>``), never a truncated ``results.json``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def tmp_name(path: Path) -> Path:
    """A name beside ``path`` that this process alone writes; it keeps the suffix (PIL and
    matplotlib choose the format by it)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


@contextlib.contextmanager
def replacing(path: Path):
    """Yield a temporary path to write; on a clean exit it replaces ``path``, else it
    is removed."""
    tmp = tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: Path, data: bytes) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def copy(src: Path, dest: Path) -> None:
    """Copy the file ``src`` to ``dest`` (a file path) atomically."""
    import shutil

    with replacing(dest) as tmp:
        shutil.copyfile(src, tmp)


@contextlib.contextmanager
def replacing_folder(path: Path):
    """Yield a temporary folder beside ``path`` to fill; on a clean exit it takes the place
    of ``path`` (whose old content, when there was one, is removed), else it is removed.
    A reader sees the old folder or the new one whole."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
