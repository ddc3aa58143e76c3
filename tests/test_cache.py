import json

import numpy as np
import pytest

from partlearn.cache import Cache, make_key


def key(**params):
    return make_key("s", 1, params, {"in": "k0"}, {"numpy": np.__version__})


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
