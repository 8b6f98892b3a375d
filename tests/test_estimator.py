import time

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import check_estimator

from darnn import DARNClassifier

# check_estimator checks we skip, and why. Empty today: every check passes.
SKIPPED_CHECKS: dict[str, str] = {}


# A small dense network (the default recipe is 6000 sparse units): quick on tiny data sets.
SMALL = {
    "hidden": (64,),
    "j_density": 1.0,
    "w_in_density": 1.0,
    "w_back_strength": 1.3,
    "n_epochs": 3,
    "batch_size": 16,
    "random_state": 0,
}


def small(**kw: object) -> DARNClassifier:
    return DARNClassifier(**{**SMALL, **kw})  # type: ignore[arg-type]


def test_sklearn_check_estimator() -> None:
    results = check_estimator(small(), on_fail=None)
    failed = [
        (r["check_name"], str(r["exception"]))
        for r in results
        if r["status"] == "failed" and r["check_name"] not in SKIPPED_CHECKS
    ]
    assert not failed, failed
    assert sum(r["status"] == "passed" for r in results) >= 40


def test_digits_accuracy_and_time() -> None:
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    start = time.perf_counter()
    clf = make_pipeline(MinMaxScaler(), DARNClassifier(n_epochs=8, random_state=0))
    clf.fit(Xtr, ytr)
    accuracy = clf.score(Xte, yte)
    elapsed = time.perf_counter() - start
    print(f"digits: test accuracy {accuracy:.4f} in {elapsed:.1f} s")
    assert accuracy >= 0.93
    assert elapsed < 30


def blobs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 5))
    y = rng.integers(0, 3, 150)
    return (centers[y] + 0.3 * rng.normal(size=(150, 5))).astype(np.float32), y


def test_pipeline_grid_search_and_string_labels() -> None:
    X, y = blobs()
    labels = np.array(["ant", "bee", "cat"])[y]
    search = GridSearchCV(small(), {"j_d": [0.5, 0.95]}, cv=2).fit(X, labels)
    assert search.best_params_["j_d"] in (0.5, 0.95)
    assert set(search.predict(X)) <= set(labels)
    assert search.score(X, labels) > 0.8


def test_partial_fit_and_reproducibility() -> None:
    X, y = blobs()
    a = small().partial_fit(X, y, classes=[0, 1, 2]).partial_fit(X, y)
    b = small().partial_fit(X, y, classes=[0, 1, 2]).partial_fit(X, y)
    assert a.n_iter_ == 2 and len(a.history_) == 2
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))
    with pytest.raises(ValueError, match=r"labels not seen.*\[7\]"):
        a.partial_fit(X[:3], np.array([0, 1, 7]))
    with pytest.raises(ValueError, match="classes must be given"):
        small().partial_fit(X, y)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"hidden": (-3,)}, "hidden"),
        ({"j_density": 1.5}, "j_density"),
        ({"schedule": "chaotic"}, "synchronous, sequential, asynchronous"),
        ({"n_epochs": 0}, "n_epochs"),
        ({"batch_size": -1}, "batch_size"),
        ({"dtype": "float16"}, "'dtype' parameter of DARNClassifier must be a str among"),
        ({"n_threads": 0}, "n_threads"),
        ({"device": "cuda:x"}, "device='cuda:x' is not valid"),
        ({"device": "tpu"}, "cpu, cuda"),
    ],
)
def test_invalid_hyperparameters(params: dict, needle: str) -> None:
    X, y = blobs()
    with pytest.raises(ValueError, match=needle):
        small(**params).fit(X, y)


def test_bad_input_shapes_and_values() -> None:
    X, y = blobs()
    clf = small().fit(X, y)
    with pytest.raises(ValueError, match="5 features"):
        clf.predict(X[:, :4])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        small().fit(bad, y)
    with pytest.raises(ValueError, match="infinity"):
        clf.predict(np.full((2, 5), np.inf))
    with pytest.raises(ValueError, match="1 class"):
        small().fit(X, np.zeros(len(X)))


def test_values_beyond_float32_are_refused() -> None:
    X, y = blobs()
    big = X.astype(np.float64)
    big[3, 1] = 1e39  # finite in float64, infinite in float32
    with pytest.raises(ValueError, match=r"X holds values too large for float32.*1e\+39"):
        small().fit(big, y)
    with pytest.raises(ValueError, match="too large for float32"):
        small().partial_fit(big, y, classes=[0, 1, 2])
    fitted = small().fit(X, y)
    with pytest.raises(ValueError, match="too large for float32"):
        fitted.predict(big)
    # float64 networks hold them: trained weights stay finite
    wide = small(dtype="float64").fit(big, y)
    assert all(bool(p.isfinite().all()) for p in wide.network_.parameters())


@pytest.mark.parametrize("state", ["x", 1.5, -1, 2**64, [1, 2]])
def test_bad_random_state_is_named(state: object) -> None:
    X, y = blobs()
    with pytest.raises(ValueError, match=r"'random_state' parameter of DARNClassifier must be"):
        small(random_state=state).fit(X, y)


def test_numpy_integer_hyperparameters() -> None:
    X, y = blobs()
    clf = small(
        hidden=(np.int64(16),),
        n_epochs=np.int64(2),
        batch_size=np.int32(8),
        n_threads=np.int64(1),
        inter_fan_in=np.int8(1),
    ).fit(X, y)
    assert clf.network_.sizes == (16,) and clf.n_iter_ == 2
    same = small(hidden=(16,), n_epochs=2, batch_size=8, n_threads=1).fit(X, y)
    np.testing.assert_array_equal(clf.decision_function(X), same.decision_function(X))
    assert small(hidden=np.int64(16), n_epochs=1).fit(X, y).network_.sizes == (16,)
    state = np.random.RandomState(3)
    assert small(random_state=state).fit(X, y).n_iter_ == 3


def test_fitted_configs_are_frozen() -> None:
    """set_params after fit changes nothing until the next fit."""
    X, y = blobs()
    clf = small().fit(X, y)
    before = clf.decision_function(X)
    clf.set_params(eval_sweeps=0, kappa_out=-5.0, hidden=(3,), batch_size=1)
    np.testing.assert_array_equal(clf.decision_function(X), before)
    assert clf.learning_config_.eval_sweeps == 5 and clf.train_config_.batch_size == 16
    clf.set_params(eval_sweeps=5, kappa_out=7.0, hidden=(64,), batch_size=16).fit(X, y)
    np.testing.assert_array_equal(clf.decision_function(X), before)
