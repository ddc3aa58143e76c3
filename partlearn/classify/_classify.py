"""Linear SVMs on image codes, with C chosen by cross-validation on the training split.

``fit_svm`` fits a one-vs-rest linear SVM (scikit-learn's ``LinearSVC``) with
C chosen by stratified k-fold cross-validation on the training images only:
the grid is extended by decades at an edge whose C is best (up to ``extend``
times per side), and a C still at an edge is reported (``C_at_edge``) and
logged. Ties go to the smaller C. The model comes back as arrays (``coef``,
``intercept``, ``classes``), never pickled; ``decision`` and ``predict`` use
them. ``method_features`` builds the methods' inputs; ``fit_two_level`` a decision by
group, then by class within the group.

Two solvers of the same objective (``0.5 (||w||^2 + b^2) + C sum_i max(0, 1 - t_i (w . x_i
+ b))^2`` per class, one-vs-rest): ``solver="liblinear"`` (``LinearSVC``, folds x C on
loky processes) and ``solver="torch"`` (``partlearn.classify._svm_torch``: every class and fold
at once as columns of one Newton problem, each C warm-started from the nearest C
already solved, on a GPU when ``device`` finds one). The torch solver stops where its
coefficients are provably within 1e-6 relative of the exact minimiser; liblinear at
its default tolerance is the less exact of the two (tests/test_svm_torch.py).

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

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

from .._arrays import l2_normalize
from .._validation import ConfigError, DataError
from ..config import ClassifierConfig

logger = logging.getLogger(__name__)

_K = ClassifierConfig
SOLVERS = ("liblinear", "torch")


def method_blocks(method: str) -> list[str]:
    """The descriptors a method uses: ``"parts[unsup]+global"`` (concatenated) and
    ``"parts[unsup]|global"`` (late fusion) → ``["parts[unsup]", "global"]``; a two-level
    method, its input's (``"2level:parts[hier]"`` → ``["parts[hier]"]``)."""
    return (two_level(method) or method).replace("|", "+").split("+")


def two_level(method: str) -> str | None:
    """``"2level:parts[hier]"`` → ``"parts[hier]"``: the input of a two-level decision."""
    return method.removeprefix("2level:") if method.startswith("2level:") else None


def fused(method: str) -> tuple[str, str] | None:
    """``"parts|global"`` → ``("parts", "global")``: a late fusion's two methods."""
    a, sep, b = method.partition("|")
    return (a, b) if sep else None


def descriptor_blocks(name: str) -> list[str]:
    """The blocks of a retrieval descriptor: ``"parts+gem+w"`` → ``["parts", "gem+w"]``
    (``+w``, whitened, belongs to the block before it)."""
    out: list[str] = []
    for piece in name.split("+"):
        if piece == "w" and out:
            out[-1] += "+w"
        else:
            out.append(piece)
    return out


def uses(cfg, block: str) -> bool:
    """Whether a classifier method or a retrieval descriptor of ``cfg`` uses ``block``
    (``"parts"``, ``"parts[unsup]"``): the stages behind a block run only then."""
    return (any(block in method_blocks(m) for m in cfg.classifier.methods)
            or any(block in descriptor_blocks(d) for d in cfg.retrieval.descriptors))


def method_features(method: str, global_=None, parts=None, parts_unsup=None,
                    parts_hier=None) -> np.ndarray:
    """The input of ``method``: ``global`` (L2-normalised global descriptor), ``parts``,
    ``parts[unsup]`` or ``parts[hier]`` (a part code, already normalised by the encoder),
    or several joined by ``+`` (each block L2-normalised, concatenated); a late fusion
    ``a|b`` takes the inputs of ``a`` and of ``b`` side by side (its model is the weighted
    concatenation of their SVMs'); ``2level:m``, ``m``'s."""
    method = two_level(method) or method
    if fused(method):
        return np.concatenate([method_features(m, global_, parts, parts_unsup, parts_hier)
                               for m in fused(method)], axis=1)
    inputs = {"global": global_, "parts": parts, "parts[unsup]": parts_unsup,
              "parts[hier]": parts_hier}
    names = method_blocks(method)
    if any(n not in inputs for n in names):
        raise ValueError(method)
    if names == ["global"]:
        return l2_normalize(global_, axis=1)
    if len(names) == 1:
        return np.asarray(inputs[names[0]], np.float32)
    return np.concatenate([l2_normalize(inputs[n], axis=1) for n in names], axis=1)


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


def _svm_input(x, y, who: str, solver: str, memory_mb: float):
    """``(x, y, plan)``: ``x`` as float32 when it fits the budget (``plan`` None), else
    the array as given, checked block by block (``plan``: ``_budget``'s)."""
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


def fit_svm(x, y, *, Cs=_K.C, extend: int = _K.extend, folds: int = _K.cv_folds,
            max_iter: int = _K.max_iter, random_state: int = 0, n_jobs=None,
            name: str = "", solver: str = _K.solver, device="auto",
            memory_mb: float = _K.memory_mb, fold_x=None) -> dict:
    """One-vs-rest linear SVM on ``x`` ``(n, D)``, labels ``y`` ``(n,)``, C by CV.

    Returns ``coef`` (C, D), ``intercept`` (C,), ``classes`` (C,), ``C``,
    ``cv`` (``{C: mean fold accuracy}``, every C tried), ``cv_accuracy`` (at
    the chosen C), ``C_at_edge`` (bool), ``converged`` (bool: no fit hit
    ``max_iter``, liblinear's iteration limit, or the torch solver's own).
    ``solver``: ``"liblinear"`` or ``"torch"`` (on ``device``; the same folds, grid
    and result). ``memory_mb``: past it (``x`` as ``(n, D)`` float32), torch reads ``x``
    in blocks of rows and liblinear raises ``ConfigError``. ``name`` is used in messages.
    ``fold_x``: one ``(n, D)`` array per fold of ``cv_splits(y, folds, random_state)``,
    the same rows as that fold's model sees them (part codes from parts learnt without
    the fold: ``encoding_cv``); fold ``j`` is fitted and scored on ``fold_x[j]``, the
    final model on ``x``.
    """
    who = f"{name}: " if name else ""
    x, y, plan = _svm_input(x, y, who, solver, memory_mb)
    classes = np.unique(y)
    if len(classes) < 2:
        raise DataError(f"{who}a classifier needs at least 2 classes, got {len(classes)}")
    splits = cv_splits(y, folds, random_state, who)
    k = len(splits)
    fold_x = _fold_inputs(fold_x, y, splits, who, solver, memory_mb)
    if solver == "torch":
        path = (_TorchPath(x, y, classes, splits, device, plan) if fold_x is None else
                _FoldwiseTorch(x, fold_x, y, classes, splits, device, plan))
        cv, best, late = _search_C(path.accuracies, Cs, extend)
        coef, intercept, late_final = path.final(best)
    else:
        cv, best, late = _search_C(_liblinear_accuracies(fold_x or [x] * k, y, splits,
                                                         max_iter, random_state, n_jobs),
                                   Cs, extend)
        coef, intercept, late_final = _liblinear_fit(x, y, best, max_iter, random_state)
    grid = sorted(cv)
    at_edge = best in (grid[0], grid[-1]) and len(grid) > 1
    if at_edge:
        logger.warning("%sC=%g, the chosen C, is at the edge of the grid %s even after "
                       "extending it %d decade(s): cross-validation may still improve beyond "
                       "it", who, best, [f"{c:g}" for c in grid], extend)
    if late or late_final:
        logger.warning("%s%s; accuracies may be slightly off", who,
                       f"liblinear hit max_iter={max_iter} in some fits (raise "
                       "classifier.max_iter)" if solver == "liblinear" else
                       "the torch solver stopped short of its tolerance in some fits")
    logger.info("%sC=%g (CV accuracy %.4f over %d folds; grid %s)", who, best, cv[best], k,
                ", ".join(f"{c:g}: {cv[c]:.4f}" for c in grid))
    return {"coef": coef.astype(np.float32), "intercept": intercept.astype(np.float32),
            "classes": classes, "C": best, "cv": cv, "cv_accuracy": cv[best],
            "cv_folds": k, "C_at_edge": bool(at_edge), "converged": not (late or late_final)}


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


def _fold_inputs(fold_x, y, splits, who, solver, memory_mb):
    """``fold_x`` checked like ``x`` (None stays None), one array per fold."""
    if fold_x is None:
        return None
    if len(fold_x) != len(splits):
        raise DataError(f"{who}fold_x holds {len(fold_x)} arrays for {len(splits)} CV folds")
    return [_svm_input(xf, y, who, solver, memory_mb)[0] for xf in fold_x]


def _liblinear_accuracies(xs, y, splits, max_iter: int, random_state: int, n_jobs):
    """``Cs`` → ``{C: (mean fold accuracy, hit max_iter)}`` (fold ``j`` on ``xs[j]``), folds
    x C on processes, not threads: liblinear draws its coordinate order from one global
    random generator, so fits on several threads of one process interleave their draws
    and the fold accuracies change from run to run (measured: demo parts+global, C=0.01)."""
    def accuracies(Cs) -> dict:
        runs = Parallel(n_jobs=n_jobs, prefer="processes")(
            delayed(_fold_accuracy)(c, xs[j], y, tr, te, max_iter, random_state)
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


FUSION_WEIGHTS = tuple(np.round(np.linspace(0, 1, 11), 2))  # weight on the first method


def _fold_scores(C, x, y, train, test, max_iter, seed) -> np.ndarray:
    svm, _ = _fit_quiet(_svm(C, max_iter, seed), x[train], y[train])
    scores = svm.decision_function(x[test])
    return np.stack([-scores, scores], axis=1) if scores.ndim == 1 else scores


def fit_late_fusion(xa, xb, y, model_a: dict, model_b: dict, *, folds: int = _K.cv_folds,
                    max_iter: int = _K.max_iter, random_state: int = 0, n_jobs=None,
                    weights=FUSION_WEIGHTS, name: str = "", solver: str = _K.solver,
                    device="auto", memory_mb: float = _K.memory_mb, fold_xa=None,
                    fold_xb=None) -> dict:
    """Late fusion of two fitted SVMs (``fit_svm``'s, on inputs ``xa`` and ``xb`` of the
    same images): scores ``w * a + (1 - w) * b``, ``w`` chosen by the accuracy of the
    fused out-of-fold scores (each SVM refitted at its own C on the folds ``fit_svm``
    used: same ``folds`` and ``random_state``). Ties go to the smaller ``w``, so where
    ``a`` adds nothing the fusion is ``b`` alone (``w = 0``). Returns a model on the
    concatenated input ``[xa, xb]`` (``coef``, ``intercept``, ``classes``: exactly the
    weighted sum of the two decisions), ``weight``, ``cv`` (``{w: accuracy}``) and
    ``cv_accuracy``. ``solver``, ``device``, ``memory_mb``: the folds' refits, as
    ``fit_svm`` (pass the ones the two SVMs were fitted with); ``fold_xa``, ``fold_xb``:
    their ``fold_x``, if they had one."""
    who = f"{name}: " if name else ""
    xa, y, plan_a = _svm_input(xa, y, who, solver, memory_mb)
    xb, _, plan_b = _svm_input(xb, y, who, solver, memory_mb)
    classes = model_a["classes"]
    if not np.array_equal(classes, model_b["classes"]):
        raise DataError(f"{name}: the two SVMs have different classes")
    k = int(model_a["cv_folds"])
    splits = _splits(k, random_state, y)
    oof = [_Folds(x, y, classes, splits, solver, device, plan, max_iter, random_state,
                  n_jobs, _fold_inputs(fx, y, splits, who, solver, memory_mb))
           .out_of_fold(model["C"])
           for x, fx, model, plan in ((xa, fold_xa, model_a, plan_a),
                                      (xb, fold_xb, model_b, plan_b))]
    cv = {float(w): float((classes[(w * oof[0] + (1 - w) * oof[1]).argmax(axis=1)] == y).mean())
          for w in weights}
    best = max(cv, key=lambda w: (cv[w], -w))
    logger.info("%s: late-fusion weight %.2f on the first SVM (CV accuracy %.4f; %s)", name,
                best, cv[best], ", ".join(f"{w:g}: {a:.4f}" for w, a in cv.items()))
    coef = np.concatenate([best * model_a["coef"], (1 - best) * model_b["coef"]], axis=1)
    return {"coef": coef.astype(np.float32), "classes": classes,
            "intercept": (best * model_a["intercept"]
                          + (1 - best) * model_b["intercept"]).astype(np.float32),
            "weight": best, "cv": cv, "cv_accuracy": cv[best], "cv_folds": k,
            "C": model_a["C"], "C_b": model_b["C"], "C_at_edge": False,
            "converged": model_a["converged"] and model_b["converged"]}


class _Folds:
    """One problem's out-of-fold decisions and final fit at any C, by either solver; the
    torch solver's problem is set up once and each C warm-started from the nearest
    solved (``_TorchPath``)."""

    def __init__(self, x, y, classes, splits, solver, device, plan, max_iter, random_state,
                 n_jobs, fold_x=None):
        self.x, self.y, self.classes, self.splits = x, y, classes, splits
        self.xs = fold_x or [x] * len(splits)  # what each fold fits and scores on
        self.max_iter, self.random_state, self.n_jobs = max_iter, random_state, n_jobs
        self.path = None
        if solver == "torch":
            self.path = (_TorchPath(x, y, classes, splits, device, plan) if fold_x is None
                         else _FoldwiseTorch(x, fold_x, y, classes, splits, device, plan))

    def out_of_fold(self, C) -> np.ndarray:
        """``(n, classes)`` float64 decisions at ``C``, each row by the SVM of the fold that
        held it out."""
        if self.path is not None:
            return self.path.out_of_fold(C).astype(np.float64)
        parts = Parallel(n_jobs=self.n_jobs, prefer="processes")(
            delayed(_fold_scores)(C, xf, self.y, tr, te, self.max_iter, self.random_state)
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
        return _liblinear_fit(self.x, self.y, C, self.max_iter, self.random_state)


def fit_two_level(x, y, class_group, *, Cs=_K.C, extend: int = _K.extend,
                  folds: int = _K.cv_folds, max_iter: int = _K.max_iter, random_state: int = 0,
                  n_jobs=None, name: str = "", solver: str = _K.solver, device="auto",
                  memory_mb: float = _K.memory_mb) -> dict:
    """A two-level decision (``hierarchy.two_level_scores``): one SVM for the group
    (``class_group[y]``, C by ``fit_svm``'s CV), then, per group of two classes or more,
    one SVM on its images for the class within it. The within-group SVMs share one C,
    chosen by the two-level decision's own accuracy out of fold (class-stratified folds,
    the grid extended at an edge as ``fit_svm``'s): a group of a few classes rarely
    tells Cs apart by itself. Returns ``coef``/``intercept`` ``(C, D)``/``(C,)`` (the
    within-group SVMs; 0 for a group's only class), ``group_coef``/``group_intercept``,
    ``class_group``, ``classes``, ``C`` (the group SVM's), ``C_within``, ``cv``
    (``{C_within: accuracy}``) and ``cv_accuracy`` (at the chosen one)."""
    from ..parts.hierarchy import two_level_scores

    who = f"{name}: " if name else ""
    x, y, plan = _svm_input(x, y, who, solver, memory_mb)
    class_group = np.asarray(class_group, np.int64)
    classes = np.unique(y)
    if not np.array_equal(classes, np.arange(len(class_group))):
        raise DataError(f"{who}a two-level SVM needs labels 0..{len(class_group) - 1}, one per "
                        "class of the hierarchy")
    yg = class_group[y]
    group = fit_svm(x, yg, Cs=Cs, extend=extend, folds=folds, max_iter=max_iter,
                    random_state=random_state, n_jobs=n_jobs, name=f"{name} (groups)",
                    solver=solver, device=device, memory_mb=memory_mb)
    splits = cv_splits(y, folds, random_state, who)
    k = len(splits)
    oof_group = _Folds(x, yg, np.unique(yg), splits, solver, device, plan, max_iter,
                       random_state, n_jobs).out_of_fold(group["C"])
    within = []  # (members, rows, their _Folds) of every group of two classes or more
    for g in range(int(class_group.max()) + 1):
        members = np.flatnonzero(class_group == g)
        if len(members) > 1:
            rows = np.flatnonzero(np.isin(y, members))
            sub = [(np.flatnonzero(np.isin(rows, tr)), np.flatnonzero(np.isin(rows, te)))
                   for tr, te in splits]
            xr, yr, plan_r = _svm_input(x[rows], y[rows], who, solver, memory_mb)
            within.append((members, rows, _Folds(xr, yr, members, sub, solver, device, plan_r,
                                                 max_iter, random_state, n_jobs)))

    def accuracies(grid) -> dict:
        out = {}
        for c in grid:
            oof = np.zeros((len(y), len(classes)), np.float64)
            for members, rows, folds_g in within:
                oof[np.ix_(rows, members)] = folds_g.out_of_fold(c)
            pred = two_level_scores(oof_group, oof, class_group).argmax(axis=1)
            out[c] = (float((pred == y).mean()), False)
        return out

    cv, best, _ = _search_C(accuracies, Cs, extend)
    grid = sorted(cv)
    at_edge = best in (grid[0], grid[-1]) and len(grid) > 1
    coef = np.zeros((len(classes), x.shape[1]), np.float32)
    intercept = np.zeros(len(classes), np.float32)
    converged = group["converged"]
    for members, _, folds_g in within:
        coef[members], intercept[members], late = folds_g.final(best)
        converged &= not late
    logger.info("%stwo-level: group C=%g (CV accuracy %.4f), within-group C=%g; two-level "
                "CV accuracy %.4f (%s)", who, group["C"], group["cv_accuracy"], best, cv[best],
                ", ".join(f"{c:g}: {cv[c]:.4f}" for c in grid))
    return {"coef": coef, "intercept": intercept, "classes": classes,
            "group_coef": group["coef"], "group_intercept": group["intercept"],
            "class_group": class_group, "C": group["C"], "C_within": best, "cv": cv,
            "cv_accuracy": cv[best], "cv_group_accuracy": group["cv_accuracy"],
            "cv_folds": k, "C_at_edge": bool(group["C_at_edge"] or at_edge),
            "converged": bool(converged)}


def decision(model: dict, x) -> np.ndarray:
    """``(n, C)`` scores of the model's classes (a two-level model's: its decision's,
    ``hierarchy.two_level_scores``)."""
    x = np.asarray(x, np.float32)
    scores = x @ model["coef"].T + model["intercept"]
    if "class_group" in model:
        from ..parts.hierarchy import two_level_scores

        group = x @ model["group_coef"].T + model["group_intercept"]
        return two_level_scores(group, scores, model["class_group"])
    return scores


def predict(model: dict, x) -> np.ndarray:
    return np.asarray(model["classes"])[decision(model, x).argmax(axis=1)]
