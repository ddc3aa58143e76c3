"""The batched torch solver against liblinear: the same objective, the same minimiser.

Promised (partlearn/_svm_torch.py): every class's ``[coef, intercept]`` within
``tol = 1e-6`` relative L2 distance of the exact minimiser (its gradient certifies it).
Checked here: the gradient condition itself, an objective no higher than liblinear's
(``tol=1e-8``) beyond 1e-9 relative, coefficients within 1e-4 relative of liblinear's
(liblinear's own error included), held-out predictions equal but for at most 1%.
"""

import numpy as np
import pytest
import torch
from sklearn.svm import LinearSVC

from partlearn.classify import _svm_torch as st
from partlearn.classify._svm_torch import fit_ovr_squared_hinge
from partlearn.classify import CVSettings, fit_svm

CASES = [(60, 200, 2), (60, 200, 5), (300, 20, 2), (300, 20, 5)]  # n, D, classes: D > n, D < n


def data(n, d, k, seed=0, sep=0.7):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)
    x = sep * rng.standard_normal((k, d))[y] + rng.standard_normal((n, d))
    return x.astype(np.float32), y


def rows(coef, intercept):
    return np.concatenate([coef, np.asarray(intercept)[:, None]], axis=1).astype(np.float64)


def objective_and_grad(w, x, y, classes, C):
    """liblinear's primal per problem, written out: ``0.5 ||w~||^2 + C sum sq. hinge``."""
    w = w[1:] if len(classes) == 2 else w  # the binary problem is the classes[1] row
    pos = classes[1:] if len(classes) == 2 else classes
    t = np.where(y[:, None] == pos[None, :], 1.0, -1.0)
    xt = np.concatenate([x.astype(np.float64), np.ones((len(x), 1))], axis=1)
    h = np.clip(1 - t * (xt @ w.T), 0, None)
    return 0.5 * (w * w).sum(1) + C * (h * h).sum(0), w - 2 * C * (t * h).T @ xt


def liblinear(x, y, C):
    svm = LinearSVC(C=C, dual="auto", tol=1e-8, max_iter=1_000_000, random_state=0).fit(x, y)
    coef, b = svm.coef_, svm.intercept_
    if len(svm.classes_) == 2:
        coef, b = np.concatenate([-coef, coef]), np.concatenate([-b, b])
    return rows(coef, b)


@pytest.mark.parametrize("n, d, k", CASES)
@pytest.mark.parametrize("C", [0.1, 10.0])
def test_same_minimiser_as_liblinear(n, d, k, C):
    x, y = data(n, d, k)
    classes = np.unique(y)
    coef, intercept, n_iter, converged = fit_ovr_squared_hinge(x, y, classes, C)
    assert converged and 0 < n_iter < st.MAX_ITER
    assert coef.shape == (k, d) and intercept.shape == (k,)
    w, ref = rows(coef, intercept), liblinear(x, y, C)
    if k == 2:
        np.testing.assert_array_equal(w[0], -w[1])
    f, grad = objective_and_grad(w, x, y, classes, C)
    f_ref, _ = objective_and_grad(ref, x, y, classes, C)
    # the certificate: 1-strongly convex, so ||w - w*|| <= ||grad|| <= tol ||w||
    norms = np.linalg.norm(w[1:] if k == 2 else w, axis=1)
    assert (np.linalg.norm(grad, axis=1) <= 1.01 * st.TOL * norms).all()
    assert (f <= f_ref * (1 + 1e-9)).all()
    assert (np.linalg.norm(w - ref, axis=1) <= 1e-4 * np.linalg.norm(ref, axis=1)).all()
    xh, _ = data(500, d, k, seed=1)
    assert ((xh @ w[:, :-1].T + w[:, -1]).argmax(1)
            == (xh @ ref[:, :-1].T + ref[:, -1]).argmax(1)).mean() >= 0.99


def test_a_broken_solver_fails_the_gradient_check():
    x, y = data(60, 200, 5)
    classes = np.unique(y)
    coef, intercept, _, converged = fit_ovr_squared_hinge(x, y, classes, 10.0, max_iter=2)
    _, grad = objective_and_grad(rows(coef, intercept), x, y, classes, 10.0)
    assert not converged
    assert (np.linalg.norm(grad, axis=1) > 1e3 * st.TOL * np.linalg.norm(coef, axis=1)).any()


@pytest.mark.parametrize("n, d, k", [(60, 200, 5), (300, 20, 2)])
def test_warm_start_reaches_the_same_solution_sooner(n, d, k):
    x, y = data(n, d, k)
    classes = np.unique(y)
    small = fit_ovr_squared_hinge(x, y, classes, 1.0)
    cold = fit_ovr_squared_hinge(x, y, classes, 10.0)
    warm = fit_ovr_squared_hinge(x, y, classes, 10.0, w0=small[:2])
    assert warm[3] and warm[2] < cold[2]
    a, b = rows(*cold[:2]), rows(*warm[:2])
    assert (np.linalg.norm(a - b, axis=1) <= 3 * st.TOL * np.linalg.norm(a, axis=1)).all()
    again = fit_ovr_squared_hinge(x, y, classes, 10.0, w0=cold[:2])  # from the solution
    assert again[3] and again[2] < warm[2]


def test_masked_folds_are_the_fits_on_their_rows():
    """Cross-validation batches folds as columns with their held-out rows masked out."""
    x, y = data(80, 150, 3)
    classes = np.unique(y)
    p = st.Problem(x)
    t1 = p.targets(y, classes)
    train = [np.arange(80) % 4 != j for j in range(2)]
    mask = torch.as_tensor(np.repeat(np.stack(train, 1), 3, axis=1), dtype=torch.float64)
    beta, _, ok = st.solve(p, t1.repeat(1, 2), mask, torch.tensor([0.5] * 3 + [5.0] * 3))
    assert ok.all()
    w = p.weights(beta)
    for j, C in enumerate((0.5, 5.0)):
        coef, b, _, _ = fit_ovr_squared_hinge(x[train[j]], y[train[j]], classes, C)
        ref = rows(coef, b)
        assert (np.linalg.norm(w[3 * j:3 * j + 3] - ref, axis=1)
                <= 3 * st.TOL * np.linalg.norm(ref, axis=1)).all()


@pytest.mark.parametrize("k", [2, 4])
def test_fit_svm_torch_is_liblinear_on_separated_classes(k):
    x, y = data(120, 40, k, sep=1.5)
    if k == 2:
        y = np.where(y == 0, "cat", "dog")
    common = dict(Cs=(0.01, 0.1, 1.0), folds=3, n_jobs=1)
    lib = fit_svm(x, y, CVSettings(solver="liblinear", **common))
    torch_ = fit_svm(x, y, CVSettings(solver="torch", device="cpu", **common))
    assert type(torch_) is type(lib) and torch_.C == lib.C
    assert set(torch_.cv) == set(lib.cv) and torch_.converged
    assert max(abs(torch_.cv[c] - lib.cv[c]) for c in lib.cv) <= 1 / 120
    assert torch_.coef.shape == lib.coef.shape and torch_.coef.dtype == np.float32
    np.testing.assert_allclose(rows(torch_.coef, torch_.intercept),
                               rows(lib.coef, lib.intercept), rtol=0, atol=2e-3)
    xh, _ = data(400, 40, k, seed=1, sep=1.5)
    assert (torch_.predict(xh) == lib.predict(xh)).mean() >= 0.99


def test_fit_svm_torch_extends_the_grid_like_liblinear():
    x, y = data(90, 30, 3, sep=1.0)
    common = dict(Cs=(1e-4,), extend=2, folds=3, n_jobs=1)
    lib = fit_svm(x, y, CVSettings(solver="liblinear", **common))
    torch_ = fit_svm(x, y, CVSettings(solver="torch", device="cpu", **common))
    assert sorted(torch_.cv) == sorted(lib.cv) and len(lib.cv) > 1
    assert torch_.C == lib.C


def test_solver_is_checked():
    from partlearn._validation import ConfigError
    from partlearn.config import load_config

    assert load_config(None, ['classifier.solver="torch"']).classifier.solver == "torch"
    with pytest.raises(ConfigError, match="classifier.solver"):
        load_config(None, ['classifier.solver="sgd"'])
    with pytest.raises(ValueError, match="solver"):
        fit_svm(*data(30, 5, 2), CVSettings(solver="sgd"))


@pytest.mark.parametrize("dtype, gram", [(np.float16, False), (np.float32, True)])
def test_problem_in_row_blocks_is_the_in_memory_one(tmp_path, dtype, gram):
    """Out of core: ``x`` read 25 rows at a time from a memmap, with and without the Gram
    matrix: the same products, the same fit, to float rounding."""
    x, y = data(60, 40, 5)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=dtype, shape=x.shape)
    mm[:] = x
    mm.flush()
    x_ = np.load(tmp_path / "x.npy", mmap_mode="r")
    whole, blocked = st.Problem(x_.astype(np.float32)), st.Problem(x_, block_rows=25, gram=gram)
    assert blocked.x is None and (blocked.gram is not None) == gram
    v = torch.as_tensor(np.random.default_rng(0).standard_normal((60, 3)))
    np.testing.assert_allclose(blocked.qmul(v), whole.qmul(v), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(blocked.weights(v), whole.weights(v), rtol=1e-12, atol=1e-12)
    classes = np.unique(y)
    ref = fit_ovr_squared_hinge(x_.astype(np.float32), y, classes, 10.0)
    out = fit_ovr_squared_hinge(x_, y, classes, 10.0, w0=ref[:2], block_rows=25, gram=gram)
    cold = fit_ovr_squared_hinge(x_, y, classes, 10.0, block_rows=25, gram=gram)
    assert out[3] and cold[3]
    for a in (out, cold):
        np.testing.assert_allclose(rows(*a[:2]), rows(*ref[:2]), rtol=0, atol=1e-5)


def test_fit_svm_out_of_core_is_the_in_memory_fit(tmp_path):
    """A budget of 0.06 MiB against a 120 x 200 input (0.09 MiB as float32): torch reads
    the float16 memmap in blocks of 9 rows; the same C, CV accuracies, predictions, and
    coefficients within 1e-5 of the fit without a budget."""
    from partlearn.classify import _svm

    x, y = data(120, 200, 4)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float16,
                                   shape=x.shape)
    mm[:] = x
    mm.flush()
    x16 = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert _svm._budget(*x.shape, 0.06) == (9, False)  # no room for the Gram matrix
    common = dict(Cs=(1.0,), extend=0, folds=3, solver="torch", device="cpu")
    ref = fit_svm(np.asarray(x16, np.float32), y, CVSettings(memory_mb=0, **common))
    out = fit_svm(x16, y, CVSettings(memory_mb=0.06, **common))
    assert out.C == ref.C and out.cv == ref.cv and out.converged
    np.testing.assert_allclose(rows(out.coef, out.intercept),
                               rows(ref.coef, ref.intercept), rtol=0, atol=1e-5)
    xh, _ = data(400, 200, 4, seed=1)
    np.testing.assert_array_equal(out.predict(xh), ref.predict(xh))


def test_liblinear_over_the_budget_says_to_use_torch():
    from partlearn._validation import ConfigError

    x, y = data(120, 200, 4)
    with pytest.raises(ConfigError) as e:
        fit_svm(x, y, CVSettings(Cs=(1.0,), folds=3, memory_mb=0.06, solver="liblinear"),
                name="parts")
    msg = str(e.value)
    for part in ("parts: ", "120 x 200 float32 = 0 MiB", "classifier.memory_mb=0.06 MiB",
                 'classifier.solver = "torch"', "0: no limit"):
        assert part in msg, (part, msg)
    unlimited = CVSettings(Cs=(1.0,), folds=3, memory_mb=0, solver="liblinear")
    assert fit_svm(x, y, unlimited).coef.shape == (4, 200)


def test_nonfinite_input_is_found_block_by_block():
    from partlearn._validation import DataError

    x, y = data(120, 200, 4)
    x[100, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        fit_svm(x, y, CVSettings(solver="torch", device="cpu", memory_mb=0.06))


def test_memory_mb_is_checked():
    from partlearn._validation import ConfigError
    from partlearn.config import load_config

    assert load_config(None, []).classifier.memory_mb == 4096
    assert load_config(None, ["classifier.memory_mb=0"]).classifier.memory_mb == 0
    with pytest.raises(ConfigError, match="classifier.memory_mb"):
        load_config(None, ["classifier.memory_mb=-1"])
