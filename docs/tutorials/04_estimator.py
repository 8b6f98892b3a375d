# %% [markdown]
# # The estimator in a scikit-learn pipeline, with a grid search
#
# `DARNClassifier` is darnn as a scikit-learn estimator: `fit`, `partial_fit`, `predict`,
# `decision_function`, `score`, `get_params`/`set_params`, so it fits in pipelines,
# cross-validation and searches. Its hyperparameters are the fields of `NetworkConfig` and
# `LearningConfig` with the same names ([config keys](../model.md#config-keys)) plus the
# training loop's (`n_epochs`, `batch_size`, `random_state`, `device`, `n_threads`,
# `dtype`); its defaults are the default recipe. The data here are scikit-learn's 8×8
# digits, and the network is kept small so the whole search takes seconds.

# %%
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

from darnn import DARNClassifier

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.25, random_state=0, stratify=y
)
print(X_train.shape, X_test.shape)

# %% [markdown]
# ## A pipeline
#
# The network expects features of order one: `MinMaxScaler` maps the pixel values 0–16 to
# [0, 1]. `hidden=(300,)` is one module of 300 units (the default recipe has 6000).

# %%
model = Pipeline(
    [
        ("scale", MinMaxScaler()),
        ("darnn", DARNClassifier(hidden=(300,), n_epochs=3, n_threads=1, random_state=0)),
    ]
)
model.fit(X_train, y_train)
print(f"test accuracy {model.score(X_test, y_test):.3f}")

# %% [markdown]
# The fitted estimator keeps the network (`network_`), the classes, the epochs run
# (`n_iter_`) and a per-epoch history; `decision_function` returns the readout fields, one
# column per class, and `predict` their argmax.

# %%
clf = model.named_steps["darnn"]
print(type(clf.network_).__name__, clf.classes_, clf.n_iter_)
print(clf.history_[-1])
scores = model.decision_function(X_test[:5])
print(scores.shape, model.predict(X_test[:5]), y_test[:5])
assert np.array_equal(scores.argmax(1), model.predict(X_test[:5]))

# %% [markdown]
# ## A grid search
#
# Any hyperparameter is searchable under the step's name: `darnn__j_d`, `darnn__lr_j`, ...
# Here the self-coupling J_D (accessibility needs it above roughly 0.5,
# [tutorial 1](01_single_module.md)) and the recurrent learning rate, with 2-fold
# cross-validation on the training split.

# %%
search = GridSearchCV(
    model,
    {"darnn__j_d": [0.0, 1.0], "darnn__lr_j": [0.0, 0.05]},
    cv=2,
)
search.fit(X_train, y_train)
for params, mean in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"]):
    print(params, f"{mean:.3f}")
print("best:", search.best_params_, f"test accuracy {search.score(X_test, y_test):.3f}")

# %% [markdown]
# ## Training further: `partial_fit`
#
# `partial_fit` trains one more epoch on the data it is given (the first call needs
# `classes`), so a model can be trained in steps or on a stream.

# %%
scaler = MinMaxScaler().fit(X_train)
clf = DARNClassifier(hidden=(300,), n_threads=1, random_state=0)
for epoch in range(2):
    clf.partial_fit(scaler.transform(X_train), y_train, classes=np.arange(10))
    print(f"after epoch {epoch + 1}: {clf.score(scaler.transform(X_test), y_test):.3f}")
