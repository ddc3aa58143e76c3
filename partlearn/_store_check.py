"""Checking a cache entry before it is served, and reading its arrays (``partlearn.cache``).

``describe(folder)`` records every file of an entry: its size and a cheap
digest, blake2b of the whole file up to 8 MB, else of the size, the first and
last MB and 16 evenly spaced 64 KB blocks (a few MB read however large the
file). ``check(path, stage, key)`` returns ``(meta, None)`` for an intact entry
and ``(None, reason)`` otherwise: a ``meta.json`` that is missing, does not
parse, or names another entry; a recorded file missing, of another size or
with another digest. An entry written before files were recorded is checked by
its ``.npy`` headers: each array file must be exactly as long as its header
says, and each of its ``n_shards`` shard folders must exist.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from ._validation import DataError

META = "meta.json"
SHARD = "shard_{:05d}"
WHOLE = 8 << 20
EDGE = 1 << 20
BLOCK = 64 << 10
N_BLOCKS = 16


def digest(path: Path, size: int) -> str:
    """The digest of a file of ``size`` bytes (see the module)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        if size <= WHOLE:
            for chunk in iter(lambda: f.read(EDGE), b""):
                h.update(chunk)
            return h.hexdigest()
        h.update(str(size).encode())
        spans = [(0, EDGE), (size - EDGE, EDGE)]
        spans += [((size - BLOCK) * i // (N_BLOCKS - 1), BLOCK) for i in range(N_BLOCKS)]
        for offset, n in spans:
            h.update(os.pread(f.fileno(), n, offset))
    return h.hexdigest()


def load_array(path: Path, mmap: bool, key: str) -> np.ndarray:
    """``np.load`` of a cached array; a file that does not load is a ``DataError`` naming it."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read the cached array {path} ({e}); remove the entry with "
                        f"`partlearn cache rm {key}` and run again") from e


def describe(folder: Path) -> dict:
    """``{relative path: {"bytes": n, "digest": d}}`` of every file under ``folder``
    except its ``meta.json``."""
    files = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if rel != META and p.is_file():
            n = p.stat().st_size
            files[rel] = {"bytes": n, "digest": digest(p, n)}
    return files


def check(path: Path, stage: str, key: str) -> tuple[dict | None, str | None]:
    """``(meta, None)`` when the entry at ``path`` is intact, else ``(None, what is wrong)``."""
    try:
        meta = json.loads((path / META).read_text())
    except FileNotFoundError:
        return None, f"{META} is missing"
    except (OSError, ValueError) as e:
        return None, f"{META} does not parse ({e})"
    if not isinstance(meta, dict):
        return None, f"{META} is not a JSON object"
    if meta.get("stage") != stage or meta.get("key") != key:
        return None, f"{META} is that of {meta.get('stage')}/{meta.get('key')}"
    files = meta.get("files")
    if files is None:
        problem = _legacy_problem(path, meta)
    elif isinstance(files, dict):
        problem = next(filter(None, (_file_problem(path, rel, rec)
                                     for rel, rec in files.items())), None)
    else:
        problem = f"{META} records its files as {type(files).__name__}, not a table"
    return (None, problem) if problem else (meta, None)


def _file_problem(path: Path, rel: str, rec) -> str | None:
    try:
        want, want_digest = int(rec["bytes"]), rec["digest"]
    except (KeyError, TypeError, ValueError):
        return f"{META}'s record of {rel} is malformed"
    try:
        size = (path / rel).stat().st_size
        if size != want:
            return f"{rel} is {size:,} bytes, {META} recorded {want:,}"
        if digest(path / rel, size) != want_digest:
            return f"{rel} has changed since it was written (its digest differs)"
    except FileNotFoundError:
        return f"{rel} is missing"
    except OSError as e:
        return f"{rel} cannot be read ({e.strerror})"
    return None


def _legacy_problem(path: Path, meta: dict) -> str | None:
    """An entry without recorded files: every ``.npy`` as long as its header says."""
    for p in sorted(path.rglob("*.npy")):
        problem = npy_problem(p)
        if problem:
            return f"{p.relative_to(path).as_posix()} {problem}"
    try:
        n_shards = int(meta.get("n_shards", 0))
    except (TypeError, ValueError):
        return f"{META}'s n_shards is {meta.get('n_shards')!r}"
    missing = [s for s in range(n_shards) if not (path / SHARD.format(s)).is_dir()]
    return f"{SHARD.format(missing[0])}/ is missing" if missing else None


def npy_problem(path: Path) -> str | None:
    """None when the ``.npy`` file's length is what its header says, else what is wrong."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            read = {(1, 0): fmt.read_array_header_1_0,
                    (2, 0): fmt.read_array_header_2_0}.get(version)
            if read is None:  # a newer header: let NumPy map it (this fails when too short)
                np.load(path, mmap_mode="r", allow_pickle=False)
                return None
            shape, _, dtype = read(f)
            expected = f.tell() + dtype.itemsize * math.prod(shape)
            size = os.fstat(f.fileno()).st_size
    except (OSError, ValueError, EOFError) as e:
        return f"does not read as a .npy file ({e})"
    if size != expected:
        return f"is {size:,} bytes, its .npy header says {expected:,}"
    return None
