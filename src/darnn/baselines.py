"""Baselines the paper compares with (SPEC §4 C), as scikit-learn classifiers.

- `reservoir`: the same network and two-phase training, but J and W_in frozen: only the
  readout learns (the representation is the untrained recurrent dynamics).
- `random_features`: no recurrence at all: s = sign(W_in x), readout learned by the same
  perceptron rule.
- `BinaryMLPClassifier`: a one-hidden-layer MLP with sign activations trained end to end
  by backpropagation (straight-through gradient), the non-local reference.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from .estimator import DARNClassifier


def reservoir(**params: object) -> DARNClassifier:
    """DARN with frozen J and W_in: only W_out learns."""
    return DARNClassifier(**{**params, "lr_in": 0.0, "lr_j": 0.0})  # type: ignore[arg-type]


def random_features(**params: object) -> DARNClassifier:
    """s = sign(W_in x) (one warm-up sweep, no couplings, no label phases), learned readout."""
    fixed = {
        "j_strength": 0.0,
        "j_d": 0.0,
        "lr_in": 0.0,
        "lr_j": 0.0,
        "warmup_sweeps": 1,
        "clamped_sweeps": 0,
        "free_sweeps": 0,
        "eval_sweeps": 0,
    }
    return DARNClassifier(**{**params, **fixed})  # type: ignore[arg-type]


class _SignSTE(torch.autograd.Function):
    """sign in the forward pass (ties -> +1), hard-tanh gradient in the backward pass."""

    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(h)
        return torch.where(h >= 0, 1.0, -1.0).to(h.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def, override]
        (h,) = ctx.saved_tensors
        return grad * (h.abs() <= 1).to(grad.dtype)


class BinaryMLPClassifier(ClassifierMixin, BaseEstimator):
    """x -> sign(W1 x + b1) -> W2 s + b2, cross-entropy, Adam, straight-through gradient."""

    def __init__(
        self,
        hidden: int = 1000,
        n_epochs: int = 10,
        batch_size: int = 64,
        lr: float = 1e-3,
        random_state: int | None = None,
    ):
        self.hidden = hidden
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state

    def fit(self, X, y) -> BinaryMLPClassifier:  # type: ignore[no-untyped-def]
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        for name in ("hidden", "n_epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}={value!r} is not valid; it must be an integer >= 1")
        self.classes_, target = np.unique(y, return_inverse=True)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # nn.Linear initialisation
        self.model_ = nn.Sequential(
            nn.Linear(X.shape[1], self.hidden),
            nn.BatchNorm1d(self.hidden),
            _Sign(),
            nn.Linear(self.hidden, len(self.classes_)),
        )
        opt = torch.optim.Adam(self.model_.parameters(), lr=self.lr)
        xt, yt = torch.tensor(X), torch.as_tensor(target, dtype=torch.int64)
        self.model_.train()
        for _ in range(self.n_epochs):
            order = torch.randperm(len(yt), generator=gen)
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                loss = nn.functional.cross_entropy(self.model_(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.model_.eval()
        return self

    def decision_function(self, X) -> np.ndarray:  # type: ignore[no-untyped-def]
        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        with torch.no_grad():
            return self.model_(torch.tensor(X)).numpy()

    def predict(self, X) -> np.ndarray:  # type: ignore[no-untyped-def]
        return self.classes_[self.decision_function(X).argmax(axis=1)]


class _Sign(nn.Module):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return _SignSTE.apply(h)  # type: ignore[no-any-return]
