"""The stage store (``partlearn.cache``): keys, writes and memory-mapped reads, ``ls``/``rm``/``gc``,
and what it promises under damage, concurrency, full disks and signals.

A second process is a forked one (it shares the imported modules, so it starts at
once) except where its own signal handling is the point (a subprocess).
"""

import errno
import json
import logging
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import partlearn.cache as cache_mod
from partlearn import _store_check
from partlearn._validation import CacheError, DataError
from partlearn.cache import Cache, make_key
from partlearn.cli import main
from partlearn.evaluation._base import keep

FORK = multiprocessing.get_context("fork")
ROOT = Path(__file__).resolve().parents[1]


def key(**params):
    return make_key("s", 1, params, {}, {})


def write(cache, k, shards=2, **arrays):
    with cache.writer("s", k, {}) as w:
        for name, a in (arrays or {"x": np.arange(10.0)}).items():
            w.save_array(name, a)
        w.save_json("info", {"n": 1})
        for s in range(shards):
            w.save_shard(s, {"r": np.full(100, s, np.float32)})
        w.meta["n_shards"] = shards
    return cache.path("s", k)


def wait_for(path: Path, what="the other process"):
    for _ in range(2000):
        if path.exists():
            return
        time.sleep(0.01)
    raise AssertionError(f"{what} never wrote {path}")


def start(target, *args):
    p = FORK.Process(target=target, args=args)
    p.start()
    return p


# ---- 1. lock files stay, and are not entries


def test_lock_and_pin_files_are_kept_and_are_not_entries(tmp_path):
    cache = Cache(tmp_path)
    k = key(a=1)
    write(cache, k)
    with cache.pin("s", k):
        pass
    assert (tmp_path / "s" / f"{k}.lock").is_file() and (tmp_path / "s" / f"{k}.pin").is_file()
    assert [r["key"] for r in cache.entries()] == [k]
    assert cache.gc() == []
    assert [r["key"] for r in cache.gc(keep=set())] == [k]
    assert cache.entries() == [] and (tmp_path / "s" / f"{k}.lock").is_file()


# ---- 2. verified entries


def test_meta_records_every_file_with_size_and_digest(tmp_path):
    cache = Cache(tmp_path)
    path = write(cache, key(a=1))
    files = json.loads((path / "meta.json").read_text())["files"]
    assert set(files) == {"x.npy", "info.json", "shard_00000/r.npy", "shard_00001/r.npy"}
    for rel, rec in files.items():
        size = (path / rel).stat().st_size
        assert rec == {"bytes": size, "xxh3_128": _store_check.file_hash(path / rel)}


def truncate(path, rel):
    with open(path / rel, "r+b") as f:
        f.truncate(1024)


def flip_last_byte(path, rel):
    with open(path / rel, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        b = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([b[0] ^ 0xFF]))


DAMAGE = {
    "truncated shard": (lambda p: truncate(p, "shard_00001/r.npy"),
                        "shard_00001/r.npy is 1,024 bytes, meta.json recorded 528"),
    "same size, other bytes": (lambda p: flip_last_byte(p, "x.npy"), "x.npy has changed"),
    "file deleted": (lambda p: (p / "shard_00000" / "r.npy").unlink(),
                     "shard_00000/r.npy is missing"),
    "meta garbage": (lambda p: (p / "meta.json").write_text("{not json"),
                     "meta.json does not parse"),
    "meta not an object": (lambda p: (p / "meta.json").write_text("[1]"),
                           "not a JSON object"),
    "meta of another entry": (lambda p: (p / "meta.json").write_text(json.dumps(
        {**json.loads((p / "meta.json").read_text()), "key": "other"})), "s/other"),
    "meta deleted": (lambda p: (p / "meta.json").unlink(), "meta.json is missing"),
    "meta edited": (lambda p: (p / "meta.json").write_text(json.dumps(
        {**json.loads((p / "meta.json").read_text()), "n_shards": 1})),
        "meta.json has changed since it was written (its hash differs)"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_entry_is_logged_set_aside_and_recomputed(tmp_path, caplog, damage):
    cache = Cache(tmp_path)
    k = key(a=1)
    path = write(cache, k)
    hurt, reason = DAMAGE[damage]
    hurt(path)
    fresh = Cache(tmp_path)  # another process: it has not verified the entry yet
    with caplog.at_level(logging.WARNING, logger="partlearn.cache"):
        assert fresh.get("s", k) is None
    assert str(path) in caplog.text and reason in caplog.text
    assert not path.exists() and not list((tmp_path / "s").glob("*.damaged-*"))
    write(fresh, k)
    assert float(fresh.get("s", k).shard_array(1, "r")[0]) == 1.0


def test_big_files_are_checked_in_full(tmp_path):
    cache = Cache(tmp_path)
    k = key(big=1)
    path = write(cache, k, shards=0, x=np.arange(10 << 17, dtype=np.float64))  # 10 MB
    assert (path / "x.npy").stat().st_size > 8 << 20
    assert Cache(tmp_path).get("s", k) is not None
    flip_last_byte(path, "x.npy")
    assert Cache(tmp_path).check("s", k) == (
        "damaged", "x.npy has changed since it was written (its hash differs)")


def test_check_moves_nothing_and_status_tells_the_truth(tmp_path):
    cache = Cache(tmp_path)
    k = key(a=1)
    assert cache.check("s", k) == ("missing", None)
    path = write(cache, k)
    assert cache.check("s", k) == ("cached", None)
    truncate(path, "x.npy")
    state, reason = Cache(tmp_path).check("s", k)
    assert state == "damaged" and reason.startswith("x.npy is 1,024 bytes")
    assert (path / "meta.json").is_file() and (path / "x.npy").is_file()


def tiny_pipeline(tmp_path):
    from partlearn.config import load_config
    from partlearn.runner import Pipeline

    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (data / split / cls).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(data / split / cls / f"{i}.png")
    (tmp_path / "p.toml").write_text('name = "t"\n')
    cfg = load_config(tmp_path / "p.toml", [f'data.root="{data}"', 'data.format="folders"',
                                            "data.min_train_per_class=1"])
    return lambda: Pipeline(cfg, cache_dir=tmp_path / "cache")


def test_status_says_damaged_and_a_run_recomputes(tmp_path):
    pipeline = tiny_pipeline(tmp_path)
    pipe = pipeline()
    pipe.run(until="dataset", out=tmp_path / "run1", report=False)
    entry = pipe.cache.path("dataset", pipe.key("dataset"))
    truncate(entry, "width.npy")
    state = pipeline().status()[0]["state"]
    assert state.startswith("damaged (width.npy is 1,024 bytes, meta.json recorded ")
    assert state.endswith("; a run recomputes it)") and (entry / "width.npy").is_file()
    summary = pipeline().run(until="dataset", out=tmp_path / "run2", report=False)
    assert summary["stages"]["dataset"]["cached"] is False
    assert pipeline().status()[0]["state"] == "cached"


def as_older_format(path, files=True):
    """Rewrite the entry's meta.json as an older partlearn wrote it: blake2b digests
    (whole up to 8 MB, sampled above), no format, no hash of its own; or no files."""
    meta = json.loads((path / "meta.json").read_text())
    for name in ("store", "meta_xxh3_128"):
        del meta[name]
    if files:
        meta["files"] = {rel: {"bytes": rec["bytes"],
                               "digest": _store_check.legacy_digest(path / rel, rec["bytes"])}
                         for rel, rec in meta["files"].items()}
    else:
        del meta["files"]
    (path / "meta.json").write_text(json.dumps(meta))


def test_an_older_entry_is_served_only_where_its_record_covers_every_byte(tmp_path, caplog):
    cache = Cache(tmp_path)
    small, big, bare = key(a=1), key(a=2), key(a=3)
    as_older_format(write(cache, small))
    as_older_format(write(cache, big, x=np.arange(10 << 17, dtype=np.float64)))  # 10 MB
    as_older_format(write(cache, bare), files=False)
    assert Cache(tmp_path).get("s", small) is not None  # whole-file digests: verified, served
    flip_last_byte(cache.path("s", small), "shard_00000/r.npy")
    assert Cache(tmp_path).check("s", small) == (
        "damaged", "shard_00000/r.npy has changed since it was written (its digest differs)")
    state, reason = Cache(tmp_path).check("s", big)
    assert state == "damaged" and reason.startswith("x.npy (10,485,888 bytes) was recorded by "
                                                    "an older partlearn by a digest of a sample")
    assert reason.endswith("not verifiable")
    assert Cache(tmp_path).check("s", bare) == (
        "damaged", "written by an older partlearn that recorded no file hashes, so nothing "
                   "vouches for its bytes: not verifiable")
    fresh = Cache(tmp_path)
    with caplog.at_level(logging.WARNING, logger="partlearn.cache"):
        assert fresh.get("s", big) is None and fresh.get("s", bare) is None  # recomputed once
    assert "not verifiable; removing it, a run recomputes it" in caplog.text
    write(fresh, big)
    assert Cache(tmp_path).get("s", big).meta["store"] == 2


def test_verification_is_done_once_per_entry_and_process(tmp_path, monkeypatch):
    k = key(a=1)
    write(Cache(tmp_path), k)
    (tmp_path / "s" / f"{k}.verified.json").unlink()  # as if another machine had written it
    calls = []
    real = _store_check._hash_open
    monkeypatch.setattr(_store_check, "_hash_open", lambda p: calls.append(p) or real(p))
    cache = Cache(tmp_path)
    assert cache.get("s", k) is not None and len(calls) == 4
    assert cache.get("s", k) is not None and cache.has("s", k) and len(calls) == 4
    k2 = key(a=2)
    write(cache, k2)  # its writer has just hashed it: no second hashing
    n = len(calls)
    assert cache.get("s", k2) is not None and len(calls) == n


def test_a_damaged_entry_that_cannot_be_removed_is_left_for_gc(tmp_path, monkeypatch):
    cache = Cache(tmp_path)
    k = key(a=1)
    truncate(write(cache, k), "x.npy")
    real = shutil.rmtree

    def failing(path, *a, **kw):
        if ".damaged-" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(shutil, "rmtree", failing)
    assert Cache(tmp_path).get("s", k) is None
    monkeypatch.undo()
    (row,) = cache.entries()
    assert row["damaged"] and not row["complete"] and row["key"] == k
    assert [r["key"] for r in cache.gc(keep={("s", k)})] == [k]
    assert cache.entries() == []


def test_an_array_that_does_not_load_is_a_data_error_naming_it(tmp_path):
    cache = Cache(tmp_path)
    k = key(a=1)
    path = write(cache, k)
    entry = cache.get("s", k)
    (path / "x.npy").write_bytes(b"not an array")
    with pytest.raises(DataError, match=f"cannot read the cached array {path / 'x.npy'}"):
        entry.array("x")
    (path / "shard_00001" / "r.npy").unlink()
    with pytest.raises(DataError, match="shard_00001/r.npy"):
        entry.shard_array(1, "r")


# ---- 3. a folder in the way, leftovers of an interrupted write


def test_an_entry_folder_without_meta_does_not_block_the_next_commit(tmp_path):
    cache = Cache(tmp_path)
    k = key(a=1)
    path = write(cache, k)
    (path / "meta.json").unlink()
    with cache.writer("s", k, {}) as w:  # (os.replace onto it: "Directory not empty")
        assert w is not None
        w.save_array("x", np.ones(2))
    assert cache.get("s", k).array("x").tolist() == [1.0, 1.0]
    assert not list((tmp_path / "s").glob("*.damaged-*"))


def test_a_resumed_write_drops_the_leftover_tmp_files(tmp_path):
    cache = Cache(tmp_path)
    k = key(a=1)
    with pytest.raises(KeyboardInterrupt):
        with cache.writer("s", k, {}) as w:
            w.save_shard(0, {"r": np.ones(3)})
            (w.path / "x.npy.tmp").write_bytes(b"half")
            (w.path / "shard_00001.tmp").mkdir()
            (w.path / "shard_00001.tmp" / "r.npy").write_bytes(b"half")
            raise KeyboardInterrupt
    with cache.writer("s", k, {}) as w:
        assert sorted(p.name for p in w.path.iterdir()) == ["shard_00000"]
        w.save_shard(1, {"r": np.ones(3)})
    assert set(cache.get("s", k).meta["files"]) == {"shard_00000/r.npy", "shard_00001/r.npy"}


# ---- 4. live runs are safe from gc and rm


def hold_pin(root, k, ready, release):
    with Cache(root).pin("s", k):
        ready.touch()
        wait_for(release)


def hold_writer(root, k, ready, release):
    with Cache(root).writer("s", k, {}) as w:
        w.save_shard(0, {"r": np.ones(3)})
        ready.touch()
        wait_for(release)
        os._exit(0)  # dies mid-write: nothing committed


def test_gc_and_rm_skip_an_entry_another_process_has_pinned(tmp_path):
    cache = Cache(tmp_path)
    k = key(a=1)
    write(cache, k)
    ready, release = tmp_path / "ready", tmp_path / "release"
    holder = start(hold_pin, tmp_path, k, ready, release)
    try:
        wait_for(ready)
        (row,) = cache.gc(keep=set())
        assert row["key"] == k and row["skipped"] == "in use by a live run"
        assert [r.get("skipped") for r in cache.remove(["s"])] == ["in use by a live run"]
        assert cache.get("s", k) is not None
    finally:
        release.touch()
        holder.join()
    assert holder.exitcode == 0
    assert [(r["key"], "skipped" in r) for r in cache.gc(keep=set())] == [(k, False)]
    assert cache.entries() == []


def test_gc_skips_a_partial_write_in_progress_then_removes_it(tmp_path):
    cache = Cache(tmp_path)
    k = key(a=1)
    ready, release = tmp_path / "ready", tmp_path / "release"
    holder = start(hold_writer, tmp_path, k, ready, release)
    try:
        wait_for(ready)
        (row,) = cache.gc()
        assert not row["complete"] and row["skipped"] == "in use by a live run"
        assert (tmp_path / "s" / f"{k}.partial" / "shard_00000").is_dir()
    finally:
        release.touch()
        holder.join()
    assert [("skipped" in r, r["complete"]) for r in cache.gc()] == [(False, False)]
    assert cache.entries() == []


def test_a_pin_does_not_block_a_writer(tmp_path):
    cache = Cache(tmp_path)
    k = key(a=1)
    done = []

    def write_it():
        write(cache, k)
        done.append(True)

    with cache.pin("s", k):
        t = threading.Thread(target=write_it, daemon=True)
        t.start()
        t.join(30)
        assert done == [True]


def test_cache_gc_command_says_what_it_kept(tmp_path, capsys):
    cache = Cache(tmp_path)
    k = key(a=1)
    write(cache, k)
    with pytest.raises(RuntimeError):
        with cache.writer("s", key(a=2), {}):
            raise RuntimeError
    with cache.pin("s", key(a=2)):  # the partial write is a live run's
        assert main(["-q", "cache", "--cache-dir", str(tmp_path), "gc"]) == 0
    out = capsys.readouterr().out
    assert f"s {key(a=2)}" in out and "in use by a live run" in out
    assert "0 entries removed" in out and len(cache.entries()) == 2


def test_a_run_pins_every_entry_it_uses(tmp_path, monkeypatch):
    from partlearn.runner import Pipeline

    pipe = tiny_pipeline(tmp_path)()
    seen = []
    compute = Pipeline._compute

    def compute_then_gc(self, stage, force):
        found = compute(self, stage, force)
        seen.append((stage, sorted((r["stage"], "skipped" in r) for r in
                                   self.cache.gc(keep=set()))))
        return found

    monkeypatch.setattr(Pipeline, "_compute", compute_then_gc)
    pipe.run(until="regions", out=tmp_path / "run", report=False)
    assert seen == [("dataset", [("dataset", True)]),
                    ("regions", [("dataset", True), ("regions", True)])]
    assert sorted(r["stage"] for r in pipe.cache.gc(keep=set())) == ["dataset", "regions"]


# ---- 5. two writers of one key


def write_once(root, k, started, other_started):
    started.touch()
    cache = Cache(root)
    with cache.writer("s", k, {}) as w:
        if w is not None:
            (root / f"computed-{os.getpid()}").touch()
            wait_for(other_started)  # the other is now at (or past) the lock
            time.sleep(0.3)
            w.save_array("x", np.arange(5.0))
    assert cache.get("s", k).array("x").tolist() == [0, 1, 2, 3, 4]


def test_two_writers_of_one_key_compute_it_once(tmp_path):
    k = key(a=1)
    a, b = tmp_path / "a-started", tmp_path / "b-started"
    procs = [start(write_once, tmp_path, k, a, b), start(write_once, tmp_path, k, b, a)]
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(list(tmp_path.glob("computed-*"))) == 1
    assert Cache(tmp_path).get("s", k).array("x").tolist() == [0, 1, 2, 3, 4]


# ---- 6. a read-only cache, a full disk

FULL = ("No space left on device; {free} free there; free space on that disk or point "
        "--cache-dir elsewhere; finished shards are kept and a re-run resumes")


def full_disk_message(entry) -> str:
    """The one line of a full disk met writing ``entry``, the free space a pattern."""
    return (re.escape(f"cannot write the cache entry {entry}: ")
            + re.escape(FULL).replace(re.escape("{free}"), r"[0-9.]+ [KMGT]?B"))


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_saving_is_a_cache_error_and_nothing_half_is_served(tmp_path,
                                                                           monkeypatch):
    cache = Cache(tmp_path)
    k = key(a=1)
    real_save = np.save

    def save_then_full(f, *a, **kw):
        f.write(b"\x93NUMPY half")
        no_space()

    with pytest.raises(CacheError) as e:
        with cache.writer("s", k, {}) as w:
            w.save_shard(0, {"r": np.ones(3)})
            monkeypatch.setattr(np, "save", save_then_full)
            w.save_array("x", np.ones(3))
    assert re.fullmatch(full_disk_message(tmp_path / "s" / k), str(e.value))
    assert e.value.exit_code == 1
    assert not cache.has("s", k) and cache.get("s", k) is None
    assert sorted(p.name for p in (tmp_path / "s" / f"{k}.partial").iterdir()) == ["shard_00000"]
    monkeypatch.setattr(np, "save", real_save)
    with cache.writer("s", k, {}) as w:
        assert w.shard_done(0)  # the finished shard was kept
        w.save_array("x", np.ones(3))
    assert cache.get("s", k).array("x").tolist() == [1, 1, 1]


def test_a_full_disk_at_commit_is_a_cache_error(tmp_path, monkeypatch):
    cache = Cache(tmp_path)
    k = key(a=1)
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: no_space() if Path(b) == cache.path("s", k)
                        else real_replace(a, b))
    with pytest.raises(CacheError, match=f"cannot write the cache entry .*{k}: No space left"):
        with cache.writer("s", k, {}) as w:
            w.save_array("x", np.ones(3))
    assert cache.get("s", k) is None and Cache(tmp_path).get("s", k) is None


def test_a_read_only_cache_is_a_cache_error(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(cache_mod, "open", read_only, raising=False)
    k = key(a=1)
    with pytest.raises(CacheError) as e:
        with Cache(tmp_path).writer("s", k, {}):
            pass
    assert str(e.value) == (f"cannot write the cache entry {tmp_path / 's' / k}: "
                            "Read-only file system; point --cache-dir at a writable folder")


def test_a_full_disk_outside_the_cache_is_one_line(tmp_path, monkeypatch, capsys):
    import partlearn.cli as cli

    def full(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "runs/x/results.json")

    monkeypatch.setattr(cli, "cmd_cache", full)
    assert main(["cache", "--cache-dir", str(tmp_path), "ls"]) == 1
    assert capsys.readouterr().err == (
        "partlearn: error: runs/x/results.json: No space left on device; "
        f"{cli._free('runs/x/results.json')} free on that disk, not enough for it: free space "
        "there or point --cache-dir/--out at a larger disk, then re-run (finished shards are "
        "kept)\n")


# ---- 7. SIGTERM is Ctrl-C

SIGTERM_SCRIPT = """
import os, signal, sys, time
import partlearn.cli as cli

def slow(args):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)
    return 0

cli.cmd_cache = slow
rc = cli.main(["cache", "--cache-dir", sys.argv[1], "ls"])
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handler was not restored"
sys.exit(rc)
"""


def test_sigterm_stops_a_command_like_ctrl_c(tmp_path):
    p = subprocess.run([sys.executable, "-c", SIGTERM_SCRIPT, str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 130, p.stderr
    assert p.stderr.strip().splitlines()[-1] == (
        "partlearn: interrupted; finished shards are kept and a re-run resumes")


# ---- 8. a memo written by a concurrent run


def test_keep_lets_the_first_memo_win(tmp_path):
    ours, theirs = tmp_path / "ours.png", tmp_path / "theirs.png"
    ours.write_bytes(b"ours")
    theirs.write_bytes(b"theirs")
    memo = tmp_path / "_memo" / "fig-abc"
    keep([theirs], memo)
    keep([ours], memo)  # another run got there first
    assert sorted(p.name for p in memo.iterdir()) == ["memo.json", "theirs.png"]
    assert (memo / "theirs.png").read_bytes() == b"theirs"
    assert [p.name for p in memo.parent.iterdir()] == ["fig-abc"]


# ---- 9. every byte served is verified (issue 28)

# The sampled digest of the store before issue 28 read a file's size, its first and last
# MB and 16 blocks of 64 KB; these bytes lie between two of its blocks.
OLD_SAMPLES = {"WHOLE": 64, "EDGE": 16, "BLOCK": 16, "N_BLOCKS": 2}


def zero_span(file: Path, start: int, n: int) -> None:
    """Zero ``n`` bytes of ``file`` from ``start``, which were not all zero."""
    with open(file, "r+b") as f:
        f.seek(start)
        assert f.read(n).strip(b"\0"), "the span was zero already"
        f.seek(start)
        f.write(bytes(n))


def test_damage_anywhere_in_a_big_file_is_found_before_use(tmp_path, caplog):
    cache = Cache(tmp_path)
    k = key(big=2)
    path = write(cache, k, shards=0, x=np.arange(20 << 17, dtype=np.float64) + 1)  # 20 MB
    size = (path / "x.npy").stat().st_size
    assert size > 8 << 20
    blocks = [(size - (64 << 10)) * i // 15 for i in range(16)]  # the old samples' offsets
    start = blocks[7] + (80 << 10)  # 16 KB past block 7's end, far from block 8
    assert start + (4 << 10) < blocks[8]
    zero_span(path / "x.npy", start, 4 << 10)
    fresh = Cache(tmp_path)  # another process
    assert fresh.check("s", k) == (
        "damaged", "x.npy has changed since it was written (its hash differs)")
    with caplog.at_level(logging.WARNING, logger="partlearn.cache"):
        assert fresh.get("s", k) is None  # set aside before anything reads it
    assert "x.npy has changed" in caplog.text and not path.exists()


def test_verification_is_remembered_until_a_file_changes(tmp_path, monkeypatch):
    cache = Cache(tmp_path)
    k = key(big=3)
    path = write(cache, k, shards=1, x=np.arange(20 << 17, dtype=np.float64) + 1)
    state = tmp_path / "s" / f"{k}.verified.json"
    assert set(json.loads(state.read_text())["value"]) == {"x.npy", "info.json",
                                                           "shard_00000/r.npy"}
    calls = []
    real = _store_check._hash_open
    monkeypatch.setattr(_store_check, "_hash_open", lambda p: calls.append(p.name) or real(p))
    assert Cache(tmp_path).get("s", k) is not None and calls == []  # remembered: not read
    file = path / "x.npy"
    st = file.stat()
    zero_span(file, 9 << 20, 4096)
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns))  # its mtime set back: ctime moved
    assert (file.stat().st_size, file.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert Cache(tmp_path).check("s", k)[0] == "damaged" and calls == ["x.npy"]
    state.write_text("{garbled")  # a record that does not verify itself is not believed
    calls.clear()
    assert Cache(tmp_path).check("s", k)[0] == "damaged" and "x.npy" in calls


def test_a_run_recomputes_an_entry_damaged_away_from_any_sample(tmp_path, monkeypatch):
    for name, value in OLD_SAMPLES.items():  # the tiny run's files count as big to the old
        monkeypatch.setattr(_store_check, name, value, raising=False)  # store (absent now)
    pipeline = tiny_pipeline(tmp_path)
    pipe = pipeline()
    pipe.run(until="regions", out=tmp_path / "run1", report=False)
    entry = pipe.cache.path("regions", pipe.key("regions"))
    clean = {p.relative_to(entry): np.load(p) for p in entry.rglob("*.npy")}
    file = max(entry.rglob("*.npy"), key=lambda p: p.stat().st_size)
    zero_span(file, file.stat().st_size // 2, 16)
    state = pipeline().status()[1]["state"]
    assert state.startswith("damaged (") and "has changed since it was written" in state
    summary = pipeline().run(until="regions", out=tmp_path / "run2", report=False)
    assert summary["stages"]["regions"]["cached"] is False
    again = pipeline()
    assert again.status()[1]["state"] == "cached"
    for rel, a in clean.items():
        np.testing.assert_array_equal(np.load(entry / rel), a)


def test_a_damaged_memo_is_recomputed_with_a_warning_and_gc_removes_them(tmp_path, caplog):
    from partlearn.cache import load_memo, save_memo
    from partlearn.evaluation._base import restore

    cache = Cache(tmp_path)
    k = key(a=1)
    write(cache, k)
    memo = tmp_path / "_memo"
    save_memo(memo / "ok.json", {"a": 1})
    save_memo(memo / "garbled.json", {"a": 1})
    (memo / "garbled.json").write_text('{"memo": 1, "value": {"a": 2')
    png = tmp_path / "fig.png"
    Image.new("RGB", (32, 32), "red").save(png)
    keep([png], memo / "fig-ok", needs=[("s", k)])
    keep([png], memo / "fig-cut", needs=[("s", k)])
    with open(memo / "fig-cut" / "fig.png", "r+b") as f:
        f.truncate(40)
    keep([png], memo / "fig-orphan", needs=[("s", key(a=9))])  # its entry is not there
    (memo / "fig-old").mkdir()  # written before memo folders recorded their hashes
    shutil.copy(png, memo / "fig-old")
    (memo / "x.999999999.tmp").mkdir()  # left by a process that is gone
    (memo / f".y.{os.getpid()}.tmp.json").write_text("{")  # being written by a live one
    with caplog.at_level(logging.WARNING, logger="partlearn.cache"):
        assert load_memo(memo / "ok.json") == {"a": 1}
        assert load_memo(memo / "garbled.json") is None
        out = tmp_path / "run"
        assert restore(memo / "fig-ok", out) == ["figures/fig.png"]
        assert (out / "figures" / "fig.png").read_bytes() == png.read_bytes()
        (out / "figures" / "fig.png").unlink()
        assert restore(memo / "fig-cut", out) is None  # not served: drawn again
    assert not (out / "figures" / "fig.png").exists()
    assert f"memo {memo / 'garbled.json'} does not parse" in caplog.text
    assert f"memo {memo / 'fig-cut'} fig.png is 40 bytes" in caplog.text
    assert not (memo / "garbled.json").exists() and not (memo / "fig-cut").exists()
    (memo / "garbled.json").write_text("{garbled")
    keep([png], memo / "fig-cut")
    (memo / "fig-cut" / "fig.png").write_bytes(png.read_bytes()[:-9])
    removed = {r["key"]: r["reason"] for r in cache.gc() if r.get("memo")}
    assert set(removed) == {"garbled.json", "fig-cut", "fig-orphan", "fig-old",
                            "x.999999999.tmp"}, removed
    assert removed["fig-orphan"] == f"its entry s/{key(a=9)} is gone"
    assert sorted(p.name for p in memo.iterdir()) == [f".y.{os.getpid()}.tmp.json",
                                                      "fig-ok", "ok.json"]
    assert cache.entries()[0]["key"] == k  # entries untouched
    cache.gc(keep=set())  # the entry goes: its memo with it
    assert sorted(p.name for p in memo.iterdir()) == [f".y.{os.getpid()}.tmp.json", "ok.json"]


def test_a_run_file_is_whole_or_untouched_when_its_write_fails(tmp_path, monkeypatch):
    pipeline = tiny_pipeline(tmp_path)
    out = tmp_path / "run"
    pipeline().run(until="dataset", out=out, report=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "results.json" in before
    real = Path.write_text

    def half_then_full(self, text, *args, **kwargs):  # the disk fills up mid-file
        if "results" not in self.name:
            return real(self, text, *args, **kwargs)
        real(self, text[:len(text) // 2], *args, **kwargs)
        no_space()

    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        pipeline().run(until="dataset", out=out, report=False)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no half file, no tmp


def test_key_changes_with_every_ingredient():
    base = make_key("s", 1, {"a": 1}, {"in": "x"}, {"lib": "1"})
    assert base == make_key("s", 1, {"a": 1}, {"in": "x"}, {"lib": "1"})
    others = [make_key("t", 1, {"a": 1}, {"in": "x"}, {"lib": "1"}),
              make_key("s", 2, {"a": 1}, {"in": "x"}, {"lib": "1"}),
              make_key("s", 1, {"a": 2}, {"in": "x"}, {"lib": "1"}),
              make_key("s", 1, {"a": 1}, {"in": "y"}, {"lib": "1"}),
              make_key("s", 1, {"a": 1}, {"in": "x"}, {"lib": "2"})]
    assert len({base, *others}) == 6


def test_write_read_mmap_no_pickle(tmp_path):
    cache = Cache(tmp_path)
    k = key(a=1)
    assert not cache.has("s", k) and cache.get("s", k) is None
    with cache.writer("s", k, {"params": {"a": 1}}) as w:
        w.save_array("x", np.arange(6, dtype=np.float16).reshape(2, 3))
        w.save_json("info", {"n": 2})
    entry = cache.get("s", k)
    x = entry.array("x")
    assert isinstance(x, np.memmap) and x.dtype == np.float16 and x.shape == (2, 3)
    assert entry.json("info") == {"n": 2} and entry.meta["params"] == {"a": 1}
    assert entry.meta["key"] == k and "created" in entry.meta
    with pytest.raises(ValueError):  # object arrays would need a pickle: refused
        with cache.writer("s", key(a=2), {}) as w:
            w.save_array("o", np.array([{"a": 1}], dtype=object))
    assert not cache.has("s", key(a=2))


def test_interrupted_write_is_never_served_and_resumes(tmp_path):
    cache = Cache(tmp_path)
    k = key(a=1)
    with pytest.raises(KeyboardInterrupt):
        with cache.writer("s", k, {}) as w:
            w.save_shard(0, {"r": np.ones(3)})
            w.save_shard(1, {"r": np.ones(3) * 2})
            raise KeyboardInterrupt
    assert not cache.has("s", k) and cache.get("s", k) is None
    assert [r["complete"] for r in cache.entries()] == [False]
    calls = []
    with cache.writer("s", k, {}) as w:
        for s in range(3):
            if not w.shard_done(s):
                calls.append(s)
                w.save_shard(s, {"r": np.ones(3) * (s + 1)})
        w.meta["n_shards"] = 3
    assert calls == [2]  # the two finished shards were kept
    entry = cache.get("s", k)
    assert [float(entry.shard_array(s, "r")[0]) for s in range(3)] == [1.0, 2.0, 3.0]
    assert not list(tmp_path.glob("s/*.partial"))


def test_half_written_shard_is_redone(tmp_path):
    cache = Cache(tmp_path)
    k = key(a=1)
    with pytest.raises(RuntimeError):
        with cache.writer("s", k, {}) as w:
            w.save_shard(0, {"r": np.ones(3)})
            (w.path / "shard_00001.tmp").mkdir()  # a crash in the middle of shard 1
            raise RuntimeError
    with cache.writer("s", k, {}) as w:
        assert w.shard_done(0) and not w.shard_done(1)


def test_ls_rm_gc(tmp_path):
    cache = Cache(tmp_path)
    keys = [key(a=i) for i in range(3)]
    for k in keys:
        with cache.writer("s", k, {}) as w:
            w.save_array("x", np.zeros(10))
    with pytest.raises(RuntimeError):
        with cache.writer("t", key(a=9), {}) as w:
            raise RuntimeError
    rows = cache.entries()
    assert len(rows) == 4 and sum(not r["complete"] for r in rows) == 1
    assert all(r["bytes"] > 0 for r in rows if r["complete"])
    assert [r["key"] for r in cache.remove([keys[0][:8]])] == [keys[0]]
    removed = cache.gc(keep={("s", keys[1])})
    assert {r["key"] for r in removed} == {keys[2], key(a=9)}
    assert [r["key"] for r in cache.entries()] == [keys[1]]
    assert json.loads((tmp_path / "s" / keys[1] / "meta.json").read_text())["key"] == keys[1]
