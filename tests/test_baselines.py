import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from darnn.baselines import BinaryMLPClassifier, random_features, reservoir


def digits() -> tuple[np.ndarray, ...]:
    X, y = load_digits(return_X_y=True)
    return tuple(train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y))


def test_reservoir_freezes_recurrent_and_input_weights() -> None:
    Xtr, _, ytr, _ = digits()
    one = reservoir(hidden=(200,), n_epochs=1, random_state=0).fit(Xtr[:200], ytr[:200])
    two = reservoir(hidden=(200,), n_epochs=2, random_state=0).fit(Xtr[:200], ytr[:200])
    a, b = one.network_.state_dict(), two.network_.state_dict()
    for key in a:  # same initial weights; only the readout moved in the second epoch
        assert bool((a[key] == b[key]).all()) == (not key.startswith("w_out")), key


def test_random_features_and_binary_mlp_learn_digits() -> None:
    Xtr, Xte, ytr, yte = digits()
    rf = random_features(hidden=(500,), n_epochs=5, random_state=0).fit(Xtr, ytr)
    mlp = BinaryMLPClassifier(hidden=256, n_epochs=10, random_state=0).fit(Xtr, ytr)
    assert rf.score(Xte, yte) > 0.85
    assert mlp.score(Xte, yte) > 0.9
    np.testing.assert_array_equal(
        mlp.predict(Xte),
        BinaryMLPClassifier(hidden=256, n_epochs=10, random_state=0).fit(Xtr, ytr).predict(Xte),
    )
