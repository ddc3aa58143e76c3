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
