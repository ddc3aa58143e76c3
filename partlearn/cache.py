"""A content-addressed store of stage outputs: ``.npy`` arrays plus ``meta.json``.

An entry lives at ``ROOT/<stage>/<key>/``. Its key hashes the stage's name,
version, parameters, the keys of its inputs and the library versions that
change its numbers (DVC-style lock chaining). Arrays are read back
memory-mapped. No pickles: ``allow_pickle=False``. What the store promises:

- A reader never sees a half-written entry. An entry is written in
  ``<key>.partial/`` and moved into place with one ``os.replace`` after
  ``meta.json``, the completion marker, is written last. Sharded entries keep
  their finished shards there, so an interrupted writer resumes from the last
  complete shard (leftover ``*.tmp`` files of the interrupted one are dropped).
- A damaged entry is never served. ``meta.json`` records every file's size and
  the xxh3-128 hash of all its bytes (``partlearn._store_check``); ``get``
  checks them once per process and entry, and an entry that fails (a truncated
  or changed file, a ``meta.json`` that does not parse, is gone or was changed)
  is logged, moved aside to ``<key>.damaged-*`` and removed, and ``get`` returns
  None: the run recomputes it. ``check`` says the same without moving anything.
  A file's verification is remembered in ``<key>.verified.json`` beside the
  entry (its size, mtime_ns, inode and ctime_ns when its bytes were hashed, as
  DVC's state): a file whose stat is unchanged is not read again, any change has
  it hashed in full. An entry of an older format whose record does not cover
  every byte is not verifiable: reported so, and recomputed once.
- Memos (``ROOT/_memo/``: what a run keeps to skip work, a backbone's identity,
  the data files' hashes, drawn figures) are verified the same way: a JSON memo
  carries the hash of its content, a folder of figures a ``memo.json`` with its
  files' hashes (``save_memo``/``load_memo``, ``keep_files``/``memo_files``). A
  damaged one is logged, removed and recomputed; ``gc`` removes damaged memos
  and those whose entries (``needs``) are gone.
- One writer per key: ``writer`` holds ``<key>.lock`` exclusively while it
  writes; a second writer waits and then finds the entry complete. Lock and
  pin files are never deleted (deleting a lock file races with its next user).
- A live run's entries survive ``gc`` and ``rm``: a run holds a shared lock on
  ``<key>.pin`` of each entry it uses (``pin``); ``gc`` and ``remove`` skip an
  entry whose ``.lock`` or ``.pin`` is held and report it as skipped.
- A read-only folder or a full disk is a one-line ``CacheError`` saying what to
  do, not a traceback; finished shards stay for the re-run.

This module knows nothing of the stages themselves.
"""

from __future__ import annotations

import contextlib
import errno
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
import xxhash

from . import _files, _store_check
from ._store_check import HASH, load_array
from ._validation import CacheError

logger = logging.getLogger(__name__)

META = _store_check.META
PARTIAL = ".partial"
DAMAGED = ".damaged-"
_SHARD = _store_check.SHARD
SKIPPED = "in use by a live run"
VERIFIED = ".verified.json"  # beside <key>/: what was hashed, and the files' stat then
MEMO = "_memo"
MEMO_FORMAT = 1
_MEMO_FILES = "memo.json"
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
_FULL = {errno.ENOSPC, errno.EDQUOT}


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


def _free_space(path: Path) -> str:
    """What the disk holding ``path`` (or its nearest existing folder) has free."""
    for folder in (path, *path.parents):
        try:
            return human_size(shutil.disk_usage(folder).free)
        except OSError:
            continue
    return "unknown"


@contextlib.contextmanager
def _writing(entry: Path):
    """Turn a read-only folder or a full disk met while writing ``entry`` into a ``CacheError``."""
    try:
        yield
    except OSError as e:
        if e.errno in _READ_ONLY:
            advice = "point --cache-dir at a writable folder"
        elif e.errno in _FULL:
            advice = (f"{_free_space(entry)} free there; free space on that disk or point "
                      "--cache-dir elsewhere; finished shards are kept and a re-run resumes")
        else:
            raise
        raise CacheError(f"cannot write the cache entry {entry}: {e.strerror}; {advice}") from e


@contextlib.contextmanager
def _locked(f, how):
    """Hold ``flock(f, how)`` for the block, then unlock (also for forked children's
    copies of ``f``) and close ``f``."""
    with f:
        fcntl.flock(f, how)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _json_hash(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != HASH}
    return xxhash.xxh3_128_hexdigest(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def _sealed(obj, needs=()) -> dict:
    """``obj`` as a memo record: its format, the entries it needs, and its hash."""
    record = json.loads(json.dumps({"memo": MEMO_FORMAT, "needs": [list(n) for n in needs],
                                    "value": obj}))
    return record | {HASH: _json_hash(record)}


def _unsealed(text: str):
    """``(record, None)`` of a sealed memo record (its ``value``, its ``needs``), else
    ``(None, what is wrong)``."""
    try:
        record = json.loads(text)
    except ValueError as e:
        return None, f"does not parse ({e})"
    if not isinstance(record, dict) or "memo" not in record:
        return None, "written by an older partlearn, without a hash: not verifiable"
    if record.get(HASH) != _json_hash(record) or record["memo"] != MEMO_FORMAT:
        return None, "has changed since it was written (its hash differs)"
    return record, None


def save_memo(path: Path, obj, needs=()) -> None:
    """Write ``obj`` as a JSON memo to ``path`` (its folder made), with its hash and the
    cache entries ``needs`` (``(stage, key)``: gc removes the memo when one is gone);
    atomically, so that processes writing the same memo at once leave one whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _files.write_text(path, json.dumps(_sealed(obj, needs)))


def load_memo(path: Path, kind=object):
    """The value of the JSON memo at ``path``, or None when there is none. A memo that
    does not verify (or whose value is not a ``kind``) is logged, removed and None: the
    caller recomputes it."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        _drop_memo(path, f"cannot be read ({e.strerror})")
        return None
    record, reason = _unsealed(text)
    if record is not None and not isinstance(record["value"], kind):
        record, reason = None, f"holds a {type(record['value']).__name__}, not a {kind.__name__}"
    if record is None:
        _drop_memo(path, reason)
        return None
    return record["value"]


def _drop_memo(path: Path, reason: str) -> None:
    level = logging.INFO if "older partlearn" in reason else logging.WARNING
    logger.log(level, "memo %s %s; removing it, it is recomputed", path, reason)
    with contextlib.suppress(OSError):
        if path.is_dir():
            _set_aside(path)
        else:
            path.unlink()


def keep_files(files: list[Path], memo: Path, needs=()) -> None:
    """Copy ``files`` into the memo folder ``memo`` with a ``memo.json`` of their hashes,
    all at once (rename into place). When a concurrent run has written ``memo`` first,
    its copy is kept."""
    tmp = memo.with_name(memo.name + f".{os.getpid()}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    record = {}
    for f in files:
        shutil.copyfile(f, tmp / Path(f).name)
        record[Path(f).name] = {"bytes": (tmp / Path(f).name).stat().st_size,
                                HASH: _store_check.file_hash(tmp / Path(f).name)}
    _files.write_text(tmp / _MEMO_FILES, json.dumps(_sealed({"files": record}, needs)))
    try:
        os.replace(tmp, memo)
    except OSError:
        if not memo.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another run won: the same figures


def memo_files(memo: Path) -> list[Path] | None:
    """The files of the memo folder ``memo`` when it is there and every one of them is
    as ``keep_files`` wrote it; None when it is not there. One that does not verify is
    logged, removed and None: the caller draws its figures again."""
    if not memo.is_dir():
        return None
    record, reason = _memo_folder(memo)
    if reason:
        _drop_memo(memo, reason)
        return None
    return [memo / name for name in sorted(record["value"]["files"])]


def _memo_folder(memo: Path) -> tuple[dict | None, str | None]:
    """``(record, None)`` when the memo folder's files are whole, else ``(None, what is
    wrong)``."""
    try:
        record, reason = _unsealed((memo / _MEMO_FILES).read_text())
    except FileNotFoundError:
        return None, f"has no {_MEMO_FILES} (written by an older partlearn: not verifiable)"
    except OSError as e:
        return None, f"{_MEMO_FILES} cannot be read ({e.strerror})"
    if record is None:
        return None, f"{_MEMO_FILES} {reason}"
    try:
        for name, rec in record["value"]["files"].items():
            file = memo / name
            size = file.stat().st_size
            if size != rec["bytes"]:
                return None, f"{name} is {size:,} bytes, {_MEMO_FILES} recorded {rec['bytes']:,}"
            if _store_check.file_hash(file) != rec[HASH]:
                return None, f"{name} has changed since it was written (its hash differs)"
    except FileNotFoundError as e:
        return None, f"{Path(e.filename).name} is missing"
    except OSError as e:
        return None, f"cannot be read ({e.strerror})"
    except (KeyError, TypeError, AttributeError):
        return None, f"{_MEMO_FILES} is malformed"
    return record, None


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def _set_aside(path: Path) -> None:
    """Rename ``path`` out of the way (atomic), then remove it; gc removes what is left."""
    aside = path.with_name(f"{path.name}{DAMAGED}{os.getpid()}-{time.time_ns()}")
    os.replace(path, aside)
    try:
        shutil.rmtree(aside)
    except OSError as e:
        logger.warning("could not remove %s (%s); `partlearn cache gc` removes it", aside, e)


def _save_array(path: Path, array) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk gets its space back
            tmp.unlink()
        raise


def _drop_tmp(folder: Path) -> None:
    """Remove what an interrupted write left half-done: ``x.npy.tmp``, ``shard_*.tmp/``."""
    for p in folder.glob("*.tmp"):
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


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
        """An array of the entry; a file that does not load is a ``DataError`` naming it."""
        return load_array(self.path / f"{name}.npy", mmap, self.key)

    def json(self, name: str):
        return json.loads((self.path / f"{name}.json").read_text())

    @property
    def n_shards(self) -> int:
        return int(self.meta.get("n_shards", 0))

    def shard_array(self, shard: int, name: str, mmap: bool = True) -> np.ndarray:
        return load_array(self.path / _SHARD.format(shard) / f"{name}.npy", mmap, self.key)


class Writer:
    """Writes one entry into its partial folder; ``Cache.writer`` commits it.

    A full disk or a read-only folder met by a ``save_*`` is a ``CacheError``."""

    def __init__(self, path: Path, entry: Path | None = None):
        self.path = Path(path).absolute()  # also for a task run elsewhere (partlearn.backend)
        self.entry = entry or path
        self.meta: dict = {}

    def save_array(self, name: str, array) -> None:
        with _writing(self.entry):
            _save_array(self.path / f"{name}.npy", array)

    def save_json(self, name: str, obj) -> None:
        with _writing(self.entry):
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
        with _writing(self.entry):
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
        self._intact: dict[tuple, dict] = {}  # (path, meta.json's stat) -> meta

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        """The entry is complete and intact."""
        return self._state(stage, key)[0] == "cached"

    def check(self, stage: str, key: str) -> tuple[str, str | None]:
        """``("cached", None)``, ``("missing", None)`` or ``("damaged", what is wrong)``;
        moves nothing."""
        return self._state(stage, key)[:2]

    def _state(self, stage: str, key: str) -> tuple[str, str | None, dict | None]:
        path = self.path(stage, key)
        try:
            st = (path / META).stat()
        except OSError:
            if path.is_dir():
                return "damaged", f"{META} is missing", None
            return "missing", None, None
        seen = (str(path), st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        if seen not in self._intact:
            known = self._verified(stage, key)
            meta, reason, verified = _store_check.check(path, stage, key, known)
            if meta is None:
                return "damaged", reason, None
            if verified != known:
                self._remember(stage, key, verified)
            self._intact[seen] = meta
        return "cached", None, self._intact[seen]

    def _verified(self, stage: str, key: str) -> dict:
        """What ``_remember`` kept of the entry's files: ``{rel: [size, mtime_ns, inode,
        ctime_ns, hash]}`` (``partlearn._store_check``); {} when nothing, or something
        that does not verify itself."""
        try:
            record, _ = _unsealed((self.root / stage / (key + VERIFIED)).read_text())
        except OSError:
            return {}
        value = record["value"] if record else None
        return value if isinstance(value, dict) else {}

    def _remember(self, stage: str, key: str, verified: dict) -> None:
        """Keep ``verified`` beside the entry; a cache this process cannot write keeps
        nothing (the files are hashed again next time)."""
        try:
            _files.write_text(self.root / stage / (key + VERIFIED),
                              json.dumps(_sealed(verified)))
        except OSError as e:
            logger.debug("cannot remember the verification of %s/%s: %s", stage, key, e)

    def get(self, stage: str, key: str) -> Entry | None:
        """The entry when it is complete and intact; a damaged one is set aside (None)."""
        state, reason, meta = self._state(stage, key)
        if state == "damaged":
            logger.warning("cache entry %s: %s; removing it, a run recomputes it",
                           self.path(stage, key), reason)
            with contextlib.suppress(OSError), self._claim(stage, key, (".lock",)) as free:
                if free and self._state(stage, key)[0] == "damaged":  # not replaced meanwhile
                    _set_aside(self.path(stage, key))  # (read-only: the writer says so)
        return Entry(self.path(stage, key), meta) if state == "cached" else None

    def _lock_file(self, stage: str, key: str, suffix: str):
        return open(self.root / stage / (key + suffix), "a")

    @contextlib.contextmanager
    def pin(self, stage: str, key: str):
        """Keep ``gc`` and ``remove`` off this entry while the block runs (a shared lock on
        ``<key>.pin``: pins never block each other nor a writer). A cache this process
        cannot write is left unpinned."""
        try:
            (self.root / stage).mkdir(parents=True, exist_ok=True)
            f = self._lock_file(stage, key, ".pin")
        except OSError as e:
            if e.errno not in _READ_ONLY:
                raise
            f = None
        with _locked(f, fcntl.LOCK_SH) if f else contextlib.nullcontext():
            yield

    @contextlib.contextmanager
    def writer(self, stage: str, key: str, description: dict):
        """Yield a ``Writer``; on a clean exit commit the entry and log its size.

        ``description`` (the key's ingredients) goes into ``meta.json``, with every
        file's size and digest. If the block raises, the partial folder stays so that
        finished shards survive; a non-sharded stage simply overwrites its files on
        the next attempt. Concurrent writers of one key are serialised by
        ``<key>.lock``; the second finds the entry complete and its block is skipped
        (``writer`` is None). A damaged entry in the way is set aside first.
        """
        final = self.path(stage, key)
        with _writing(final):
            final.parent.mkdir(parents=True, exist_ok=True)
            lock = self._lock_file(stage, key, ".lock")
        with _locked(lock, fcntl.LOCK_EX):
            state, reason, _ = self._state(stage, key)
            if state == "cached":
                yield None
                return
            partial = final.with_name(key + PARTIAL)
            with _writing(final):
                if state == "damaged":
                    logger.warning("cache entry %s: %s; replacing it", final, reason)
                    _set_aside(final)
                resumed = partial.is_dir()
                partial.mkdir(exist_ok=True)
                if resumed:
                    logger.info("%s: resuming the interrupted write in %s", stage, partial)
                    _drop_tmp(partial)
            w = Writer(partial, final)
            start = time.perf_counter()
            yield w
            w.meta.update(description)
            w.meta.update(stage=stage, key=key, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
                          seconds=round(time.perf_counter() - start, 3))
            with _writing(final):
                w.meta["files"], verified = _store_check.describe(partial)
                w.meta["store"] = _store_check.FORMAT
                w.meta = json.loads(json.dumps(w.meta, default=str))  # as a reader sees it
                w.meta[_store_check.META_HASH] = _store_check.meta_hash(w.meta)
                _write_json(partial / META, w.meta)
                os.replace(partial, final)
            st = (final / META).stat()
            self._intact[(str(final), st.st_ino, st.st_mtime_ns, st.st_ctime_ns,
                          st.st_size)] = w.meta
            self._remember(stage, key, verified)
            logger.info("%s: cached %s as %s (%s)", stage, key, final, human_size(_size(final)))

    # ----------------------------------------------------------- maintenance

    def entries(self) -> list[dict]:
        """Every entry, partial write and damaged leftover: stage, key, bytes, created,
        complete, damaged, path. (Lock and pin files are files: not entries.)"""
        rows = []
        if not self.root.is_dir():
            return rows
        for stage_dir in sorted(p for p in self.root.iterdir()
                                if p.is_dir() and not p.name.startswith("_")):  # _memo: not entries
            for path in sorted(p for p in stage_dir.iterdir() if p.is_dir()):
                damaged = DAMAGED in path.name
                complete = not damaged and (path / META).is_file()
                rows.append({"stage": stage_dir.name, "bytes": _size(path),
                             "key": path.name.split(DAMAGED)[0].removesuffix(PARTIAL),
                             "created": _created(path) if complete else "",
                             "complete": complete, "damaged": damaged, "path": str(path)})
        return rows

    def remove(self, selectors: list[str]) -> list[dict]:
        """Remove entries whose stage name or key (prefix) matches a selector. Returns
        their rows; one a live run holds is kept, its row marked ``"skipped"``."""
        return self._remove([row for row in self.entries()
                             if any(s == row["stage"] or (len(s) >= 4 and row["key"].startswith(s))
                                    for s in selectors)])

    def gc(self, keep: set[tuple[str, str]] | None = None) -> list[dict]:
        """Remove partial writes and damaged leftovers, and, when ``keep`` is given,
        complete entries not in it; then damaged memos and those whose entries are
        gone (``gc_memos``). Rows as ``remove``'s; a memo's has ``"memo": True``."""
        done = self._remove([row for row in self.entries()
                             if not row["complete"]
                             or (keep is not None and (row["stage"], row["key"]) not in keep)])
        return done + self.gc_memos()

    def gc_memos(self) -> list[dict]:
        """Remove the memos that do not verify, those that need an entry that is no longer
        complete, leftovers of interrupted writes (of a process no longer running) and
        verification records of entries that are gone. Rows: stage ``_memo``, key (the
        memo's name), bytes, path, reason, ``"memo": True``."""
        rows = []
        folder = self.root / MEMO
        for p in _memo_items(folder) if folder.is_dir() else []:
            reason = self._memo_problem(p)
            if reason:
                with contextlib.suppress(FileNotFoundError):
                    n = _size(p)
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                    rows.append({"stage": MEMO, "key": p.relative_to(folder).as_posix(),
                                 "bytes": n, "path": str(p), "reason": reason, "memo": True,
                                 "complete": False, "damaged": True, "created": ""})
        for state in sorted(self.root.glob(f"*/*{VERIFIED}")):
            if not state.with_name(state.name.removesuffix(VERIFIED)).is_dir():
                with contextlib.suppress(FileNotFoundError):
                    state.unlink()
        return rows

    def _memo_problem(self, p: Path) -> str | None:
        """Why gc removes the memo item ``p`` (None: it stays)."""
        if DAMAGED in p.name:
            return "set aside as damaged"
        if _is_tmp(p):
            return None if _running(p.name) else "left by an interrupted write"
        if p.is_dir():
            record, reason = _memo_folder(p)
        elif p.suffix == ".json":
            try:
                record, reason = _unsealed(p.read_text())
            except OSError as e:
                record, reason = None, f"cannot be read ({e.strerror})"
        else:
            return None
        if record is None:
            return reason
        for stage, key in record.get("needs") or []:
            if not (self.path(stage, key) / META).is_file():
                return f"its entry {stage}/{key} is gone"
        return None

    def _remove(self, rows: list[dict]) -> list[dict]:
        done = []
        for row in rows:
            held = () if row["damaged"] else (".lock", ".pin")
            with self._claim(row["stage"], row["key"], held) as free:
                if not free:
                    done.append(row | {"skipped": SKIPPED})
                    continue
                with contextlib.suppress(FileNotFoundError):  # committed or removed meanwhile
                    shutil.rmtree(row["path"])
                    done.append(row)
                if not Path(row["path"]).name.endswith((PARTIAL,)) and not row["damaged"]:
                    with contextlib.suppress(FileNotFoundError):
                        (self.root / row["stage"] / (row["key"] + VERIFIED)).unlink()
        return done

    @contextlib.contextmanager
    def _claim(self, stage: str, key: str, suffixes):
        """Hold these lock files of an entry exclusively, without waiting: yields False
        when another holds one (a writer, a live run's pin)."""
        with contextlib.ExitStack() as stack:
            for suffix in suffixes:
                f = stack.enter_context(self._lock_file(stage, key, suffix))
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
            yield True


def _is_tmp(p: Path) -> bool:
    return p.name.endswith(".tmp") or ".tmp." in p.name or DAMAGED in p.name


def _memo_items(folder: Path):
    """What ``gc_memos`` judges under ``folder``: JSON memos, memo folders (one with a
    ``memo.json``, or without JSON files: an older one), leftovers; folders of memos
    (``file_hashes/``) are walked."""
    try:
        items = sorted(folder.iterdir())
    except FileNotFoundError:  # removed meanwhile
        return
    for p in items:
        try:
            walk = p.is_dir() and not _is_tmp(p) and not (p / _MEMO_FILES).exists() and any(
                c.is_dir() or c.suffix == ".json" for c in p.iterdir())
        except FileNotFoundError:
            continue
        if walk:
            yield from _memo_items(p)
        else:
            yield p


def _running(name: str) -> bool:
    """Whether the process whose id a temporary name ``x.<pid>.tmp`` carries still runs."""
    parts = name.split(".")
    pid = next((int(x) for x in reversed(parts) if x.isdigit()), None)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _created(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return json.loads((path / META).read_text()).get("created", "")
    return ""
