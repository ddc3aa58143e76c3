import tracemalloc
from fractions import Fraction

import numpy as np
import pytest

from partlearn.retrieval import _search as R
from partlearn._validation import ConfigError, DataError


def unit(x):
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


# --------------------------------------------------------------------------- average precision

def test_ap_is_revisitop_formula_by_hand():
    # ranking 0..5, positives at 0-based ranks 0, 2, 5, N = 3:
    #   j=0 r=0: P0 = 1,   P1 = 1/1 -> 1
    #   j=1 r=2: P0 = 1/2, P1 = 2/3 -> 7/12
    #   j=2 r=5: P0 = 2/5, P1 = 3/6 -> 9/20
    #   AP = (1 + 7/12 + 9/20) / 3 = 122/60 / 3 = 61/90
    # (the non-interpolated AP would be (1 + 2/3 + 1/2) / 3 = 13/18: not what revisitop computes)
    ap = R.average_precision([0, 1, 2, 3, 4, 5], [5, 0, 2])
    assert ap == pytest.approx(float(Fraction(61, 90)), abs=1e-12)
    assert ap != pytest.approx(13 / 18)


def test_junk_is_removed_from_the_ranking():
    # junk {1} removed: ranking 0,2,3,4,5, positives at 0, 1, 4:
    #   j=0 r=0: 1;  j=1 r=1: P0 = 1/1, P1 = 2/2 -> 1;  j=2 r=4: P0 = 2/4, P1 = 3/5 -> 11/20
    #   AP = (1 + 1 + 11/20) / 3 = 17/20
    assert R.average_precision([0, 1, 2, 3, 4, 5], [0, 2, 5], junk=[1]) == pytest.approx(0.85)
    # junk placed after every positive changes nothing
    assert R.average_precision([0, 1, 2, 3, 4, 5], [0, 1], junk=[4]) == pytest.approx(1.0)


def test_truncated_ranking_and_perfect_ranking():
    # positive 5 not retrieved: only j=0 r=0 contributes 1, divided by N = 2
    assert R.average_precision([0, 1], [0, 5]) == pytest.approx(0.5)
    assert R.average_precision([3, 1, 0, 2], [3, 1]) == pytest.approx(1.0)
    # a single positive at 0-based rank r > 0: P0 = 0/r, P1 = 1/(r+1) -> AP = 1/(2(r+1))
    assert R.average_precision([4, 2, 9, 7], [7]) == pytest.approx(1 / 8)
    # faiss's -1 padding is skipped
    assert R.average_precision([4, 7, -1, -1], [7]) == pytest.approx(0.25)


# hand-made ground truth over a database of 6 items
RANKS = np.array([[3, 0, 4, 1, 5, 2],
                  [5, 4, 3, 2, 1, 0]])
GND = [{"easy": [0], "hard": [1, 2], "junk": [4], "bbx": [0, 0, 1, 1]},
       {"easy": [5, 3], "hard": [], "junk": [4]}]


def test_medium_protocol_by_hand():
    # query 0, medium: positives {0,1,2}, junk {4} removed -> ranking 3,0,1,5,2, positives at 1,2,4:
    #   j=0 r=1: P0 = 0/1, P1 = 1/2 -> 1/4
    #   j=1 r=2: P0 = 1/2, P1 = 2/3 -> 7/12
    #   j=2 r=4: P0 = 2/4, P1 = 3/5 -> 11/20
    #   AP = (15 + 35 + 33)/60 / 3 = 83/180
    # query 1, medium: positives {5,3}, junk {4} -> ranking 5,3,2,1,0: AP = 1
    out = R.instance_map(RANKS, GND, "medium", kappas=(1, 5, 10))
    assert out["ap"] == pytest.approx([83 / 180, 1.0])
    assert out["map"] == pytest.approx((83 / 180 + 1) / 2)
    assert out["n_queries"] == 2 and out["left_out"] == [] and out["protocol"] == "medium"
    # revisitop's precision@k: 1-based positive ranks q0 [2,3,5], q1 [1,2]; kq = min(max rank, k)
    #   k=1: q0 0/1, q1 1/1;  k=5: q0 3/5, q1 (kq=2) 2/2;  k=10: q0 (kq=5) 3/5, q1 1
    assert out["p@k"][1] == pytest.approx([0.0, 1.0])
    assert out["p@k"][5] == pytest.approx([0.6, 1.0])
    assert out["mp@k"] == pytest.approx({1: 0.5, 5: 0.8, 10: 0.8})


def test_hard_protocol_leaves_out_a_query_without_hard_positives():
    # query 0, hard: positives {1,2}, ignored {4, 0} -> ranking 3,1,5,2, positives at 1, 3:
    #   j=0 r=1: 0 and 1/2 -> 1/4;  j=1 r=3: P0 = 1/3, P1 = 2/4 -> 5/12;  AP = (1/4 + 5/12)/2 = 1/3
    # query 1 has no hard image: left out of the mean (revisitop), reported
    out = R.instance_map(RANKS, GND, "hard")
    assert out["ap"][0] == pytest.approx(1 / 3) and out["ap"][1] is None
    assert out["map"] == pytest.approx(1 / 3)
    assert out["n_queries"] == 1 and out["left_out"] == [1]


def test_easy_protocol_and_ignored_easy_images():
    # query 0, easy: positive {0}, ignored {4,1,2} -> ranking 3,0,5: (0 + 1/2)/2 = 1/4
    out = R.instance_map(RANKS, GND, "easy")
    assert out["ap"] == pytest.approx([0.25, 1.0])
    # easy images ignored under hard: moving easy image 0 to the top leaves hard AP unchanged
    moved = np.array([[0, 3, 4, 1, 5, 2], RANKS[1]])
    assert R.instance_map(moved, GND, "hard")["ap"][0] == pytest.approx(1 / 3)
    # ... but raises the medium AP (0 is a positive there)
    assert R.instance_map(moved, GND, "medium")["ap"][0] > 83 / 180


def test_instance_map_matches_average_precision_on_random_rankings():
    rng = np.random.default_rng(0)
    n_db, nq = 40, 15
    ranks = np.stack([rng.permutation(n_db) for _ in range(nq)])
    gnd = []
    for _ in range(nq):
        p = rng.permutation(n_db)
        gnd.append({"easy": p[:3].tolist(), "hard": p[3:6].tolist(), "junk": p[6:9].tolist()})
    out = R.instance_map(ranks, gnd, "hard")
    for q in range(nq):
        g = gnd[q]
        assert out["ap"][q] == pytest.approx(
            R.average_precision(ranks[q], g["hard"], g["junk"] + g["easy"]))


def test_truncated_ranks_need_n_db():
    ranks = np.array([[2, 7]])
    gnd = [{"easy": [7, 9], "hard": [], "junk": []}]
    with pytest.raises(DataError, match="out of range"):
        R.instance_map(ranks, gnd)  # n_db defaults to ranks.shape[1] = 2
    # positive 7 at r=1 -> (0 + 1/2)/2, positive 9 not retrieved; N = 2 -> 1/8
    assert R.instance_map(ranks, gnd, n_db=10)["map"] == pytest.approx(1 / 8)


# --------------------------------------------------------------------------- category level

def brute_category(x, labels, ks):
    x = np.asarray(x, np.float32)
    aps, rec = [], {k: [] for k in ks}
    for i in range(len(x)):
        s = (x @ x[i]).astype(np.float32)
        others = np.array([j for j in range(len(x)) if j != i])
        order = others[np.argsort(-s[others], kind="stable")]
        rel = labels[order] == labels[i]
        if not rel.any():
            continue
        hits, total = 0, 0.0
        for r, is_pos in enumerate(rel, start=1):
            if is_pos:
                hits += 1
                total += hits / r
        aps.append(total / rel.sum())
        for k in ks:
            rec[k].append(float(rel[:k].any()))
    return float(np.mean(aps)), {k: float(np.mean(v)) for k, v in rec.items()}


def test_category_retrieval_hand_made_two_classes():
    x = np.array([[1, 0], [0.6, 0.8], [0.8, 0.6], [0, 1], [-1, 0]], np.float32)
    labels = np.array(["a", "b", "a", "b", "c"])
    # q0: 2 (.8, a) 1 (.6) 3 (0) 4 -> positive first: AP 1, R@1 1
    # q1: 2 (.96) 3 (.8, b) 0 4 -> positive second: AP 1/2, R@1 0, R@2 1
    # q2: 1 (.96) 0 (.8, a) 3 4 -> AP 1/2, R@1 0, R@2 1
    # q3: 1 (.8, b) 2 0 4 -> AP 1, R@1 1;  q4 alone in class c: left out
    out = R.category_retrieval(x, labels, ks=(1, 2, 3))
    assert out["ap"][:4] == pytest.approx([1, 0.5, 0.5, 1])
    assert out["ap"][4] is None and out["left_out"] == [4] and out["n_queries"] == 4
    assert out["map"] == pytest.approx(0.75)
    assert out["recall@k"] == pytest.approx({1: 0.5, 2: 1.0, 3: 1.0})


def test_category_retrieval_map_at_r_hand_computed():
    # 1-D descriptors on the unit circle; class a has 3 images (R = 2 for each), b has 3
    ang = np.array([0.0, 0.1, 1.0, 0.05, 3.0, 3.1])
    x = np.stack([np.cos(ang), np.sin(ang)], axis=1).astype(np.float32)
    labels = np.array(["a", "a", "a", "b", "b", "b"])
    # q0 (a): 3 (.05, b) 1 (.1, a) 2 (1, a) ...: positives at ranks 2, 3
    #   AP = (1/2 + 2/3) / 2 = 7/12; MAP@R (R=2): (1/2) / 2 = 1/4; R@1 0, R@2 1
    # q1 (a): 3 (.05, b) 0 (.1, a) 2 (.9, a): the same ranks: AP 7/12, MAP@R 1/4
    # q2 (a): angles to 1 .9, to 3 .95, to 0 1.0 ->
    #   ranks: 1 (a), 3 (b), 0 (a): AP (1 + 2/3) / 2 = 5/6; MAP@R (1) / 2 = 1/2
    # q3 (b): 0 (.05, a) 1 (.05, a; tie broken by index) 2 (.95, a) 4 (2.95, b) 5 (b)
    #   positives at ranks 4, 5: AP (1/4 + 2/5) / 2 = 13/40; MAP@R 0
    # q4 (b): 5 (.1, b) 2 (2.0, a) 1 (2.9) 3 (2.95, b): AP (1 + 2/4) / 2 = 3/4; MAP@R 1/2
    # q5 (b): 4 (.1, b) 2 (2.1) 1 (3.0) 3 (3.05, b): AP (1 + 2/4) / 2 = 3/4; MAP@R 1/2
    out = R.category_retrieval(x, labels, ks=(1, 2))
    assert out["ap@r"] == pytest.approx([1 / 4, 1 / 4, 1 / 2, 0, 1 / 2, 1 / 2])
    assert out["map@r"] == pytest.approx(2 / 6)
    assert out["ap"] == pytest.approx([7 / 12, 7 / 12, 5 / 6, 13 / 40, 3 / 4, 3 / 4])
    assert out["hits"] == [[False, True], [False, True], [True, True], [False, False],
                           [True, True], [True, True]]
    # a perfect ranking has MAP@R 1, and MAP@R <= AP always
    perfect = R.category_retrieval(np.array([[1, 0], [1, 0.01], [0, 1], [0.01, 1]]),
                                   [0, 0, 1, 1], ks=(1,))
    assert perfect["map@r"] == 1.0
    assert all(r <= a + 1e-12 for r, a in zip(out["ap@r"], out["ap"]))


def test_category_retrieval_matches_brute_force_and_block_size():
    rng = np.random.default_rng(1)
    x = unit(rng.standard_normal((60, 5)))
    labels = rng.integers(0, 4, 60)
    ks = (1, 2, 4, 8)
    want_map, want_rec = brute_category(x, labels, ks)
    for block in (None, 1, 7, 60):
        out = R.category_retrieval(x, labels, ks, block_size=block)
        assert out["map"] == pytest.approx(want_map, abs=1e-12)
        assert out["recall@k"] == pytest.approx(want_rec, abs=1e-12)
    # ties: integer descriptors with many equal similarities, broken by index as the brute force
    xi = rng.integers(-1, 2, (40, 3)).astype(np.float32)
    li = rng.integers(0, 3, 40)
    want_map, want_rec = brute_category(xi, li, ks)
    out = R.category_retrieval(xi, li, ks, block_size=9)
    assert out["map"] == pytest.approx(want_map) and out["recall@k"] == pytest.approx(want_rec)


def test_category_retrieval_3000_by_1280_in_bounded_memory():
    rng = np.random.default_rng(2)
    n, d, n_cls = 3000, 1280, 100
    labels = rng.integers(0, n_cls, n)
    centres = rng.standard_normal((n_cls, d)).astype(np.float32)
    x = unit(centres[labels] * 0.05 + rng.standard_normal((n, d)).astype(np.float32))
    tracemalloc.start()
    try:
        out = R.category_retrieval(x, labels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # one 3000 x 3000 pass would hold 36 MB of scores plus 72 MB of argsort indices and more
    assert peak < 110e6, f"peak {peak / 1e6:.0f} MB: the similarity matrix is not blocked"
    rec = [out["recall@k"][k] for k in (1, 2, 4, 8)]
    assert all(a <= b for a, b in zip(rec, rec[1:]))
    assert out["n_queries"] == n - len(out["left_out"])
    # a sample of queries against the brute force
    sample = rng.choice(n, 25, replace=False)
    for i in sample:
        s = x @ x[i]
        s[i] = -np.inf
        order = np.argsort(-s, kind="stable")[:-1]
        rel = labels[order] == labels[i]
        if rel.any():
            ranks1 = np.flatnonzero(rel) + 1
            ap = np.mean(np.arange(1, len(ranks1) + 1) / ranks1)
            # one query's scores (a matrix-vector product) and a block's (a matrix product)
            # differ by float32 rounding, which can swap near-ties: 2e-7 of AP seen on an
            # Intel Xeon, equal on an AMD EPYC
            assert out["ap"][i] == pytest.approx(ap, abs=1e-6)


# --------------------------------------------------------------------------- search

@pytest.mark.parametrize("nq", [7, 30])  # faiss's single-query and BLAS paths
def test_flat_search_equals_stable_argsort(nq):
    rng = np.random.default_rng(3)
    db = rng.integers(-2, 3, (50, 6)).astype(np.float32)  # integer scores: exact, many ties
    q = rng.integers(-2, 3, (nq, 6)).astype(np.float32)
    sim = q.astype(np.float64) @ db.T.astype(np.float64)
    want = np.argsort(-sim, axis=1, kind="stable")
    scores, ranks = R.search(q, db)
    assert ranks.shape == (nq, 50) and ranks.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(ranks, want)
    np.testing.assert_array_equal(scores, np.take_along_axis(sim, want, 1))
    for k in (1, 3, 5, 17):  # cut-offs inside runs of equal scores
        s, r = R.search(q, db, k)
        np.testing.assert_array_equal(r, want[:, :k])
        np.testing.assert_array_equal(s, np.take_along_axis(sim, want[:, :k], 1))


def test_ivfpq_finds_the_right_cluster():
    rng = np.random.default_rng(4)
    n_cls, per, d = 10, 100, 32
    centres = unit(rng.standard_normal((n_cls, d)))
    db_labels = np.repeat(np.arange(n_cls), per)
    db = unit(centres[db_labels] + 0.05 * rng.standard_normal((n_cls * per, d)))
    q_labels = np.arange(n_cls).repeat(3)
    q = unit(centres[q_labels] + 0.05 * rng.standard_normal((len(q_labels), d)))
    scores, ranks = R.search(q, db, 10, index="ivfpq", nlist=10, nprobe=2)
    assert ranks.shape == (30, 10)
    assert (db_labels[ranks] == q_labels[:, None]).all()
    assert (np.diff(scores, axis=1) <= 0).all()
    again = R.search(q, db, 10, index="ivfpq", nlist=10, nprobe=2)
    np.testing.assert_array_equal(again[1], ranks)  # seeded: deterministic
    # the whole database from one cell: the rest is faiss's -1 padding with score -inf
    s, r = R.search(q[:2], db, None, index="ivfpq", nlist=10, nprobe=1)
    assert r.shape == (2, 1000) and (r[:, -1] == -1).all() and np.isneginf(s[:, -1]).all()
    got = r[0][r[0] >= 0]
    assert len(np.unique(got)) == len(got) and (db_labels[got] == q_labels[0]).all()


# --------------------------------------------------------------------------- re-ranking

def manifold_case():
    """Query (1,0,0); positives on an arc leaving it in the xy-plane (20 points, 0.05 rad apart);
    10 distractors tightly packed at 0.3 rad from the query in the xz-plane. Directly, the
    distractors come after the first 6 arc points; through the arc they are never reached."""
    t = 0.05 * np.arange(1, 21)
    arc = np.stack([np.cos(t), np.sin(t), np.zeros_like(t)], 1)
    off = 0.004 * np.arange(10)
    blob = np.stack([np.cos(0.3 + off), 0.003 * np.sin(7 * np.arange(10)), np.sin(0.3 + off)], 1)
    db = unit(np.concatenate([arc, blob]))
    return unit([[1.0, 0.0, 0.0]]), db, list(range(20))


def easy_case():
    rng = np.random.default_rng(5)
    c = unit(rng.standard_normal((2, 8)))
    db = unit(np.repeat(c, 10, 0) + 0.05 * rng.standard_normal((20, 8)))
    q = unit(c[:1] + 0.05 * rng.standard_normal((1, 8)))
    return q, db, list(range(10))


def ap_of_scores(scores, positives):
    return R.average_precision(np.argsort(-scores, kind="stable"), positives)


def test_query_expansion_follows_the_manifold():
    q, db, pos = manifold_case()
    _, ranks = R.search(q, db)
    before = R.average_precision(ranks[0], pos)
    assert before < 0.9
    for alpha in (0.0, 3.0):
        q2 = R.query_expansion(q, db, ranks, n=5, alpha=alpha)
        assert q2.shape == q.shape and np.linalg.norm(q2) == pytest.approx(1, abs=1e-6)
        after = R.average_precision(R.search(q2, db)[1][0], pos)
        assert after > before
    # average QE is the normalised mean of the query and its top 5
    want = unit(q[0] + db[ranks[0, :5]].sum(0))
    np.testing.assert_allclose(R.query_expansion(q, db, ranks, n=5)[0], want, atol=1e-6)


def test_diffusion_follows_the_manifold():
    q, db, pos = manifold_case()
    before = R.average_precision(R.search(q, db)[1][0], pos)
    f = R.diffusion(q, db, k=4, k_query=3)
    assert f.shape == (1, len(db))
    assert ap_of_scores(f[0], pos) == pytest.approx(1.0) and before < 0.9
    assert (f[0, 20:] == 0).all()  # the distractors are not connected to the arc


def test_reranking_leaves_an_easy_case_right():
    q, db, pos = easy_case()
    _, ranks = R.search(q, db)
    assert R.average_precision(ranks[0], pos) == 1.0
    q2 = R.query_expansion(q, db, ranks, n=3, alpha=3)
    assert R.average_precision(R.search(q2, db)[1][0], pos) == 1.0
    assert ap_of_scores(R.diffusion(q, db, k=5)[0], pos) == 1.0


def test_diffusion_solves_the_linear_system():
    q, db, _ = easy_case()
    f = R.diffusion(q, db, k=5, alpha=0.9, tol=1e-12, maxiter=500)
    # rebuild the system by hand: mutual 5-NN affinities s^3, symmetric normalisation
    sim = db.astype(np.float64) @ db.T.astype(np.float64)
    np.fill_diagonal(sim, -np.inf)
    nn = np.argsort(-sim, 1, kind="stable")[:, :5]
    knn = np.zeros_like(sim, bool)
    knn[np.arange(20)[:, None], nn] = True
    a = np.where(knn & knn.T, np.maximum(sim, 0) ** 3, 0)
    dinv = 1 / np.sqrt(a.sum(1))
    w = dinv[:, None] * a * dinv[None]
    s = db.astype(np.float64) @ q[0]
    y = np.zeros(20)
    top = np.argsort(-s, kind="stable")[:5]
    y[top] = np.maximum(s[top], 0) ** 3
    want = np.linalg.solve(np.eye(20) - 0.9 * w, y)
    np.testing.assert_allclose(f[0], want, rtol=1e-4, atol=1e-7)


# --------------------------------------------------------------------------- bad inputs

def test_bad_inputs_give_clear_errors():
    db = unit(np.eye(4))
    with pytest.raises(DataError, match="dimension d=3, expected d=4"):
        R.search(np.ones((2, 3)), db)
    bad = db.copy()
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match="finite.*row 2"):
        R.search(db, bad)
    with pytest.raises(DataError, match="2-D"):
        R.search(np.ones(4), db)
    with pytest.raises(ConfigError, match="k=5"):
        R.search(db, db, 5)
    with pytest.raises(ConfigError, match="'flat'"):
        R.search(db, db, index="ivfqp")
    with pytest.raises(ConfigError, match="nbits"):
        R.search(db, db, index="ivfpq")  # 4 rows cannot train 256 centroids
    with pytest.raises(DataError, match=r"gnd\[1\]\['junk'\].*index 9 out of range.*\[0, 6\)"):
        R.instance_map(RANKS, [GND[0], {"easy": [1], "hard": [], "junk": [9]}])
    with pytest.raises(DataError, match="lacks key"):
        R.instance_map(RANKS, [GND[0], {"easy": [1], "hard": []}])
    with pytest.raises(DataError, match="2 rows"):
        R.instance_map(RANKS, GND[:1])
    with pytest.raises(DataError, match="disjoint"):
        R.instance_map(RANKS, [GND[0], {"easy": [1], "hard": [1], "junk": []}])
    with pytest.raises(DataError, match="twice"):
        R.instance_map(np.array([[0, 1, 1], [0, 1, 2]]), GND, n_db=6)
    with pytest.raises(DataError, match="no query has a positive"):
        R.instance_map(RANKS, [{"easy": [0], "hard": [], "junk": []}] * 2, "hard")
    with pytest.raises(ConfigError, match="did you mean 'hard'"):
        R.instance_map(RANKS, GND, "hrad")
    with pytest.raises(DataError, match="positives is empty"):
        R.average_precision([0, 1], [])
    with pytest.raises(DataError, match="labels should have shape"):
        R.category_retrieval(db, [0, 1, 0])
    with pytest.raises(DataError, match="no query has a positive"):
        R.category_retrieval(db, [0, 1, 2, 3], ks=(1,))
    with pytest.raises(ConfigError, match="K=4 should be an integer between 1 and n - 1 = 3"):
        R.category_retrieval(db, [0, 1, 0, 1])
    with pytest.raises(DataError, match="ranks should have shape"):
        R.query_expansion(db[:2], db, np.zeros((2, 1), int), n=2)
    with pytest.raises(ConfigError, match="alpha"):
        R.diffusion(db[:1], db, k=2, alpha=1.0)


def loop_ap(ranking, ok, junk):
    """The revisitop loop written out: shift each positive's 0-based rank down by the junk
    ranked before it, then add the mean of the precisions before and at it, times 1/N."""
    ranking = list(ranking)
    pos = [r for r, item in enumerate(ranking) if item in ok]
    junk_at = [r for r, item in enumerate(ranking) if item in junk]
    shifted = [p - sum(j < p for j in junk_at) for p in pos]
    total = 0.0
    for j, r in enumerate(shifted):
        before = 1.0 if r == 0 else j / r
        total += (before + (j + 1) / (r + 1)) / 2 / len(ok)
    return total


def test_instance_map_matches_the_revisitop_loop_on_search_output():
    rng = np.random.default_rng(6)
    db = unit(rng.standard_normal((80, 6)))
    q = unit(rng.standard_normal((12, 6)))
    _, ranks = R.search(q, db)
    gnd = []
    for i in range(12):
        p = rng.permutation(80)
        gnd.append({"easy": p[:4].tolist(), "hard": p[4:4 + i % 3].tolist(),
                    "junk": p[10:15].tolist()})
    for protocol, (ok_keys, junk_keys) in R.PROTOCOLS.items():
        out = R.instance_map(ranks, gnd, protocol)
        want = []
        for i, g in enumerate(gnd):
            ok = set(sum((g[key] for key in ok_keys), []))
            junk = set(sum((g[key] for key in junk_keys), []))
            want.append(loop_ap(ranks[i], ok, junk) if ok else None)
        assert [a is None for a in out["ap"]] == [w is None for w in want]
        assert [a for a in out["ap"] if a is not None] == pytest.approx(
            [w for w in want if w is not None], abs=1e-12)
        assert out["left_out"] == [i for i, w in enumerate(want) if w is None]


def test_category_retrieval_by_given_queries_or_scores():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 40)
    x = (3 * np.eye(8)[y] + rng.standard_normal((40, 8))).astype(np.float32)  # 3 clusters
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    category_retrieval = R.category_retrieval
    plain = category_retrieval(x, y, (1, 4))
    assert category_retrieval(x, y, (1, 4), queries=x) == plain
    assert category_retrieval(x, y, (1, 4), scores=x @ x.T)["map"] == pytest.approx(plain["map"])
    flipped = category_retrieval(x, y, (1, 4), scores=-(x @ x.T))  # the worst ranking
    assert flipped["map"] < plain["map"]
