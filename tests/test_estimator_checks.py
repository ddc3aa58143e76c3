"""scikit-learn's common estimator checks (``parametrize_with_checks``) on small
instances of our estimators, on the checks' own data: 2-D arrays, one region
per image.

Every check passes (no ``expected_failed_checks``). ``check_transformer_general``
compares ``fit_transform(X, y)`` with ``fit(X, y).transform(X)`` at atol 1e-2:
``PartEncoder.fit_transform`` returns leave-one-out training codes by design
(as ``TargetEncoder.fit_transform`` cross-fits), so the two differ in general
(``tests/encoding/test_encoding.py``), but on this check's two tight blobs they differ
by about 5e-3, and the check passes as it is.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from partlearn.encoding import PartEncoder
from partlearn.parts import PartLearner

def small_learner():
    """Few parts, a class of one image allowed, small pools: fast on the checks' data
    (at most a few hundred one-region images)."""
    return PartLearner(n_parts=2, min_images=1, n_negative_images=10, hard_negatives=20,
                       random_state=0)


@parametrize_with_checks([small_learner(), PartEncoder(small_learner(), pyramid=(1, 2))])
def test_sklearn_compatible(estimator, check):
    check(estimator)
