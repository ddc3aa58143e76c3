import logging

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.svm import LinearSVC

from partlearn.classify import _svm
from partlearn._validation import DataError
from partlearn.classify import CVSettings, FUSION_WEIGHTS, fit_svm, method_features
from partlearn.evaluation import metrics, paired_comparison


def blobs(n_per_class=20, n_classes=3, dim=10, sep=2.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = sep * rng.standard_normal((n_classes, dim))
    y = np.repeat(np.arange(n_classes), n_per_class)
    return (centres[y] + rng.standard_normal((len(y), dim))).astype(np.float32), y


def test_model_as_arrays_predicts_like_sklearn():
    x, y = blobs()
    model = fit_svm(x, y, CVSettings(Cs=(0.1, 1.0), folds=3, solver="liblinear"))
    svm = LinearSVC(C=model.C, dual="auto", max_iter=20_000, random_state=0).fit(x, y)
    np.testing.assert_array_equal(model.predict(x), svm.predict(x))
    np.testing.assert_allclose(model.decision_function(x), svm.decision_function(x), rtol=1e-4,
                               atol=1e-5)
    assert model.C in model.cv and model.cv_accuracy == model.cv[model.C]
    assert model.coef.dtype == np.float32 and model.coef.shape == (3, 10)


def test_two_classes_give_two_rows():
    x, y = blobs(n_classes=2)
    y = np.where(y == 0, "cat", "dog")
    model = fit_svm(x, y, CVSettings(Cs=(1.0,), folds=3, extend=0, solver="liblinear"))
    assert model.coef.shape == (2, 10)
    svm = LinearSVC(C=1.0, dual="auto", max_iter=20_000, random_state=0).fit(x, y)
    np.testing.assert_array_equal(model.predict(x), svm.predict(x))


def fake_cv(monkeypatch, accuracy):
    """Replace the fold fits: a fold's accuracy is ``accuracy(C)``."""
    monkeypatch.setattr(_svm, "_fold_accuracy",
                        lambda C, *args: (accuracy(C), False))


def test_grid_extends_until_cv_stops_improving(monkeypatch):
    fake_cv(monkeypatch, lambda C: min(C, 1000.0) / 1000.0)  # rises up to C=1000, then flat
    x, y = blobs()
    model = fit_svm(x, y, CVSettings(Cs=(0.1, 1.0, 10.0), extend=3, folds=3, solver="liblinear"))
    assert sorted(model.cv) == pytest.approx([0.1, 1, 10, 100, 1000, 10000])
    assert model.C == pytest.approx(1000.0)  # tie with 10,000: the smaller C
    assert not model.C_at_edge


def test_c_at_the_edge_is_reported(monkeypatch, caplog):
    fake_cv(monkeypatch, lambda C: 1.0 / C)  # always better with smaller C
    x, y = blobs()
    with caplog.at_level(logging.WARNING, logger="partlearn.classify"):
        model = fit_svm(x, y, CVSettings(Cs=(1.0, 10.0), extend=2, folds=3, solver="liblinear"),
                        name="parts")
    assert model.C == pytest.approx(0.01) and model.C_at_edge
    assert "parts: C=0.01, the chosen C, is at the edge of the grid" in caplog.text


def test_bad_input():
    x, y = blobs()
    with pytest.raises(DataError, match="global: class '2' has 1 training image"):
        fit_svm(x[:41], y[:41], CVSettings(folds=3), name="global")
    with pytest.raises(DataError, match="NaN"):
        fit_svm(np.full_like(x, np.nan), y)
    with pytest.raises(DataError, match="at least 2 classes"):
        fit_svm(x[:20], y[:20])


def test_method_features_normalise_each_block():
    rng = np.random.default_rng(0)
    g, p = rng.standard_normal((4, 6)), rng.standard_normal((4, 3))
    both = method_features("parts+global", g, p)
    assert both.shape == (4, 9)
    np.testing.assert_allclose(np.linalg.norm(both[:, :3], axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(both[:, 3:], axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(method_features("global", g), axis=1), 1,
                               rtol=1e-6)


def test_metrics_by_hand():
    m = metrics([0, 0, 0, 1, 2, 2], [0, 0, 1, 1, 2, 0], n_classes=4)
    assert m["top1"] == pytest.approx(4 / 6)
    assert m["per_class_accuracy"][:3] == pytest.approx([2 / 3, 1.0, 0.5])
    assert m["per_class_accuracy"][3] is None  # no test image: left out of the mean
    assert m["mean_class_accuracy"] == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    assert m["confusion"][0] == [2, 1, 0, 0] and m["confusion"][2] == [1, 0, 1, 0]


def test_paired_comparison():
    rng = np.random.default_rng(0)
    a = rng.random(500) < 0.9
    b = a.copy()
    flip = rng.choice(500, 40, replace=False)
    b[flip[:30]] = False  # a right, b wrong on 30 of them
    b[flip[30:]] = True
    c = paired_comparison(a, b, n_bootstrap=20_000, seed=0)
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    assert (c["a_only"], c["b_only"]) == (a_only, b_only)
    assert c["diff"] == pytest.approx((a_only - b_only) / 500)
    assert c["mcnemar_p"] == pytest.approx(binomtest(a_only, a_only + b_only).pvalue)
    # the multinomial shortcut against resampling the images themselves
    idx = rng.integers(0, 500, (4000, 500))
    naive = np.percentile(a[idx].mean(1) - b[idx].mean(1), [2.5, 97.5])
    np.testing.assert_allclose(c["ci95"], naive, atol=0.004)
    assert c["ci95"][0] > 0  # 30 against 4 (or so): a real gain
    same = paired_comparison(a, a)
    assert same["diff"] == 0 and same["mcnemar_p"] == 1 and same["ci95"] == [0, 0]


def test_paired_comparison_over_seeds_counts_every_seed():
    from partlearn.evaluation._stats import paired_comparison_seeds

    rng = np.random.default_rng(1)
    b = rng.random(400) < 0.8
    a = np.stack([b.copy() for _ in range(3)])  # 3 seeds: each seed right on 12 more
    for s in range(3):
        a[s, np.flatnonzero(~b)[12 * s: 12 * s + 12]] = True
    c = paired_comparison_seeds(a, b[None], n_bootstrap=4000, seed=0)
    assert c["diff"] == pytest.approx(12 / 400)  # the mean over seeds, not seed 0 alone
    assert (c["seeds_a"], c["seeds_b"]) == (3, 1) and c["ci95"][0] > 0 and c["p"] < 0.01
    # with one seed each it tests what McNemar tests
    one = paired_comparison_seeds(a[:1], b[None], n_bootstrap=20_000, seed=0)
    mc = paired_comparison(a[0], b, n_bootstrap=20_000, seed=0)
    assert one["diff"] == mc["diff"] and one["p"] == pytest.approx(mc["mcnemar_p"], abs=0.002)
    same = paired_comparison_seeds(a, a)
    assert same["diff"] == 0 and same["p"] == 1


def test_holm_against_hand_computed_values():
    from partlearn.evaluation._stats import holm

    # sorted 0.01, 0.02, 0.04 (m = 3): 0.03, 0.04, 0.04 (monotone), back in order
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    out = holm([0.01, float("nan")])
    assert out[0] == pytest.approx(0.01) and np.isnan(out[1])


def test_fewer_folds_than_asked_is_a_warning_saying_so(caplog):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((13, 4)).astype(np.float32)
    y = np.array([0] * 10 + [1] * 3)
    with caplog.at_level(logging.WARNING, logger="partlearn.classify"):
        model = fit_svm(x, y, CVSettings(Cs=(1.0,), extend=0, folds=5, n_jobs=1))
    assert model.cv_folds == 3
    assert "5-fold cross-validation lowered to 3 folds: class '1' has only 3" in caplog.text


def _four_classes(rng, n=240):
    """Block ``a`` tells classes {0, 1} from {2, 3}, block ``b`` tells 0/2 from 1/3:
    only both together tell the four apart."""
    y = np.repeat(np.arange(4), n // 4)
    a = rng.standard_normal((n, 6)) * 0.6
    b = rng.standard_normal((n, 6)) * 0.6
    a[:, 0] += np.where(y < 2, 1.5, -1.5)
    b[:, 0] += np.where(y % 2 == 0, 1.5, -1.5)
    return a.astype(np.float32), b.astype(np.float32), y


def test_late_fusion_weights_two_svms_by_cv():
    from partlearn.classify import fit_late_fusion

    a, b, y = _four_classes(np.random.default_rng(0))
    ma, mb = fit_svm(a, y, CVSettings(Cs=(0.1, 1))), fit_svm(b, y, CVSettings(Cs=(0.1, 1)))
    f = fit_late_fusion(a, b, y, ma, mb)
    assert 0 < f.weight < 1 and f.cv_accuracy > max(ma.cv_accuracy, mb.cv_accuracy)
    assert f.cv_accuracy == max(f.cv.values()) and set(f.cv) == set(FUSION_WEIGHTS)
    w = f.weight  # the model on [a, b] is exactly the weighted sum of the two decisions
    np.testing.assert_allclose(f.decision_function(np.concatenate([a, b], axis=1)),
                               w * ma.decision_function(a) + (1 - w) * mb.decision_function(b),
                               atol=1e-5)


def test_late_fusion_falls_back_to_the_second_svm():
    from partlearn.classify import fit_late_fusion

    _, b, y = _four_classes(np.random.default_rng(1))
    mb = fit_svm(b, y, CVSettings(Cs=(0.1, 1)))
    # a copy of b adds nothing: every weight scores the same, the tie goes to b alone
    f = fit_late_fusion(b, b, y, mb, mb)
    assert f.weight == 0 and len(set(f.cv.values())) == 1
    noise = np.random.default_rng(2).standard_normal(b.shape).astype(np.float32)
    g = fit_late_fusion(noise, b, y, fit_svm(noise, y, CVSettings(Cs=(0.1, 1))), mb)
    assert g.cv_accuracy >= g.cv[0.0] and g.weight <= 0.3


def test_late_fusion_refits_its_folds_with_the_configured_solver(monkeypatch):
    """``solver="torch"``: the folds' refits are torch's (liblinear is never called), and
    the fusion is liblinear's: the same weight, CV accuracies within one image."""
    from partlearn.classify import fit_late_fusion

    a, b, y = _four_classes(np.random.default_rng(0))
    ref = CVSettings(Cs=(0.1, 1), solver="liblinear")
    ma, mb = fit_svm(a, y, ref), fit_svm(b, y, ref)
    lib = fit_late_fusion(a, b, y, ma, mb, ref)
    ta = fit_svm(a, y, CVSettings(Cs=(0.1, 1), solver="torch", device="cpu"))
    tb = fit_svm(b, y, CVSettings(Cs=(0.1, 1), solver="torch", device="cpu"))

    def no_liblinear(*args):
        raise AssertionError("liblinear refit a fold")

    monkeypatch.setattr(_svm, "_fold_scores", no_liblinear)
    f = fit_late_fusion(a, b, y, ta, tb, CVSettings(solver="torch", device="cpu"))
    assert (ta.C, tb.C) == (ma.C, mb.C) and f.weight == lib.weight
    assert set(f.cv) == set(lib.cv)
    assert max(abs(f.cv[w] - lib.cv[w]) for w in f.cv) <= 1 / len(y)
    w = f.weight
    np.testing.assert_allclose(f.decision_function(np.concatenate([a, b], axis=1)),
                               w * ta.decision_function(a) + (1 - w) * tb.decision_function(b),
                               atol=1e-5)


def test_torch_out_of_fold_scores_are_the_fold_fits():
    """The torch path's out-of-fold decisions are, row by row, those of the SVM fitted on
    the other folds alone; two classes as ``[-s, s]``."""
    from partlearn.classify._svm_torch import fit_ovr_squared_hinge

    for k in (2, 3):
        x, y = blobs(n_classes=k, sep=1.0)
        classes, splits = np.unique(y), _svm._splits(3, 0, y)
        oof = _svm._TorchPath(x, y, classes, splits, "cpu").out_of_fold(1.0)
        ref = np.empty_like(oof)
        for tr, te in splits:
            coef, b, _, _ = fit_ovr_squared_hinge(x[tr], y[tr], classes, 1.0)
            ref[te] = x[te] @ coef.T + b
        assert oof.shape == (len(y), k)
        np.testing.assert_allclose(oof, ref, atol=1e-5)


def test_folds_run_on_the_callers_joblib_backend():
    """No backend is hard-coded: a ``joblib.parallel_config`` around ``fit_svm`` and
    ``fit_late_fusion`` chooses where the folds run (here a recording threading backend),
    with the results of the default loky processes."""
    import joblib
    from joblib._parallel_backends import ThreadingBackend

    from partlearn.classify import fit_late_fusion

    used = []

    class Recording(ThreadingBackend):
        def submit(self, func, callback=None):
            used.append(func)
            return super().submit(func, callback)

    joblib.register_parallel_backend("partlearn-recording", Recording)
    x, y = blobs(sep=4.0)  # separated: every fold is right whatever liblinear's order
    lib = dict(solver="liblinear")  # the torch solver runs no joblib tasks
    ref = fit_svm(x, y, CVSettings(Cs=(0.1, 1.0), folds=3, n_jobs=2, **lib))
    ref_f = fit_late_fusion(x, x, y, ref, ref, CVSettings(n_jobs=2, **lib))
    with joblib.parallel_config(backend="partlearn-recording", n_jobs=2):
        out = fit_svm(x, y, CVSettings(Cs=(0.1, 1.0), folds=3, **lib))
        n_fit = len(used)
        out_f = fit_late_fusion(x, x, y, out, out, CVSettings(**lib))
    assert n_fit >= 6 and len(used) >= n_fit + 6  # 2 Cs x 3 folds; 2 SVMs x 3 folds
    assert out.C == ref.C and out.cv == ref.cv
    np.testing.assert_array_equal(out.predict(x), ref.predict(x))
    assert out_f.weight == ref_f.weight and out_f.cv == ref_f.cv


@pytest.mark.parametrize("solver", ["liblinear", "torch"])
def test_fold_inputs_are_what_each_fold_fits_and_scores(solver):
    """``fold_x``: fold j is fitted and scored on ``fold_x[j]``, the final model on ``x``.
    The same array for every fold is the plain CV; a fold whose rows are noise (its parts
    told nothing) scores at chance, and only the CV sees it."""
    from partlearn.classify import cv_splits, fit_late_fusion

    x, y = blobs(n_per_class=30, sep=1.5)
    kw = dict(Cs=(0.1, 1.0), folds=3, extend=0, solver=solver, device="cpu")
    plain = fit_svm(x, y, CVSettings(**kw))
    same = fit_svm(x, y, CVSettings(**kw), fold_x=[x, x, x])
    assert same.cv == plain.cv and same.C == plain.C
    np.testing.assert_allclose(same.coef, plain.coef, atol=1e-6)

    splits = cv_splits(y, 3, 0)
    noise = np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)
    first = noise.copy()  # fold 0 sees noise, the other folds the real rows
    worse = fit_svm(x, y, CVSettings(**kw), fold_x=[first, x, x])
    for c in plain.cv:
        fold0 = np.mean([LinearSVC(C=c, dual="auto", max_iter=20_000, random_state=0)
                         .fit(noise[splits[0][0]], y[splits[0][0]])
                         .predict(noise[splits[0][1]]) == y[splits[0][1]]])
        assert fold0 < 0.6  # chance is 1/3
        assert worse.cv[c] < plain.cv[c] - 0.15
    # the final model is on x whatever the folds saw
    final = fit_svm(x, y, CVSettings(**(kw | {"Cs": (worse.C,)})))
    np.testing.assert_allclose(worse.coef, final.coef, atol=1e-6)
    # a fusion whose first SVM's folds see noise leans to the second
    ma = fit_svm(x, y, CVSettings(**kw), fold_x=[noise] * 3)
    mb = fit_svm(x, y, CVSettings(**kw))
    honest = fit_late_fusion(x, x, y, ma, mb, CVSettings(solver=solver, device="cpu"),
                             fold_xa=[noise] * 3)
    assert honest.weight <= 0.2
    with pytest.raises(DataError, match="2 arrays for 3 CV folds"):
        fit_svm(x, y, CVSettings(**kw), fold_x=[x, x])


def test_cv_settings_from_the_classifier_section():
    from partlearn.config import load_config

    k = load_config(None, ["classifier.cv_folds=3", 'classifier.solver="torch"']).classifier
    cv = CVSettings.from_config(k, seed=7, n_jobs=2)
    assert (cv.Cs, cv.extend, cv.folds, cv.max_iter, cv.solver, cv.memory_mb) == (
        tuple(k.C), k.extend, 3, k.max_iter, "torch", k.memory_mb)
    assert (cv.random_state, cv.n_jobs) == (7, 2)
    assert CVSettings().solver == "torch"  # the default solver (issue 27, item 6)


def test_models_come_back_from_their_arrays_and_info():
    """What the classifier stage saves (``arrays()``, ``info()`` as JSON) gives the model
    back: the same scalars and decisions."""
    import json

    from partlearn.classify import FusedSVM, LinearSVM, fit_late_fusion

    a, b, y = _four_classes(np.random.default_rng(0))
    ma, mb = fit_svm(a, y, CVSettings(Cs=(0.1, 1))), fit_svm(b, y, CVSettings(Cs=(0.1, 1)))
    f = fit_late_fusion(a, b, y, ma, mb, name="a|b")
    for model, cls, x in ((ma, LinearSVM, a), (f, FusedSVM, np.concatenate([a, b], axis=1))):
        back = cls.from_saved(model.method, model.arrays(), json.loads(json.dumps(model.info())))
        assert back.info() == model.info() and back.cv == model.cv
        np.testing.assert_array_equal(back.decision_function(x), model.decision_function(x))
