"""A content-addressed store of stage outputs: ``.npy`` arrays plus ``meta.json``.

An entry lives at ``ROOT/<stage>/<key>/``. Its key hashes the stage's name,
version, parameters, the keys of its inputs and the library versions that
change its numbers (DVC-style lock chaining). It is written in
``ROOT/<stage>/<key>.partial/`` and moved into place with one ``os.replace``
after ``meta.json``, the completion marker, is written last: a reader never
sees a half-written entry. Sharded entries keep their finished shards in the
partial folder, so an interrupted writer resumes from the last complete
shard. Arrays are read back memory-mapped. No pickles: ``allow_pickle=False``.

This module knows nothing of the stages themselves.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

META = "meta.json"
PARTIAL = ".partial"
_SHARD = "shard_{:05d}"


def make_key(stage: str, version: int, params: dict, inputs: dict, libs: dict) -> str:
    """The entry key: a sha256 over everything that determines the stage's output."""
    blob = json.dumps(
        {"stage": stage, "version": version, "params": params, "inputs": inputs, "libs": libs},
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def _save_array(path: Path, array) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.asarray(array), allow_pickle=False)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Entry:
    """A complete cache entry, read-only."""

    path: Path
    meta: dict

    @property
    def stage(self) -> str:
        return self.meta["stage"]

    @property
    def key(self) -> str:
        return self.meta["key"]

    def array(self, name: str, mmap: bool = True) -> np.ndarray:
        return np.load(self.path / f"{name}.npy", mmap_mode="r" if mmap else None,
                       allow_pickle=False)

    def json(self, name: str):
        return json.loads((self.path / f"{name}.json").read_text())

    @property
    def n_shards(self) -> int:
        return int(self.meta.get("n_shards", 0))

    def shard_array(self, shard: int, name: str, mmap: bool = True) -> np.ndarray:
        return np.load(self.path / _SHARD.format(shard) / f"{name}.npy",
                       mmap_mode="r" if mmap else None, allow_pickle=False)


class Writer:
    """Writes one entry into its partial folder; ``Cache.writer`` commits it."""

    def __init__(self, path: Path):
        self.path = path
        self.meta: dict = {}

    def save_array(self, name: str, array) -> None:
        _save_array(self.path / f"{name}.npy", array)

    def save_json(self, name: str, obj) -> None:
        _write_json(self.path / f"{name}.json", obj)

    def has(self, filename: str) -> bool:
        """A file this write has already saved (a resumed write finds its earlier files)."""
        return (self.path / filename).is_file()

    def json(self, name: str):
        return json.loads((self.path / f"{name}.json").read_text())

    def array(self, name: str) -> np.ndarray:
        return np.load(self.path / f"{name}.npy", allow_pickle=False)

    def shard_done(self, shard: int) -> bool:
        return (self.path / _SHARD.format(shard)).is_dir()

    def save_shard(self, shard: int, arrays: dict) -> None:
        """Write a shard's arrays, then rename its folder into place: all or nothing."""
        final = self.path / _SHARD.format(shard)
        tmp = self.path / (_SHARD.format(shard) + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, array in arrays.items():
            _save_array(tmp / f"{name}.npy", array)
        os.replace(tmp, final)

    def shard_array(self, shard: int, name: str) -> np.ndarray:
        return np.load(self.path / _SHARD.format(shard) / f"{name}.npy", mmap_mode="r",
                       allow_pickle=False)


class Cache:
    """The stage store under ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / META).is_file()

    def get(self, stage: str, key: str) -> Entry | None:
        path = self.path(stage, key)
        try:
            meta = json.loads((path / META).read_text())
        except FileNotFoundError:
            return None
        return Entry(path, meta)

    @contextlib.contextmanager
    def writer(self, stage: str, key: str, description: dict):
        """Yield a ``Writer``; on a clean exit commit the entry and log its size.

        ``description`` (the key's ingredients) goes into ``meta.json``. If the
        block raises, the partial folder stays so that finished shards survive;
        a non-sharded stage simply overwrites its files on the next attempt.
        Concurrent writers of one key are serialised by a lock file; the second
        finds the entry complete and its block is skipped (``writer`` is None).
        """
        stage_dir = self.root / stage
        stage_dir.mkdir(parents=True, exist_ok=True)
        with open(stage_dir / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self.has(stage, key):
                    yield None
                    return
                partial = stage_dir / (key + PARTIAL)
                resumed = partial.is_dir()
                partial.mkdir(exist_ok=True)
                w = Writer(partial)
                if resumed:
                    logger.info("%s: resuming the interrupted write in %s", stage, partial)
                start = time.perf_counter()
                yield w
                w.meta.update(description)
                w.meta.update(stage=stage, key=key, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
                              seconds=round(time.perf_counter() - start, 3))
                _write_json(partial / META, w.meta)
                os.replace(partial, self.path(stage, key))
                logger.info("%s: cached %s as %s (%s)", stage, key,
                            self.path(stage, key), human_size(_size(self.path(stage, key))))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(stage_dir / f"{key}.lock")

    # ----------------------------------------------------------- maintenance

    def entries(self) -> list[dict]:
        """Every entry and every partial write: stage, key, bytes, created, complete."""
        rows = []
        if not self.root.is_dir():
            return rows
        for stage_dir in sorted(p for p in self.root.iterdir()
                                if p.is_dir() and not p.name.startswith("_")):  # _memo: not entries
            for path in sorted(p for p in stage_dir.iterdir() if p.is_dir()):
                complete = (path / META).is_file()
                key = path.name.removesuffix(PARTIAL)
                created = ""
                if complete:
                    created = json.loads((path / META).read_text()).get("created", "")
                rows.append({"stage": stage_dir.name, "key": key, "bytes": _size(path),
                             "created": created, "complete": complete, "path": str(path)})
        return rows

    def remove(self, selectors: list[str]) -> list[dict]:
        """Remove entries whose stage name or key (prefix) matches a selector."""
        removed = []
        for row in self.entries():
            if any(s == row["stage"] or (len(s) >= 4 and row["key"].startswith(s))
                   for s in selectors):
                shutil.rmtree(row["path"])
                removed.append(row)
        return removed

    def gc(self, keep: set[tuple[str, str]] | None = None) -> list[dict]:
        """Remove partial writes, and, when ``keep`` is given, complete entries not in it."""
        removed = []
        for row in self.entries():
            if not row["complete"] or (keep is not None and (row["stage"], row["key"]) not in keep):
                shutil.rmtree(row["path"])
                removed.append(row)
        return removed
