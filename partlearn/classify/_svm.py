"""Linear SVMs on image codes, with C chosen by cross-validation on the training split.

``fit_svm`` fits a one-vs-rest linear SVM (scikit-learn's ``LinearSVC``) with
C chosen by stratified k-fold cross-validation on the training images only:
the grid is extended by decades at an edge whose C is best (up to ``extend``
times per side), and a C still at an edge is reported (``C_at_edge``) and
logged. Ties go to the smaller C. The model comes back as a ``LinearSVM`` of arrays
(``coef``, ``intercept``, ``classes``), never pickled, with ``decision_function`` and
``predict``. The CV's settings are one ``CVSettings`` (``CVSettings.from_config``: the
``classifier`` section, the run's seed and ``n_jobs``), shared with ``fit_late_fusion`` and
``fit_two_level``.

Two solvers of the same objective (``0.5 (||w||^2 + b^2) + C sum_i max(0, 1 - t_i (w . x_i
+ b))^2`` per class, one-vs-rest): ``solver="liblinear"`` (``LinearSVC``, folds x C on
loky processes) and ``solver="torch"`` (``partlearn.classify._svm_torch``: every class and fold
at once as columns of one Newton problem, each C warm-started from the nearest C
already solved, on a GPU when ``device`` finds one; imported only when used). The torch
solver stops where its coefficients are provably within 1e-6 relative of the exact
minimiser; liblinear at its default tolerance is the less exact of the two
(tests/classify/test_svm_torch.py).

``memory_mb`` (``classifier.memory_mb``; 0: no limit) bounds what an input may take as a
whole ``(n, D)`` float32 matrix: past it the torch solver reads the array it is given
(float16 or float32, an ``np.memmap`` included) in blocks of rows, the same fit to float
rounding, and liblinear, which needs the whole matrix, stops with an error.

Folds and Cs run through joblib (``prefer="processes"``: loky processes unless the caller
chose another backend with ``joblib.parallel_config``, e.g. dask).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

from .._validation import ConfigError, DataError
from ..config import ClassifierConfig

logger = logging.getLogger(__name__)

_K = ClassifierConfig()  # the defaults, declared once there
SOLVERS = ("liblinear", "torch")


@dataclass(frozen=True)
class CVSettings:
    """How ``fit_svm``, ``fit_late_fusion`` and ``fit_two_level`` choose C and fit: the grid
    ``Cs`` (extended by up to ``extend`` decades per side at an edge whose C is best),
    ``folds`` stratified folds drawn with ``random_state``, liblinear's ``max_iter``,
    ``n_jobs`` joblib workers, the ``solver`` (``"liblinear"`` or ``"torch"``, on
    ``device``) and ``memory_mb`` (the input's budget as float32; 0: no limit)."""

    Cs: tuple[float, ...] = _K.C
    extend: int = _K.extend
    folds: int = _K.cv_folds
    max_iter: int = _K.max_iter
    random_state: int = 0
    n_jobs: int | None = None
    solver: str = _K.solver
    device: str = "auto"
    memory_mb: float = _K.memory_mb

    @classmethod
    def from_config(cls, k: ClassifierConfig, seed: int, n_jobs=None,
                    device: str = "auto") -> CVSettings:
        """The ``classifier`` section ``k`` with the run's ``seed`` and ``n_jobs``."""
        return cls(Cs=tuple(k.C), extend=k.extend, folds=k.cv_folds, max_iter=k.max_iter,
                   random_state=seed, n_jobs=n_jobs, solver=k.solver, device=device,
                   memory_mb=k.memory_mb)


def _cv_keys(cv: dict) -> dict:
    return {f"{c:g}": a for c, a in cv.items()}


def _cv_floats(cv: dict) -> dict:
    return {float(c): a for c, a in cv.items()}


class _Decisions:
    """``predict`` from ``decision_function``; the arrays a stage saves (``arrays``)."""

    ARRAYS: ClassVar[tuple[str, ...]] = ("coef", "intercept", "classes")

    def decision_function(self, x) -> np.ndarray:
        """``(n, classes)`` scores of ``x`` ``(n, D)``."""
        return np.asarray(x, np.float32) @ self.coef.T + self.intercept

    def predict(self, x) -> np.ndarray:
        return np.asarray(self.classes)[self.decision_function(x).argmax(axis=1)]

    def arrays(self) -> dict[str, np.ndarray]:
        return {a: np.asarray(getattr(self, a)) for a in self.ARRAYS}


@dataclass(frozen=True, eq=False)
class LinearSVM(_Decisions):
    """``fit_svm``'s one-vs-rest SVM of ``method``: ``coef`` (classes, D) and ``intercept``
    float32, ``classes``, the chosen ``C``, ``cv`` (``{C: mean fold accuracy}``, every C
    tried), ``cv_accuracy`` (at ``C``), ``cv_folds``, ``C_at_edge`` and ``converged`` (no fit
    hit liblinear's ``max_iter`` or the torch solver's limit)."""

    method: str
    C: float
    cv: dict
    cv_accuracy: float
    cv_folds: int
    C_at_edge: bool
    converged: bool
    coef: np.ndarray
    intercept: np.ndarray
    classes: np.ndarray

    def info(self) -> dict:
        """The scalars, JSON-ready (``cv``'s keys as ``f"{C:g}"``)."""
        return {"C": self.C, "cv_accuracy": self.cv_accuracy, "cv_folds": self.cv_folds,
                "C_at_edge": self.C_at_edge, "converged": self.converged,
                "cv": _cv_keys(self.cv)}

    @classmethod
    def from_saved(cls, method: str, arrays, info: dict) -> LinearSVM:
        """The model back from ``arrays()`` and ``info()`` (as saved)."""
        return cls(method, info["C"], _cv_floats(info["cv"]), info["cv_accuracy"],
                   info["cv_folds"], info["C_at_edge"], info["converged"],
                   *(np.asarray(arrays[a]) for a in cls.ARRAYS))


def fit_svm(x, y, cv: CVSettings = CVSettings(), *, name: str = "",
            fold_x=None) -> LinearSVM:
    """One-vs-rest linear SVM on ``x`` ``(n, D)``, labels ``y`` ``(n,)``, C by ``cv``'s CV.

    ``cv.solver``: ``"liblinear"`` or ``"torch"`` (on ``cv.device``; the same folds, grid
    and result). ``cv.memory_mb``: past it (``x`` as ``(n, D)`` float32), torch reads ``x``
    in blocks of rows and liblinear raises ``ConfigError``. ``name`` (the method) is the
    model's ``method`` and is used in messages.
    ``fold_x``: one ``(n, D)`` array per fold of ``cv_splits(y, cv.folds, cv.random_state)``,
    the same rows as that fold's model sees them (part codes from parts learnt without
    the fold: ``encoding_cv``); fold ``j`` is fitted and scored on ``fold_x[j]``, the
    final model on ``x``.
    """
    who = f"{name}: " if name else ""
    x, y, plan = _svm_input(x, y, cv, who)
    classes = np.unique(y)
    if len(classes) < 2:
        raise DataError(f"{who}a classifier needs at least 2 classes, got {len(classes)}")
    splits = cv_splits(y, cv.folds, cv.random_state, who)
    k = len(splits)
    fold_x = _fold_inputs(fold_x, y, splits, cv, who)
    if cv.solver == "torch":
        path = (_TorchPath(x, y, classes, splits, cv.device, plan) if fold_x is None else
                _FoldwiseTorch(x, fold_x, y, classes, splits, cv.device, plan))
        scores, best, late = _search_C(path.accuracies, cv.Cs, cv.extend)
        coef, intercept, late_final = path.final(best)
    else:
        scores, best, late = _search_C(
            _liblinear_accuracies(fold_x or [x] * k, y, splits, cv), cv.Cs, cv.extend)
        coef, intercept, late_final = _liblinear_fit(x, y, best, cv.max_iter,
                                                     cv.random_state)
    grid = sorted(scores)
    at_edge = best in (grid[0], grid[-1]) and len(grid) > 1
    if at_edge:
        logger.warning("%sC=%g, the chosen C, is at the edge of the grid %s even after "
                       "extending it %d decade(s): cross-validation may still improve beyond "
                       "it", who, best, [f"{c:g}" for c in grid], cv.extend)
    if late or late_final:
        logger.warning("%s%s; accuracies may be slightly off", who,
                       f"liblinear hit max_iter={cv.max_iter} in some fits (raise "
                       "classifier.max_iter)" if cv.solver == "liblinear" else
                       "the torch solver stopped short of its tolerance in some fits")
    logger.info("%sC=%g (CV accuracy %.4f over %d folds; grid %s)", who, best, scores[best], k,
                ", ".join(f"{c:g}: {scores[c]:.4f}" for c in grid))
    return LinearSVM(name, best, scores, scores[best], k, bool(at_edge),
                     not (late or late_final), coef.astype(np.float32),
                     intercept.astype(np.float32), classes)


def _svm(C: float, max_iter: int, seed: int) -> LinearSVC:
    return LinearSVC(C=C, dual="auto", max_iter=max_iter, random_state=seed)


def _fit_quiet(svm: LinearSVC, x, y) -> tuple[LinearSVC, bool]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svm.fit(x, y)
    return svm, any(issubclass(w.category, ConvergenceWarning) for w in caught)


def _fold_accuracy(C, x, y, train, test, max_iter, seed) -> tuple[float, bool]:
    svm, late = _fit_quiet(_svm(C, max_iter, seed), x[train], y[train])
    return float((svm.predict(x[test]) == y[test]).mean()), late


def _budget(n: int, d: int, memory_mb: float):
    """None when an ``(n, d)`` input fits ``memory_mb`` MiB as float32 (0: no limit), else
    the torch solver's out-of-core plan ``(rows per block, keep the Gram matrix)``: blocks
    whose float64 copy takes a quarter of the budget (two are held while the Gram matrix
    is built), the ``n x n`` float64 Gram matrix only where it takes at most half (and
    ``n <= 2 d``, as in memory)."""
    budget = memory_mb * 2**20
    if not budget or 4 * n * d <= budget:
        return None
    return max(1, int(budget // (32 * d))), n <= 2 * d and 8 * n * n <= budget / 2


def _svm_input(x, y, cv: CVSettings, who: str = ""):
    """``(x, y, plan)``: ``x`` as float32 when it fits ``cv.memory_mb`` (``plan`` None), else
    the array as given, checked block by block (``plan``: ``_budget``'s)."""
    solver, memory_mb = cv.solver, cv.memory_mb
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is not one of {SOLVERS}")
    x = x if isinstance(x, np.ndarray) else np.asarray(x, np.float32)  # memmaps stay
    y = np.asarray(y)
    if x.ndim != 2 or len(x) != len(y):
        raise DataError(f"{who}x {x.shape} and y {y.shape} should be (n, D) and (n,)")
    plan = _budget(*x.shape, memory_mb)
    if plan is None:
        x = np.asarray(x, np.float32)
        blocks = [x]
    elif solver == "liblinear":
        raise ConfigError(
            f"{who}the SVM input, {x.shape[0]:,} x {x.shape[1]:,} float32 = "
            f"{4 * x.size / 2**20:,.0f} MiB, exceeds classifier.memory_mb={memory_mb:g} MiB; "
            "liblinear needs the whole matrix in memory: set classifier.solver = \"torch\" "
            "(it reads the input in blocks of rows within the budget), or raise "
            "classifier.memory_mb (0: no limit)")
    else:
        blocks = (x[i:i + plan[0]] for i in range(0, len(x), plan[0]))
    if not all(np.isfinite(b).all() for b in blocks):
        raise DataError(f"{who}the features hold NaN or inf")
    return x, y, plan


def _liblinear_fit(x, y, C, max_iter: int, random_state: int):
    """``(coef, intercept, hit max_iter)`` of ``LinearSVC`` at ``C`` on every row, one row
    per class (also for two)."""
    svm, late = _fit_quiet(_svm(C, max_iter, random_state), x, y)
    coef, intercept = svm.coef_, svm.intercept_
    if len(svm.classes_) == 2:  # liblinear's binary model: one row for classes[1]
        coef = np.concatenate([-coef, coef])
        intercept = np.concatenate([-intercept, intercept])
    return coef, intercept, late


def _splits(k: int, random_state: int, y) -> list:
    """The stratified folds: they depend on ``y`` and ``random_state`` only."""
    return list(StratifiedKFold(k, shuffle=True, random_state=random_state)
                .split(np.zeros((len(y), 1)), y))


def cv_splits(y, folds: int = _K.cv_folds, random_state: int = 0, who: str = "") -> list:
    """The ``(train, test)`` index pairs of ``fit_svm``'s CV on labels ``y``: ``folds``
    stratified folds, fewer (with a warning) when a class has fewer images."""
    classes, counts = np.unique(np.asarray(y), return_counts=True)
    k = min(folds, int(counts.min()))
    if k < folds:
        logger.warning("%s%d-fold cross-validation lowered to %d folds: class %r has only %d "
                       "training images", who, folds, k, str(classes[counts.argmin()]),
                       counts.min())
    if k < 2:
        raise DataError(f"{who}class {str(classes[counts.argmin()])!r} has {counts.min()} training "
                        f"image(s); {folds}-fold cross-validation needs at least 2 per class")
    return _splits(k, random_state, y)


def _fold_inputs(fold_x, y, splits, cv: CVSettings, who: str = ""):
    """``fold_x`` checked like ``x`` (None stays None), one array per fold."""
    if fold_x is None:
        return None
    if len(fold_x) != len(splits):
        raise DataError(f"{who}fold_x holds {len(fold_x)} arrays for {len(splits)} CV folds")
    return [_svm_input(xf, y, cv, who)[0] for xf in fold_x]


def _liblinear_accuracies(xs, y, splits, cv: CVSettings):
    """``Cs`` → ``{C: (mean fold accuracy, hit max_iter)}`` (fold ``j`` on ``xs[j]``), folds
    x C on processes, not threads: liblinear draws its coordinate order from one global
    random generator, so fits on several threads of one process interleave their draws
    and the fold accuracies change from run to run (measured: demo parts+global, C=0.01)."""
    def accuracies(Cs) -> dict:
        runs = Parallel(n_jobs=cv.n_jobs, prefer="processes")(
            delayed(_fold_accuracy)(c, xs[j], y, tr, te, cv.max_iter, cv.random_state)
            for c in Cs for j, (tr, te) in enumerate(splits))
        out = {}
        for i, c in enumerate(Cs):
            fold = runs[i * len(splits):(i + 1) * len(splits)]
            out[c] = (float(np.mean([a for a, _ in fold])), any(f for _, f in fold))
        return out
    return accuracies


class _TorchPath:
    """The torch solver's CV: one problem whose columns are every (fold, class), the held-out
    rows of a fold masked out of its columns, so one product with ``Q`` serves all folds;
    each C starts from the nearest C (in decades) already solved. Its fold decisions are
    ``Q beta`` on the held-out rows. ``plan``: ``_budget``'s (None: ``x`` in memory)."""

    def __init__(self, x, y, classes, splits, device, plan=None):
        import torch

        from . import _svm_torch as st

        self.st, self.classes, self.y, self.splits = st, classes, y, splits
        rows, gram = plan or (None, None)
        self.p = st.Problem(x, device, block_rows=rows, gram=gram)
        self.t1 = self.p.targets(y, classes)  # (n, K'): column j * K' + k is fold j, class k
        train = np.zeros((len(y), len(splits)))
        for j, (tr, _) in enumerate(splits):
            train[tr, j] = 1
        self.t = self.t1.repeat(1, len(splits))
        self.mask = torch.as_tensor(np.repeat(train, self.t1.shape[1], axis=1),
                                    device=self.p.device)
        self.solved: dict = {}

    def accuracies(self, Cs) -> dict:
        out = {}
        for c in sorted(Cs):
            near = min(self.solved, key=lambda s: abs(np.log(s / c)), default=None)
            beta, _, ok = self.st.solve(self.p, self.t, self.mask, c, self.solved.get(near))
            self.solved[c] = beta
            scores = self._out_of_fold(beta)
            acc = [(self.classes[scores[te].argmax(1)] == self.y[te]).mean()
                   for _, te in self.splits]
            out[c] = (float(np.mean(acc)), not bool(ok.all()))
        return out

    def _out_of_fold(self, beta) -> np.ndarray:
        """``(n, classes)`` decisions, each row by its fold's SVMs (two classes: ``[-s, s]``)."""
        scores = self.p.qmul(beta).cpu().numpy()
        k1 = self.t1.shape[1]
        out = np.empty((len(self.y), k1), scores.dtype)
        for j, (_, te) in enumerate(self.splits):
            out[te] = scores[te, j * k1:(j + 1) * k1]
        return np.concatenate([-out, out], axis=1) if k1 == 1 else out

    def out_of_fold(self, C) -> np.ndarray:
        """``_out_of_fold`` at ``C`` (solved first if it was not)."""
        if C not in self.solved:
            self.accuracies([C])
        return self._out_of_fold(self.solved[C])

    def fold_mean(self, C):
        """The mean over the folds of ``beta`` at ``C``: a start for the final fit."""
        return self.solved[C].reshape(len(self.y), len(self.splits), self.t1.shape[1]).mean(1)

    def final(self, C, start=None):
        """The fit on every training image at ``C``, from ``start`` (default: the mean of
        its folds' ``beta``)."""
        start = self.fold_mean(C) if start is None else start
        beta, _, ok = self.st.solve(self.p, self.t1, None, C, start)
        coef, intercept = self.st.split(self.p.weights(beta), len(self.classes))
        return coef, intercept, not bool(ok.all())


class _FoldwiseTorch:
    """The torch solver's CV where each fold has its own input (``fold_x``): one
    ``_TorchPath`` per fold; the final fit on ``x`` starts from the folds' mean ``beta``
    (one dual variable per row and class, whatever the features)."""

    def __init__(self, x, fold_x, y, classes, splits, device, plan):
        self.splits, self.x, self.y, self.classes = splits, x, y, classes
        self.device, self.plan = device, plan
        self.paths = [_TorchPath(xf, y, classes, [split], device, plan)  # same shapes as x
                      for xf, split in zip(fold_x, splits)]

    def accuracies(self, Cs) -> dict:
        per = [p.accuracies(Cs) for p in self.paths]
        return {c: (float(np.mean([a[c][0] for a in per])), any(a[c][1] for a in per))
                for c in per[0]}

    def out_of_fold(self, C) -> np.ndarray:
        out = None
        for p, (_, te) in zip(self.paths, self.splits):
            scores = p.out_of_fold(C)
            out = np.empty_like(scores) if out is None else out
            out[te] = scores[te]
        return out

    def final(self, C):
        for p in self.paths:
            p.out_of_fold(C)  # solved on every fold first
        start = sum(p.fold_mean(C) for p in self.paths) / len(self.paths)
        full = _TorchPath(self.x, self.y, self.classes, self.splits[:1], self.device,
                          self.plan)
        return full.final(C, start)


def _search_C(accuracies, Cs, extend: int) -> tuple[dict[float, float], float, bool]:
    """Mean fold accuracy of every C in ``Cs``, the grid extended by a decade at an edge
    whose C is best (up to ``extend`` times per side); ``accuracies(Cs)`` gives
    ``{C: (mean fold accuracy, hit an iteration limit)}``. Returns ``(cv, best C, late)``:
    ``{C: mean fold accuracy}``, ties going to the smaller C, and whether a fit hit
    its iteration limit."""
    cv: dict[float, float] = {}
    late = False
    todo = sorted({float(c) for c in Cs})
    for _ in range(2 * extend + 1):
        for c, (a, hit) in accuracies(todo).items():
            cv[c] = a
            late |= hit
        grid = sorted(cv)
        best = max(grid, key=lambda c: (cv[c], -c))  # ties: the smaller C
        tried_low = sum(c < min(Cs) for c in grid)
        tried_high = sum(c > max(Cs) for c in grid)
        if best == grid[-1] and tried_high < extend:
            todo = [grid[-1] * 10]
        elif best == grid[0] and tried_low < extend:
            todo = [grid[0] / 10]
        else:
            break
    return cv, best, late


def _fold_scores(C, x, y, train, test, max_iter, seed) -> np.ndarray:
    svm, _ = _fit_quiet(_svm(C, max_iter, seed), x[train], y[train])
    scores = svm.decision_function(x[test])
    return np.stack([-scores, scores], axis=1) if scores.ndim == 1 else scores


class _Folds:
    """One problem's out-of-fold decisions and final fit at any C, by either solver; the
    torch solver's problem is set up once and each C warm-started from the nearest
    solved (``_TorchPath``)."""

    def __init__(self, x, y, classes, splits, cv: CVSettings, plan, fold_x=None):
        self.x, self.y, self.classes, self.splits, self.cv = x, y, classes, splits, cv
        self.xs = fold_x or [x] * len(splits)  # what each fold fits and scores on
        self.path = None
        if cv.solver == "torch":
            d = cv.device
            self.path = (_TorchPath(x, y, classes, splits, d, plan) if fold_x is None
                         else _FoldwiseTorch(x, fold_x, y, classes, splits, d, plan))

    def out_of_fold(self, C) -> np.ndarray:
        """``(n, classes)`` float64 decisions at ``C``, each row by the SVM of the fold that
        held it out."""
        if self.path is not None:
            return self.path.out_of_fold(C).astype(np.float64)
        cv = self.cv
        parts = Parallel(n_jobs=cv.n_jobs, prefer="processes")(
            delayed(_fold_scores)(C, xf, self.y, tr, te, cv.max_iter, cv.random_state)
            for xf, (tr, te) in zip(self.xs, self.splits))
        scores = np.empty((len(self.y), len(self.classes)), np.float64)
        for (_, te), sc in zip(self.splits, parts):
            scores[te] = sc
        return scores

    def final(self, C):
        """``(coef, intercept, hit an iteration limit)`` of the fit on every row at ``C``."""
        if self.path is not None:
            self.path.out_of_fold(C)  # solved on the folds first: the final fit starts there
            return self.path.final(C)
        return _liblinear_fit(self.x, self.y, C, self.cv.max_iter, self.cv.random_state)
