"""Checking a cache entry before it is served, and reading its arrays (``partlearn.cache``).

Every byte served is verified. ``describe(folder)`` records every file of an
entry: its size and the xxh3-128 hash of all its bytes (``file_hash``; xxhash
reads at memory speed, a few GB/s on one core). ``meta.json`` says
``"store": FORMAT`` and carries a hash of its own other fields (``META_HASH``),
so that it, too, is checked. ``check(path, stage, key, known)`` returns
``(meta, None, verified)`` for an intact entry and ``(None, reason, {})``
otherwise: a ``meta.json`` that is missing, does not parse, names another entry
or does not match its own hash; a recorded file missing, of another size or
with another hash.

Hashing a large entry on every run would cost a read of all of it, so a file's
verification is remembered, as DVC's state does: ``verified`` maps each file to
``[size, mtime_ns, inode, ctime_ns, hash]`` as they were when its bytes were
hashed; ``partlearn.cache`` keeps that table beside the entry and passes it back
as ``known``. A file whose four stat fields are all as remembered, and whose
remembered hash is the recorded one, is not read again; any change (a write, a
truncation, a copy, a ``touch``: ctime cannot be set back) has it hashed in full.

Entries written before this format are trusted only where their record covers
every byte: a file of up to 8 MB was recorded by a blake2b of the whole file
(``legacy_digest``) and is checked by it. An older entry with a larger file (its
digest sampled a few MB of it) or with no file record at all is reported as
not verifiable, and a run recomputes it once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import xxhash

from ._validation import DataError

META = "meta.json"
SHARD = "shard_{:05d}"
FORMAT = 2  # meta.json's "store": 2 = whole-file xxh3-128 hashes, meta.json's own hash
HASH = "xxh3_128"
META_HASH = "meta_xxh3_128"
_CHUNK = 8 << 20
# the record of format 1 (no "store" in meta.json): blake2b, whole up to LEGACY_WHOLE bytes
LEGACY_WHOLE = 8 << 20
_LEGACY_EDGE = 1 << 20


def file_hash(path: Path) -> str:
    """The xxh3-128 hash (hex) of every byte of the file at ``path``."""
    return _hash_open(path)[0]


def _hash_open(path: Path) -> tuple[str, list]:
    """``(hash, stamp)``: the hash of the file and its ``stamp`` (``[size, mtime_ns,
    inode, ctime_ns]``); the stamp is None when the file changed while it was read."""
    h = xxhash.xxh3_128()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        before = _stamp(os.fstat(f.fileno()))
        while n := f.readinto(buf):
            h.update(view[:n])
        after = _stamp(os.fstat(f.fileno()))
    return h.hexdigest(), before if before == after else None


def _stamp(st: os.stat_result) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def meta_hash(meta: dict) -> str:
    """The hash of ``meta.json``'s fields other than ``META_HASH`` itself."""
    body = {k: v for k, v in meta.items() if k != META_HASH}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return xxhash.xxh3_128_hexdigest(blob.encode())


def load_array(path: Path, mmap: bool, key: str) -> np.ndarray:
    """``np.load`` of a cached array; a file that does not load is a ``DataError`` naming it."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read the cached array {path} ({e}); remove the entry with "
                        f"`partlearn cache rm {key}` and run again") from e


def describe(folder: Path) -> tuple[dict, dict]:
    """``({relative path: {"bytes": n, HASH: h}}, verified)`` of every file under
    ``folder`` except its ``meta.json``; ``verified`` as ``check``'s."""
    files, verified = {}, {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if rel != META and p.is_file():
            h, stamp = _hash_open(p)
            st = p.stat()
            files[rel] = {"bytes": st.st_size, HASH: h}
            if stamp is not None and stamp == _stamp(st):
                verified[rel] = stamp + [h]
    return files, verified


def check(path: Path, stage: str, key: str,
          known: dict | None = None) -> tuple[dict | None, str | None, dict]:
    """``(meta, None, verified)`` when the entry at ``path`` is intact, else
    ``(None, what is wrong, {})``. ``known``: an earlier ``verified`` (see the module)."""
    try:
        meta = json.loads((path / META).read_text())
    except FileNotFoundError:
        return None, f"{META} is missing", {}
    except (OSError, ValueError) as e:
        return None, f"{META} does not parse ({e})", {}
    if not isinstance(meta, dict):
        return None, f"{META} is not a JSON object", {}
    if meta.get("stage") != stage or meta.get("key") != key:
        return None, f"{META} is that of {meta.get('stage')}/{meta.get('key')}", {}
    files = meta.get("files")
    if files is None:
        return None, ("written by an older partlearn that recorded no file hashes, so "
                      "nothing vouches for its bytes: not verifiable"), {}
    if not isinstance(files, dict):
        return None, f"{META} records its files as {type(files).__name__}, not a table", {}
    if meta.get("store") is None:
        problem = next(filter(None, (_legacy_problem(path, rel, rec)
                                     for rel, rec in files.items())), None)
        return (None, problem, {}) if problem else (meta, None, {})
    if meta.get("store") != FORMAT:
        return None, f"written in store format {meta.get('store')!r}, not {FORMAT}", {}
    if meta.get(META_HASH) != meta_hash(meta):
        return None, f"{META} has changed since it was written (its hash differs)", {}
    known = known or {}
    verified = {}
    for rel, rec in files.items():
        problem = _file_problem(path, rel, rec, known.get(rel), verified)
        if problem:
            return None, problem, {}
    return meta, None, verified


def _file_problem(path: Path, rel: str, rec, seen, verified: dict) -> str | None:
    try:
        want, want_hash = int(rec["bytes"]), rec[HASH]
    except (KeyError, TypeError, ValueError):
        return f"{META}'s record of {rel} is malformed"
    try:
        st = (path / rel).stat()
        if st.st_size != want:
            return f"{rel} is {st.st_size:,} bytes, {META} recorded {want:,}"
        stamp = _stamp(st)
        if isinstance(seen, list) and seen == stamp + [want_hash]:
            verified[rel] = seen  # hashed before, unchanged since
            return None
        h, stamp = _hash_open(path / rel)
        if h != want_hash:
            return f"{rel} has changed since it was written (its hash differs)"
        if stamp is not None:
            verified[rel] = stamp + [h]
    except FileNotFoundError:
        return f"{rel} is missing"
    except OSError as e:
        return f"{rel} cannot be read ({e.strerror})"
    return None


def legacy_digest(path: Path, size: int) -> str:
    """The digest format 1 recorded: blake2b-128 of the whole file up to 8 MB, else
    of the size, the first and last MB and 16 blocks of 64 KB (a sample)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        if size <= LEGACY_WHOLE:
            for chunk in iter(lambda: f.read(_LEGACY_EDGE), b""):
                h.update(chunk)
            return h.hexdigest()
        h.update(str(size).encode())
        block = 64 << 10
        spans = [(0, _LEGACY_EDGE), (size - _LEGACY_EDGE, _LEGACY_EDGE)]
        spans += [((size - block) * i // 15, block) for i in range(16)]
        for offset, n in spans:
            h.update(os.pread(f.fileno(), n, offset))
    return h.hexdigest()


def _legacy_problem(path: Path, rel: str, rec) -> str | None:
    """A file of a format-1 entry: intact when its whole-file digest matches."""
    try:
        want, want_digest = int(rec["bytes"]), rec["digest"]
    except (KeyError, TypeError, ValueError):
        return f"{META}'s record of {rel} is malformed"
    if want > LEGACY_WHOLE:
        return (f"{rel} ({want:,} bytes) was recorded by an older partlearn by a digest of "
                f"a sample of it, which cannot vouch for all its bytes: not verifiable")
    try:
        size = (path / rel).stat().st_size
        if size != want:
            return f"{rel} is {size:,} bytes, {META} recorded {want:,}"
        if legacy_digest(path / rel, size) != want_digest:
            return f"{rel} has changed since it was written (its digest differs)"
    except FileNotFoundError:
        return f"{rel} is missing"
    except OSError as e:
        return f"{rel} cannot be read ({e.strerror})"
    return None
